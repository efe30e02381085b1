"""What a run tells the user (src/run_info.py): metrics.json from the trainer's state, the result line, the
run summary's device line, and the HPARAMS columns."""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch

from src.compute import Compute
from src.run_info import eval_history, hparams, lora_variant, result_line, run_metrics, summary_lines
from tests.conftest import TINY, typed_config


def state(best_metric=None, global_step=8, max_steps=8):
    """A TrainerState's fields run_metrics reads: evals at steps 4 and 8, 1,000 tokens trained on."""
    log_history = [
        {"step": 2, "loss": 2.0},
        {"step": 4, "eval_loss": 1.5, "num_input_tokens_seen": 500},
        {"step": 8, "eval_loss": 1.7, "num_input_tokens_seen": 1000},
    ]
    return SimpleNamespace(
        log_history=log_history,
        max_steps=max_steps,
        global_step=global_step,
        best_metric=best_metric,
        num_input_tokens_seen=1000,
    )


def metrics_of(trainer_state, **changes):
    arguments = {
        "train_loss": 1.9,
        "baseline": {"eval_loss": 2.5, "task": {"exact_match": 0.0}},
        "task_metric": "exact_match",
        "task_after": {"exact_match": 0.5},
        "pruned": False,
        "train_seconds": 10.0,
        "step_seconds": 4.0,
        "peak_memory_gb": 1.5,
    }
    return run_metrics(trainer_state, **{**arguments, **changes})


def test_eval_history_gives_each_eval_its_phase_and_tokens():
    assert eval_history(state().log_history, 8) == [
        {"step": 4, "schedule_fraction": 0.5, "tokens_seen": 500, "eval_loss": 1.5},
        {"step": 8, "schedule_fraction": 1.0, "tokens_seen": 1000, "eval_loss": 1.7},
    ]


def test_metrics_take_the_lowest_eval_unless_the_trainer_tracked_its_best():
    metrics = metrics_of(state())
    assert (metrics["best_eval_loss"], metrics["best_step"], metrics["final_eval_loss"]) == (1.5, 4, 1.7)
    assert metrics["train_tokens_per_second"] == 250.0  # 1,000 tokens over 4 s inside optimizer steps
    assert metrics["task_metric"] == {
        "name": "exact_match",
        "before": {"exact_match": 0.0},
        "after": {"exact_match": 0.5},
    }
    assert (metrics["status"], metrics["stopped_early"], metrics["baseline_eval_loss"]) == (
        "finished",
        False,
        2.5,
    )
    assert metrics_of(state(best_metric=1.4))["best_eval_loss"] == 1.4  # load_best_model_at_end's
    stopped = metrics_of(state(global_step=6), pruned=True)
    assert (stopped["status"], stopped["stopped_early"], stopped["planned_steps"]) == ("pruned", True, 8)


def test_a_run_without_evals_has_no_best_and_no_throughput_without_time():
    empty = state()
    empty.log_history = []
    metrics = metrics_of(empty, step_seconds=0.0)
    assert math.isnan(metrics["best_eval_loss"]) and metrics["best_step"] == 0
    assert metrics["train_tokens_per_second"] == 0.0


def test_the_result_line():
    assert result_line(metrics_of(state())) == (
        "best eval loss 1.5000 at step 4 (baseline 2.5000) | 8 steps | 250 tokens/s | peak memory 1.50 GB"
    )
    assert "(baseline not measured) | 6 steps (stopped early)" in result_line(
        metrics_of(state(global_step=6), baseline={})
    )


def test_the_summary_names_the_decided_device_and_precision():
    cfg = typed_config(TINY)
    model = torch.nn.Linear(4, 2)  # 10 parameters, all trainable
    lines = summary_lines(cfg, model, 12, 1, Compute(on_cpu=False, dtype=torch.bfloat16))
    assert lines[1] == "trainable params: 10 || all params: 10 || trainable%: 100.0000"
    assert lines[3] == "steps: 12 total, 1 warmup | schedule: cosine | learning_rate: 0.0001"
    assert lines[4].startswith("device: cuda | precision: bfloat16 | gradient checkpointing:")


def test_hparams_columns_and_the_lora_variant_name():
    columns = hparams(typed_config([*TINY, "lora=r8", "lora.use_dora=true"]))
    assert (columns["lora_r"], columns["lora_variant"], columns["effective_batch"]) == (8, "dora", 2)
    assert lora_variant(typed_config([*TINY, "lora=none"]).lora) == "none"
