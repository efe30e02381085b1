"""The data stage: tokenize both splits once per distinct input and keep the result, with its report and
the raw eval conversations, in an on-disk cache keyed by everything that changes the tokenized output."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, load_from_disk
from filelock import FileLock, Timeout

from src.atomic import atomic_folder
from src.builtin_data import BUILTIN
from src.config import DataConfig
from src.data.loading import load_raw
from src.data.tokenization import tokenize_split, truncates
from src.data_files import local_files

log = logging.getLogger(__name__)

CACHE_VERSION = 3  # bump when tokenization logic or the cache layout changes, so old caches are not reused


@dataclass
class PreparedData:
    """Tokenized train/eval sets plus the raw eval conversations used for generation and the task metric."""

    train: Dataset
    eval: Dataset
    eval_conversations: list[list[dict[str, str]] | str]
    report: dict[str, Any]
    cache_path: Path
    from_cache: bool


def _source_fingerprint(cfg: DataConfig) -> Any:
    if cfg.source == "builtin":
        # the generated rows themselves: a change to the generator must not be served from an old cache
        rows = BUILTIN[cfg.name](cfg.builtin_examples, seed=cfg.split_seed) if cfg.name in BUILTIN else []
        return ["builtin", cfg.name, hashlib.sha256(json.dumps(rows).encode()).hexdigest()]
    if cfg.source == "hub":
        return ["hub", cfg.path, hub_revision(cfg.path, cfg.revision), cfg.train_split, cfg.eval_split]

    def digests(spec: str | None) -> list[list[str]]:
        if not spec:
            return []
        return [[str(p.resolve()), content_digest(p)] for p in local_files(spec)]

    # by role: `path=a,b` (a random split of a + b) and `path=a eval_path=b` are different data; the split
    # names pick the splits of a save_to_disk DatasetDict folder
    splits = [cfg.train_split, cfg.eval_split]
    return ["local", {"train": digests(cfg.path), "eval": digests(cfg.eval_path), "splits": splits}]


def content_digest(path: Path) -> str:
    """sha256 of a file, or of every file (name and bytes) in a save_to_disk folder."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path)).encode() if path.is_dir() else b"")
        digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()


def hub_revision(path: str, revision: str | None) -> str | None:
    """The commit a Hub dataset's revision (a branch, or null = main) resolves to now, so a dataset that
    changed upstream is tokenized again instead of served stale. Offline, the configured revision (the
    datasets library then reads its own cache too)."""
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(path, revision=revision).sha
    except Exception as error:  # offline, no network, no access: key on what was asked for
        log.info(
            "Hub dataset %s: revision not resolved (%s); keyed on %r", path, type(error).__name__, revision
        )
        return revision


def cache_key(cfg: DataConfig, tokenizer) -> str:
    """Everything that changes the tokenized output: source contents, tokenizer, template, settings."""
    vocab = hashlib.sha256(json.dumps(sorted(tokenizer.get_vocab().items())).encode()).hexdigest()
    parts = [
        CACHE_VERSION,
        _source_fingerprint(cfg),
        cfg.format,
        cfg.eval_fraction,
        cfg.split_seed,
        cfg.max_train_examples,
        cfg.max_eval_examples,
        cfg.max_length,
        cfg.assistant_only_loss,
        cfg.on_bad_example,
        cfg.packing_strategy,  # the report's packed row counts
        [truncates(cfg, "train"), truncates(cfg, "eval")],
        vocab,
        tokenizer.chat_template,
        tokenizer.eos_token,
    ]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def prepare_data(cfg: DataConfig, tokenizer, cache_dir: str | Path) -> PreparedData:
    """Data stage: load, normalise, tokenize with masks, truncate; reuse the on-disk cache when it matches."""
    path = Path(cache_dir) / "data" / f"{cfg.name}-{cache_key(cfg, tokenizer)}"
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(f"{path}.lock")  # one process tokenizes; the others wait, then read its cache
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("Tokenized data: another process is preparing %s; waiting for it", path)
        lock.acquire()
    try:
        return _prepare_locked(cfg, tokenizer, path)
    finally:
        lock.release()


def _prepare_locked(cfg: DataConfig, tokenizer, path: Path) -> PreparedData:
    if (path / "report.json").exists():
        log.info("Tokenized data: reusing cache %s", path)
        tokenized = load_from_disk(str(path / "dataset"))
        report = json.loads((path / "report.json").read_text())
        eval_conversations = json.loads((path / "eval_conversations.json").read_text())
        from_cache = True
    else:
        raw = load_raw(cfg)
        log.info("Tokenizing %s (%s format) into %s", cfg.name, raw.format, path)
        skipped = raw.skipped
        train, _, train_stats = tokenize_split(raw.train, "train", tokenizer, cfg, raw.format, skipped)
        eval_, eval_conversations, eval_stats = tokenize_split(
            raw.eval, "eval", tokenizer, cfg, raw.format, skipped
        )
        tokenized = DatasetDict(train=train, eval=eval_)
        report = {
            "format": raw.format,
            "max_length": cfg.max_length,
            "packing_strategy": cfg.packing_strategy,
            "on_bad_example": cfg.on_bad_example,
            "skipped": dict(sorted(skipped.items())),
            "train": train_stats,
            "eval": eval_stats,
        }
        with atomic_folder(path) as tmp:  # a unique temporary folder: concurrent writers leave nothing behind
            tokenized.save_to_disk(str(tmp / "dataset"))
            (tmp / "eval_conversations.json").write_text(json.dumps(eval_conversations))
            (tmp / "report.json").write_text(json.dumps(report))  # written last: marks a complete cache
        from_cache = False
    return PreparedData(
        train=tokenized["train"],
        eval=tokenized["eval"],
        eval_conversations=eval_conversations,
        report=report,
        cache_path=path,
        from_cache=from_cache,
    )
