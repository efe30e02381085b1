"""The n_trials places of a study shared by workers: how many trials may still start, which just-asked
trial must not run (it lost a race for the last place, or repeats another worker's enqueued parameters),
and what happens to it (told FAIL with the reason; an enqueued parameter set that lost a race is queued
again).
"""

from __future__ import annotations

import logging

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweep.repeats import REPEAT_OF, SEED
from sweep.study import FAIL_REASON, tell

log = logging.getLogger(__name__)

DONE = (TrialState.COMPLETE, TrialState.PRUNED)
# States of a trial that holds one of the n_trials places: finished, running, or queued to run.
HOLDS_A_PLACE = (*DONE, TrialState.RUNNING, TrialState.WAITING)
SURPLUS = "surplus"  # fail_reason prefix of a trial asked after other workers had taken the last place
DUPLICATE = "duplicate"  # fail_reason prefix of an enqueued parameter set another worker enqueued too


def finished_trials(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=DONE))


def free_places(trials: list[FrozenTrial], n_trials: int) -> int:
    """How many trials may still start: n_trials less the finished and the running ones."""
    return n_trials - sum(t.state in (*DONE, TrialState.RUNNING) for t in trials)


def is_surplus(trial: FrozenTrial) -> bool:
    return trial.state == TrialState.FAIL and trial.user_attrs.get(FAIL_REASON, "").startswith(SURPLUS)


def queued_as(trial: FrozenTrial) -> tuple | None:
    """What a queued trial was queued as: its enqueued parameters and, for a noise repeat (same parameters
    by design, sweep/repeats.py), the trial it repeats and its seed; None for a sampled trial."""
    fixed = trial.system_attrs.get("fixed_params")
    if fixed is None:
        return None
    return fixed, trial.user_attrs.get(REPEAT_OF), trial.user_attrs.get(SEED)


def why_not_run(trials: list[FrozenTrial], number: int, n_trials: int) -> str | None:
    """Why the just-asked trial `number` must not run (a fail_reason), or None if it may run.

    Workers count free places before they ask, but two workers can count at the same moment and both ask
    for the last place. The storage numbers trials atomically, so every worker settles such races by the
    same rule: a trial runs only if fewer than `n_trials` trials with smaller numbers are finished, running
    or queued. Trials that end COMPLETE or PRUNED therefore never exceed `n_trials`; a trial that loses is
    told FAIL with a "surplus" reason before it gets parameters, a job or a folder, and does not count. The
    rule can only err towards too few places (a smaller trial that later fails or loses its own race), and
    the worker's loop then asks again. An enqueued parameter set that two workers starting together both
    queued runs once: the copy with the larger number is a "duplicate" (a noise repeat duplicates only
    another copy of the same repeat, see `queued_as`)."""
    trial = next(t for t in trials if t.number == number)
    ahead = [t for t in trials if t.number < number]
    queued = queued_as(trial)
    if queued is not None:
        for other in ahead:
            if queued_as(other) == queued and not is_surplus(other):
                return f"{DUPLICATE}: trial {other.number} has the same enqueued parameters"
    if sum(t.state in HOLDS_A_PLACE for t in ahead) >= n_trials:
        return f"{SURPLUS}: n_trials={n_trials} places were taken by other workers' trials"
    return None


def runnable_trials(study: optuna.Study, batch: list[optuna.Trial], n_trials: int) -> list[optuna.Trial]:
    """The just-asked trials of `batch` that may run; the others are dropped (see `why_not_run`)."""
    snapshot = study.get_trials(deepcopy=False)
    by_number = {t.number: t for t in snapshot}
    runnable = []
    for trial in batch:
        reason = why_not_run(snapshot, trial.number, n_trials)
        if reason is None:
            runnable.append(trial)
        else:
            drop(study, trial, reason, by_number[trial.number])
    return runnable


def drop(study: optuna.Study, trial: optuna.Trial, reason: str, asked: FrozenTrial) -> None:
    """Fail a trial that must not run; an enqueued parameter set that lost a race is queued again, a noise
    repeat with its repeat attributes (`asked`: the trial as stored when it was asked)."""
    trial.set_user_attr(FAIL_REASON, reason)
    tell(study, trial, state=TrialState.FAIL)
    queued = queued_as(asked)
    if queued is not None and reason.startswith(SURPLUS):
        fixed, repeat_of, seed = queued
        repeat = {REPEAT_OF: repeat_of, SEED: seed} if repeat_of is not None else None
        study.enqueue_trial(fixed, user_attrs=repeat)
    log.info("Trial %d not run (%s)", trial.number, reason)
