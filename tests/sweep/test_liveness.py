"""Stale trials (sweep/liveness.py): only those of dead workers on this host are failed at once; a dead worker
on another host loses its trial by heartbeat, and the others finish the study."""

from __future__ import annotations

import subprocess
import time

import optuna
from optuna.trial import TrialState

from sweep import optuna_sweeper
from sweep.liveness import WORKER, fail_stale_trials, worker_identity
from sweep.study import (
    FAIL_REASON,
    open_study,
    record_heartbeat,
    stored_trial,
)
from tests.sweep.test_workers import load, make_worker, objective


def test_stale_trials_are_only_those_of_dead_workers_on_this_host(tmp_path):
    study = open_study(f"sqlite:///{tmp_path / 'study.db'}", study_name="workers")
    dead = subprocess.Popen(["true"])
    dead.wait()
    here = worker_identity()
    owners = {
        "this worker": here,
        "a killed worker here": {**here, "pid": dead.pid},
        "a worker on another host": {**here, "host": "gpu-node-7", "pid": dead.pid},
        "a worker in another container": {**here, "pid": dead.pid, "pid_namespace": "pid:[1]"},
        "a worker that has not signed yet": None,
    }
    trials = {}
    for owner, identity in owners.items():
        trials[owner] = study.ask()
        if identity is not None:
            trials[owner].set_user_attr(WORKER, identity)
    assert fail_stale_trials(study) == [trials["a killed worker here"].number]
    assert fail_stale_trials(study) == []  # a second worker on this host finds nothing left to mark
    states = {owner: stored_trial(study, t).state for owner, t in trials.items()}
    assert states == {
        o: TrialState.FAIL if o == "a killed worker here" else TrialState.RUNNING for o in owners
    }


def test_a_dead_worker_on_another_host_loses_its_trial_by_heartbeat_and_the_others_finish(
    tmp_path, monkeypatch
):
    """Its pid cannot be checked from here; its heartbeats stop, and after the grace period any worker fails
    its trial, which frees the place (the old code waited for it for wait_timeout, 24 h by default)."""
    monkeypatch.setattr(optuna_sweeper, "POLL_SECONDS", 0.2)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = open_study(storage, heartbeat_interval=1, grace_period=2, study_name="workers")
    orphan = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    orphan.set_user_attr(WORKER, {**worker_identity(), "host": "gpu-node-7"})  # then its machine died
    record_heartbeat(study, orphan)
    worker = make_worker(storage, tmp_path, objective, n_trials=3, heartbeat_interval=1, grace_period=2)
    started = time.monotonic()
    worker.sweep([])
    final = load(storage)
    states = [t.state for t in final.get_trials()]
    assert states.count(TrialState.COMPLETE) == 3 and states[orphan.number] == TrialState.FAIL
    assert "stopped sending heartbeats" in final.trials[orphan.number].user_attrs[FAIL_REASON]
    assert time.monotonic() - started < 30
