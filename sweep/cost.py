"""What a sweep cost, in the unit its users pay in: optimizer steps and tokens, and runs of its best
configuration. Each trial's figures are stored in the study when the trial is told (user attributes), so
every worker and `python -m sweep.report` read the same account."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

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
    `pruning_saved_steps` the steps pruned trials' schedules had left when they were stopped."""

    trials: int
    steps: int
    tokens: int
    best_run_steps: int | None
    pruning_saved_steps: int

    @property
    def runs_of_best(self) -> float | None:
        """The compute as a multiple of one run of the best configuration."""
        return self.steps / self.best_run_steps if self.best_run_steps else None

    def line(self) -> str:
        """`compute: 402 optimizer steps, 1,234,567 tokens over 8 trials = 5.6 runs of the best configuration
        (pruning saved 30 steps)`."""
        runs = f" = {self.runs_of_best:.1f} runs of the best configuration" if self.runs_of_best else ""
        saved = f" (pruning saved {self.pruning_saved_steps:,} steps)" if self.pruning_saved_steps else ""
        return f"compute: {self.steps:,} optimizer steps, {self.tokens:,} tokens over {self.trials} trials{runs}{saved}"


def sweep_cost(study: optuna.Study) -> SweepCost:
    """Add up the recorded steps and tokens of the study's complete and pruned trials (single objective:
    the best trial is `study.best_trial`; with several objectives there is no one best configuration)."""
    told = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        if STEPS in t.user_attrs
    ]
    saved = sum(
        max(t.user_attrs.get(PLANNED, 0) - t.user_attrs[STEPS], 0)
        for t in told
        if t.state == TrialState.PRUNED
    )
    best_steps = None
    if len(study.directions) == 1 and any(t.state == TrialState.COMPLETE for t in told):
        best_steps = study.best_trial.user_attrs.get(PLANNED)
    return SweepCost(
        trials=len(told),
        steps=sum(t.user_attrs[STEPS] for t in told),
        tokens=sum(t.user_attrs.get(TOKENS, 0) for t in told),
        best_run_steps=best_steps,
        pruning_saved_steps=saved,
    )
