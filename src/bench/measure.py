"""The bench's instruments: a variant's own memory, its step times, the tokens of its batches, the
machine's matmul throughput; and the result fields they give."""

from __future__ import annotations

import copy
import statistics
import time

import torch
from transformers import TrainerCallback

from src.bench.gradient_check import dropout_off, restore_dropout, trainable_gradients
from src.bench.harness import Rounds
from src.memory import peak_memory_gb, release_and_reset_peak


class StepMemory:
    """One variant's own memory while variants interleave (GiB): what its setup added to the process (model,
    optimizer, data) plus the largest rise of the process's memory within one of its steps (activations).
    `peak_gb` is the process's memory before the variant was set up plus that: its peak had it run alone."""

    def __init__(self):
        self.before = release_and_reset_peak()
        self.setup, self.step_rise, self._step_start = 0.0, 0.0, 0.0

    def setup_done(self) -> None:
        self.setup = release_and_reset_peak() - self.before

    def step_begin(self) -> None:
        self._step_start = release_and_reset_peak()

    def step_end(self) -> None:
        self.step_rise = max(self.step_rise, peak_memory_gb() - self._step_start)

    @property
    def training_gb(self) -> float:
        return self.setup + self.step_rise

    @property
    def peak_gb(self) -> float:
        return self.before + self.training_gb


class CountingCollator:
    """Wraps a collator to record (real tokens, processed positions) of every batch in `batches`, and a copy
    of the first batch in `first`."""

    def __init__(self, inner):
        self.inner, self.batches, self.first = inner, [], None

    def __call__(self, features):
        batch = self.inner(features)
        if self.first is None:  # the batch the gradient check replays
            self.first = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        real = sum(len(f["input_ids"]) for f in features)
        self.batches.append((real, batch["input_ids"].numel()))
        return batch


class StepTimer(TrainerCallback):
    """Times every optimizer step (seconds) and lets the other variants run one step after each; on the
    first (a warm-up step, never counted) switches LoRA dropout off and copies the gradients just before the
    optimizer step, for the gradient check."""

    def __init__(self, name: str, turns: Rounds, memory: StepMemory):
        self.name, self.turns, self.memory = name, turns, memory
        self.seconds, self._start = [], 0.0
        self.gradients: dict[str, torch.Tensor] | None = None
        self._dropout: list = []

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step == 0 and model is not None:
            self._dropout = dropout_off(model)
        self.memory.step_begin()
        self._start = time.perf_counter()

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if self.gradients is None and model is not None:
            self.gradients = trainable_gradients(model)
            restore_dropout(self._dropout)

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds.append(time.perf_counter() - self._start)
        self.memory.step_end()
        self.turns.step_done(self.name)


def summarize(
    name: str, seconds: list[float], batches: list[tuple[int, int]], warmup: int, memory: StepMemory
) -> dict:
    """The speed fields of one variant's result from its step times (s) and its batches' (real tokens,
    positions), the first `warmup` steps left out: medians per step, real tokens per second."""
    steps = seconds[warmup:]
    counted = batches[warmup : warmup + len(steps)]
    median = statistics.median(steps)
    real = statistics.median(b[0] for b in counted)
    positions = sum(b[1] for b in counted) / max(sum(b[0] for b in counted), 1)
    return {
        "variant": name,
        "median_step_seconds": median,
        "real_tokens_per_step": real,
        "tokens_per_second": real / median,
        "steps_per_second": 1 / median,
        "positions_per_real_token": positions,
        # the whole process (Python, torch, tokenizer, data included) as if this variant had run alone
        "peak_memory_gb": memory.peak_gb,
        "steps_measured": len(steps),
    }


def planned_gb(cfg, checkpointing: bool) -> float:
    """The memory planner's estimate (GiB) for this variant's settings (src/plan/estimate.py), to compare
    with its peak."""
    from src.compute import Compute
    from src.plan.estimate import GIB, plan

    planned = copy.deepcopy(cfg)
    planned.memory.gradient_checkpointing = checkpointing
    return plan(planned, on_cpu=Compute.of(cfg).on_cpu)["peak"] / GIB


def add_memory(result: dict, memory: StepMemory, planned: float | None, checkpointing: bool) -> dict:
    """What the variant itself used (its setup plus its largest step, StepMemory) and, for this project's
    step, the planner's estimate with its error relative to the measurement. (The planner models this
    project's trainer, whose fused LM head never builds full logits; the other variants do.)"""
    before_gb, used = memory.before, memory.training_gb
    result.update(
        gradient_checkpointing=checkpointing,
        memory_before_gb=before_gb,
        training_memory_gb=used,
        planned_memory_gb=planned,
        plan_error=(planned - used) / used if planned is not None and used > 0 else None,
    )
    return result


def matmul_flops_per_second(hidden: int, intermediate: int, tokens: int, dtype: torch.dtype) -> float:
    """Achieved GEMM throughput (FLOP/s) for the model's own MLP shape (tokens × hidden @ hidden ×
    intermediate): median of 5 after 2 warm-ups."""
    a = torch.randn(tokens, hidden, dtype=dtype)
    w = torch.randn(hidden, intermediate, dtype=dtype)
    for _ in range(2):
        a @ w
    times = []
    for _ in range(5):
        began = time.perf_counter()
        a @ w
        times.append(time.perf_counter() - began)
    return 2 * tokens * hidden * intermediate / statistics.median(times)
