"""The console (src/console.py): one line per evaluation, naming the best so far only when this one is not."""

from __future__ import annotations

from types import SimpleNamespace

from src.console import EvalLines


def at(step: int, best_metric=None, best_step=None):
    return SimpleNamespace(
        global_step=step, max_steps=40, best_metric=best_metric, best_global_step=best_step
    )


def test_each_eval_line_names_the_best_only_when_it_did_not_improve():
    lines = EvalLines()
    lines.start(at(0))
    first = lines.line(at(10), 0.5)
    assert first.startswith("step 10/40 (25%) | eval loss 0.5000 | 0m ")
    assert lines.line(at(20), 0.4).startswith("step 20/40 (50%) | eval loss 0.4000 | ")
    assert lines.line(at(30), 0.45).startswith(
        "step 30/40 (75%) | eval loss 0.4500 (best 0.4000 at step 20) | "
    )
    assert lines.line(at(40), 0.4).startswith(
        "step 40/40 (100%) | eval loss 0.4000 (best 0.4000 at step 20) | "
    )


def test_a_resumed_run_starts_from_the_checkpoints_best():
    lines = EvalLines()
    lines.start(at(20, best_metric=0.3, best_step=10))
    assert "(best 0.3000 at step 10)" in lines.line(at(30), 0.35)
