"""Noise repeats (sweep/repeats.py): after the first complete trial the sweeper loop (real, on SQLite; jobs
are Python functions) re-runs the best configuration at the next seeds. They carry their seed, reach the job
as `seed=`, are not dropped as duplicates of the enqueued trial they repeat, are queued once per study, and
their spread is the study's noise floor."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from sweep.convergence import NOISE_FLOOR
from sweep.places import why_not_run
from sweep.repeats import QUEUED, REPEAT_OF, SEED, queue_noise_repeats
from tests.sweep.test_convergence import noisy_job
from tests.sweep.test_convergence import worker as repeating_worker
from tests.sweep.test_workers import load


def test_repeats_run_the_best_configuration_at_the_next_seeds_once_per_study(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    seen = {}

    def job(params):
        seen[int(params["trial"])] = params.get("seed")
        return noisy_job(params)

    def sweep(n_trials):
        worker = repeating_worker(storage, tmp_path, n_trials, stopping={"enabled": False}, job=job)
        worker.sweep([])
        return worker

    sweep(4)
    study = load(storage)
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert [t.params["x"] for t in trials[:3]] == [0.3, 0.3, 0.3]  # not dropped as duplicates of trial 0
    assert [(t.user_attrs.get(REPEAT_OF), t.user_attrs.get(SEED)) for t in trials] == [
        (None, None),
        (0, 43),
        (0, 44),
        (None, None),
    ]
    assert seen == {0: None, 1: "43", 2: "44", 3: None}  # the job got the seed as an override
    assert [t.value for t in trials[:3]] == pytest.approx([0.0, 0.01, 0.02])
    assert study.user_attrs[QUEUED] == {"of": 0, "seeds": [43, 44]}
    assert study.user_attrs[NOISE_FLOOR] == pytest.approx(0.02)
    sweep(6)  # resumed: the study has its repeats, none is queued again
    trials = load(storage).trials
    assert len(trials) == 6 and sum(REPEAT_OF in t.user_attrs for t in trials) == 2


def test_only_a_second_copy_of_the_same_repeat_is_a_duplicate():
    study = optuna.create_study()
    study.enqueue_trial({"x": 0.3})
    first = study.ask()
    first.suggest_float("x", 0, 1)
    study.tell(first, 0.1)
    trials = study.get_trials(deepcopy=False)
    assert queue_noise_repeats(study, trials, 2, base_seed=42) == [43, 44]
    assert queue_noise_repeats(study, study.get_trials(deepcopy=False), 2, base_seed=42) is None  # once
    study.enqueue_trial({"x": 0.3}, user_attrs={REPEAT_OF: 0, SEED: 43})  # a second worker's copy
    asked = [study.ask() for _ in range(3)]
    snapshot = study.get_trials(deepcopy=False)
    reasons = [why_not_run(snapshot, t.number, n_trials=10) for t in asked]
    assert reasons[:2] == [None, None]  # same parameters as trial 0, other seeds: they run
    assert reasons[2] == "duplicate: trial 1 has the same enqueued parameters"
