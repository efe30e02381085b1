"""Several sweep workers on one study: n_trials stays the total and every worker reports the same best trial
(the sweeper loop with a stand-in launcher: jobs are Python functions); `python -m sweep.workers` starts one
worker per device, each pinned to its GPU with a share of the cores, forwards Ctrl-C and keeps every
worker's output."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import optuna
import pytest
import yaml
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from optuna.trial import TrialState

from sweep import optuna_sweeper
from sweep import workers as workers_module
from sweep.liveness import WORKER
from sweep.optuna_sweeper import SFTOptunaSweeper
from sweep.places import DONE, is_surplus
from sweep.study import (
    FAIL_REASON,
    open_study,
)
from sweep.workers import main, plan_workers, run_workers
from tests.conftest import run_module

# ---------------------------------------------------------------------------------------------------------
# From w1.py

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
    """A sweep worker as Hydra would build it from hparams_search (TPE seeded alike in every worker); without
    noise repeats (so without a stopping decision) unless `extra` asks for them."""
    extra = {"noise_repeats": 0, **extra}
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
            },
            "seed": 42,
        }
    )
    worker.sweeper.launcher = StandInLauncher(job)
    return worker


def load(storage: str) -> optuna.Study:
    return optuna.load_study(study_name="workers", storage=storage)


def sweep_at_once(workers: list, timeout: float = 120) -> list:
    """Every worker's sweep in a thread of its own, all at once; the errors they raised (none: [])."""
    errors = []

    def run(worker):
        try:
            worker.sweep([])
        except BaseException as error:  # reported by the caller
            errors.append(error)

    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    return errors + [RuntimeError(f"{t.name} still running") for t in threads if t.is_alive()]


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
    assert sweep_at_once(workers) == []
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


def best_trial_line(output: str) -> int:
    """The trial number of a worker's final "Best trial N: best_eval_loss …" line."""
    return int(re.findall(r"Best trial (\d+): best_eval_loss", output)[-1])


# ---------------------------------------------------------------------------------------------------------
# From test_workers_per_device_tmp.py


def test_workers_are_pinned_to_their_gpu_and_share_the_cores():
    workers = plan_workers(["0", "1"], per_device=2, threads=16)
    assert [w.name for w in workers] == ["gpu0/0", "gpu0/1", "gpu1/0", "gpu1/1"]
    assert [w.env["CUDA_VISIBLE_DEVICES"] for w in workers] == ["0", "0", "1", "1"]
    assert {(w.env["OMP_NUM_THREADS"], w.env["MKL_NUM_THREADS"]) for w in workers} == {("4", "4")}
    on_cpu = plan_workers([], per_device=3, threads=2)  # fewer cores than workers: one thread each
    assert [w.name for w in on_cpu] == ["cpu/0", "cpu/1", "cpu/2"]
    assert all("CUDA_VISIBLE_DEVICES" not in w.env and w.env["OMP_NUM_THREADS"] == "1" for w in on_cpu)


def test_a_sweep_workers_cannot_share_is_refused_in_one_sentence(capsys):
    assert main(["--per-device", "2", "--", "optim.learning_rate=1e-4,2e-4"]) == 2  # Hydra's basic sweeper
    assert "workers share one Optuna study: give a preset" in capsys.readouterr().err
    assert main(["--per-device", "2", "--", "hparams_search=tiny_cpu", "hydra.sweeper.n_jobs=2"]) == 2
    assert "drop hydra.sweeper.n_jobs" in capsys.readouterr().err
    assert main(["--per-device", "2", "--", "hparams_search=tiny_cpu", "lora.rank=8"]) == 2
    error = capsys.readouterr().err
    assert "rank" in error and len(error.strip().splitlines()) == 1


def test_output_is_prefixed_and_kept_and_a_failed_worker_fails_the_command(tmp_path, capsys):
    # each stand-in worker prints its thread share and exits with its GPU's number
    command = [
        sys.executable,
        "-c",
        "import os, sys; print('threads', os.environ['OMP_NUM_THREADS']); "
        "sys.exit(int(os.environ['CUDA_VISIBLE_DEVICES']))",
    ]
    assert run_workers(plan_workers(["0", "3"], per_device=1, threads=4), command, tmp_path) == 3
    out = capsys.readouterr().out
    assert "[gpu0/0] threads 2\n" in out and "[gpu3/0] threads 2\n" in out
    assert "worker gpu3/0 exited with 3" in out and "gpu0/0 exited" not in out
    assert (tmp_path / "gpu3-0.log").read_text() == "threads 2\n"


def test_ctrl_c_stops_every_worker(tmp_path):
    command = [
        sys.executable,
        "-c",
        "import time\ntry:\n    time.sleep(120)\nexcept KeyboardInterrupt:\n    print('interrupted')\n    raise",
    ]
    threading.Timer(3.0, os.kill, (os.getpid(), signal.SIGINT)).start()  # Ctrl-C in a terminal
    started = time.monotonic()
    assert run_workers(plan_workers([], per_device=2, threads=2), command, tmp_path) == 130
    assert time.monotonic() - started < 60
    assert [(p.name, p.read_text().splitlines()[0]) for p in sorted(tmp_path.glob("*.log"))] == [
        ("cpu-0.log", "interrupted"),
        ("cpu-1.log", "interrupted"),
    ]


class BatchLauncher:
    """Hydra's launcher interface as the joblib launcher behaves: the jobs of a batch run at once (threads
    here), and the batch returns when the last of them has ended."""

    def __init__(self, job):
        self.job = job

    def launch(self, job_overrides, initial_job_idx):
        with ThreadPoolExecutor(len(job_overrides)) as pool:
            values = list(pool.map(lambda o: self.job(dict(x.split("=", 1) for x in o)), job_overrides))
        return [JobReturn(status=JobStatus.COMPLETED, _return_value=v) for v in values]


def test_a_worker_that_misses_the_forwarded_ctrl_c_is_terminated(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(workers_module, "STOP_GRACE_SECONDS", 1.0)
    command = [
        sys.executable,
        "-c",
        "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(120)",
    ]
    threading.Timer(3.0, os.kill, (os.getpid(), signal.SIGINT)).start()
    started = time.monotonic()
    assert run_workers(plan_workers([], per_device=1, threads=1), command, tmp_path) == 130
    assert time.monotonic() - started < 30
    out = capsys.readouterr().out
    assert "still running 1 s after SIGINT: sending SIGTERM" in out
    assert "worker cpu/0 was stopped by SIGTERM" in out


def trial_spans(tmp_path, name: str, workers: int, n_jobs: int) -> dict[int, tuple[float, float]]:
    """Run the real sweeper loop, `workers` of them (threads) with `n_jobs` trials per batch, on jobs that
    sleep 2 s for trial 0 and 0.05 s for the others; each trial's (start, end) times."""
    spans: dict[int, tuple[float, float]] = {}

    def job(params):
        number, start = int(params["trial"]), time.monotonic()
        time.sleep(2.0 if number == 0 else 0.05)
        spans[number] = (start, time.monotonic())
        return objective(params)

    storage = f"sqlite:///{tmp_path / f'{name}.db'}"
    sweepers = [
        make_worker(storage, tmp_path / name / str(k), job, n_trials=6, n_jobs=n_jobs) for k in range(workers)
    ]
    for sweeper in sweepers:
        sweeper.sweeper.launcher = BatchLauncher(job)
    threads = [threading.Thread(target=s.sweep, args=([],)) for s in sweepers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return spans


def test_a_worker_asks_for_its_next_trial_while_other_workers_trials_run(tmp_path, monkeypatch):
    """Two one-trial-at-a-time workers (what sweep.workers starts) against one sweep process running n_jobs=2
    batches: while the long trial 0 runs, the other worker goes on with trials 2, 3 …; the batch runs only
    trial 1 beside it and leaves that slot idle until trial 0 ends."""
    monkeypatch.setattr(optuna_sweeper, "POLL_SECONDS", 0.05)

    def run_beside_trial_0(spans):
        start, end = spans[0]
        return [n for n, (s, e) in sorted(spans.items()) if n and start <= s and e < end]

    two_workers = trial_spans(tmp_path, "workers", workers=2, n_jobs=1)
    one_batching = trial_spans(tmp_path, "batches", workers=1, n_jobs=2)
    assert len(two_workers) == len(one_batching) == 6
    assert len(run_beside_trial_0(two_workers)) >= 3  # the free worker asked again, and again
    assert run_beside_trial_0(one_batching) == [1]  # trial 2 waited for trial 0, the batch's longest


SETTINGS = ["hparams_search=grid_default", "model=tiny", "data.builtin_examples=16", "save.adapter=true"]
GRID = (  # 3 learning rates, 1 epoch of 6 steps each; n_trials=2 leaves one out
    'hydra.sweeper.params={optim.learning_rate:"choice(3e-3,1e-2,3e-2)",lora.r:"choice(4)",'
    'optim.num_train_epochs:"choice(1)"}'
)
# Tolerances against the same configuration run alone. Workers get a share of the threads (OMP_NUM_THREADS),
# and a thread count changes the order of float32 sums. Measured on this grid's largest learning rate, 1 and 2
# threads gave identical eval losses and LoRA tensors at most 1e-5 of their largest entry apart (1.6e-6 of
# 0.17). The tolerances leave 10x that; the grid's learning rates move the best eval loss by 0.04 or more and
# every LoRA tensor by at least 10% of its largest entry, so a trial given another one's result fails.
LOSS_RTOL = 1e-5  # relative: 1e-4 on an eval loss of ~10.4
WEIGHT_TOL = 1e-4  # of each LoRA tensor's largest absolute entry


@pytest.mark.slow
def test_two_workers_at_once_give_each_trial_the_result_it_has_alone(tmp_path):
    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "sweep"
    swept = run_module(
        "sweep.workers",
        "--per-device",
        "2",
        "--",
        *SETTINGS,
        f"hydra.sweep.dir={folder}",
        GRID,
        "hydra.sweeper.n_trials=2",
        env={"CUDA_VISIBLE_DEVICES": ""},  # the CPU path, on a GPU machine too
    )
    assert swept.returncode == 0, swept.stdout[-4000:]
    assert "2 workers on the CPU" in swept.stdout
    study = optuna.load_study(study_name="grid_default", storage=f"sqlite:///{folder / 'optuna.db'}")
    finished = study.get_trials(states=(TrialState.COMPLETE,))
    # n_trials respected: 2 of the grid's 3 points ran, once each; anything else lost a race before it ran
    assert len(finished) == 2
    assert all(t.state == TrialState.COMPLETE or is_surplus(t) for t in study.trials)
    assert len({t.params["optim.learning_rate"] for t in finished}) == 2
    assert sorted(p.name for p in folder.glob("trial_*")) == sorted(f"trial_{t.number}" for t in finished)
    # each worker ran one trial, at the same time as the other
    first, second = finished
    assert first.user_attrs[WORKER]["pid"] != second.user_attrs[WORKER]["pid"]
    assert first.datetime_start < second.datetime_complete and second.datetime_start < first.datetime_complete
    assert "[cpu/0] " in swept.stdout and "[cpu/1] " in swept.stdout
    assert sorted(p.name for p in (folder / "workers").iterdir()) == ["cpu-0.log", "cpu-1.log"]
    for trial in finished:
        trial_dir = folder / f"trial_{trial.number}"
        overrides = yaml.safe_load((trial_dir / ".hydra" / "overrides.yaml").read_text())
        alone_dir = tmp_path / f"alone_{trial.number}"
        alone = run_module(
            "src.train",
            *(o for o in overrides if not o.startswith("trial=")),  # the job's overrides, as a plain run
            f"hydra.run.dir={alone_dir}",
            env={"CUDA_VISIBLE_DEVICES": ""},
        )
        assert alone.returncode == 0, alone.stderr[-4000:]
        in_sweep, by_itself = (json.loads((d / "metrics.json").read_text()) for d in (trial_dir, alone_dir))
        assert trial.value == pytest.approx(by_itself["best_eval_loss"], rel=LOSS_RTOL)
        curve = [e["eval_loss"] for e in in_sweep["eval_history"]]
        assert len(curve) == 6
        assert curve == pytest.approx([e["eval_loss"] for e in by_itself["eval_history"]], rel=LOSS_RTOL)
        weights, alone_weights = (
            load_file(d / "adapter" / "adapter_model.safetensors") for d in (trial_dir, alone_dir)
        )
        assert weights.keys() == alone_weights.keys()
        for name, alone_tensor in alone_weights.items():
            scale = alone_tensor.abs().max().item()
            torch.testing.assert_close(weights[name], alone_tensor, rtol=0, atol=WEIGHT_TOL * scale)
