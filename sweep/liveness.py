"""Which process runs a trial, and which RUNNING trials belong to a sweep worker that is gone.

Two signals, checked by every worker when it starts and while it waits:
- heartbeats (any host): while its trials run, a worker records in the study's storage that they are
  alive, every hydra.sweeper.heartbeat_interval seconds (Optuna's RDB heartbeats). A RUNNING trial with no
  heartbeat for hydra.sweeper.grace_period seconds is failed: its worker was killed, preempted, or its
  machine or container is gone.
- on this host, at once: each worker signs the trials it asks with its identity (host, pid, pid namespace);
  a trial whose worker process on this host no longer exists is failed without waiting for the grace period.
A failed trial frees its place and is not re-run with the same parameters.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Iterator
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweep.study import FAIL_REASON, fail_trials_without_heartbeat, record_heartbeat, set_user_attr, tell

log = logging.getLogger(__name__)

WORKER = "worker"  # user attribute: the identity of the worker that asked the trial


def worker_identity() -> dict[str, Any]:
    """Who runs a trial: host, pid and pid namespace (containers sharing a host name have separate ones)."""
    namespace = None
    with contextlib.suppress(OSError):
        namespace = os.readlink("/proc/self/ns/pid")
    return {"host": socket.gethostname(), "pid": os.getpid(), "pid_namespace": namespace}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _checkable_here(worker: dict[str, Any], here: dict[str, Any]) -> bool:
    """Whether this process can tell if `worker` is alive: same host and, where recorded, same pid namespace."""
    if worker.get("host") != here["host"]:
        return False
    return worker.get("pid_namespace") in (None, here["pid_namespace"]) or here["pid_namespace"] is None


@contextlib.contextmanager
def heartbeats(study: optuna.Study, trials: list[optuna.Trial], interval: float | None) -> Iterator[None]:
    """While a batch runs, record every `interval` s that its trials are alive (where the storage keeps
    heartbeats): if this worker dies, on any host, its trials' heartbeats stop and other workers fail them."""
    if not interval or not trials:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while True:
            for trial in trials:
                with contextlib.suppress(
                    Exception
                ):  # a storage hiccup must not kill the run; next beat retries
                    record_heartbeat(study, trial)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name="trial-heartbeats", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def fail_stale_trials(study: optuna.Study) -> list[int]:
    """Mark RUNNING trials whose sweep process on this host is gone (killed, preempted) as FAIL with the
    reason "interrupted"; they are not re-run with the same parameters, and do not count towards n_trials.
    Trials of live workers, and of workers on other hosts (their liveness cannot be checked from here),
    are left alone."""
    stale = fail_trials_without_heartbeat(study)  # any host: trials whose heartbeats stopped (heartbeats())
    here = worker_identity()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get(WORKER) or {}
        if not _checkable_here(worker, here) or _alive(int(worker.get("pid", -1))):
            continue
        reason = f"interrupted: its sweep process (pid {worker['pid']} on {worker['host']}) is gone"
        try:
            set_user_attr(study, trial, FAIL_REASON, reason)
            tell(study, trial.number, state=TrialState.FAIL)
        except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError, ValueError):
            continue  # another worker on this host marked it first
        stale.append(trial.number)
        log.warning("Trial %d %s; marked failed", trial.number, reason)
    return stale


def describe_worker(trial: FrozenTrial) -> str:
    """The worker running `trial`, as log lines name it."""
    worker = trial.user_attrs.get(WORKER) or {}
    return f"pid {worker.get('pid', '?')} on {worker.get('host', '?')}"
