"""Places in a study (sweep/places.py): a trial asked after the last of n_trials places was taken is surplus,
launches nothing and, if enqueued, is queued again for the resume."""

from __future__ import annotations

from optuna.trial import TrialState

from sweep.places import why_not_run
from sweep.space import search_space
from sweep.study import (
    FAIL_REASON,
    open_study,
)
from tests.sweep.test_workers import SPACE, load, make_worker, objective


def test_a_trial_asked_after_the_last_place_was_taken_is_surplus(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    first, second = (open_study(storage, study_name="workers") for _ in range(2))
    for _ in range(3):
        first.tell(first.ask(), 1.0)
    # Both workers counted 3 finished trials, so both ask for the last of n_trials=4 places.
    mine, theirs = first.ask(), second.ask()
    snapshot = second.get_trials(deepcopy=False)
    assert why_not_run(snapshot, mine.number, n_trials=4) is None
    assert why_not_run(snapshot, theirs.number, n_trials=4).startswith("surplus")
    # The rule only looks at smaller numbers, so both workers reach the same verdicts in any order.
    assert why_not_run(first.get_trials(deepcopy=False), mine.number, n_trials=4) is None
    # A smaller trial that failed frees its place; a queued (enqueued) one holds it.
    first.tell(mine, state=TrialState.FAIL)
    assert why_not_run(second.get_trials(deepcopy=False), theirs.number, n_trials=4) is None
    assert why_not_run(second.get_trials(deepcopy=False), theirs.number, n_trials=3).startswith("surplus")


def late_worker(tmp_path, n_trials: int):
    """(storage, ask_once): a second worker on the same study; ask_once() runs one batch of it, which must
    launch nothing."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    space, fixed, fixed_overrides = search_space(SPACE)
    late = make_worker(storage, tmp_path / "late", objective, n_trials=n_trials)
    late_study = open_study(storage, study_name="workers")

    def ask_once() -> None:
        assert late._run_batch(late_study, 1, space, fixed, fixed_overrides) == 0

    return storage, late, late_study, ask_once


def test_a_worker_racing_for_the_last_place_launches_nothing(tmp_path):
    storage, late, _, ask_once = late_worker(tmp_path, n_trials=4)

    def job(params):
        if params["trial"] == "3":  # meanwhile a second worker, which counted one free place, asks for it
            ask_once()
        return objective(params)

    make_worker(storage, tmp_path / "first", job, n_trials=4).sweep([])
    trials = load(storage).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4 + [TrialState.FAIL]
    assert trials[4].user_attrs[FAIL_REASON].startswith("surplus: n_trials=4")
    assert trials[4].params == {}  # never sampled, never launched, no folder
    assert late.sweeper.launcher.launched == []


def test_a_surplus_enqueued_trial_is_queued_again_and_runs_on_resume(tmp_path):
    storage, late, late_study, ask_once = late_worker(tmp_path, n_trials=1)

    def job(params):
        late_study.enqueue_trial({"x": 0.25})  # queued by a worker that starts now; it asks at once
        ask_once()
        return objective(params)

    make_worker(storage, tmp_path / "first", job, n_trials=1).sweep([])
    trials = load(storage).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.WAITING]
    assert trials[1].user_attrs[FAIL_REASON].startswith("surplus")
    resumed = make_worker(storage, tmp_path / "first", objective, n_trials=2)
    resumed.sweep([])
    assert resumed.sweeper.launcher.launched == [2]
    assert load(storage).trials[2].params == {"x": 0.25}
