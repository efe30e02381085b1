"""Several sweep workers on one study: n_trials stays the total, no trial runs twice, every worker reports
the same best trial; stale-trial detection spares live and remote workers; joblib trials get one GPU each.

The fast tests drive the real sweeper loop with a stand-in launcher (jobs are Python functions); the slow
ones run `python -m src.train -m` processes on the tiny model, against PostgreSQL and with joblib."""

from __future__ import annotations

import json
import math
import re
import subprocess
import threading
import time
from pathlib import Path

import optuna
import pytest
import yaml
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from optuna.trial import TrialState

from sweep import optuna_sweeper
from sweep.launch import gpu_overrides
from sweep.liveness import WORKER, fail_stale_trials, worker_identity
from sweep.optuna_sweeper import SFTOptunaSweeper
from sweep.places import DONE, why_not_run
from sweep.space import search_space
from sweep.study import (
    FAIL_REASON,
    StorageError,
    open_study,
    record_heartbeat,
    running_trial,
    stored_trial,
)
from tests.conftest import ROOT
from tests.test_sweep import sweep_command

SPACE = ["x=interval(0, 1)"]


def objective(params: dict[str, str]) -> float:
    return (float(params["x"]) - 0.3) ** 2


class StandInLauncher:
    """Hydra's launcher interface, running each job as `job(overrides as a dict)` in this process."""

    def __init__(self, job):
        self.job = job
        self.launched: list[int] = []  # trial numbers, in launch order

    def launch(self, job_overrides, initial_job_idx):
        returns = []
        for overrides in job_overrides:
            params = dict(o.split("=", 1) for o in overrides)
            self.launched.append(int(params["trial"]))
            try:
                returns.append(JobReturn(status=JobStatus.COMPLETED, _return_value=self.job(params)))
            except Exception as error:
                returns.append(JobReturn(status=JobStatus.FAILED, _return_value=error))
        return returns


def make_worker(
    storage: str, sweep_dir: Path, job, n_trials: int, enqueue_trials=None, n_jobs: int = 1, **extra
) -> SFTOptunaSweeper:
    """A sweep worker as Hydra would build it from hparams_search (TPE seeded alike in every worker)."""
    worker = SFTOptunaSweeper(
        max_failures=10,
        enqueue_trials=enqueue_trials,
        wait_timeout=60,
        sampler={"_target_": "optuna.samplers.TPESampler", "seed": 7, "n_startup_trials": 2},
        direction="minimize",
        storage=storage,
        study_name="workers",
        n_trials=n_trials,
        n_jobs=n_jobs,
        max_failure_rate=0.0,
        custom_search_space=None,
        params=OmegaConf.create({"x": "interval(0, 1)"}),
        **extra,
    )
    worker.sweeper.config = OmegaConf.create(
        {
            "hydra": {
                "sweep": {"dir": str(sweep_dir)},
                "launcher": {"_target_": "stand-in"},
                "job": {"env_set": {}},
            }
        }
    )
    worker.sweeper.launcher = StandInLauncher(job)
    return worker


def load(storage: str) -> optuna.Study:
    return optuna.load_study(study_name="workers", storage=storage)


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


def test_a_worker_racing_for_the_last_place_launches_nothing(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    space, fixed, fixed_overrides = search_space(SPACE)
    late = make_worker(storage, tmp_path / "late", objective, n_trials=4)
    late_study = open_study(storage, study_name="workers")

    def job(params):
        if params["trial"] == "3":  # meanwhile a second worker, which counted one free place, asks for it
            assert late._run_batch(late_study, 1, space, fixed, fixed_overrides) == 0
        return objective(params)

    make_worker(storage, tmp_path / "first", job, n_trials=4).sweep([])
    trials = load(storage).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4 + [TrialState.FAIL]
    assert trials[4].user_attrs[FAIL_REASON].startswith("surplus: n_trials=4")
    assert trials[4].params == {}  # never sampled, never launched, no folder
    assert late.sweeper.launcher.launched == []


def test_a_surplus_enqueued_trial_is_queued_again_and_runs_on_resume(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    space, fixed, fixed_overrides = search_space(SPACE)
    late = make_worker(storage, tmp_path / "late", objective, n_trials=1)
    late_study = open_study(storage, study_name="workers")

    def job(params):
        late_study.enqueue_trial({"x": 0.25})  # queued by a worker that starts now; it asks at once
        assert late._run_batch(late_study, 1, space, fixed, fixed_overrides) == 0
        return objective(params)

    make_worker(storage, tmp_path / "first", job, n_trials=1).sweep([])
    trials = load(storage).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.WAITING]
    assert trials[1].user_attrs[FAIL_REASON].startswith("surplus")
    resumed = make_worker(storage, tmp_path / "first", objective, n_trials=2)
    resumed.sweep([])
    assert resumed.sweeper.launcher.launched == [2]
    assert load(storage).trials[2].params == {"x": 0.25}


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


def test_concurrent_workers_with_failing_trials_finish_exactly_n_trials_and_agree(tmp_path, monkeypatch):
    monkeypatch.setattr(optuna_sweeper, "POLL_SECONDS", 0.05)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    open_study(storage, study_name="workers")

    def job(params):
        time.sleep(0.05 * (int(params["trial"]) % 4))
        if int(params["trial"]) % 3 == 1:
            raise RuntimeError("out of memory")
        return objective(params)

    workers = [make_worker(storage, tmp_path / name, job, n_trials=8) for name in ("a", "b", "c")]
    errors = []

    def run(worker):
        try:
            worker.sweep([])
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors and not any(t.is_alive() for t in threads)
    study = load(storage)
    finished = [t.number for t in study.trials if t.state in DONE]
    assert len(finished) == 8
    launched = [n for w in workers for n in w.sweeper.launcher.launched]
    assert len(launched) == len(set(launched))  # no trial ran twice
    assert all(len(w.sweeper.launcher.launched) > 0 for w in workers)
    for trial in study.trials:  # every other trial failed in its job, or lost a race and never ran
        reason = trial.user_attrs.get(FAIL_REASON, "")
        if trial.state in DONE:
            continue
        if reason.startswith("surplus"):
            assert trial.number not in launched
        else:
            assert reason == "RuntimeError: out of memory" and trial.number in launched
    params = [tuple(t.params.items()) for t in study.trials if t.params]
    assert len(params) == len(set(params))  # one seed, yet no worker repeated another's draw
    reported = {
        yaml.safe_load((tmp_path / n / "optimization_results.yaml").read_text())["best_trial"] for n in "abc"
    }
    assert reported == {study.best_trial.number}


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


def test_a_batch_the_launcher_lost_is_told_from_the_trial_folders(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"

    def job(params):  # like src.train: the trial learns its folder, and metrics.json is written last
        number, folder = int(params["trial"]), tmp_path / f"trial_{params['trial']}"
        folder.mkdir()
        running_trial(load(storage), number).set_user_attr("run_dir", str(folder))
        if number != 1:  # trial 1 is killed by SLURM's time limit before it finishes
            (folder / "metrics.json").write_text(json.dumps({"status": "finished", "best_eval_loss": 0.5}))
        else:  # …leaving a torn metrics.json (a file system without atomic rename): unfinished, no crash
            (folder / "metrics.json").write_text('{"status": "fini')
        return 0.5

    class LosingLauncher(StandInLauncher):  # hydra-submitit-launcher raises when one job of a batch died
        def launch(self, job_overrides, initial_job_idx):
            returns = super().launch(job_overrides, initial_job_idx)
            if initial_job_idx == 0:
                raise RuntimeError("UncompletedJobError: job 4242_1 has not produced any output (TIMEOUT)")
            return returns

    worker = make_worker(storage, tmp_path, job, n_trials=3, n_jobs=2)
    worker.sweeper.launcher = LosingLauncher(job)
    worker.sweep([])
    trials = load(storage).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL] + [TrialState.COMPLETE] * 2
    assert trials[0].value == 0.5
    assert trials[1].user_attrs[FAIL_REASON] == (
        "the launcher lost this job: RuntimeError: UncompletedJobError: job 4242_1 has not produced any output "
        "(TIMEOUT)"
    )


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


def test_parallel_joblib_jobs_are_pinned_to_one_gpu_each(monkeypatch):
    joblib = OmegaConf.create({"_target_": "hydra_plugins.hydra_joblib_launcher.JoblibLauncher"})
    joblib_gpus = OmegaConf.merge(joblib, {"backend": "multiprocessing"})
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    expected = [(f"++hydra.job.env_set.CUDA_VISIBLE_DEVICES='{g}'",) for g in ("2", "5", "2")]
    assert gpu_overrides(joblib_gpus, {}, 3) == expected
    assert gpu_overrides(joblib_gpus, {}, 1) == [()]  # one trial at a time: all GPUs stay visible
    assert gpu_overrides(joblib_gpus, {"CUDA_VISIBLE_DEVICES": "3"}, 2) == [(), ()]  # the user's choice
    slurm = OmegaConf.create({"_target_": "hydra_plugins.hydra_submitit_launcher.SlurmLauncher"})
    assert gpu_overrides(slurm, {}, 2) == [(), ()]  # SLURM allocates each job's GPUs
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4")
    assert gpu_overrides(joblib_gpus, {}, 2) == [(), ()]  # one GPU: the jobs share it
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert gpu_overrides(joblib, {}, 2) == [(), ()]


def best_trial_line(output: str) -> int:
    """The trial number of a worker's final "Best trial N: best_eval_loss …" line."""
    return int(re.findall(r"Best trial (\d+): best_eval_loss", output)[-1])


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


@pytest.mark.slow
def test_joblib_launcher_runs_trials_in_parallel_on_separate_gpus(tmp_path):
    import os

    folder = tmp_path / "joblib"
    result = subprocess.run(
        sweep_command(
            folder,
            "hydra/launcher=joblib_gpus",
            "hydra.sweeper.n_jobs=2",
            "hydra.sweeper.n_trials=2",
            "hydra.sweeper.pruner=null",
        ),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        # the sweeper pins each parallel trial to one of these; on a CPU machine nothing else changes
        env={**os.environ, "CUDA_VISIBLE_DEVICES": "0,1"},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "backend=multiprocessing" in result.stderr + result.stdout
    study = optuna.load_study(study_name="tiny_cpu", storage=f"sqlite:///{folder / 'optuna.db'}")
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert [t.number for t in trials] == [0, 1]
    assert len({t.user_attrs["pid"] for t in trials}) == 2  # each job in its own process
    spans, pinned = [], []
    for trial in trials:
        trial_dir = folder / f"trial_{trial.number}"
        assert (trial_dir / "adapter" / "adapter_model.safetensors").is_file()
        stamps = re.findall(r"^\[([\d-]+ [\d:,]+)\]", (trial_dir / "train.log").read_text(), re.MULTILINE)
        spans.append((stamps[0], stamps[-1]))
        hydra_config = yaml.safe_load((trial_dir / ".hydra" / "hydra.yaml").read_text())
        pinned.append(hydra_config["hydra"]["job"]["env_set"]["CUDA_VISIBLE_DEVICES"])
    assert max(start for start, _ in spans) < min(end for _, end in spans)  # the two trials overlapped
    assert pinned == ["0", "1"]
