"""Seed means, the noise floor and ties (sweep/noise.py)."""

from __future__ import annotations

import pytest

from sweep.noise import noise_floor, ranked, seed_means, tied_with_best

A, B, C, D = ({"lr": 1e-3, "r": 16}, {"lr": 2e-3, "r": 16}, {"r": 32, "lr": 1e-3}, {"lr": 1e-4, "r": 8})


def test_configurations_are_ranked_by_their_seed_mean_and_the_floor_is_the_repeats_spread():
    means = seed_means([(0, A, 0.096), (1, B, 0.0817), (2, A, 0.0805), (3, A, 0.0668), (4, D, 0.49)])
    assert [m.trials for m in means] == [(0, 2, 3), (1,), (4,)]
    assert means[0].mean == pytest.approx((0.096 + 0.0805 + 0.0668) / 3)
    assert means[0].spread == pytest.approx(0.096 - 0.0668)
    assert noise_floor(means) == pytest.approx(0.0292)  # the one configuration with seeds
    assert [m.trials[0] for m in ranked(means)] == [0, 1, 4]  # 0.0811 beats 0.0817: the mean, not a seed
    assert noise_floor(seed_means([(0, A, 0.1), (1, B, 0.2)])) is None


def test_three_configurations_within_the_floor_tie_and_one_outside_does_not():
    means = seed_means([(0, A, 0.080), (1, A, 0.084), (2, B, 0.083), (3, C, 0.0855), (4, D, 0.090)])
    floor = noise_floor(means)
    assert floor == pytest.approx(0.004)
    assert [m.trials[0] for m in tied_with_best(means, floor)] == [0, 2, 3]  # 0.082, 0.083, 0.0855
    assert [m.trials[0] for m in tied_with_best(means, None)] == [0]  # no floor yet: only the best
