"""src.bench.measure: the result fields from step times, batches and memory readings."""

from __future__ import annotations

import pytest
import torch

from src.bench.measure import CountingCollator, StepMemory, add_memory, summarize


def readings(before: float, setup: float, step_rise: float) -> StepMemory:
    memory = StepMemory()
    memory.before, memory.setup, memory.step_rise = before, setup, step_rise
    return memory


def test_summarize_leaves_out_the_warmup_steps():
    seconds = [9.0, 1.0, 2.0, 4.0]  # the first (9 s) is a warm-up step
    batches = [(500, 512), (10, 16), (20, 32), (30, 32)]  # (real tokens, positions) per step
    result = summarize("bare", seconds, batches, warmup=1, memory=readings(1.0, 0.5, 0.25))
    assert result == {
        "variant": "bare",
        "median_step_seconds": 2.0,
        "real_tokens_per_step": 20,
        "tokens_per_second": 10.0,
        "steps_per_second": 0.5,
        "positions_per_real_token": pytest.approx(80 / 60),
        "peak_memory_gb": 1.75,
        "steps_measured": 3,
    }


def test_add_memory_compares_the_plan_with_what_the_variant_used():
    memory = readings(before=1.0, setup=2.0, step_rise=0.5)
    assert (memory.training_gb, memory.peak_gb) == (2.5, 3.5)
    result = add_memory({}, memory, planned=3.0, checkpointing=True)
    assert result == {
        "gradient_checkpointing": True,
        "memory_before_gb": 1.0,
        "training_memory_gb": 2.5,
        "planned_memory_gb": 3.0,
        "plan_error": pytest.approx(0.2),
    }
    assert add_memory({}, memory, planned=None, checkpointing=False)["plan_error"] is None


def test_counting_collator_counts_real_tokens_and_padded_positions_and_keeps_the_first_batch():
    def pad_to_four(features):
        ids = [f["input_ids"] + [0] * (4 - len(f["input_ids"])) for f in features]
        return {"input_ids": torch.tensor(ids)}

    collate = CountingCollator(pad_to_four)
    first = collate([{"input_ids": [1, 2, 3]}, {"input_ids": [4]}])
    collate([{"input_ids": [5, 6, 7, 8]}])
    assert collate.batches == [(4, 8), (4, 4)]
    first["input_ids"][0, 0] = 99  # the trainer may change its batch in place: the copy stays as collated
    assert collate.first["input_ids"].tolist() == [[1, 2, 3, 0], [4, 0, 0, 0]]
