"""The data stage: tokenize both splits once per distinct input and keep the result, with its report and
the raw eval conversations, in an on-disk cache keyed by everything that changes the tokenized output."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datasets import Dataset, DatasetDict, load_from_disk
from filelock import FileLock, Timeout

from src.atomic import atomic_folder
from src.builtin_data import BUILTIN
from src.config import ConfigError, DataConfig
from src.data.digest import DigestMemo, content_digest
from src.data.loading import load_raw
from src.data.progress import RowProgress
from src.data.tokenization import CONVERSATION, tokenize_split, truncates
from src.data_files import local_files
from src.tokenizer import TokenizerSource, tokenizer_identity

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

CACHE_VERSION = 4  # bump when tokenization logic or the cache layout changes, so old caches are not reused
# How long a process waits for another one tokenizing the same data: torch.distributed's default
# process-group timeout (torch.distributed.constants.default_pg_timeout, 30 min), the wait a rank would get
# at a barrier
LOCK_TIMEOUT_SECONDS = 30 * 60


class Conversations(Sequence):
    """The eval split's conversations (message lists, {"messages", "tools"} dicts, or plain text), read from
    its memory-mapped `conversation` column and decoded only for the rows read."""

    def __init__(self, split: Dataset):
        self._column = split.select_columns([CONVERSATION])

    def __len__(self) -> int:
        return len(self._column)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [json.loads(text) for text in self._column[index][CONVERSATION]]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return json.loads(self._column[index][CONVERSATION])

    def __iter__(self) -> Iterator:
        for batch in self._column.iter(batch_size=1000):
            yield from map(json.loads, batch[CONVERSATION])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)


@dataclass
class PreparedData:
    """Tokenized train/eval sets (memory-mapped from the cache) plus the eval conversations used for
    generation and the task metric."""

    train: Dataset
    eval: Dataset
    eval_conversations: Conversations
    report: dict[str, Any]
    cache_path: Path
    from_cache: bool


def _source_fingerprint(cfg: DataConfig, memo: DigestMemo | None) -> Any:
    if cfg.source == "builtin":
        # the generated rows themselves: a change to the generator must not be served from an old cache
        rows = BUILTIN[cfg.name](cfg.builtin_examples, seed=cfg.split_seed) if cfg.name in BUILTIN else []
        return ["builtin", cfg.name, hashlib.sha256(json.dumps(rows).encode()).hexdigest()]
    if cfg.source == "hub":
        return ["hub", cfg.path, hub_revision(cfg.path, cfg.revision), cfg.train_split, cfg.eval_split]

    def digests(spec: str | None) -> list[list[str]]:
        if not spec:
            return []
        return [[str(p.resolve()), content_digest(p, memo)] for p in local_files(spec)]

    # by role: `path=a,b` (a random split of a + b) and `path=a eval_path=b` are different data; the split
    # names pick the splits of a save_to_disk DatasetDict folder
    splits = [cfg.train_split, cfg.eval_split]
    return ["local", {"train": digests(cfg.path), "eval": digests(cfg.eval_path), "splits": splits}]


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


def cache_key(cfg: DataConfig, tokenizer_identity: list, memo: DigestMemo | None = None) -> str:
    """Everything that changes the tokenized output: source contents (local files' digests from `memo`
    when given, src/data/digest.py), the tokenizer's identity (vocabulary digest, chat template, end of
    sequence: src/tokenizer.py::tokenizer_identity), settings."""
    parts = [
        CACHE_VERSION,
        _source_fingerprint(cfg, memo),
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
        *tokenizer_identity,
    ]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def prepare_data(
    cfg: DataConfig,
    tokenizer: PreTrainedTokenizerBase | TokenizerSource,
    cache_dir: str | Path,
    progress: bool = True,
    lock_timeout: float = LOCK_TIMEOUT_SECONDS,
) -> PreparedData:
    """Data stage: load, normalise, tokenize with masks, truncate; reuse the on-disk cache when it matches.
    `progress` shows one bar over both splits' rows (rows/s) on a cache miss. A process that finds another
    one tokenizing the same data waits for it up to `lock_timeout` seconds, then raises ConfigError naming
    the lock file and `python -m src.prepare`. `tokenizer` is a loaded one, or a TokenizerSource that a cache
    hit never loads (src/tokenizer.py)."""
    if isinstance(tokenizer, TokenizerSource):
        identity, load = tokenizer.identity(), tokenizer.load
    else:
        identity, load = tokenizer_identity(tokenizer), lambda: tokenizer
    memo = DigestMemo(Path(cache_dir) / "data")
    key = cache_key(cfg, identity, memo)
    path = Path(cache_dir) / "data" / f"{cfg.name}-{key}"
    path.parent.mkdir(parents=True, exist_ok=True)
    memo.save()
    lock = FileLock(f"{path}.lock")  # one process tokenizes; the others wait, then read its cache
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("Tokenized data: another process is preparing %s; waiting for it", path)
        _wait_for(lock, path, lock_timeout)
    try:
        from_cache = (path / "report.json").exists()
        if from_cache:
            log.info("Tokenized data: reusing cache %s", path)
        else:
            _tokenize_into(cfg, load(), path, key, progress)
    finally:
        lock.release()
    tokenized = load_from_disk(str(path / "dataset"))  # memory-mapped, on a cache miss too
    return PreparedData(
        train=tokenized["train"],
        eval=tokenized["eval"].select_columns(["input_ids", "labels"]),
        eval_conversations=Conversations(tokenized["eval"]),
        report=json.loads((path / "report.json").read_text()),
        cache_path=path,
        from_cache=from_cache,
    )


def _wait_for(lock: FileLock, path: Path, timeout: float) -> None:
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        raise ConfigError(
            f"Tokenized data: another process has held {lock.lock_file} for {timeout / 60:.0f} min while "
            f"preparing {path.name}; let it finish, or tokenize ahead of the run with `python -m src.prepare "
            "<the same overrides>`, which a later run reads from the cache at once."
        ) from None


def _tokenize_into(cfg: DataConfig, tokenizer, path: Path, key: str, progress: bool) -> None:
    # a unique temporary folder (concurrent writers leave nothing behind); one bar, datasets' own are off
    with atomic_folder(path) as tmp, RowProgress(enabled=progress) as bar:
        work = tmp / "work"  # raw rows and map outputs, dropped once the splits are saved
        raw = load_raw(cfg, work)
        log.info("Tokenizing %s (%s format) into %s", cfg.name, raw.format, path)
        skipped = raw.skipped
        bar.start(len(raw.train) + len(raw.eval))
        train, train_stats = tokenize_split(
            raw.train, "train", tokenizer, cfg, raw.format, skipped, work, key, bar
        )
        eval_, eval_stats = tokenize_split(
            raw.eval, "eval", tokenizer, cfg, raw.format, skipped, work, key, bar
        )
        report = {
            "format": raw.format,
            "max_length": cfg.max_length,
            "packing_strategy": cfg.packing_strategy,
            "on_bad_example": cfg.on_bad_example,
            "skipped": dict(sorted(skipped.items())),
            "train": train_stats,
            "eval": eval_stats,
        }
        DatasetDict(train=train, eval=eval_).save_to_disk(str(tmp / "dataset"))
        del raw, train, eval_  # their memory maps of the work files
        shutil.rmtree(work, ignore_errors=True)
        (tmp / "report.json").write_text(json.dumps(report))  # written last: marks a complete cache
