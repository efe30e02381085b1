"""The Hydra Optuna sweeper, extended where SFT sweeps need more than the plugin (hydra-optuna-sweeper 1.4.0rc3):

- resume: re-running a sweep continues its study up to `n_trials` finished (complete + pruned) trials in
  total, instead of running `n_trials` more;
- trial identity: each job receives its Optuna trial number (`trial=N`), so it writes to `trial_N/` (never a
  reused Hydra job number) and reports eval losses to its own trial for pruning;
- pruning: a trial the job stopped through the pruner is told PRUNED, not COMPLETE or FAIL;
- failures: a raising job (NaN loss, out of memory, bad sampled value) is told FAIL with the reason as a user
  attribute; the sweep goes on until `max_failures` trials have failed in this invocation;
- seeding: `enqueue_trials` queues fixed parameter sets (known-good baselines) before the sampler's picks.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_optuna_sweeper import _impl
from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from omegaconf import OmegaConf
from optuna.trial import TrialState

log = logging.getLogger(__name__)

PRUNED_AT = "pruned_at_step"  # user attribute the job sets when its pruner stopped it
FAIL_REASON = "fail_reason"
DONE = (TrialState.COMPLETE, TrialState.PRUNED)


WORKER = "worker"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_stale_trials(study: optuna.Study) -> list[int]:
    """Mark RUNNING trials whose sweep process on this host is gone (killed, preempted) as FAIL with the
    reason "interrupted"; they are not re-run with the same parameters, and do not count towards n_trials.
    Trials of workers on other hosts are left alone (their liveness cannot be checked from here)."""
    stale = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get(WORKER) or {}
        if worker.get("host") == socket.gethostname() and not _alive(int(worker.get("pid", -1))):
            reason = f"interrupted: its sweep process (pid {worker['pid']} on {worker['host']}) is gone"
            study._storage.set_trial_user_attr(trial._trial_id, FAIL_REASON, reason)
            study.tell(trial.number, state=TrialState.FAIL)
            stale.append(trial.number)
            log.warning("Trial %d %s; marked failed", trial.number, reason)
    return stale


class SweepAborted(RuntimeError):
    """More trials failed than the sweep's failure budget allows."""


def finished_trials(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=DONE))


def sqlite_folder(storage: str | None) -> Path | None:
    """The folder an sqlite:/// URL lives in (created before Optuna opens it)."""
    if storage and storage.startswith("sqlite:///"):
        return Path(storage.removeprefix("sqlite:///")).parent
    return None


class SFTOptunaSweeper(OptunaSweeper):
    """OptunaSweeper with resume-to-total, per-trial folders, pruning and a failure budget."""

    def __init__(self, *, max_failures: int, enqueue_trials: list | None, pruner: Any = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.max_failures = max_failures
        self.enqueue_trials = [dict(t) for t in enqueue_trials or []]
        self.pruner_config = pruner  # instantiated by the jobs (src/pruning), which report to the trial

    def sweep(self, arguments: list[str]) -> None:
        impl = self.sweeper
        impl._process_searchspace_config()
        params_conf = impl._parse_sweeper_params_config() + list(arguments)
        space, fixed_params, fixed_overrides = _impl.create_params_from_overrides(params_conf)
        for name in fixed_params:
            space.pop(name, None)
        folder = sqlite_folder(impl.storage)
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
        study = optuna.create_study(
            study_name=impl.study_name,
            storage=impl.storage,
            sampler=impl.sampler,
            direction=impl._get_directions()[0],
            load_if_exists=True,
        )
        fail_stale_trials(study)
        self._enqueue_new(study)
        done = finished_trials(study)
        to_go = max(impl.n_trials - done, 0)
        log.info(
            "Study %r in %s: %d finished trials, %d to go (n_trials=%d)",
            study.study_name,
            impl.storage,
            done,
            to_go,
            impl.n_trials,
        )
        failures = 0
        while to_go > 0:
            batch = [study.ask() for _ in range(min(to_go, impl.n_jobs))]
            for trial in batch:  # who runs it, so a restarted sweep can tell a dead worker's trial
                trial.set_user_attr(WORKER, {"host": socket.gethostname(), "pid": os.getpid()})
            overrides = impl._configure_trials(batch, space, fixed_params, fixed_overrides)
            overrides = [(*o, f"trial={t.number}") for o, t in zip(overrides, batch)]
            returns = impl.launcher.launch(overrides, initial_job_idx=impl.job_idx)
            impl.job_idx += len(returns)
            for trial, result in zip(batch, returns):
                if self._tell(study, trial, result):
                    to_go -= 1
                else:
                    failures += 1
            if failures > self.max_failures:
                raise SweepAborted(
                    f"{failures} trials failed, more than hydra.sweeper.max_failures={self.max_failures}; "
                    f"see {FAIL_REASON} in the study or the trials' train.log."
                )
        self._write_results(study)

    def _enqueue_new(self, study: optuna.Study) -> None:
        """Queue each configured parameter set once per study (a resumed sweep does not queue it again)."""
        queued = [t.params for t in study.get_trials(deepcopy=False)]
        for params in self.enqueue_trials:
            if params not in queued:
                study.enqueue_trial(params)

    def _tell(self, study: optuna.Study, trial: optuna.Trial, result) -> bool:
        """Record one job's outcome; True if the trial counts as finished (complete or pruned)."""
        try:
            value = float(result.return_value)
        except Exception as error:  # the job raised: JobReturn re-raises it here
            # src.train raises JobFailed("<original exception type>: <message>") for failed jobs
            reason = (
                str(error) if type(error).__name__ == "JobFailed" else f"{type(error).__name__}: {error}"
            )[:2000]
            trial.set_user_attr(FAIL_REASON, reason)
            study.tell(trial, state=TrialState.FAIL)
            log.warning("Trial %d failed: %s", trial.number, reason)
            return False
        attrs = study._storage.get_trial(trial._trial_id).user_attrs
        if PRUNED_AT in attrs:
            study.tell(trial, state=TrialState.PRUNED)
            log.info("Trial %d pruned at step %s", trial.number, attrs[PRUNED_AT])
            return True
        if not math.isfinite(value):
            trial.set_user_attr(FAIL_REASON, f"objective is {value}")
            study.tell(trial, state=TrialState.FAIL)
            return False
        study.tell(trial, value)
        return True

    def _write_results(self, study: optuna.Study) -> None:
        sweep_dir = Path(self.sweeper.config.hydra.sweep.dir)
        try:
            best = study.best_trial
        except ValueError:
            log.warning("No trial finished; nothing to report.")
            return
        results = {
            "name": "optuna",
            "best_trial": best.number,
            "best_params": best.params,
            "best_value": best.value,
        }
        OmegaConf.save(OmegaConf.create(results), sweep_dir / "optimization_results.yaml")
        log.info("Best trial %d: eval loss %.4f with %s", best.number, best.value, best.params)
        log.info("Report: python -m sweep.report %s", sweep_dir)


@dataclass
class SFTOptunaSweeperConf(OptunaSweeperConf):
    _target_: str = f"{SFTOptunaSweeper.__module__}.{SFTOptunaSweeper.__name__}"
    max_failures: int = 3  # failed trials (NaN, OOM, errors) tolerated per invocation before aborting
    enqueue_trials: list[Any] = field(default_factory=list)  # parameter sets to try first
    pruner: Any = None  # optuna pruner config (_target_: optuna.pruners.MedianPruner …); null = no pruning


def register() -> None:
    """Make `hydra/sweeper=sft_optuna` available; Hydra only instantiates registered plugin classes."""
    from hydra.core.plugins import Plugins

    Plugins.instance().register(SFTOptunaSweeper)
    ConfigStore.instance().store(
        group="hydra/sweeper", name="sft_optuna", node=SFTOptunaSweeperConf, provider="sft-sweep"
    )
