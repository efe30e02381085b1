"""The tokenizer of a run, and what of it the data cache key holds.

`load_tokenizer` loads a base model's tokenizer (transformers' AutoTokenizer) with the run's chat template
and pad token. `TokenizerSource` is that tokenizer before it is loaded: the data stage asks it for its
`identity` (vocabulary digest, chat template, end-of-sequence token: what of a tokenizer changes the
tokenized data) and loads it only to tokenize. Loading imports transformers and torch, most of a cache hit's
time (4 of 8-14 s on 200,000 rows, docs/benchmarks.md), so the identity is remembered in
paths.cache_dir/data/tokenizer_identities.json, keyed by the bytes of the tokenizer's files (every file of
the base folder with a tokenizer file's suffix: the weights excluded), the chat-template override, the
revision, trust_remote_code and the transformers and tokenizers versions. A change to any of them loads the
tokenizer again; so does a Hub model whose files cannot be listed (offline, not in the local Hub cache)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

from src.atomic import write_text_atomic
from src.config import ConfigError, ModelConfig
from src.data.digest import file_sha256

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

MEMO_FILE = "tokenizer_identities.json"
# bump when load_tokenizer changes what it loads, so remembered identities are not reused
IDENTITY_VERSION = 1
# the files a tokenizer is read from: tokenizer.json, tokenizer_config.json, special_tokens_map.json,
# config.json (it picks the tokenizer class), vocab.json, merges.txt, tokenizer.model (SentencePiece),
# *.tiktoken, chat_template.jinja, and remote code
TOKENIZER_PATTERNS = ("*.json", "*.txt", "*.model", "*.tiktoken", "*.jinja", "*.py")


def chat_template_override(cfg: ModelConfig) -> str | None:
    """model.chat_template: a Jinja template, or the text of the .jinja file it names; None when unset."""
    template = cfg.chat_template
    if template and template.endswith(".jinja"):
        return Path(template).expanduser().read_text(encoding="utf-8")
    return template or None


def load_tokenizer(cfg: ModelConfig, base: str) -> PreTrainedTokenizerBase:
    """The base model's tokenizer, with a pad token and the optional chat-template override."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        base, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code
    )
    if (template := chat_template_override(cfg)) is not None:
        tokenizer.chat_template = template
    if tokenizer.chat_template is None:
        raise ConfigError(
            f"model: {cfg.name} has no chat template; set model.chat_template to a Jinja template."
        )
    if tokenizer.pad_token is None:  # Llama-family tokenizers ship without one; the trainer needs it
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def tokenizer_identity(tokenizer: PreTrainedTokenizerBase) -> list:
    """[sha256 of the sorted vocabulary (hex), chat template, end-of-sequence token]: what of a tokenizer
    changes tokenized data, as the data cache key holds it (src/data/cache.py::cache_key)."""
    vocab = hashlib.sha256(json.dumps(sorted(tokenizer.get_vocab().items())).encode()).hexdigest()
    return [vocab, tokenizer.chat_template, tokenizer.eos_token]


class TokenizerSource:
    """The tokenizer of `cfg` for the base `base` (src/base_model.py::resolve_base), loaded at the first
    `load()`; `identity()` reads the remembered identity when the tokenizer's files are unchanged (module
    docstring)."""

    def __init__(
        self,
        cfg: ModelConfig,
        base: str,
        cache_dir: str | os.PathLike,
        tokenizer: PreTrainedTokenizerBase | None = None,
    ):
        """`tokenizer`: load_tokenizer(cfg, base) when the caller has loaded it already."""
        self.cfg, self.base = cfg, base
        self.memo_file = Path(cache_dir) / "data" / MEMO_FILE
        self._tokenizer = tokenizer

    def load(self) -> PreTrainedTokenizerBase:
        """The tokenizer (load_tokenizer), loaded once."""
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.cfg, self.base)
        return self._tokenizer

    def identity(self) -> list:
        """tokenizer_identity of the tokenizer, remembered by its files' bytes (loads it when they changed)."""
        key = self._files_key()
        remembered = self._read_memo().get(key) if key is not None else None
        return remembered if remembered is not None else self.remember(key)

    def remember(self, key: str | None = None) -> list:
        """The tokenizer's identity computed from it (loading it if needed) and stored under its files' key."""
        identity = tokenizer_identity(self.load())
        key = key if key is not None else self._files_key()
        if key is not None:
            memo = self._read_memo()
            memo[key] = identity
            with contextlib.suppress(OSError):  # a read-only cache folder: loaded each time
                write_text_atomic(self.memo_file, json.dumps(memo))
        return identity

    def _read_memo(self) -> dict[str, list]:
        try:
            return json.loads(self.memo_file.read_text())
        except (OSError, ValueError):  # none yet, or unreadable: start empty
            return {}

    def _files_key(self) -> str | None:
        folder = self._files_folder()
        if folder is None:
            return None
        files = sorted(p for pattern in TOKENIZER_PATTERNS for p in folder.glob(pattern) if p.is_file())
        digest = hashlib.sha256()
        for file in files:
            digest.update(file.name.encode() + b"\0" + file_sha256(file))
        parts = [
            IDENTITY_VERSION,
            digest.hexdigest(),
            chat_template_override(self.cfg),
            self.cfg.revision,
            self.cfg.trust_remote_code,
            version("transformers"),
            version("tokenizers"),
        ]
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()

    def _files_folder(self) -> Path | None:
        """The folder of the tokenizer's files: the base itself when it is a folder, else the Hub model's
        tokenizer files (fetched as from_pretrained would, or from the local Hub cache offline); None
        when they cannot be had."""
        folder = Path(self.base).expanduser()
        if folder.is_dir():
            return folder
        try:
            from huggingface_hub import snapshot_download

            return Path(
                snapshot_download(
                    self.base, revision=self.cfg.revision, allow_patterns=list(TOKENIZER_PATTERNS)
                )
            )
        except (
            Exception
        ) as error:  # offline and not cached, no access, no such model: load it (and fail there)
            log.info(
                "Tokenizer files of %s not listed (%s); loading the tokenizer",
                self.base,
                type(error).__name__,
            )
            return None
