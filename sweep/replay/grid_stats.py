"""What a recorded grid can tell apart: its noise floor, how far its top configurations lie apart, what each
key does with the others fixed, the target a strategy should reach on it, and where the published
learning-rate rule sits against its best configuration."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sweep.replay.recording import Recording


@dataclass
class SeedSpread:
    """The best eval loss of every seed of one configuration, and their spread (max - min)."""

    config: dict[str, Any]
    seeds: int
    best_eval_losses: list[float]
    spread: float
    spread_regret_percent: float


@dataclass
class NoiseFloor:
    """Spread of the best eval loss across seeds of the same configuration, in regret units: the median
    spread is the floor of one run; a grid point that averages n seeds has the floor over sqrt(n)."""

    configs: list[SeedSpread]
    floor_regret_percent: float
    grid_point_seeds: float  # median seeds of the seeded configurations' grid points
    grid_point_floor_regret_percent: float


@dataclass
class Separation:
    """How far the `rank`-th best configuration lies behind the best."""

    rank: int
    best: float
    ranked: float
    gap: float
    gap_regret_percent: float
    noise_floors: float | None  # the gap over the grid points' noise floor; None without seeds


@dataclass
class Effect:
    """One value of a varied key, over the groups of configurations that agree on every other key and
    recorded each value of this one."""

    value: Any
    wins: int  # groups in which this value has the lowest best eval loss
    groups: int
    median_excess: float  # over the group's best, in loss units
    median_excess_regret_percent: float
    best: float


@dataclass
class RulePosition:
    """The published rule's learning rate for the grid's model against the grid's best and its range."""

    rule: float
    rule_from: str
    best: float
    rule_over_best: float
    grid_range: list[float]
    rule_in_grid: bool
    best_at_grid_edge: str | None  # "top", "bottom" or None


def noise_floor(recording: Recording) -> NoiseFloor | None:
    """Per configuration recorded with several seeds, max - min of their best eval losses; the floor of one
    run is their median. A grid point that averages n seeds (build_recording) is known about sqrt(n) times
    better: the grid point's floor is the floor over sqrt(median n of the seeded configurations), the
    standard error of a mean of n independent runs; it equals the one-run floor when grid points are single
    runs. None without seeds."""
    spreads = []
    for config, values in sorted(recording.repeats.items()):
        if len(values) >= 2:
            spread = max(values) - min(values)
            spreads.append(
                SeedSpread(recording.named(config), len(values), values, spread, recording.in_regret(spread))
            )
    if not spreads:
        return None
    floor = statistics.median(s.spread_regret_percent for s in spreads)
    averaged = statistics.median(
        recording.curves[config].seeds for config, values in recording.repeats.items() if len(values) >= 2
    )
    return NoiseFloor(spreads, floor, averaged, floor / math.sqrt(averaged))


def separation(recording: Recording, rank: int = 10) -> Separation | None:
    """How far the `rank`-th best configuration lies behind the best, in loss and regret units, and as a
    multiple of the grid points' noise floor (a grid whose top configurations lie within the noise cannot
    tell strategies apart). None with fewer configurations than `rank`."""
    losses = sorted(curve.best for curve in recording.curves.values())
    if len(losses) < rank:
        return None
    gap = losses[rank - 1] - losses[0]
    noise = noise_floor(recording)
    gap_regret = recording.in_regret(gap)
    floors = gap_regret / noise.grid_point_floor_regret_percent if noise else None
    return Separation(rank, losses[0], losses[rank - 1], gap, gap_regret, floors)


def effects(recording: Recording) -> dict[str, list[Effect]]:
    """What each varied key does, the others held fixed (key_effect), for every key recorded at two or
    more values in at least one complete group."""
    found = {}
    for index, key in enumerate(recording.keys):
        if rows := key_effect(recording, index):
            found[key] = rows
    return found


def key_effect(recording: Recording, index: int) -> list[Effect]:
    """The configurations are grouped by all keys but the one at `index`; in every group that recorded
    each value of the key, the value with the lowest best eval loss wins, and every value's excess over
    its group's best is taken. Empty when the key has one value or no group is complete."""
    values = sorted({config[index] for config in recording.curves})
    if len(values) < 2:
        return []
    groups: dict[tuple, dict[Any, float]] = defaultdict(dict)
    for config, curve in recording.curves.items():
        groups[config[:index] + config[index + 1 :]][config[index]] = curve.best
    complete = [group for group in groups.values() if len(group) == len(values)]
    if not complete:
        return []
    rows = []
    for value in values:
        excess = [group[value] - min(group.values()) for group in complete]
        rows.append(
            Effect(
                value=value,
                wins=sum(group[value] == min(group.values()) for group in complete),
                groups=len(complete),
                median_excess=statistics.median(excess),
                median_excess_regret_percent=recording.in_regret(statistics.median(excess)),
                best=min(group[value] for group in complete),
            )
        )
    return rows


def target_regret(recording: Recording) -> float:
    """The median regret a strategy should reach: max(1%, the noise floor of the grid's points, which are
    seed means where seeds were recorded); 1% without seeds."""
    noise = noise_floor(recording)
    return max(1.0, noise.grid_point_floor_regret_percent) if noise else 1.0


def learning_rate_against_rule(recording: Recording, prior: Any) -> RulePosition | None:
    """Where the published rule's learning rate for the grid's model (`prior`, sweep/lr_prior.py) sits
    against the learning rate of the grid's best configuration, and against the grid's range."""
    bounds = recording.value_range("optim.learning_rate")
    if bounds is None:
        return None
    best = recording.named(recording.best_config).get(
        "optim.learning_rate", recording.fixed.get("optim.learning_rate")
    )
    low, high = bounds
    edge = None
    if low < high:
        edge = "top" if math.isclose(best, high) else "bottom" if math.isclose(best, low) else None
    return RulePosition(
        rule=prior.learning_rate,
        rule_from=prior.describe(),
        best=best,
        rule_over_best=prior.learning_rate / best,
        grid_range=[low, high],
        rule_in_grid=low <= prior.learning_rate <= high,
        best_at_grid_edge=edge,
    )
