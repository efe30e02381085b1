"""The recorded grid: one curve per configuration (the mean of its seeds where it has several), the untrained
baseline it started from, and regret against the grid's best."""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sweep.curves import CONFIG_KEYS, SETTING_KEYS

RUN_KEYS = (*CONFIG_KEYS, *SETTING_KEYS)  # what defines a recorded configuration (the seed aside)
# The model of a curves CSV written before the model columns existed: every grid of that time (GPU, CPU)
# ran the default model.
ASSUMED_MODEL = {
    "model.name": "SmolLM2-135M-Instruct",
    "model.architecture.model_type": "llama",
    "model.architecture.hidden_size": 576,
}


def regret_percent(value: float | None, best: float, baseline: float) -> float:
    """Percent of the possible improvement (baseline - best) not achieved by `value` (the package
    docstring); 100 for no value (no trial finished)."""
    if value is None:
        return 100.0
    return 100.0 * (value - best) / (baseline - best)


class Eval(NamedTuple):
    """One recorded eval of a trial."""

    step: int  # the optimizer step it ran at
    fraction: float  # of the trial's schedule
    loss: float  # eval loss (a seed mean for a mean curve)


@dataclass
class Curve:
    """One recorded trial, or the mean of a configuration's seeds: its configuration and evals, in step
    order (plain (step, fraction, loss) tuples are taken as Evals)."""

    config: dict[str, Any]
    planned_steps: int
    evals: list[Eval]
    complete: bool = True  # false for a trial that was itself pruned: nothing is known after its last eval
    seeds: int = 1  # runs whose eval losses this curve averages
    # per eval, the seeds' mean best eval loss so far (a trial's objective); None for one run: the running
    # minimum of its evals. The minimum of mean losses would be higher where the seeds' minima fall at
    # different evals.
    best_so_far: list[float] | None = None

    def __post_init__(self) -> None:
        self.evals = [Eval(*e) for e in self.evals]

    def best_until(self, index: int) -> float:
        """The objective after the eval at `index`: best eval loss so far (seed mean for a mean curve)."""
        if self.best_so_far is not None:
            return self.best_so_far[index]
        return min(e.loss for e in self.evals[: index + 1])

    @property
    def best(self) -> float:
        return self.best_until(len(self.evals) - 1)


@dataclass
class Recording:
    """The recorded grid (one curve per configuration), the untrained baseline, the seed repeats and the
    model it was recorded on."""

    curves: dict[tuple, Curve]
    keys: tuple[str, ...]  # the config keys that vary across the grid
    fixed: dict[str, Any]  # the keys that do not
    baseline: float
    repeats: dict[tuple, list[float]] = field(default_factory=dict)  # config -> best loss of every seed
    runs: dict[tuple, list[Curve]] = field(default_factory=dict)  # config -> each seed's curve, grid seed 1st
    model: dict[str, Any] = field(default_factory=lambda: dict(ASSUMED_MODEL))  # MODEL_KEYS -> value
    model_assumed: bool = True  # no model columns: ASSUMED_MODEL

    @property
    def best(self) -> float:
        return min(curve.best for curve in self.curves.values())

    @property
    def best_config(self) -> tuple:
        return min(self.curves, key=lambda c: self.curves[c].best)

    @property
    def floor_loss(self) -> float | None:
        """The one-run noise floor in eval-loss units: the median spread (max - min) of the best eval loss
        over the configurations recorded with several seeds; None without seeds (grid_stats.noise_floor
        gives it in regret units)."""
        spreads = [max(v) - min(v) for v in self.repeats.values() if len(v) >= 2]
        return statistics.median(spreads) if spreads else None

    @property
    def total_steps(self) -> int:
        return sum(curve.planned_steps for curve in self.curves.values())

    def regret(self, value: float | None) -> float:
        """Percent of the possible improvement not achieved (regret_percent)."""
        return regret_percent(value, self.best, self.baseline)

    def in_regret(self, difference: float) -> float:
        """A difference of eval losses in regret units: percent of the possible improvement."""
        return 100.0 * difference / (self.baseline - self.best)

    def named(self, config: tuple) -> dict[str, Any]:
        """A configuration as key -> value."""
        return dict(zip(self.keys, config))

    def value_range(self, key: str) -> tuple[float, float] | None:
        """The lowest and highest recorded value of a numeric key (one value for a key the grid fixes);
        None for a key the grid did not record or that is not a number."""
        if key in self.keys:
            values = [config[self.keys.index(key)] for config in self.curves]
        else:
            values = [self.fixed.get(key)]
        if not values or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            return None
        return min(values), max(values)


def mean_curve(runs: list[Curve]) -> Curve:
    """The grid point of a configuration run with several seeds: at each eval, the mean eval loss of the
    runs that finished with the same evals as the first (the grid's own seed), reported to the pruner, and
    the mean of their best eval loss so far, the objective (the mean of each seed's best, as a real trial
    of the configuration would score on average); the first run alone when it was pruned or no other run
    matches. A single seed's curve can be lucky, and a sweep's regret is judged against the grid's best
    (an example: docs/sweeps.md, "Regret")."""
    first = runs[0]
    steps = [e.step for e in first.evals]
    same = [
        run
        for run in runs
        if run.complete and run.planned_steps == first.planned_steps and [e.step for e in run.evals] == steps
    ]
    if not first.complete or len(same) < 2:
        return first
    evals = [
        Eval(e.step, e.fraction, statistics.fmean(run.evals[index].loss for run in same))
        for index, e in enumerate(first.evals)
    ]
    best_so_far = [statistics.fmean(run.best_until(index) for run in same) for index in range(len(evals))]
    return Curve(first.config, first.planned_steps, evals, True, seeds=len(same), best_so_far=best_so_far)


def build_recording(curves: list[Curve], baselines: list[float]) -> Recording:
    """Group curves into the grid: keys that vary define a configuration; a configuration recorded more
    than once (other seeds) is replayed as the mean curve of its seeds (mean_curve), and each seed's best
    eval loss goes into the noise floor. The seed is not a grid key: a sweep does not search over it."""
    if not curves:
        raise SystemExit("No finished trial with an eval history found.")
    if not baselines:
        raise SystemExit("The recording has no untrained baseline (eval.before_training=false?).")
    keys = tuple(k for k in RUN_KEYS if k != "seed" and len({repr(c.config.get(k)) for c in curves}) > 1)
    fixed = {k: curves[0].config.get(k) for k in RUN_KEYS if k not in keys and k != "seed"}
    runs_of: dict[tuple, list[Curve]] = defaultdict(list)  # configuration -> its runs, grid seed first
    seeds = [c.config.get("seed") for c in curves]
    grid_seed = max(set(seeds), key=seeds.count)  # the seed most curves share: the grid's own runs
    seen = set()  # (configuration, seed): a second trial of the same run (e.g. a grid study that re-ran a
    # point after a failed trial) repeats its numbers exactly, so it is not another seed of the noise floor
    for curve in sorted(curves, key=lambda c: c.config.get("seed") != grid_seed):
        config = tuple(curve.config[k] for k in keys)
        if (config, curve.config.get("seed")) in seen:
            continue
        seen.add((config, curve.config.get("seed")))
        runs_of[config].append(curve)
    grid = {config: mean_curve(runs) for config, runs in runs_of.items()}
    repeats = {config: [run.best for run in runs] for config, runs in runs_of.items()}
    return Recording(grid, keys, fixed, statistics.median(baselines), repeats, dict(runs_of))
