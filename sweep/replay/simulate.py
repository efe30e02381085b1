"""One replayed sweep: a strategy's real sampler proposes, each proposal is snapped to the nearest recorded
configuration, and that configuration's curve is reported to the real pruner as the training job would."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from sweep.replay.recording import Curve, Recording
from sweep.replay.repeats import first_run, repeat_run
from sweep.replay.strategy import Strategy
from sweep.space import search_space
from sweep.stopping import Outcome, StoppingRule, decide

LOG_SCALE_KEYS = ("optim.learning_rate", "lora.r", "lora.alpha", "optim.num_train_epochs")


def _position(value: Any, key: str) -> Any:
    """Where a value sits on its key's axis: log scale for the multiplicative knobs."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return math.log(value) if key in LOG_SCALE_KEYS and value > 0 else float(value)
    return value


def _spans(recording: Recording) -> list[float | None]:
    """Per grid key, the recorded range on its (log) axis; None for a key with a value that is no number."""
    spans = []
    for index, key in enumerate(recording.keys):
        positions = [_position(config[index], key) for config in recording.curves]
        numeric = [p for p in positions if isinstance(p, float)]
        spans.append(max(numeric) - min(numeric) if len(numeric) == len(positions) and numeric else None)
    return spans


def snap(recording: Recording, params: dict[str, Any], strategy: Strategy) -> tuple:
    """The recorded configuration nearest to a sampled one: per key, the distance on its (log) axis divided
    by the recorded range of that key, summed; a differing non-numeric value counts as the whole range.
    Nearest over whole configurations, so a partly recorded grid or an irregular study of the user's works.
    Keys the strategy does not search take its fixed value (alpha = 2r follows the sampled rank). A key the
    grid recorded at one value is not compared: every sampled value snaps to it (the GPU grid's warmup).
    A value beyond the grid's range snaps to its edge (counted by `outside_grid`)."""
    wanted = []
    for key in recording.keys:
        value = params.get(key, strategy.fixed.get(key))
        if value == "2r":
            value = 2 * params.get("lora.r", strategy.fixed.get("lora.r"))
        wanted.append(_position(value, key))
    spans = _spans(recording)

    def distance(config: tuple) -> float:
        total = 0.0
        for index, key in enumerate(recording.keys):
            here, span = _position(config[index], key), spans[index]
            if span is None or not isinstance(wanted[index], float):
                total += 0.0 if here == wanted[index] else 1.0
            elif span > 0:
                total += abs(here - wanted[index]) / span
        return total

    return min(recording.curves, key=lambda c: (distance(c), c))


def outside_grid(recording: Recording, params: dict[str, Any]) -> dict[str, str]:
    """The sampled values below or above the range the grid recorded for their key (a key recorded at one
    value: any other value); snapping moves each to the grid's edge."""
    found = {}
    for key, value in params.items():
        bounds = recording.value_range(key)
        if bounds is None or not isinstance(value, int | float):
            continue
        if value < bounds[0] and not math.isclose(value, bounds[0], rel_tol=1e-9):
            found[key] = "below"
        elif value > bounds[1] and not math.isclose(value, bounds[1], rel_tol=1e-9):
            found[key] = "above"
    return found


def differs_from_grid(recording: Recording, strategy: Strategy) -> dict[str, list[Any]]:
    """Settings the strategy fixes (does not search) at another value than the one the grid recorded for
    every curve: the replay uses the grid's curves anyway, so they are named beside its results."""
    found = {}
    for key, grid_value in recording.fixed.items():
        value = strategy.fixed.get(key)
        if grid_value is None or value is None or key in strategy.params:
            continue
        numbers = all(isinstance(v, int | float) for v in (value, grid_value))
        if not (numbers and math.isclose(value, grid_value)):
            found[key] = [value, grid_value]
    return found


def suggest(trial: optuna.Trial, name: str, distribution: optuna.distributions.BaseDistribution) -> Any:
    """The trial's value of `name` drawn from `distribution` through the public suggest_* calls, which build
    the same distribution again (the sweeper's plugin passes it to Optuna's private Trial._suggest)."""
    if isinstance(distribution, optuna.distributions.FloatDistribution):
        return trial.suggest_float(
            name, distribution.low, distribution.high, step=distribution.step, log=distribution.log
        )
    if isinstance(distribution, optuna.distributions.IntDistribution):
        return trial.suggest_int(
            name, distribution.low, distribution.high, step=distribution.step, log=distribution.log
        )
    return trial.suggest_categorical(name, distribution.choices)


def run_curve(
    trial: optuna.Trial, curve: Curve, strategy: Strategy, prune: bool = True
) -> tuple[float, int, bool]:
    """Report a recorded curve to the trial as the job's PruningCallback would (nothing inside the curve's
    own warmup: the replayed trial is the recorded run); early stopping as transformers'
    EarlyStoppingCallback would. A noise repeat (`prune=False`) reports every eval and is never pruned.
    Returns (best eval loss, steps run, pruned)."""
    from sweep.pruning import report_step

    best, stalls = math.inf, 0
    warmup_ratio = curve.config.get("optim.warmup_ratio")
    warmup_ratio = strategy.warmup_ratio if warmup_ratio is None else warmup_ratio
    warmup_steps = math.ceil(warmup_ratio * curve.planned_steps)
    for index, point in enumerate(curve.evals):
        if point.loss < best - strategy.early_stopping_threshold:
            stalls = 0
        else:
            stalls += 1
        best = min(best, point.loss)
        if point.step > warmup_steps:
            at = report_step(point.step, curve.planned_steps, strategy.report_at, strategy.eval_fraction)
            trial.report(point.loss, at)
            if prune and trial.should_prune():
                return curve.best_until(index), point.step, True
        if strategy.early_stopping_patience and stalls >= strategy.early_stopping_patience:
            return curve.best_until(index), point.step, False
    return curve.best, curve.evals[-1].step, False


@dataclass
class SweepTrace:
    """One replayed sweep: for every trial, the cumulative steps when it ended, its value and outcome, which
    of its sampled values lay beyond the grid (snapped to its edge), whether it was a noise repeat and
    whether that repeat's seed was drawn from the floor; and where the stopping rule would have stopped."""

    ends: list[int] = field(default_factory=list)
    values: list[float | None] = field(default_factory=list)  # None for pruned trials
    configs: list[tuple] = field(default_factory=list)
    pruned: list[bool] = field(default_factory=list)
    outside: list[dict[str, str]] = field(default_factory=list)  # sampled key -> "below" or "above"
    params: list[dict[str, Any]] = field(default_factory=list)  # what the sampler (or the queue) gave
    repeats: list[bool] = field(default_factory=list)
    drawn: list[bool] = field(default_factory=list)  # a repeat whose seed the grid did not record
    stop_at: int | None = None  # trials run when the rule first said stop; None: it never did
    reason: str = ""  # the rule's last sentence

    def best_within(self, budget: float) -> float | None:
        """The best value of the trials that ended within `budget` cumulative steps; None before any."""
        found = [v for end, v in zip(self.ends, self.values) if end <= budget and v is not None]
        return min(found) if found else None

    def outcomes(self) -> list[Outcome]:
        """The trials as the stopping rule reads them (sweep/stopping.py)."""
        return [
            Outcome(n, p, v, r) for n, (p, v, r) in enumerate(zip(self.params, self.values, self.repeats))
        ]

    def check_stop(self, rule: StoppingRule | None) -> None:
        """Ask the rule before the next trial, as the live sweeper does; the first stop is kept."""
        if rule is not None and self.stop_at is None:
            decision = decide(self.outcomes(), rule)
            self.reason = decision.reason
            if decision.stop:
                self.stop_at = len(self.ends)


def _goes_on(trace: SweepTrace, used: int, max_steps: float, strategy: Strategy, configs: int) -> bool:
    """Another trial: up to n_trials where the strategy has a cap, else until `max_steps` steps."""
    if strategy.n_trials is not None:
        return len(trace.ends) < strategy.n_trials
    return used < max_steps and len(trace.ends) < 10 * configs


def _repeats_due(trace: SweepTrace, strategy: Strategy) -> list[tuple[int, int]]:
    """After the first complete trial: (its number, repeat number) for each noise repeat of it."""
    complete = [n for n, v in enumerate(trace.values) if v is not None]
    if not strategy.noise_repeats or len(complete) != 1 or any(trace.repeats):
        return []
    return [(complete[0], k) for k in range(1, strategy.noise_repeats + 1)]


def replay_sweep(
    recording: Recording, strategy: Strategy, seed: int, max_steps: float, curves: str = "mean"
) -> SweepTrace:
    """One sweep of `strategy` (sampler seeded with `seed`) until it has used `max_steps` optimizer steps or,
    for a strategy with n_trials, run n_trials trials: its noise repeats right after the first complete
    trial, the stopping rule asked before every trial (the sweep goes on to the cap, so one replay gives
    the fixed sweep and, as its first `stop_at` trials, the stopped one; no stop_at: the rule never stopped
    it before the cap). `curves` (repeats.CURVES): what a
    search trial replays."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space, _, _ = search_space([f"{k}={v}" for k, v in strategy.params.items()])
    study = optuna.create_study(
        study_name=f"replay-{strategy.name}-{seed}",  # HyperbandPruner picks brackets by hashing the name
        direction="minimize",
        sampler=strategy.make_sampler(seed, space),
        pruner=strategy.make_pruner(),
    )
    for params in strategy.enqueue_trials:
        study.enqueue_trial(params, skip_if_exists=True)
    trace, used, due = SweepTrace(), 0, []
    while _goes_on(trace, used, max_steps, strategy, len(recording.curves)):
        trace.check_stop(strategy.stopping)
        repeat = due.pop(0) if due else None
        if repeat:  # the same parameters again, at another seed: not dropped as a duplicate
            study.enqueue_trial(trace.params[repeat[0]])
        trial = study.ask()
        params = {name: suggest(trial, name, distribution) for name, distribution in space.items()}
        config = snap(recording, params, strategy)
        curve, drawn = first_run(recording, config, curves), False
        if repeat:
            key = repr((seed, trial.number, repeat[1], config))
            curve, drawn = repeat_run(recording, config, repeat[1], curve, key)
        value, steps, pruned = run_curve(trial, curve, strategy, prune=repeat is None)
        pruned = pruned or not curve.complete and steps < curve.planned_steps
        used += steps
        if pruned:
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, value)
        for column, item in zip(
            (trace.ends, trace.values, trace.configs, trace.pruned, trace.params, trace.repeats, trace.drawn),
            (used, None if pruned else value, config, pruned, params, repeat is not None, drawn),
        ):
            column.append(item)
        trace.outside.append(outside_grid(recording, params))
        due = due or _repeats_due(trace, strategy)
    return trace
