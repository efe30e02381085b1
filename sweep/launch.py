"""Launching a batch of trials' jobs through Hydra's launcher: each job is told its trial number and, under
the joblib launcher's parallel jobs, pinned to one GPU (CUDA_VISIBLE_DEVICES); when the launcher raises
for the whole batch (a SLURM job killed), each trial's outcome is read back from its folder.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobReturn, JobStatus

from src.run_record import read_metrics
from sweep.study import stored_trial

log = logging.getLogger(__name__)


def launch_trials(
    impl: Any, study: optuna.Study, trials: list[optuna.Trial], overrides: list[tuple[str, ...]]
) -> list[JobReturn]:
    """Run the trials' jobs (`overrides`: each trial's params) as one launch of the plugin's launcher
    (`impl`, its OptunaSweeperImpl); returns the jobs' results in the trials' order."""
    gpus = gpu_overrides(impl.config.hydra.launcher, impl.config.hydra.job.env_set, len(trials))
    overrides = [(*o, f"trial={t.number}", *g) for o, t, g in zip(overrides, trials, gpus)]
    try:
        returns = impl.launcher.launch(overrides, initial_job_idx=impl.job_idx)
    except Exception as error:  # the launcher lost a job: SLURM's time limit, a killed joblib process …
        log.warning(
            "The launcher failed (%s: %s); reading the batch's outcomes from its folders",
            type(error).__name__,
            error,
        )
        returns = [recovered_outcome(study, trial, error) for trial in trials]
    impl.job_idx += len(returns)
    return returns


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries (NVML counts them when the variable is
    unset, so CUDA is not initialised in the sweep process)."""
    setting = os.environ.get("CUDA_VISIBLE_DEVICES")
    if setting is None:
        import torch

        return [str(index) for index in range(torch.cuda.device_count())]
    gpus = []
    for entry in (e.strip() for e in setting.split(",")):
        if not entry or entry.startswith("-"):
            break  # CUDA ignores everything from an invalid entry on ("-1" hides all GPUs)
        gpus.append(entry)
    return gpus


def gpu_overrides(launcher: Any, env_set: Any, jobs: int) -> list[tuple[str, ...]]:
    """One GPU per job for the joblib launcher's parallel jobs: job k of a batch gets visible GPU k mod count,
    through hydra.job.env_set (applied before the job imports torch). Nothing for other launchers (SLURM
    gives each job its own GPUs), for one job at a time, for fewer than 2 GPUs, or when the user set
    hydra.job.env_set.CUDA_VISIBLE_DEVICES."""
    nothing: list[tuple[str, ...]] = [()] * jobs
    if jobs < 2 or "joblib" not in str(launcher.get("_target_", "")) or "CUDA_VISIBLE_DEVICES" in env_set:
        return nothing
    gpus = visible_gpus()
    if len(gpus) < 2:
        return nothing
    if launcher.get("backend") != "multiprocessing":
        _warn_once(
            "joblib's loky backend reuses worker processes, and a process keeps the GPU of its first trial; "
            "use hydra/launcher=joblib_gpus (a fresh process per trial) to pin every trial"
        )
    return [(f"++hydra.job.env_set.CUDA_VISIBLE_DEVICES='{gpus[k % len(gpus)]}'",) for k in range(jobs)]


@functools.cache
def _warn_once(message: str) -> None:
    log.warning(message)


def recovered_outcome(study: optuna.Study, trial: optuna.Trial, error: Exception) -> JobReturn:
    """A job's result when its launcher raised instead of returning it (hydra-submitit-launcher raises for
    the whole batch when one SLURM job is killed): a finished or pruned trial's metrics.json still holds its
    objective; any other trial failed with the launcher's error."""
    run_dir = stored_trial(study, trial).user_attrs.get("run_dir")
    path = Path(run_dir) / "metrics.json" if run_dir else None
    metrics = read_metrics(path)
    if metrics.get("status") in ("finished", "pruned"):
        return JobReturn(status=JobStatus.COMPLETED, _return_value=metrics)
    lost = JobLost(f"the launcher lost this job: {type(error).__name__}: {error}")
    return JobReturn(status=JobStatus.FAILED, _return_value=lost)


class JobLost(RuntimeError):
    """A job whose launcher raised before returning its result, and that left no finished metrics.json."""
