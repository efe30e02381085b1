"""The value checks a type cannot express, run on a composed config before any weights load: each refusal is
one ConfigError sentence naming the field and the fix.

`validate` runs, in order: the tables (CHOICES: the values a text field accepts; RANGES: the interval a
number must lie in), one `_check_<group>` per config group for the rules a table cannot hold, the rules that
tie two groups together (`_check_across_groups`), and last `check_environment`: what depends on this machine
(files, installed packages, the launcher, the installed transformers).
"""

from __future__ import annotations

import ast
import importlib.util
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from src.data_files import local_files
from src.errors import ConfigError

LLAMA_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TRACKERS = ("mlflow", "wandb", "trackio")  # monitor.report_to (src/trackers.py)
SAVABLE_MODULES = ("embed_tokens", "lm_head")  # lora.modules_to_save: trained in full next to the adapter

CHOICES = {
    "model.source": {"hub", "gguf", "random"},
    "model.dtype": {"bfloat16", "float16", "float32", "auto"},
    "model.attn_implementation": {"auto", "sdpa", "eager", "flash_attention_2", "flash_attention_3"},
    "lora.bias": {"none", "all", "lora_only"},
    "lora.init": {"default", "gaussian", "pissa", "olora", "loftq"},
    "optim.lr_scheduler_type": {"cosine", "linear", "constant"},
    "data.source": {"builtin", "hub", "local"},
    "data.format": {"auto", "messages", "sharegpt", "prompt_completion", "alpaca", "text"},
    "data.task_metric": {"none", "exact_match", "json_exact_match"},
    "data.on_bad_example": {"fail", "skip"},
    "memory.bnb_4bit_quant_type": {"nf4", "fp4"},
    "memory.bnb_4bit_compute_dtype": {"bfloat16", "float16", "float32", "auto"},
    "memory.bnb_4bit_quant_storage": {"uint8", "bfloat16", "float16", "float32"},
}


@dataclass(frozen=True)
class Range:
    """The numbers a field accepts, from `low` to `high` with `bounds` in interval notation ("[)": low
    included, high excluded), and the sentence that refuses any other value (NaN included), with {key} and
    {value} filled in."""

    low: float
    high: float
    bounds: str
    refusal: str

    def admits(self, value: Any) -> bool:
        if not isinstance(value, int | float):
            return False
        above = value >= self.low if self.bounds[0] == "[" else value > self.low
        below = value <= self.high if self.bounds[1] == "]" else value < self.high
        return above and below


def positive(hint: str = "") -> Range:
    """A finite number above 0; `hint` (" (…)") tells the usual values."""
    return Range(0, math.inf, "()", "{key}={value} must be a positive number" + hint + ".")


NOT_NEGATIVE = Range(0, math.inf, "[]", "{key}={value} must be ≥ 0.")

RANGES = {
    "lora.r": positive(" (LoRA rank, e.g. 8, 16, 32 or 64)"),
    "lora.alpha": positive(" (or null for 2 × r)"),
    "lora.dropout": Range(0, 1, "[)", "{key}={value} must be in [0, 1)."),
    "optim.learning_rate": positive(" (1e-4 is a good start for LoRA)"),
    "optim.warmup_ratio": Range(0, 1, "[)", "{key}={value} must be in [0, 1) (0.03–0.10 is typical)."),
    "optim.eta_min": Range(0, 1, "[]", "{key}={value} is a fraction of the peak learning rate: use [0, 1]."),
    "optim.weight_decay": NOT_NEGATIVE,
    "optim.max_grad_norm": positive(),
    "optim.num_train_epochs": positive(" (or set optim.max_steps)"),
    "data.max_length": positive(),
    "data.eval_fraction": Range(0, 1, "()", "{key}={value} must be in (0, 1), or set data.eval_split."),
    "data.num_proc": Range(
        1, math.inf, "[]", "{key} must be at least 1, or null for the cores available (got {value})."
    ),
    "memory.per_device_train_batch_size": positive(),
    "memory.gradient_accumulation_steps": positive(),
    "memory.per_device_eval_batch_size": positive(),
    "eval.steps": positive(),
    "eval.early_stopping_patience": Range(
        0, math.inf, "[]", "{key} must be ≥ 0 (0 disables early stopping)."
    ),
    "eval.task_examples": NOT_NEGATIVE,
    "eval.max_new_tokens": positive(),
    "monitor.logging_steps": positive(),
    "monitor.num_samples": NOT_NEGATIVE,
    "monitor.samples_every_evals": NOT_NEGATIVE,
    "save.save_total_limit": Range(
        1, math.inf, "[]", "{key} must be ≥ 1 (the best checkpoint must be kept)."
    ),
    "seed": NOT_NEGATIVE,
}

# The ranges that hold only when the rest of the config uses the field; the others always hold.
RANGE_APPLIES: dict[str, Callable[[Any], bool]] = {
    "lora.r": lambda cfg: cfg.lora.enabled,
    "lora.alpha": lambda cfg: cfg.lora.enabled and cfg.lora.alpha is not None,
    "lora.dropout": lambda cfg: cfg.lora.enabled,
    "optim.num_train_epochs": lambda cfg: cfg.optim.max_steps <= 0,
    "data.eval_fraction": lambda cfg: not (cfg.data.eval_split or cfg.data.eval_path),
    "data.num_proc": lambda cfg: cfg.data.num_proc is not None,
}


def validate(cfg: Any) -> None:
    """Check a composed config (a TrainConfig, or any object with its attributes) for values a type cannot
    express; raise ConfigError naming the field and the fix, for the first problem found."""
    _check_tables(cfg)
    for check in (_check_model, _check_lora, _check_data, _check_memory, _check_eval, _check_monitor):
        check(cfg)
    _check_across_groups(cfg)
    check_environment(cfg)


def sharded_launch() -> bool:
    """accelerate launch was asked for FSDP or DeepSpeed (it tells its processes through these variables)."""
    return any(
        os.environ.get(v, "").lower() == "true" for v in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED")
    )


def _get(cfg: Any, dotted: str) -> Any:
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def _check_tables(cfg: Any) -> None:
    for key, allowed in CHOICES.items():
        value = _get(cfg, key)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not one of {sorted(allowed)}.")
    for key, accepted in RANGES.items():
        applies = RANGE_APPLIES.get(key, lambda cfg: True)
        value = _get(cfg, key)
        if applies(cfg) and not accepted.admits(value):
            raise ConfigError(accepted.refusal.format(key=key, value=value))


def _check_model(cfg: Any) -> None:
    model = cfg.model
    if model.source in {"gguf", "random"} and not (model.gguf_package and model.gguf_file):
        raise ConfigError(f"model.source={model.source} needs model.gguf_package and model.gguf_file.")
    if model.source == "random" and not model.architecture:
        raise ConfigError("model.source=random needs model.architecture (transformers config kwargs).")


def _check_lora(cfg: Any) -> None:
    lora = cfg.lora
    if not lora.enabled:
        return
    targets = lora.target_modules
    if targets != "all-linear" and not (
        isinstance(targets, list | tuple) and all(isinstance(t, str) for t in targets)
    ):
        raise ConfigError(
            f"lora.target_modules={targets!r} must be a list of projection names or all-linear."
        )
    if not targets:
        raise ConfigError(
            "lora.target_modules is empty; list the projections to adapt, e.g. [q_proj, v_proj], or all-linear."
        )
    unknown = sorted(set(lora.modules_to_save) - set(SAVABLE_MODULES))
    if unknown:
        raise ConfigError(
            f"lora.modules_to_save: {unknown} cannot be trained in full here; use {list(SAVABLE_MODULES)}."
        )


def _check_data(cfg: Any) -> None:
    data = cfg.data
    if data.source == "local" and not data.path:
        raise ConfigError("data=jsonl needs data.path=/path/to/train.jsonl (globs and comma lists work).")
    if data.source == "builtin" and not (data.builtin_examples or 0) > 0:
        raise ConfigError(
            f"data.source=builtin needs data.builtin_examples > 0 (got {data.builtin_examples})."
        )
    if data.source == "hub" and not (isinstance(data.path, str) and data.path):
        raise ConfigError("data.source=hub needs data.path=<dataset id> (one id, not a list).")
    if data.revision and data.source != "hub":
        raise ConfigError(
            f"data.revision applies to Hub datasets only; drop it for data.source={data.source}."
        )
    if data.packing_strategy == "wrapped":
        raise ConfigError(
            "data.packing_strategy=wrapped cuts examples mid-way and lets packed examples attend to each other "
            "across their boundaries; use bfd (or bfd_split to split long examples instead of truncating them)."
        )
    if data.packing_strategy not in {"bfd", "bfd_split"}:
        raise ConfigError(
            f"data.packing_strategy={data.packing_strategy!r} is not one of ['bfd', 'bfd_split']."
        )


def _check_memory(cfg: Any) -> None:
    if cfg.memory.gradient_checkpointing not in (True, False, "auto"):
        raise ConfigError(
            f"memory.gradient_checkpointing={cfg.memory.gradient_checkpointing!r} must be true, false or auto."
        )


def _check_eval(cfg: Any) -> None:
    steps = cfg.eval.steps
    if steps > 1 and steps != int(steps):
        raise ConfigError(
            f"eval.steps={steps} must be a whole number of steps, or a fraction of the run below 1."
        )


def _check_monitor(cfg: Any) -> None:
    for tracker in cfg.monitor.report_to:
        if tracker not in TRACKERS:
            raise ConfigError(
                f"monitor.report_to: {tracker!r} is not one of {list(TRACKERS)} (TensorBoard is always on)."
            )


def _check_across_groups(cfg: Any) -> None:
    """The rules that tie LoRA to the model's projections and to the base's quantization."""
    model, lora, memory = cfg.model, cfg.lora, cfg.memory
    if not lora.enabled:
        if memory.load_in_4bit:
            raise ConfigError(
                "lora=none (full fine-tuning) cannot train 4-bit quantized weights; add memory=bf16."
            )
        return
    targets = lora.target_modules
    known = (model.architecture or {}).get("model_type") in ("llama", "qwen2")  # their projection names
    if known and targets != "all-linear" and set(targets) - set(LLAMA_PROJECTIONS):
        raise ConfigError(
            f"lora.target_modules: {sorted(set(targets) - set(LLAMA_PROJECTIONS))} are not projections of "
            f"{model.name}; choose from {LLAMA_PROJECTIONS} or all-linear."
        )
    if lora.init in {"pissa", "loftq"} and memory.load_in_4bit:
        why = {
            "pissa": "PiSSA initialises from the SVD of full-precision weights, which 4-bit weights are not",
            "loftq": "LoftQ quantizes the full-precision base itself while it initialises the adapter",
        }[lora.init]
        raise ConfigError(
            f"lora.init={lora.init} cannot work on 4-bit weights: {why}; load the base unquantized "
            "(memory=bf16), or use lora.init=olora, which supports 4-bit weights."
        )


def check_environment(cfg: Any) -> None:
    """What this machine must hold for the config to run: the local model folder, chat-template file and data
    files it names, the trackers' packages, a 4-bit storage dtype FSDP/DeepSpeed can shard (under accelerate
    launch), and an optimizer the installed transformers knows. Raises ConfigError for the first one missing."""
    model, memory = cfg.model, cfg.memory
    looks_local = model.name.startswith(("/", "./", "../", "~")) or Path(model.name).expanduser().exists()
    if model.source == "hub" and looks_local and not Path(model.name).expanduser().is_dir():
        raise ConfigError(
            f"model.name={model.name} looks like a local path but is not an existing folder; give the folder "
            "that holds config.json and the weights, or a Hub id such as Qwen/Qwen2.5-1.5B-Instruct."
        )
    template = model.chat_template or ""
    if template.endswith(".jinja") and not Path(template).expanduser().is_file():
        raise ConfigError(f"model.chat_template: no file {template} (a .jinja value names a file).")
    if cfg.data.source == "local":
        local_files(cfg.data.path)
        if cfg.data.eval_path:
            local_files(cfg.data.eval_path, "data.eval_path")
    for tracker in cfg.monitor.report_to:
        if importlib.util.find_spec(tracker) is None:
            raise ConfigError(
                f"monitor.report_to=[{tracker}] needs the {tracker} package: pip install -e '.[{tracker}]'."
            )
    if (
        sharded_launch()
        and memory.load_in_4bit
        and memory.bnb_4bit_quant_storage != memory.bnb_4bit_compute_dtype
    ):
        raise ConfigError(
            f"FSDP/DeepSpeed shard 4-bit weights only when they are stored in the compute dtype: set "
            f"memory.bnb_4bit_quant_storage={memory.bnb_4bit_compute_dtype} (memory=fsdp_qlora does), "
            f"not {memory.bnb_4bit_quant_storage}."
        )
    optimizers = _optimizer_names()
    if cfg.optim.optimizer not in optimizers:
        raise ConfigError(
            f"optim.optimizer={cfg.optim.optimizer!r} is not a transformers optimizer; e.g. {optimizers[:6]}."
        )


def _optimizer_names() -> list[str]:
    """The optimizer names the installed transformers accepts (its `OptimizerNames` enum), read from the
    source of `transformers/training_args.py` without importing it: that import loads torch and takes
    ~8 s, most of a `python -m src.prepare` cache hit. Imported only if the enum is not found there."""
    spec = importlib.util.find_spec("transformers")
    source = Path(spec.origin).with_name("training_args.py") if spec and spec.origin else None
    if source is not None and source.is_file():
        for node in ast.parse(source.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ClassDef) and node.name == "OptimizerNames":
                names = [
                    item.value.value
                    for item in node.body
                    if isinstance(item, ast.Assign) and isinstance(item.value, ast.Constant)
                ]
                if names:
                    return names
    from transformers.training_args import OptimizerNames

    return [name.value for name in OptimizerNames]
