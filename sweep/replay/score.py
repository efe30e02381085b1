"""A strategy's score on one grid, over its replayed sweeps: regret at each budget, trials, pruning, the
values sampled outside the grid, and whether it meets the grid's target."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from sweep.replay.grid_stats import target_regret
from sweep.replay.recording import Recording
from sweep.replay.simulate import SweepTrace
from sweep.replay.strategy import Strategy

BEST_PRUNED_ONE_IN = 20  # the target allows the grid's best pruned in at most 1 of this many seeds


def deciles(values: list[float]) -> list[float]:
    """The 10th, 20th … 90th percentiles, interpolated between the sorted values (statistics.quantiles'
    inclusive method); one value is every decile."""
    if len(values) < 2:
        return list(values) * 9
    return statistics.quantiles(values, n=10, method="inclusive")


@dataclass
class Target:
    """Where a grid's target is judged (a fraction of its steps) and the median regret it allows."""

    budget: float
    median_regret_percent: float

    @classmethod
    def of(cls, recording: Recording, budget: float) -> Target:
        return cls(budget, target_regret(recording))


@dataclass
class Regret:
    """Regret in percent over a strategy's seeds at one budget."""

    median: float
    p90: float


@dataclass
class StrategyRow:
    """One strategy's row on one grid."""

    strategy: str
    seeds: int
    regret: dict[float, Regret]  # budget (fraction of the grid's steps) -> regret over the seeds
    median_trials: float  # trials run within the largest budget, median over the seeds
    pruned_share: float  # share of trials pruned, mean over the seeds
    grid_best_pruned_seeds: int  # seeds in which a trial of the grid's best configuration was pruned
    outside_grid: dict[str, dict[str, float]]  # searched key -> side -> share of all trials
    target_met: bool

    def to_json(self) -> dict[str, Any]:
        """The row as replay.json holds it."""
        row: dict[str, Any] = {"strategy": self.strategy, "seeds": self.seeds}
        for budget, regret in self.regret.items():
            row[f"median_regret@{budget:g}"] = regret.median
            row[f"p90_regret@{budget:g}"] = regret.p90
        return {
            **row,
            "median_trials@max": self.median_trials,
            "pruned_share": self.pruned_share,
            "grid_best_pruned_seeds": self.grid_best_pruned_seeds,
            "outside_grid": self.outside_grid,
            "target_met": self.target_met,
        }


def outside_shares(traces: list[SweepTrace], keys: list[str]) -> dict[str, dict[str, float]]:
    """Per key, the share of all replayed trials whose sampled value lay below / above the grid."""
    trials = sum(len(t.ends) for t in traces)
    return {
        key: {
            side: sum(o.get(key) == side for t in traces for o in t.outside) / trials
            for side in ("below", "above")
        }
        for key in keys
    }


def summarize(
    recording: Recording, strategy: Strategy, traces: list[SweepTrace], budgets: list[float], target: Target
) -> StrategyRow:
    """One strategy's row on one grid from its sweeps: regret at each budget and the target's, trials,
    pruning, values outside the grid."""
    total, best_config = recording.total_steps, recording.best_config
    regret = {}
    for budget in sorted({*budgets, target.budget}):
        regrets = [recording.regret(t.best_within(budget * total)) for t in traces]
        regret[budget] = Regret(median=statistics.median(regrets), p90=deciles(regrets)[-1])
    best_pruned = sum(any(c == best_config and p for c, p in zip(t.configs, t.pruned)) for t in traces)
    return StrategyRow(
        strategy=strategy.name,
        seeds=len(traces),
        regret=regret,
        median_trials=statistics.median(len(t.ends) for t in traces),
        pruned_share=statistics.mean(sum(t.pruned) / len(t.pruned) for t in traces),
        grid_best_pruned_seeds=best_pruned,
        outside_grid=outside_shares(
            traces, [k for k in strategy.params if recording.value_range(k) is not None]
        ),
        target_met=regret[target.budget].median <= target.median_regret_percent
        and best_pruned <= len(traces) / BEST_PRUNED_ONE_IN,
    )
