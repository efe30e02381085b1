"""Every strategy replayed on every grid in one run, and the results: per grid what it is and each
strategy's row, and for all grids together which strategies reach the target on every one."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweep.replay.grid_stats import (
    Effect,
    NoiseFloor,
    RulePosition,
    Separation,
    effects,
    learning_rate_against_rule,
    noise_floor,
    separation,
)
from sweep.replay.loading import grid_labels, load_recording
from sweep.replay.recording import Recording
from sweep.replay.score import StrategyRow, Target, summarize
from sweep.replay.simulate import SweepTrace, differs_from_grid, replay_sweep
from sweep.replay.stop_score import StopRow, stop_rows
from sweep.replay.strategy import Strategy, StrategySpec, compose_for_grid, model_overrides, rule_for_grid


@dataclass
class Settings:
    """How much to replay (conf/replay/default.yaml, `replay.KEY=VALUE`)."""

    seeds: int  # replayed sweeps per strategy and grid: sampler seeds 0 … seeds - 1
    budgets: list[float]  # fractions of each grid's total optimizer steps
    target_budget: float  # where the target is judged
    output: str | None = None  # folder for replay.json and the plots; None: outputs/replay/<grid names>
    curves: str = "mean"  # what a search trial replays (sweep/replay/repeats.py CURVES)


def plain(value: Any) -> Any:
    """A result as JSON holds it: dataclasses as dicts (or their own `to_json`), recursively."""
    if hasattr(value, "to_json"):
        return value.to_json()
    if dataclasses.is_dataclass(value):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


@dataclass
class GridInfo:
    """What a recorded grid is."""

    configurations: int
    keys: list[str]
    fixed: dict[str, Any]
    model: dict[str, Any]
    model_assumed: bool
    total_steps: int
    baseline_eval_loss: float
    best_eval_loss: float
    best_config: dict[str, Any]

    @classmethod
    def of(cls, recording: Recording) -> GridInfo:
        return cls(
            configurations=len(recording.curves),
            fixed=recording.fixed,
            model=recording.model,
            model_assumed=recording.model_assumed,
            keys=list(recording.keys),
            total_steps=recording.total_steps,
            baseline_eval_loss=recording.baseline,
            best_eval_loss=recording.best,
            best_config=recording.named(recording.best_config),
        )


@dataclass
class GridResult:
    """One grid: what it is and can tell apart, and every strategy's row and sweeps."""

    label: str
    source: str
    grid: GridInfo
    noise: NoiseFloor | None
    separation: Separation | None
    effects: dict[str, list[Effect]]
    target: Target
    learning_rate_rule: RulePosition | None
    differs_from_grid: dict[str, dict[str, list[Any]]]  # strategy -> key -> [its value, the grid's]
    rows: list[StrategyRow]
    traces: dict[str, list[SweepTrace]]  # strategy -> its sweeps, one per seed
    stop_rows: list[StopRow] = dataclasses.field(default_factory=list)  # the capped strategies' sweeps

    def to_json(self) -> dict[str, Any]:
        """Everything but the sweeps themselves (replay.json)."""
        return {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "traces"}

    def row(self, strategy: str) -> StrategyRow:
        return next(row for row in self.rows if row.strategy == strategy)


@dataclass
class GridVerdict:
    """One strategy on one grid at the target budget."""

    median_regret: float
    p90_regret: float
    target: float
    grid_best_pruned_seeds: int
    seeds: int
    target_met: bool


@dataclass
class SummaryEntry:
    """One strategy on every grid, and whether it meets the target on all."""

    strategy: str
    grids: dict[str, GridVerdict]  # grid label -> verdict
    target_met_on_all: bool

    def to_json(self) -> dict[str, Any]:
        return {"strategy": self.strategy, **plain(self.grids), "target_met_on_all": self.target_met_on_all}


@dataclass
class ReplayResult:
    """Every grid replayed in one run, and the summary over all of them."""

    sources: list[str]
    grids: list[GridResult]
    summary: list[SummaryEntry]

    def to_json(self) -> dict[str, Any]:
        return {"sources": self.sources, "grids": plain(self.grids), "summary": plain(self.summary)}


def replay_grid(
    label: str,
    source: Path,
    recording: Recording,
    specs: dict[str, StrategySpec],
    settings: Settings,
    composed: dict[tuple, Strategy],
) -> GridResult:
    """Every strategy replayed `settings.seeds` times on one grid, each composed for the grid's model."""
    target = Target.of(recording, settings.target_budget)
    max_steps = max(*settings.budgets, settings.target_budget) * recording.total_steps
    grid_model_words = model_overrides(recording.model)
    strategies, rows, traces, differences, stopped = [], [], {}, {}, []
    for name, spec in specs.items():
        strategy = compose_for_grid(name, spec, grid_model_words, composed)
        strategies.append(strategy)
        traces[name] = [
            replay_sweep(recording, strategy, seed, max_steps, settings.curves)
            for seed in range(settings.seeds)
        ]
        rows.append(summarize(recording, strategy, traces[name], settings.budgets, target))
        stopped += stop_rows(recording, strategy, traces[name], target)
        if found := differs_from_grid(recording, strategy):
            differences[name] = found
    prior = rule_for_grid(strategies[0] if strategies else None, grid_model_words, recording.model_assumed)
    return GridResult(
        label=label,
        source=str(source),
        grid=GridInfo.of(recording),
        noise=noise_floor(recording),
        separation=separation(recording),
        effects=effects(recording),
        target=target,
        learning_rate_rule=learning_rate_against_rule(recording, prior),
        differs_from_grid=differences,
        rows=rows,
        traces=traces,
        stop_rows=stopped,
    )


def verdicts(names: list[str], grids: list[GridResult], target_budget: float) -> list[SummaryEntry]:
    """Each strategy on every grid at the target budget."""
    summary = []
    for name in names:
        found = {}
        for grid in grids:
            row = grid.row(name)
            found[grid.label] = GridVerdict(
                median_regret=row.regret[target_budget].median,
                p90_regret=row.regret[target_budget].p90,
                target=grid.target.median_regret_percent,
                grid_best_pruned_seeds=row.grid_best_pruned_seeds,
                seeds=row.seeds,
                target_met=row.target_met,
            )
        summary.append(SummaryEntry(name, found, all(v.target_met for v in found.values())))
    return summary


def run(sources: list[Path], specs: dict[str, StrategySpec], settings: Settings) -> ReplayResult:
    """Every strategy on every grid, in one run; the summary says which reach the target on all grids."""
    recordings = [load_recording(source) for source in sources]  # a missing grid stops the run at once
    composed: dict[tuple, Strategy] = {}
    grids = [
        replay_grid(label, source, recording, specs, settings, composed)
        for label, source, recording in zip(grid_labels(sources), sources, recordings)
    ]
    summary = verdicts(list(specs), grids, settings.target_budget)
    return ReplayResult([str(s) for s in sources], grids, summary)
