"""The live side of the stopping rule (sweep/stopping.py): the study's finished trials as the rule's outcomes,
the noise floor and the stop decision kept in the study, so every worker sharing it reads the same ones.

- `noise_floor` (study user attribute): the median seed spread (sweep/noise.py), refreshed before each ask
  and when the sweep reports; absent until a configuration has two seeds (the noise repeats,
  sweep/repeats.py).
- `stop_decision` (study user attribute): stored once, by the first worker whose check says stop, with the
  reason and its figures. It is final for the study: every worker reads it before it asks, starts nothing
  more and takes the wait path (waits for the others' running trials, then reports); a worker started later
  starts nothing either. Raising n_trials does not reopen a stopped study, nor does a running trial that
  ends after the decision (it is reported, not searched on from); `hydra.sweeper.stopping.enabled=false`
  ignores the decision and runs up to n_trials.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweep.noise import noise_floor, seed_means
from sweep.repeats import complete_values, is_repeat
from sweep.stopping import Outcome, StoppingRule, decide

NOISE_FLOOR = "noise_floor"  # study user attribute: the study's noise floor, in the objective's units
STOP_DECISION = "stop_decision"  # study user attribute: why and when the study stopped itself


def minimizes(study: optuna.Study) -> bool:
    return study.direction == optuna.study.StudyDirection.MINIMIZE


def outcomes(trials: list[FrozenTrial]) -> list[Outcome]:
    """The COMPLETE and PRUNED trials in the order they ended (datetime_complete; the trial number where a
    storage has no end time), as the stopping rule reads them."""
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    finished.sort(key=lambda t: (t.datetime_complete is None, t.datetime_complete or 0, t.number))
    return [
        Outcome(t.number, t.params, t.value if t.state == TrialState.COMPLETE else None, is_repeat(t))
        for t in finished
    ]


def study_noise_floor(trials: list[FrozenTrial]) -> float | None:
    """The noise floor of the study's complete trials (sweep/noise.py), None before any has two seeds."""
    return noise_floor(seed_means(complete_values(trials)))


def record_noise_floor(study: optuna.Study, trials: list[FrozenTrial]) -> float | None:
    """Store the study's noise floor (when known and changed); returns it."""
    floor = study_noise_floor(trials)
    if floor is not None and study.user_attrs.get(NOISE_FLOOR) != floor:
        study.set_user_attr(NOISE_FLOOR, floor)
    return floor


@dataclass(frozen=True)
class Stopped:
    """A study's stored stop decision."""

    reason: str
    finished: int  # finished trials (complete + pruned, repeats included) when it stopped
    n_trials: int  # the n_trials it stopped under
    noise_floor: float
    best_trial: int
    best_seed_mean: float

    def line(self) -> str:
        """The one line a sweep prints when it stops (and a later worker, when it finds the study stopped)."""
        return (
            f"Sweep stopped itself after {self.finished} of n_trials={self.n_trials} trials (noise floor "
            f"{self.noise_floor:.4g}, best seed mean {self.best_seed_mean:.4g} of trial {self.best_trial}): "
            f"{self.reason}"
        )


def stored_decision(study: optuna.Study) -> Stopped | None:
    """The study's stop decision, None while it has not stopped itself (the attribute's extra keys, the
    rule's patience and min_trials, are a record for the reader)."""
    stored = study.user_attrs.get(STOP_DECISION)
    if not stored:
        return None
    return Stopped(**{k: v for k, v in stored.items() if k in Stopped.__dataclass_fields__})


def check_stop(
    study: optuna.Study, trials: list[FrozenTrial], rule: StoppingRule, n_trials: int
) -> Stopped | None:
    """The study's stop decision: the stored one if any, else the rule's decision over `trials`, stored
    when it says stop (two workers deciding at once store the same figures); None to go on."""
    stored = stored_decision(study)
    if stored is not None:
        return stored
    decision = decide(outcomes(trials), rule, minimizes(study))
    if not decision.stop:
        return None
    stopped = Stopped(
        reason=decision.reason,
        finished=decision.finished,
        n_trials=n_trials,
        noise_floor=float(decision.noise_floor),
        best_trial=decision.best.trials[0],
        best_seed_mean=decision.best.mean,
    )
    study.set_user_attr(
        STOP_DECISION, {**stopped.__dict__, "patience": rule.patience, "min_trials": rule.min_trials}
    )
    return stopped


def stopping_off_because(study: optuna.Study, grid: bool) -> str | None:
    """Why the stopping rule (and the noise repeats) cannot apply to this study, or None."""
    if len(study.directions) > 1:
        return "the study has several objectives (no one best configuration to measure the noise of)"
    if grid:
        return "the grid sampler runs every grid point once"
    return None


def stopping_rule(stopping: Any) -> StoppingRule | None:
    """hydra.sweeper.stopping as the rule, None when it is off; a bad value fails in one sentence."""
    if stopping is None:
        stopping = {}
    settings = {"enabled": True, **dict(stopping)}
    unknown = set(settings) - {"enabled", "patience", "min_trials"}
    if unknown:
        raise ValueError(
            f"hydra.sweeper.stopping has no key {sorted(unknown)}; use enabled, patience, min_trials."
        )
    if not settings["enabled"]:
        return None
    rule = StoppingRule(
        **{k: int(settings[k]) for k in ("patience", "min_trials") if settings.get(k) is not None}
    )
    if rule.patience < 1 or rule.min_trials < 0:
        raise ValueError(
            f"hydra.sweeper.stopping.patience={rule.patience} must be at least 1 and min_trials="
            f"{rule.min_trials} at least 0."
        )
    return rule


def noise_and_stopping_line(off: str | None, repeats: int, rule: StoppingRule | None) -> str:
    """The start line that says what the sweep will measure and when it may stop."""
    if off is not None:
        return f"Noise repeats and the stopping rule are off: {off}"
    measured = (
        f"after its first complete trial, its best configuration runs again at {repeats} other seeds "
        "(hydra.sweeper.noise_repeats) to measure the noise floor"
        if repeats
        else "no noise repeats (hydra.sweeper.noise_repeats=0), so no noise floor is measured"
    )
    if rule is None:
        return f"Noise: {measured}; stopping rule off (hydra.sweeper.stopping.enabled=false): runs n_trials"
    return (
        f"Noise: {measured}; stopping rule on: the sweep stops itself after {rule.patience} search trials in a "
        f"row that do not beat its best seed mean by more than the noise floor (and at least "
        f"{rule.min_trials} finished); n_trials is the most it runs. A stopped study stays stopped: raising "
        "n_trials does not reopen it, hydra.sweeper.stopping.enabled=false does"
    )
