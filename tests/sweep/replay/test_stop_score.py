"""sweep/replay/stop_score.py, with sweep/replay/simulate.py's n_trials cap, noise repeats and stopping rule:
exact compute on a tiny grid (three learning rates, 24 steps each, the best seeded)."""

from __future__ import annotations

import dataclasses

import pytest

from sweep.replay.loading import curves_from_rows
from sweep.replay.recording import build_recording
from sweep.replay.score import Target
from sweep.replay.simulate import replay_sweep
from sweep.replay.stop_score import recommended, stop_rows
from tests.sweep.replay.grids import tiny_rows, tiny_strategy


@pytest.fixture(scope="module")
def tiny():
    return build_recording(*curves_from_rows(tiny_rows()))


def test_a_capped_sweep_runs_its_repeats_after_the_first_trial_and_stops_by_the_rule(tiny):
    """First trial at the best (seeded) point, its two repeats from seeds 43 and 44, then every search trial
    is within the floor (0.003): the rule (patience 2 after 4 trials) stops before trial 5; the cap, at 8."""
    trace = replay_sweep(tiny, tiny_strategy(4e-4), seed=0, max_steps=0)
    assert trace.ends == [24, 48, 72, 96, 120, 144, 168, 192]  # 8 trials of 24 steps, none pruned
    assert trace.repeats == [False, True, True, False, False, False, False, False] and not any(trace.drawn)
    seed_42 = tiny.runs[(4e-4,)][0].best
    assert trace.values[1:3] == pytest.approx([seed_42 + 0.001, seed_42 - 0.002])
    assert trace.stop_at == 5 and trace.reason.startswith("the last 2 search trials did not beat")
    assert trace.params[1] == trace.params[0] == {"optim.learning_rate": 4e-4}  # not dropped as duplicates
    fixed, stopped = stop_rows(tiny, tiny_strategy(4e-4), [trace], Target(0.15, 1.0))
    assert (fixed.sweep, fixed.median_trials, fixed.median_steps, fixed.median_runs_of_best) == (
        "fixed 8 trials",
        8,
        192,
        8.0,
    )
    assert (stopped.sweep, stopped.median_trials, stopped.median_steps, stopped.median_runs_of_best) == (
        "stopping rule",
        5,
        120,
        5.0,
    )
    assert stopped.median_share_of_fixed == stopped.share_of_median_fixed == 120 / 192
    assert stopped.regret.median == 0.0 and stopped.within_floor == 1.0 and stopped.stopped_seeds == 1
    assert stopped.drawn_repeats == 0.0 and stopped.grid_best_pruned_seeds == 0


def test_repeats_of_an_unseeded_first_trial_are_drawn_and_the_sweep_recommends_by_seed_mean(tiny):
    trace = replay_sweep(tiny, tiny_strategy(1e-3), seed=0, max_steps=0)
    assert trace.drawn == [False, True, True, False, False, False, False, False]
    assert trace.configs[:4] == [(1e-3,), (1e-3,), (1e-3,), (4e-4,)]
    assert recommended(trace, 3) == (1e-3,) and recommended(trace, 4) == (4e-4,)
    assert trace.stop_at == 6  # trial 3 improved on 1e-3 by more than its drawn floor; 4 and 5 did not
    (_, stopped) = stop_rows(tiny, tiny_strategy(1e-3), [trace], Target(0.15, 1.0))
    assert stopped.median_steps == 144 and stopped.drawn_repeats == 1.0


def test_without_a_cap_there_are_no_stop_rows_and_without_a_rule_only_the_fixed_one(tiny):
    plain = tiny_strategy(4e-4, n_trials=None, noise_repeats=0, stopping=None)
    trace = replay_sweep(tiny, plain, seed=0, max_steps=100)
    assert trace.ends == [24, 48, 72, 96, 120] and not any(trace.repeats) and trace.stop_at is None
    assert stop_rows(tiny, plain, [trace], Target(0.15, 1.0)) == []
    capped = dataclasses.replace(plain, n_trials=3)
    rows = stop_rows(tiny, capped, [replay_sweep(tiny, capped, 0, 0)], Target(0.15, 1.0))
    assert [row.sweep for row in rows] == ["fixed 3 trials"] and rows[0].median_steps == 72


def test_the_grid_seeds_own_curves_replay_its_run_not_the_mean(tiny):
    trace = replay_sweep(tiny, tiny_strategy(4e-4), seed=0, max_steps=0, curves="seed")
    assert trace.values[0] == tiny.runs[(4e-4,)][0].best != tiny.curves[(4e-4,)].best
