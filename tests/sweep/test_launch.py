"""Launching a batch (sweep/launch.py): a batch the launcher lost is told from the trial folders, and joblib
runs parallel trials pinned to one GPU each."""

from __future__ import annotations

import json
import re

import optuna
import pytest
import yaml
from omegaconf import OmegaConf
from optuna.trial import TrialState

from sweep.launch import gpu_overrides
from sweep.study import (
    FAIL_REASON,
    running_trial,
)
from tests.conftest import ROOT
from tests.forked_cli import run_python
from tests.sweep.test_optuna_sweeper import sweep_command
from tests.sweep.test_workers import StandInLauncher, load, make_worker


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


@pytest.mark.slow
def test_joblib_launcher_runs_trials_in_parallel_on_separate_gpus(tmp_path):
    import os

    folder = tmp_path / "joblib"
    result = run_python(
        sweep_command(
            folder,
            "hydra/launcher=joblib_gpus",
            "hydra.sweeper.n_jobs=2",
            "hydra.sweeper.n_trials=2",
            "hydra.sweeper.pruner=null",
        ),
        cwd=ROOT,
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
