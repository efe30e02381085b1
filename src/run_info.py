"""What a run tells the user: the pre-training summary, metrics.json, and the hparams TensorBoard lists."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from src.atomic import write_text_atomic
from src.compute import Compute
from src.config import ConfigError, TrainConfig
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


def summary_lines(
    cfg: TrainConfig, model, total_steps: int, warmup_steps: int, compute: Compute
) -> list[str]:
    """The run summary printed before training: model, parameters, batch, schedule, device and precision."""
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
        f"device: {compute.device} | precision: {compute.precision} "
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


def eval_history(log_history: list[dict[str, Any]], planned_steps: int) -> list[dict[str, Any]]:
    """Each eval with its phase of the schedule and the tokens trained on: the curve the sweep replays."""
    return [
        {
            "step": e["step"],
            "schedule_fraction": e["step"] / planned_steps,
            "tokens_seen": e.get("num_input_tokens_seen"),
            "eval_loss": e["eval_loss"],
        }
        for e in log_history
        if "eval_loss" in e
    ]


def run_metrics(
    state,
    *,
    train_loss: float,
    baseline: dict[str, Any],
    task_metric: str,
    task_after: dict[str, float],
    pruned: bool,
    train_seconds: float,
    step_seconds: float,
    peak_memory_gb: float,
) -> dict[str, Any]:
    """metrics.json of a run that trained to its end (or was pruned), from the trainer's final `state`
    (transformers' TrainerState): the best eval loss is the trainer's best metric where it tracked one (the
    checkpoint load_best_model_at_end restores), else the lowest eval. Losses in nats per labelled token,
    seconds of wall time; `step_seconds` is the time inside optimizer steps (the throughput's denominator)."""
    history = eval_history(state.log_history, state.max_steps)
    best = min(history, key=lambda e: e["eval_loss"]) if history else {"step": 0, "eval_loss": math.nan}
    best_loss = state.best_metric if state.best_metric is not None else best["eval_loss"]
    tokens = state.num_input_tokens_seen
    return {
        "status": "pruned" if pruned else "finished",
        "best_eval_loss": float(best_loss),
        "best_step": best["step"],
        "final_eval_loss": float(history[-1]["eval_loss"]) if history else math.nan,
        "baseline_eval_loss": baseline.get("eval_loss"),
        "global_step": state.global_step,
        "planned_steps": state.max_steps,
        "stopped_early": state.global_step < state.max_steps,
        "train_loss": train_loss,
        "train_tokens": tokens,
        "train_tokens_per_second": tokens / step_seconds if step_seconds else 0.0,
        "train_seconds": train_seconds,
        "peak_memory_gb": peak_memory_gb,
        "task_metric": {"name": task_metric, "before": baseline.get("task", {}), "after": task_after},
        "eval_history": history,
    }


def result_line(metrics: dict[str, Any]) -> str:
    """The one line a finished run ends with: best eval loss, baseline, steps, throughput, peak memory."""
    baseline = metrics["baseline_eval_loss"]
    return (
        f"best eval loss {metrics['best_eval_loss']:.4f} at step {metrics['best_step']} "
        f"(baseline {'not measured' if baseline is None else f'{baseline:.4f}'}) | "
        f"{metrics['global_step']} steps{' (stopped early)' if metrics['stopped_early'] else ''} | "
        f"{metrics['train_tokens_per_second']:.0f} tokens/s | peak memory {metrics['peak_memory_gb']:.2f} GB"
    )
