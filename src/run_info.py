"""What a run tells the user: the pre-training summary, metrics.json, and the hparams TensorBoard lists."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from src.atomic import write_text_atomic
from src.config import ConfigError, trains_on_cpu
from src.distributed import world_size
from src.model import alpha_for, count_parameters


def effective_batch_line(memory) -> str:
    n = world_size()
    b, g = memory.per_device_train_batch_size, memory.gradient_accumulation_steps
    return f"effective batch = {b} (micro-batch) × {g} (grad accumulation) × {n} (processes) = {b * g * n}"


def parameters_line(model) -> str:
    """The line PEFT's print_trainable_parameters prints, as a string we can log."""
    trainable, total = count_parameters(model)
    return f"trainable params: {trainable:,} || all params: {total:,} || trainable%: {100 * trainable / total:.4f}"


def summary_lines(cfg, model, total_steps: int, warmup_steps: int, dtype: torch.dtype) -> list[str]:
    device = "cpu" if trains_on_cpu(cfg) else "cuda"
    quant = (
        f"{cfg.memory.bnb_4bit_quant_type} 4-bit (double quant={cfg.memory.bnb_4bit_use_double_quant})"
        if cfg.memory.load_in_4bit
        else "none"
    )
    lora = f"r={cfg.lora.r} alpha={alpha_for(cfg.lora)}" if cfg.lora.enabled else "none (full fine-tuning)"
    return [
        f"model: {cfg.model.name} | quantization: {quant} | LoRA: {lora}",
        parameters_line(model),
        effective_batch_line(cfg.memory),
        f"steps: {total_steps} total, {warmup_steps} warmup | schedule: {cfg.optim.lr_scheduler_type} "
        f"| learning_rate: {cfg.optim.learning_rate:g}",
        f"device: {device} | precision: {str(dtype).removeprefix('torch.')} "
        f"| gradient checkpointing: {cfg.memory.gradient_checkpointing}",
    ]


def hparams(cfg) -> dict[str, Any]:
    """The knobs a sweep compares, flat, for TensorBoard's HPARAMS tab."""
    return {
        "model": cfg.model.name,
        "learning_rate": cfg.optim.learning_rate,
        "lr_scheduler_type": cfg.optim.lr_scheduler_type,
        "warmup_ratio": cfg.optim.warmup_ratio,
        "weight_decay": cfg.optim.weight_decay,
        "num_train_epochs": cfg.optim.num_train_epochs,
        "lora_r": cfg.lora.r if cfg.lora.enabled else 0,
        "lora_alpha": alpha_for(cfg.lora) if cfg.lora.enabled else 0,
        "lora_variant": lora_variant(cfg.lora),
        "max_length": cfg.data.max_length,
        "packing": cfg.data.packing,
        "effective_batch": cfg.memory.per_device_train_batch_size
        * cfg.memory.gradient_accumulation_steps
        * world_size(),
        "load_in_4bit": cfg.memory.load_in_4bit,
        "seed": cfg.seed,
    }


def lora_variant(lora) -> str:
    """One HPARAMS column for the LoRA variant: "lora", or e.g. "dora+rslora+pissa" (none: full fine-tuning)."""
    if not lora.enabled:
        return "none"
    parts = [name for name, on in (("dora", lora.use_dora), ("rslora", lora.use_rslora)) if on]
    parts += [lora.init] if lora.init != "default" else []
    parts += ["all-linear"] if lora.target_modules == "all-linear" else []
    parts += [f"full:{m}" for m in lora.modules_to_save]
    return "+".join(parts) or "lora"


CHECKPOINT_FILES = ("trainer_state.json", "optimizer.pt", "scheduler.pt")


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoints whose every file was written, oldest first. transformers writes trainer_state.json last,
    so a checkpoint cut short by a killed process lacks it (or holds a truncated one) and is skipped."""
    found = []
    for folder in (run_dir / "checkpoints").glob("checkpoint-*"):
        if not folder.name.removeprefix("checkpoint-").isdigit():  # a copy or a stray folder: not ours
            continue
        try:
            json.loads((folder / "trainer_state.json").read_text())
        except (OSError, ValueError):
            continue
        if all((folder / name).is_file() for name in CHECKPOINT_FILES):
            found.append(folder)
    return sorted(found, key=lambda p: int(p.name.rsplit("-", 1)[1]))


def claim_run_dir(run_dir: Path, resume: bool) -> Path | None:
    """Make sure training into `run_dir` loses nothing; return the checkpoint to resume from, if any.

    A finished run (metrics.json) is never touched; an unfinished one is only continued with resume=true."""
    if (run_dir / "metrics.json").exists():
        raise ConfigError(
            f"{run_dir} already holds a finished run (metrics.json); choose another hydra.run.dir."
        )
    # an earlier attempt owned this folder: it wrote its record (or checkpoints), even if killed before a checkpoint
    started = (run_dir / "checkpoints").exists() or (run_dir / "config.yaml").exists()
    if resume:
        checkpoints = complete_checkpoints(run_dir)
        if not checkpoints:
            raise ConfigError(
                f"resume=true but {run_dir} has no complete checkpoint; point hydra.run.dir at the run to "
                "continue (its folder under outputs/runs), or drop resume=true to start afresh."
            )
        return checkpoints[-1]
    if started:
        raise ConfigError(
            f"{run_dir} holds an unfinished run; add resume=true to continue it, or choose another hydra.run.dir."
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    return None


def write_metrics(run_dir: Path, metrics: dict[str, Any]) -> Path:
    return write_text_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True))
