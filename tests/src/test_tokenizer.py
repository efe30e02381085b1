"""The tokenizer's identity (what the data cache key holds) is remembered by its files' bytes, so that a cache
hit loads no tokenizer; a change to its files or to the chat-template override loads it again."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

from src.base_model import resolve_base
from src.data.cache import prepare_data
from src.tokenizer import MEMO_FILE, TokenizerSource, load_tokenizer, tokenizer_identity
from tests.conftest import CACHE, TINY, typed_config


def copy_tokenizer_files(folder: Path) -> tuple[object, str]:
    """The tiny model's config, and its base folder's files but the weights copied into `folder`."""
    cfg = typed_config(TINY)
    folder.mkdir(parents=True)
    for file in Path(resolve_base(cfg.model, CACHE)).iterdir():
        if file.suffix != ".safetensors":
            shutil.copy(file, folder)
    return cfg, str(folder)


def test_the_remembered_identity_is_the_loaded_tokenizers_and_a_second_source_loads_nothing(tmp_path):
    cfg, base = copy_tokenizer_files(tmp_path / "base")
    first = TokenizerSource(cfg.model, base, tmp_path / "cache")
    identity = first.identity()
    loaded = load_tokenizer(cfg.model, base)
    assert identity == tokenizer_identity(loaded)
    assert len(loaded.get_vocab()) == 49152 and identity[2] == "<|im_end|>" == loaded.eos_token
    memo = json.loads((tmp_path / "cache" / "data" / MEMO_FILE).read_text())
    assert list(memo.values()) == [identity]
    second = TokenizerSource(cfg.model, base, tmp_path / "cache")
    assert second.identity() == identity and second._tokenizer is None  # read, not loaded


def test_a_changed_tokenizer_file_or_template_override_is_loaded_again(tmp_path):
    cfg, base = copy_tokenizer_files(tmp_path / "base")
    cache = tmp_path / "cache"
    before = TokenizerSource(cfg.model, base, cache).identity()
    template = Path(base) / "chat_template.jinja"
    template.write_text(template.read_text().replace("helpful AI assistant", "terse assistant"))
    edited = TokenizerSource(cfg.model, base, cache)
    changed = edited.identity()
    assert edited._tokenizer is not None and changed[0] == before[0] and "terse assistant" in changed[1]
    override = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    overridden = TokenizerSource(replace(cfg.model, chat_template=override), base, cache).identity()
    assert overridden[1] == override
    assert len(json.loads((cache / "data" / MEMO_FILE).read_text())) == 3


def test_a_source_and_the_loaded_tokenizer_key_the_same_cache(tmp_path):
    cfg, base = copy_tokenizer_files(tmp_path / "base")
    cfg = typed_config([*TINY, "data.builtin_examples=40"])
    source = TokenizerSource(cfg.model, base, tmp_path)
    first = prepare_data(cfg.data, source, tmp_path, progress=False)
    second = prepare_data(cfg.data, load_tokenizer(cfg.model, base), tmp_path, progress=False)
    assert not first.from_cache and second.from_cache and second.cache_path == first.cache_path
    assert len(first.train) + len(first.eval) == 40


def test_a_training_runs_tokenizer_is_remembered_for_the_next_prepare(tmp_path):
    """stages.build_tokenizer hands its loaded tokenizer to `remember`; a later source reads the identity."""
    cfg, base = copy_tokenizer_files(tmp_path / "base")
    loaded = load_tokenizer(cfg.model, base)
    assert TokenizerSource(cfg.model, base, tmp_path, loaded).remember() == tokenizer_identity(loaded)
    later = TokenizerSource(cfg.model, base, tmp_path)
    assert later.identity() == tokenizer_identity(loaded) and later._tokenizer is None
