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
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from src.atomic import write_text_atomic

log = logging.getLogger("src.train")

# bump when what is measured changes. 2: eval loss is the token-weighted mean over the whole eval set (was a
# mean of per-batch means, which depended on the eval batch size), and 4-bit weights on AVX512-BF16 CPUs
# are no longer repacked in place by the baseline's generations (src/patches.py)
BASELINE_VERSION = 2


def baseline_key(cfg: Any, data_cache_path: Path, on_cpu: bool) -> str:
    """Everything the untouched model's eval loss and generations depend on."""
    from src.trainer import compute_dtype

    memory = cfg.memory
    parts = {
        "version": BASELINE_VERSION,
        "model": asdict(cfg.model) if is_dataclass(cfg.model) else dict(cfg.model),
        "quantization": [
            memory.load_in_4bit,
            memory.bnb_4bit_quant_type,
            memory.bnb_4bit_use_double_quant,
            str(compute_dtype(cfg)),  # "auto" resolved: it differs between machines
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
        "device": "cpu" if on_cpu else "cuda",
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def baseline_path(cfg: Any, data_cache_path: Path, on_cpu: bool) -> Path:
    """The cache file of this run's baseline, in paths.cache_dir/baselines."""
    return Path(cfg.paths.cache_dir) / "baselines" / f"{baseline_key(cfg, data_cache_path, on_cpu)}.json"


def read_baseline(path: Path) -> dict[str, Any] | None:
    """The cached baseline, or None (absent or unreadable: then it is measured again)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_baseline(path: Path, baseline: dict[str, Any]) -> None:
    """Written atomically: parallel trials never see a torn file."""
    write_text_atomic(path, json.dumps(baseline))
