"""A capped strategy's rows on one grid: the sweep run to its n_trials (the fixed sweep, today's baseline) and
the same sweep stopped by its rule, each with its compute, the regret of the configuration it recommends and
the share of seeds whose recommendation lies within the grid's floor.

Compute is optimizer steps, as the replay counts a trial's cost (noise repeats included), also in runs of the
grid's best configuration (its planned steps) and as a share of the fixed sweep's. A sweep recommends the
configuration with the best seed mean over its complete trials (sweep/noise.py, as the live sweep's report
ranks them); its regret is that configuration's grid point (the mean of its recorded seeds), so a lucky seed
does not count as a find. Within the floor: regret at most max(1%, the grid point's noise floor), the
replay's target (grid_stats.target_regret)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from sweep.noise import ranked, seed_means
from sweep.replay.recording import Recording
from sweep.replay.score import Regret, Target, deciles
from sweep.replay.simulate import SweepTrace
from sweep.replay.strategy import Strategy


@dataclass
class StopRow:
    """One capped strategy's sweeps on one grid, either run to n_trials ("fixed") or stopped by its rule."""

    strategy: str
    sweep: str  # "fixed N trials" or "stopping rule"
    seeds: int
    median_trials: float
    median_steps: float
    median_runs_of_best: float  # compute in runs of the grid's best configuration
    median_share_of_fixed: float  # per seed, its steps over its own fixed sweep's; median over the seeds
    share_of_median_fixed: float  # median steps over the fixed sweep's median steps
    regret: Regret  # of the recommended configuration's grid point, in %
    within_floor: float  # share of seeds whose regret is at most the target
    grid_best_pruned_seeds: int
    stopped_seeds: int  # seeds in which the rule stopped before n_trials
    drawn_repeats: float  # share of the noise repeats whose seed was drawn from the floor

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "regret": {"median": self.regret.median, "p90": self.regret.p90}}


def recommended(trace: SweepTrace, trials: int) -> tuple | None:
    """The grid configuration of the best seed mean over the first `trials` trials' complete ones."""
    complete = [(n, trace.params[n], trace.values[n]) for n in range(trials) if trace.values[n] is not None]
    order = ranked(seed_means(complete))
    return trace.configs[order[0].trials[0]] if order else None


def steps_of(trace: SweepTrace, trials: int) -> int:
    """Optimizer steps of the first `trials` trials."""
    return trace.ends[trials - 1] if trials else 0


def _row(recording: Recording, strategy: Strategy, traces: list[SweepTrace], stopped: bool, target: Target):
    ends = [t.stop_at if stopped and t.stop_at is not None else len(t.ends) for t in traces]
    steps = [steps_of(t, n) for t, n in zip(traces, ends)]
    fixed = [steps_of(t, len(t.ends)) for t in traces]
    best_config = recording.best_config
    regrets = []
    for trace, n in zip(traces, ends):
        config = recommended(trace, n)
        regrets.append(recording.regret(None if config is None else recording.curves[config].best))
    repeats = [d for t, n in zip(traces, ends) for r, d in zip(t.repeats[:n], t.drawn[:n]) if r]
    return StopRow(
        strategy=strategy.name,
        sweep="stopping rule" if stopped else f"fixed {strategy.n_trials} trials",
        seeds=len(traces),
        median_trials=statistics.median(ends),
        median_steps=statistics.median(steps),
        median_runs_of_best=statistics.median(steps) / recording.curves[best_config].planned_steps,
        median_share_of_fixed=statistics.median(s / f for s, f in zip(steps, fixed)),
        share_of_median_fixed=statistics.median(steps) / statistics.median(fixed),
        regret=Regret(statistics.median(regrets), deciles(regrets)[-1]),
        within_floor=sum(r <= target.median_regret_percent for r in regrets) / len(traces),
        grid_best_pruned_seeds=sum(
            any(c == best_config and p for c, p in zip(t.configs[:n], t.pruned[:n]))
            for t, n in zip(traces, ends)
        ),
        stopped_seeds=sum(t.stop_at is not None for t in traces) if stopped else 0,
        drawn_repeats=sum(repeats) / len(repeats) if repeats else 0.0,
    )


def stop_rows(
    recording: Recording, strategy: Strategy, traces: list[SweepTrace], target: Target
) -> list[StopRow]:
    """The fixed sweep's row and, for a strategy with a stopping rule, the stopped sweep's; none for a
    strategy without n_trials."""
    if strategy.n_trials is None:
        return []
    rows = [_row(recording, strategy, traces, False, target)]
    if strategy.stopping is not None:
        rows.append(_row(recording, strategy, traces, True, target))
    return rows
