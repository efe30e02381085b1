"""sweep/replay/grid_stats.py: noise floor, separation, effects, target, the rule against the grid."""

from __future__ import annotations

import math
import statistics
from types import SimpleNamespace

import pytest

from sweep.replay.grid_stats import (
    effects,
    learning_rate_against_rule,
    noise_floor,
    separation,
    target_regret,
)
from sweep.replay.loading import load_recording
from sweep.replay.recording import Curve, build_recording
from sweep.replay.strategy import grid_prior, model_overrides
from tests.sweep.replay.grids import BASELINE, GPU_GRID, RULE_SMOLLM2


@pytest.fixture(scope="module")
def gpu():
    return load_recording(GPU_GRID)


def test_the_noise_floor_is_the_median_seed_spread_and_a_grid_points_is_smaller(grid_csv, second_grid_csv):
    one, two = load_recording(grid_csv), load_recording(second_grid_csv)
    noise = noise_floor(one)
    (config,) = noise.configs
    assert config.seeds == 3 and config.spread == pytest.approx(0.003)
    assert config.config == {
        "optim.learning_rate": 2.5e-5,
        "lora.r": 8,
        "optim.num_train_epochs": 3,
    }  # trial 9
    assert config.spread_regret_percent == pytest.approx(0.003 / (BASELINE - one.best) * 100, rel=1e-6)
    assert noise.floor_regret_percent == config.spread_regret_percent
    assert noise.grid_point_seeds == 3
    assert noise.grid_point_floor_regret_percent == pytest.approx(noise.floor_regret_percent / math.sqrt(3))
    # the target: max(1%, the floor of a grid point, a mean of 3 seeds)
    spread_two = 0.02 / (BASELINE - two.best) * 100
    assert noise_floor(two).floor_regret_percent == pytest.approx(spread_two, rel=1e-6)
    assert target_regret(one) == 1.0 < spread_two / math.sqrt(3)
    assert target_regret(two) == pytest.approx(spread_two / math.sqrt(3), rel=1e-6)


def test_without_seeds_the_noise_floor_is_unknown_and_the_target_is_one_percent():
    curves = [
        Curve({"optim.learning_rate": lr, "seed": 42}, 24, [(24, 1.0, loss)])
        for lr, loss in ((1e-4, 0.3), (3e-4, 0.2), (1e-3, 0.25))
    ]
    recording = build_recording(curves, [0.7])
    assert noise_floor(recording) is None and target_regret(recording) == 1.0
    gap = separation(recording, rank=2)
    assert (gap.best, gap.ranked, gap.noise_floors) == (0.2, 0.25, None)
    assert gap.gap_regret_percent == pytest.approx(10.0)
    assert separation(recording, rank=4) is None


def test_seeds_of_two_configurations_give_the_median_spread():
    def seeded(lr: float, seed: int, loss: float) -> Curve:
        return Curve({"optim.learning_rate": lr, "seed": seed}, 24, [(24, 1.0, loss)])

    curves = [seeded(1e-3, 42, 0.10), seeded(1e-3, 43, 0.12), seeded(1e-4, 42, 0.20), seeded(1e-4, 43, 0.26)]
    curves += [seeded(3e-4, 42, 0.15)]
    recording = build_recording(curves, [0.7])  # best: the mean 0.11 of 1e-3's two seeds
    noise = noise_floor(recording)
    assert [c.spread for c in noise.configs] == [pytest.approx(0.06), pytest.approx(0.02)]  # sorted by config
    assert noise.floor_regret_percent == pytest.approx(100 * 0.04 / (0.7 - 0.11))
    assert noise.grid_point_seeds == 2
    assert noise.grid_point_floor_regret_percent == pytest.approx(100 * 0.04 / (0.7 - 0.11) / math.sqrt(2))


def test_the_gpu_grid_noise_floor_and_rule_position(gpu):
    """benchmarks/grid_gpu.csv (no model columns: SmolLM2-135M): seeds of three configurations spread by
    0.0026, 0.0012 and 0.0074, median 0.40% of the possible improvement; the rule's 1.32e-3 is 1.32 × the
    grid best's 1e-3, the grid's top edge, above the grid."""
    assert gpu.model_assumed and gpu.best_config == (1e-3, 16, 3)
    noise = noise_floor(gpu)
    assert [round(c.spread, 4) for c in noise.configs] == [0.0026, 0.0012, 0.0074]
    assert noise.floor_regret_percent == pytest.approx(0.0026432 / (0.7117322 - 0.0550783) * 100, rel=1e-4)
    assert round(noise.floor_regret_percent, 2) == 0.40
    position = learning_rate_against_rule(gpu, grid_prior(model_overrides(gpu.model)))
    assert position.rule == pytest.approx(RULE_SMOLLM2, rel=1e-9) and position.best == 1e-3
    assert position.rule_over_best == pytest.approx(RULE_SMOLLM2 / 1e-3, rel=1e-9)
    assert position.best_at_grid_edge == "top" and not position.rule_in_grid
    assert position.grid_range == [1e-5, 1e-3]
    assert position.rule_from.startswith("1.32e-3 from tinker-cookbook get_lr for llama, hidden 576")


def test_the_rule_inside_the_grid_and_the_best_at_its_bottom_edge(grid_csv):
    recording = load_recording(grid_csv)  # best at 4e-4, inside 1e-5…1e-3
    inside = learning_rate_against_rule(
        recording, SimpleNamespace(learning_rate=2e-4, describe=lambda: "2e-4")
    )
    assert inside.rule_in_grid and inside.best_at_grid_edge is None and inside.rule_over_best == 0.5
    recording.curves = {c: v for c, v in recording.curves.items() if c[0] >= 4e-4}  # 4e-4 is now the bottom
    bottom = learning_rate_against_rule(
        recording, SimpleNamespace(learning_rate=2e-4, describe=lambda: "2e-4")
    )
    assert bottom.best_at_grid_edge == "bottom" and not bottom.rule_in_grid


def test_separation_and_effects_of_each_key_on_the_gpu_grid(gpu):
    """Best vs 10th best in noise floors, and each key's effect with the others fixed, on grid_gpu.csv."""
    gap = separation(gpu)
    losses = sorted(curve.best for curve in gpu.curves.values())
    assert gap.best == losses[0] == gpu.best and gap.ranked == losses[9] and gap.rank == 10
    scale = gpu.baseline - gpu.best
    assert gap.gap_regret_percent == pytest.approx(100 * (losses[9] - losses[0]) / scale)
    floor = noise_floor(gpu).grid_point_floor_regret_percent  # the grid points are 3-seed means
    assert gap.noise_floors == pytest.approx(gap.gap_regret_percent / floor)
    assert round(gap.noise_floors, 1) == 7.5
    found = effects(gpu)
    assert set(found) == {"optim.learning_rate", "lora.r", "optim.num_train_epochs"}  # warmup: one value
    rows = {row.value: row for row in found["optim.learning_rate"]}
    others = {config[1:] for config in gpu.curves}  # every (rank, epochs) recorded at every learning rate
    assert all(row.groups == len(others) for row in rows.values())
    assert sum(row.wins for row in rows.values()) == len(others)  # no ties
    assert (rows[1e-3].wins, rows[4e-4].wins) == (7, 5)
    assert rows[1e-3].best == gpu.best and rows[1e-3].median_excess == 0.0
    for value, row in rows.items():
        excess = [
            gpu.curves[(value, *rest)].best - min(gpu.curves[c].best for c in gpu.curves if c[1:] == rest)
            for rest in others
        ]
        assert row.median_excess == pytest.approx(statistics.median(excess))
        assert row.median_excess_regret_percent == pytest.approx(100 * statistics.median(excess) / scale)
    assert separation(gpu, rank=len(gpu.curves) + 1) is None


def test_a_key_without_a_complete_group_has_no_effect():
    """lr and rank recorded on a diagonal: no group of the other key holds both values of either."""
    curves = [
        Curve({"optim.learning_rate": lr, "lora.r": r, "seed": 42}, 24, [(24, 1.0, loss)])
        for lr, r, loss in ((1e-4, 8, 0.3), (1e-3, 16, 0.2))
    ]
    assert effects(build_recording(curves, [0.7])) == {}
