"""A sweep's own noise: configurations ranked by their seed mean, the spread of one configuration's seeds as
the study's noise floor, and which configurations lie within that floor of the best (tied).

The floor has the same definition as a recorded grid's (sweep/replay/grid_stats.py): the spread (max - min)
of one configuration's objective over seeds. Pure functions over told trials, so the live sweeper, the report
and the replay compute the same figures."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

Config = tuple[tuple[str, Any], ...]  # a trial's parameters as a hashable, order-free key


def config_key(params: dict[str, Any]) -> Config:
    """The parameters of a trial as a hashable key; two trials with equal params are one configuration."""
    return tuple(sorted((str(k), v) for k, v in params.items()))


@dataclass(frozen=True)
class SeedMean:
    """One configuration's objective over its seeds (complete trials only)."""

    config: Config
    values: tuple[float, ...]
    trials: tuple[int, ...]  # the trial numbers, first the one the sampler (or the queue) chose

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def spread(self) -> float:
        """max - min of the seeds' values; 0.0 for one seed."""
        return max(self.values) - min(self.values)


def seed_means(trials: Iterable[tuple[int, dict[str, Any], float]]) -> list[SeedMean]:
    """Group complete trials `(number, params, value)` by configuration, in the order each first appears."""
    groups: dict[Config, tuple[list[float], list[int]]] = {}
    for number, params, value in trials:
        values, numbers = groups.setdefault(config_key(params), ([], []))
        values.append(float(value))
        numbers.append(int(number))
    return [SeedMean(key, tuple(v), tuple(n)) for key, (v, n) in groups.items()]


def noise_floor(means: Sequence[SeedMean]) -> float | None:
    """The study's noise floor: the median spread over configurations run with two or more seeds (in a sweep,
    the re-runs of its best); None before any configuration has two seeds."""
    spreads = [m.spread for m in means if len(m.values) >= 2]
    return statistics.median(spreads) if spreads else None


def ranked(means: Sequence[SeedMean], minimize: bool = True) -> list[SeedMean]:
    """Configurations best first by seed mean (ties broken by the earliest trial)."""
    return sorted(means, key=lambda m: ((m.mean if minimize else -m.mean), m.trials[0]))


def tied_with_best(means: Sequence[SeedMean], floor: float | None, minimize: bool = True) -> list[SeedMean]:
    """The configurations whose seed mean lies within `floor` of the best one's (the best included), best
    first; only the best when the floor is unknown."""
    order = ranked(means, minimize)
    if not order:
        return []
    if floor is None:
        return order[:1]
    best = order[0].mean
    return [m for m in order if abs(m.mean - best) <= floor]
