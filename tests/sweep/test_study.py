"""The shared study (sweep/study.py): parameters enqueued by two starting workers run once, workers starting
together on an empty database retry creating its tables, and two workers share one PostgreSQL study."""

from __future__ import annotations

import json
import math
import subprocess

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from sweep.liveness import WORKER
from sweep.places import DONE
from sweep.study import (
    FAIL_REASON,
    StorageError,
    open_study,
)
from tests.conftest import ROOT
from tests.sweep.test_optuna_sweeper import sweep_command
from tests.sweep.test_workers import best_trial_line, load, make_worker, objective


def test_parameters_enqueued_by_two_starting_workers_run_once(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = open_study(storage, study_name="workers")
    study.enqueue_trial({"x": 0.5})  # enqueue's skip_if_exists is check-then-insert: two workers starting
    study.enqueue_trial({"x": 0.5})  # together can both queue the same parameters
    worker = make_worker(storage, tmp_path, objective, n_trials=2, enqueue_trials=[{"x": 0.5}])
    worker.sweep([])
    trials = load(storage).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert trials[0].params == {"x": 0.5} and trials[2].params != {"x": 0.5}
    assert trials[1].user_attrs[FAIL_REASON] == "duplicate: trial 0 has the same enqueued parameters"
    assert worker.sweeper.launcher.launched == [0, 2]


def test_workers_starting_together_on_an_empty_database_retry_table_creation(tmp_path, monkeypatch):
    from sqlalchemy.exc import OperationalError

    create_study, calls = optuna.create_study, []

    def racing_create_study(**kwargs):
        calls.append(kwargs["storage"])
        if len(calls) == 1:  # what SQLite says when another worker created the table first
            raise OperationalError("CREATE TABLE studies", {}, Exception("table studies already exists"))
        return create_study(**kwargs)

    monkeypatch.setattr("sweep.study.time.sleep", lambda seconds: None)
    monkeypatch.setattr(optuna, "create_study", racing_create_study)
    assert open_study(f"sqlite:///{tmp_path / 'study.db'}", study_name="workers").study_name == "workers"
    assert len(calls) == 2

    def unreachable(**kwargs):
        calls.append(kwargs["storage"])
        raise OperationalError("connect", {}, Exception("connection refused"))

    monkeypatch.setattr(optuna, "create_study", unreachable)
    with pytest.raises(StorageError, match="connection refused"):  # one sentence for the user, see test_sweep
        open_study("postgresql://sweeper@db-host/sweeps", study_name="workers")
    assert len(calls) == 3  # not retried


@pytest.mark.slow
def test_two_workers_share_one_postgres_study(tmp_path, postgres_url, capsys):
    from sweep.report import main as report_main

    folder = tmp_path / "sweep"
    password = postgres_url.split(":")[2].split("@")[0]
    args = [
        f"hydra.sweeper.storage={postgres_url}",
        "hydra.sweeper.study_name=two_workers",
        "hydra.sweeper.n_trials=4",
    ]
    workers = [
        subprocess.Popen(
            sweep_command(folder, *args),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [worker.communicate(timeout=900)[0] for worker in workers]
    for worker, output in zip(workers, outputs):
        assert worker.returncode == 0, output[-4000:]
    study = optuna.load_study(study_name="two_workers", storage=postgres_url)
    finished = sorted((t for t in study.trials if t.state in DONE), key=lambda t: t.number)
    assert len(finished) == 4
    for trial in study.trials:
        assert trial.state in DONE or trial.user_attrs[FAIL_REASON].startswith("surplus")
    assert sorted(p.name for p in folder.glob("trial_*")) == sorted(f"trial_{t.number}" for t in finished)
    for trial in finished:
        trial_dir = folder / f"trial_{trial.number}"
        metrics = json.loads((trial_dir / "metrics.json").read_text())
        assert metrics["status"] in ("finished", "pruned")
        if trial.state == TrialState.COMPLETE:
            assert trial.value == pytest.approx(metrics["best_eval_loss"], abs=1e-9)
        assert (trial_dir / "adapter" / "adapter_model.safetensors").is_file()
        # every eval loss after warmup reached the PostgreSQL study, at its percent of the trial's schedule,
        # where the median pruner compares them
        warmup = math.ceil(trial.params["optim.warmup_ratio"] * metrics["planned_steps"])
        reported = [
            round(100 * e["schedule_fraction"]) for e in metrics["eval_history"] if e["step"] > warmup
        ]
        assert list(trial.intermediate_values) == reported
    assert len({t.user_attrs[WORKER]["pid"] for t in finished}) == 2  # both workers ran trials
    assert len({tuple(t.params.items()) for t in finished}) == 4
    best = study.best_trial.number
    assert [best_trial_line(output) for output in outputs] == [best, best]
    assert yaml.safe_load((folder / "optimization_results.yaml").read_text())["best_trial"] == best
    capsys.readouterr()
    report_main([str(folder), "--storage", postgres_url])
    assert f"Best trial {best}:" in capsys.readouterr().out
    assert all(password not in output for output in outputs)  # masked as *** in every log line
    leaks = [p for p in folder.rglob("*") if p.is_file() and password.encode() in p.read_bytes()]
    assert leaks == []
