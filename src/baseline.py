"""The untouched base model's eval loss, task metric and sample generations, measured once and reused.

Every trial of a sweep starts from the same base: a freshly attached LoRA adapter adds exactly zero (its B
matrix starts at zero), so the baseline depends only on the base weights and how they are loaded, the
tokenized eval set, and the evaluation and generation settings. Those form the cache key; the result lives
beside the tokenized data in `paths.cache_dir`, so a sweep measures its baseline in its first trial and every
later trial (or re-run) reads it back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from src import distributed
from src.atomic import write_text_atomic

if TYPE_CHECKING:
    from src.compute import Compute
    from src.config import TrainConfig

log = logging.getLogger("src.train")

# bump when what is measured changes. 2: eval loss is the token-weighted mean over the whole eval set (was a
# mean of per-batch means, which depended on the eval batch size), and 4-bit weights on AVX512-BF16 CPUs
# are no longer repacked in place by the baseline's generations (src/patches.py)
BASELINE_VERSION = 2


def baseline_key(cfg: TrainConfig, data_cache_path: Path, compute: Compute) -> str:
    """Everything the untouched model's eval loss and generations depend on."""
    memory = cfg.memory
    parts = {
        "version": BASELINE_VERSION,
        "model": asdict(cfg.model) if is_dataclass(cfg.model) else dict(cfg.model),
        "quantization": [
            memory.load_in_4bit,
            memory.bnb_4bit_quant_type,
            memory.bnb_4bit_use_double_quant,
            str(compute.dtype),  # "auto" resolved: it differs between machines
            memory.bnb_4bit_quant_storage,
        ],
        "full_fine_tuning": not cfg.lora.enabled,
        "data": Path(
            data_cache_path
        ).name,  # the tokenized-data cache key: source, split, tokenizer, template
        "eval": [
            memory.per_device_eval_batch_size,
            cfg.eval.task_examples,
            cfg.eval.max_new_tokens,
            cfg.data.task_metric,
        ],
        "samples": [list(cfg.monitor.sample_prompts), cfg.monitor.num_samples],
        "device": compute.device,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def baseline_path(cfg: TrainConfig, data_cache_path: Path, compute: Compute) -> Path:
    """The cache file of this run's baseline, in paths.cache_dir/baselines."""
    return Path(cfg.paths.cache_dir) / "baselines" / f"{baseline_key(cfg, data_cache_path, compute)}.json"


def read_baseline(path: Path) -> dict[str, Any] | None:
    """The cached baseline, or None (absent or unreadable: then it is measured again)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_baseline(path: Path, baseline: dict[str, Any]) -> None:
    """Written atomically: parallel trials never see a torn file."""
    write_text_atomic(path, json.dumps(baseline))


def cached_or_measured(
    path: Path, reuse: bool, measure: Callable[[], dict[str, Any]], may_write: bool
) -> tuple[dict[str, Any], bool]:
    """The baseline read from `path` (when `reuse`, eval.reuse_baseline) or measured by `measure()` and cached
    there (when `may_write`: the main process of an unsharded run, which has every part of it).

    Returns (baseline, whether it was read from the cache). Every process agrees on the read (the main
    process decides), so under DDP either all measure (a collective eval) or none does."""
    started = time.perf_counter()
    cached = distributed.main_decides(lambda: read_baseline(path)) if reuse else None
    baseline = cached or measure()
    if cached is None and may_write:
        write_baseline(path, baseline)
    how = f"read from {path}" if cached else "measured"
    log.info("untouched model's baseline %s in %.1f s", how, time.perf_counter() - started)
    return baseline, cached is not None
