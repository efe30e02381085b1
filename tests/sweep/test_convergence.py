"""The stopping rule in the live loop (sweep/convergence.py): real sweeper loops on one SQLite study (jobs are
Python functions, tests/sweep/test_workers.py) measure the noise with repeats, stop themselves, store the
decision, leave no trial RUNNING, and a worker started later starts nothing."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from sweep import optuna_sweeper
from sweep.convergence import (
    NOISE_FLOOR,
    STOP_DECISION,
    outcomes,
    stopping_off_because,
    stopping_rule,
)
from sweep.places import DONE
from sweep.stopping import StoppingRule
from tests.sweep.test_workers import load, make_worker, sweep_at_once

RULE = {"enabled": True, "patience": 2, "min_trials": 5}


def noisy_job(params: dict[str, str]) -> float:
    """(x - 0.3)^2 at the base seed 42; each seed above it adds 0.01, so the best configuration x=0.3 run at
    seeds 42, 43, 44 spreads 0.02: no other configuration can beat its mean 0.01 by more than that."""
    time.sleep(0.02)
    return (float(params["x"]) - 0.3) ** 2 + 0.01 * (int(params.get("seed", 42)) - 42)


def worker(storage, folder, n_trials=30, stopping=RULE, job=noisy_job, **extra):
    """A sweeper over `job` whose first trial is x = 0.3, then 2 noise repeats of it, then the rule."""
    return make_worker(
        storage,
        folder,
        job,
        n_trials=n_trials,
        enqueue_trials=[{"x": 0.3}],
        noise_repeats=2,
        stopping=stopping,
        **extra,
    )


def test_two_workers_stop_themselves_with_no_trial_left_running(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(optuna_sweeper, "POLL_SECONDS", 0.05)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    workers = [worker(storage, tmp_path / name) for name in ("a", "b")]
    with caplog.at_level(logging.INFO, logger="sweep.optuna_sweeper"):
        assert sweep_at_once(workers) == []
    study = load(storage)
    assert not study.get_trials(states=(TrialState.RUNNING,))  # both took the wait path to the end
    finished = [t for t in study.trials if t.state in DONE]
    decision = study.user_attrs[STOP_DECISION]
    assert decision["n_trials"] == 30 and decision["patience"] == 2 and decision["min_trials"] == 5
    assert 5 <= decision["finished"] <= len(finished) < 30  # it stopped; a trial running then still counts
    assert study.user_attrs[NOISE_FLOOR] == pytest.approx(0.02) == decision["noise_floor"]
    assert decision["best_seed_mean"] <= 0.01 + 1e-12
    assert "did not beat the best configuration" in decision["reason"]
    stop_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Sweep stopped itself")]
    assert len(stop_lines) == 2  # each worker says why, once
    assert f"after {decision['finished']} of n_trials=30 trials" in stop_lines[0]
    assert "(noise floor 0.02, best seed mean" in stop_lines[0]
    reported = [yaml.safe_load((tmp_path / n / "optimization_results.yaml").read_text()) for n in "ab"]
    assert reported[0] == reported[1] and reported[0]["noise_floor"] == pytest.approx(0.02)


def test_a_stopped_study_stays_stopped_and_a_late_worker_starts_nothing(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(optuna_sweeper, "POLL_SECONDS", 0.05)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    worker(storage, tmp_path / "first").sweep([])
    before = len(load(storage).trials)
    assert STOP_DECISION in load(storage).user_attrs
    for n_trials in (30, 60):  # raising n_trials does not reopen it
        late = worker(storage, tmp_path / f"late{n_trials}", n_trials=n_trials)
        caplog.clear()
        with caplog.at_level(logging.INFO):
            late.sweep([])
        assert late.sweeper.launcher.launched == [] and len(load(storage).trials) == before
        assert caplog.records[-1].getMessage().startswith("compute:")  # it still reports
        assert any(r.getMessage().startswith("Sweep stopped itself") for r in caplog.records)
    resumed = worker(storage, tmp_path / "off", n_trials=before + 2, stopping={"enabled": False})
    resumed.sweep([])  # the off switch goes on up to n_trials
    assert len(resumed.sweeper.launcher.launched) == 2


def test_outcomes_are_in_the_order_trials_ended_with_pruned_ones_and_repeats():
    start, trials = datetime(2025, 1, 1), []
    for number, (value, state, ended) in enumerate(
        [(0.5, TrialState.COMPLETE, 3), (None, TrialState.PRUNED, 1), (0.4, TrialState.COMPLETE, 2)]
    ):
        trial = optuna.trial.create_trial(
            params={"x": float(number)},
            distributions={"x": optuna.distributions.FloatDistribution(0, 10)},
            value=value,
            state=state,
            user_attrs={"noise_repeat_of": 0, "seed": 43} if number == 2 else {},
        )
        trial.number, trial.datetime_complete = number, start + timedelta(seconds=ended)
        trials.append(trial)
    failed = optuna.trial.create_trial(state=TrialState.FAIL)
    told = outcomes([*trials, failed])
    assert [(o.number, o.value, o.repeat) for o in told] == [
        (1, None, False),
        (2, 0.4, True),
        (0, 0.5, False),
    ]
    for trial in trials:
        trial.datetime_complete = None  # a storage without end times: by number
    assert [o.number for o in outcomes(trials)] == [0, 1, 2]


def test_the_rule_is_off_for_several_objectives_and_the_grid_and_bad_settings_fail_in_one_sentence():
    assert stopping_off_because(optuna.create_study(directions=["minimize", "minimize"]), grid=False)
    assert "grid" in stopping_off_because(optuna.create_study(), grid=True)
    assert stopping_off_because(optuna.create_study(), grid=False) is None
    assert stopping_rule(None) == StoppingRule() and stopping_rule({"enabled": False}) is None
    assert stopping_rule({"patience": 3, "min_trials": 8}) == StoppingRule(patience=3, min_trials=8)
    with pytest.raises(ValueError, match="patience=0 must be at least 1"):
        stopping_rule({"patience": 0})
    with pytest.raises(ValueError, match="has no key"):
        stopping_rule({"patiance": 3})
