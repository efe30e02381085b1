"""sweep/replay/score.py: a strategy's row from its replayed sweeps."""

from __future__ import annotations

import math
import random
from types import SimpleNamespace

import pytest

from sweep.replay.recording import Curve, build_recording
from sweep.replay.score import Target, deciles, summarize
from sweep.replay.simulate import SweepTrace


def interpolated(values: list[float], q: float) -> float:
    """The percentile the replay printed before it used statistics.quantiles: linear between ranks."""
    ordered = sorted(values)
    index = (len(ordered) - 1) * q
    low, high = math.floor(index), math.ceil(index)
    return ordered[low] + (ordered[high] - ordered[low]) * (index - low)


def test_deciles_interpolate_between_the_sorted_values():
    assert deciles([0.0, 10.0]) == pytest.approx([1.0, 2, 3, 4, 5, 6, 7, 8, 9])
    assert deciles([3.0]) == [3.0] * 9  # one seed: every decile is its value
    rng = random.Random(0)
    for size in (2, 3, 5, 20, 100):
        values = [rng.uniform(0, 10) for _ in range(size)]
        found = deciles(values)
        assert found[0] == pytest.approx(interpolated(values, 0.1), rel=1e-12, abs=1e-12)
        assert found[-1] == pytest.approx(interpolated(values, 0.9), rel=1e-12, abs=1e-12)


def grid():
    """Three configurations of 100 steps each: best 0.1 (lr 1e-3), then 0.2 and 0.4; baseline 0.6."""
    curves = [
        Curve({"optim.learning_rate": lr, "seed": 42}, 100, [(50, 0.5, loss + 0.1), (100, 1.0, loss)])
        for lr, loss in ((1e-3, 0.1), (1e-4, 0.2), (1e-5, 0.4))
    ]
    return build_recording(curves, [0.6])


def test_a_row_holds_regret_per_budget_trials_pruning_and_the_target():
    recording = grid()  # regret: 0.1 -> 0%, 0.2 -> 20%, 0.4 -> 60%; 300 steps in all
    best, middle, worst = (1e-3,), (1e-4,), (1e-5,)
    traces = [
        SweepTrace([100, 200], [0.2, 0.1], [middle, best], [False, False], [{}, {}]),
        SweepTrace(
            [50, 150, 250], [None, 0.4, 0.2], [best, worst, middle], [True, False, False], [{}, {}, {}]
        ),
        SweepTrace([100], [0.4], [worst], [False], [{"optim.learning_rate": "below"}]),
    ]
    strategy = SimpleNamespace(name="s", params={"optim.learning_rate": "x", "lora.r": "y"})
    row = summarize(recording, strategy, traces, [1 / 3, 1.0], Target(0.5, 25.0))
    assert list(row.regret) == [1 / 3, 0.5, 1.0]  # the budgets and the target's, in order
    # within 100 steps: 20%, none yet (100%), 60%; within 150: 20, 60, 60; within 300: 0, 20, 60
    assert row.regret[1 / 3].median == pytest.approx(60.0) and row.regret[1 / 3].p90 == pytest.approx(92.0)
    assert row.regret[0.5].median == pytest.approx(60.0) and row.regret[0.5].p90 == pytest.approx(60.0)
    assert row.regret[1.0].median == pytest.approx(20.0) and row.regret[1.0].p90 == pytest.approx(52.0)
    assert row.median_trials == 2 and row.pruned_share == pytest.approx((0 + 1 / 3 + 0) / 3)
    assert row.grid_best_pruned_seeds == 1 and row.seeds == 3
    assert row.outside_grid == {"optim.learning_rate": {"below": 1 / 6, "above": 0.0}}  # lora.r: not recorded
    assert not row.target_met  # median 60% at 0.5 > 25%
    assert (
        summarize(recording, strategy, traces, [1.0], Target(1.0, 20.0)).target_met is False
    )  # 1 of 3 pruned
    met = summarize(recording, strategy, traces[:1] * 20, [1.0], Target(1.0, 20.0))
    assert met.target_met and met.grid_best_pruned_seeds == 0


def test_the_target_allows_the_best_pruned_in_one_of_twenty_seeds():
    recording = grid()
    strategy = SimpleNamespace(name="s", params={})
    found = SweepTrace([100], [0.1], [(1e-3,)], [False], [{}])
    pruned = SweepTrace([50, 150], [None, 0.1], [(1e-3,), (1e-3,)], [True, False], [{}, {}])
    assert summarize(recording, strategy, [pruned] + [found] * 19, [1.0], Target(1.0, 1.0)).target_met
    assert not summarize(recording, strategy, [pruned] * 2 + [found] * 18, [1.0], Target(1.0, 1.0)).target_met


def test_the_json_row_keys_each_budget():
    recording = grid()
    trace = SweepTrace([100], [0.2], [(1e-4,)], [False], [{}])
    row = summarize(recording, SimpleNamespace(name="s", params={}), [trace], [0.25, 0.5], Target(0.5, 1.0))
    assert list(row.to_json()) == [
        "strategy",
        "seeds",
        "median_regret@0.25",
        "p90_regret@0.25",
        "median_regret@0.5",
        "p90_regret@0.5",
        "median_trials@max",
        "pruned_share",
        "grid_best_pruned_seeds",
        "outside_grid",
        "target_met",
    ]
    assert row.to_json()["median_regret@0.5"] == pytest.approx(20.0)
