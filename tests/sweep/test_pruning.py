"""Pruning glue (sweep/pruning.py): the step each eval is reported at."""

from __future__ import annotations

import pytest

from sweep.pruning import report_step


@pytest.mark.parametrize("max_steps", [111, 8, 80])
def test_schedule_phases_snap_to_the_eval_grid_whatever_the_length(max_steps):
    every = -(-max_steps // 8)  # transformers evaluates every ceil(0.125 x max_steps) steps
    evals = list(range(every, max_steps + 1, every))
    phases = [report_step(step, max_steps, "schedule", 0.125) for step in evals]
    assert phases == [12, 25, 38, 50, 62, 75, 88, 100][: len(phases)]


def test_a_37_step_trial_reports_at_the_phases_a_111_step_one_does():
    phases = [report_step(step, 37, "schedule", 0.125) for step in range(5, 31, 5)]  # evals every 5 steps
    assert phases == [12, 25, 38, 50, 62, 75]


def test_unsnapped_phases_differ_between_lengths_and_steps_are_steps():
    assert report_step(5, 37, "schedule") == 14 and report_step(14, 111, "schedule") == 13
    assert report_step(14, 111, "step") == 14
