"""What a sweep cost, in the unit its users pay in: optimizer steps and tokens, and runs of its best
configuration (the best seed mean, sweep/ties.py); and what pruning and stopping saved. Each trial's
figures are stored in the study when the trial is told (user attributes), so every worker and
`python -m sweep.report` read the same account.

Saved, an estimate: the steps pruned trials' schedules had left when they were stopped, plus, for a study
that stopped itself (sweep/convergence.py), the trials it did not run (n_trials less the finished ones)
times the mean planned steps of the trials it ran. Failed trials count in neither."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from sweep.convergence import minimizes, stored_decision
from sweep.ties import standing

STEPS = "optimizer_steps"  # the optimizer steps a trial ran (a pruned trial's until it stopped)
PLANNED = "planned_steps"  # the steps its schedule would have run
TOKENS = "train_tokens"  # the (non-padding) tokens it trained on


def record_cost(trial: optuna.Trial, metrics: Any) -> None:
    """Store a finished or pruned trial's steps and tokens (from its metrics.json) in the study."""
    if not isinstance(metrics, dict):
        return
    for attr, key in ((STEPS, "global_step"), (PLANNED, "planned_steps"), (TOKENS, "train_tokens")):
        if isinstance(metrics.get(key), int | float):
            trial.set_user_attr(attr, int(metrics[key]))


@dataclass(frozen=True)
class SweepCost:
    """A study's compute so far. `best_run_steps` is one run of the best configuration (its planned steps);
    `pruning_saved_steps` the steps pruned trials' schedules had left when they were stopped;
    `unrun_trials` the n_trials a study that stopped itself did not run, and `mean_planned_steps` the mean
    planned steps of the trials it ran (`stopping_saved_steps` is their product)."""

    trials: int
    steps: int
    tokens: int
    best_run_steps: int | None
    pruning_saved_steps: int
    unrun_trials: int = 0
    mean_planned_steps: float = 0.0

    @property
    def stopping_saved_steps(self) -> int:
        return round(self.unrun_trials * self.mean_planned_steps)

    @property
    def runs_of_best(self) -> float | None:
        """The compute as a multiple of one run of the best configuration."""
        return self.steps / self.best_run_steps if self.best_run_steps else None

    def line(self) -> str:
        """`compute: 402 optimizer steps, 1,234,567 tokens over 8 trials = 5.6 runs of the best configuration
        (pruning saved 30 steps)`; with stopping, `(saved 702 steps: pruning 30, stopping 12 unrun trials x
        56 mean planned steps)`."""
        runs = f" = {self.runs_of_best:.1f} runs of the best configuration" if self.runs_of_best else ""
        saved = ""
        if self.unrun_trials:
            total = self.pruning_saved_steps + self.stopping_saved_steps
            saved = (
                f" (saved {total:,} steps: pruning {self.pruning_saved_steps:,}, stopping {self.unrun_trials} "
                f"unrun trials x {self.mean_planned_steps:.0f} mean planned steps)"
            )
        elif self.pruning_saved_steps:
            saved = f" (pruning saved {self.pruning_saved_steps:,} steps)"
        return f"compute: {self.steps:,} optimizer steps, {self.tokens:,} tokens over {self.trials} trials{runs}{saved}"


def sweep_cost(study: optuna.Study) -> SweepCost:
    """Add up the recorded steps and tokens of the study's complete and pruned trials (single objective:
    the best configuration is the best seed mean's; with several objectives there is no one best)."""
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    told = [t for t in finished if STEPS in t.user_attrs]
    saved = sum(
        max(t.user_attrs.get(PLANNED, 0) - t.user_attrs[STEPS], 0)
        for t in told
        if t.state == TrialState.PRUNED
    )
    best_steps, unrun, planned = None, 0, [t.user_attrs[PLANNED] for t in told if PLANNED in t.user_attrs]
    if len(study.directions) == 1:
        best = standing(trials, minimizes(study)).best
        if best is not None:
            best_steps = next(t for t in trials if t.number == best.trials[0]).user_attrs.get(PLANNED)
        stopped = stored_decision(study)
        unrun = max(stopped.n_trials - len(finished), 0) if stopped is not None else 0
    return SweepCost(
        trials=len(told),
        steps=sum(t.user_attrs[STEPS] for t in told),
        tokens=sum(t.user_attrs.get(TOKENS, 0) for t in told),
        best_run_steps=best_steps,
        pruning_saved_steps=saved,
        unrun_trials=unrun,
        mean_planned_steps=sum(planned) / len(planned) if planned else 0.0,
    )
