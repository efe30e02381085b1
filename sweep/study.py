"""The sweep's Optuna study: opening or creating it in its storage (retried while workers race to create
the tables), with its directions and metric names; the user attributes the sweeper and its jobs record on
trials; what sweep configs may instantiate; and every use of Optuna's private API in the sweep layer, each
beside why the public API cannot do it (checked on optuna 5.0.0).
"""

from __future__ import annotations

import itertools
import logging
import random
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from src.patches import optuna_metric_names_quietly

log = logging.getLogger(__name__)

PRUNED_AT = "pruned_at_step"  # user attribute the job sets when its pruner stopped it
FAIL_REASON = "fail_reason"
# what sweep configs may instantiate (Hydra asks for an allow-list): samplers and pruners
OPTUNA_TARGETS = ("hydra_plugins.hydra_optuna_sweeper.*", "optuna.samplers.*", "optuna.pruners.*")


def sqlite_folder(storage: str | None) -> Path | None:
    """The folder an sqlite:/// URL lives in (created before Optuna opens it)."""
    if storage and storage.startswith("sqlite:///"):
        return Path(storage.removeprefix("sqlite:///")).parent
    return None


def heartbeat_storage(url: str | None, interval: float | None, grace_period: float | None) -> Any:
    """The study's storage with Optuna's heartbeats: each worker records, every `interval` s, that its
    running trials are alive; a RUNNING trial whose last heartbeat is older than `grace_period` s belongs to a
    worker that is gone (killed, preempted, another machine that died) and is failed by whoever looks next.
    A URL without interval, or no URL (in-memory), is returned as it is."""
    if url is None or not interval or "://" not in url:
        return url
    with warnings.catch_warnings():  # "experimental" since Optuna 2.9; checked on 5.0.0
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url,
            heartbeat_interval=max(int(interval), 1),
            grace_period=max(int(grace_period or 2 * interval), 1),
        )


def fail_trials_without_heartbeat(study: optuna.Study) -> list[int]:
    """Fail the RUNNING trials whose last heartbeat is older than the storage's grace period, recording why;
    returns their numbers. Harmless when another worker fails them first."""
    storage = study._storage
    if not getattr(storage, "get_heartbeat_interval", lambda: None)():
        return []
    # optuna.storages.fail_stale_trials fails such trials first and calls back only afterwards, when a
    # finished trial's attributes can no longer be set; so the stale ids are read from the storage (private)
    # and the reason is recorded before the trial is failed.
    failed = []
    for trial_id in storage._get_stale_trial_ids(study._study_id):
        trial = storage.get_trial(trial_id)
        reason = (
            "interrupted: its worker stopped sending heartbeats (killed, preempted, or its machine is gone)"
        )
        try:
            storage.set_trial_user_attr(trial_id, FAIL_REASON, reason)
            tell(study, trial.number, state=optuna.trial.TrialState.FAIL)
        except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError, ValueError):
            continue  # another worker failed it first
        failed.append(trial.number)
        log.warning("Trial %d %s; marked failed", trial.number, reason.removeprefix("interrupted: "))
    return failed


def record_heartbeat(study: optuna.Study, trial: optuna.Trial) -> None:
    """Record that `trial` is alive, where the study's storage keeps heartbeats (a no-op elsewhere)."""
    # Only study.optimize() runs Optuna's heartbeat thread; with ask/tell the storage must be told directly,
    # and only it takes the trial's (private) id. (An RDB storage is wrapped in Optuna's cache, which passes
    # heartbeats through.)
    storage = study._storage
    if getattr(storage, "get_heartbeat_interval", lambda: None)():
        storage.record_heartbeat(trial._trial_id)


def open_study(
    storage: str | None,
    heartbeat_interval: float | None = None,
    grace_period: float | None = None,
    **kwargs: Any,
) -> optuna.Study:
    """optuna.create_study(load_if_exists=True), retried when workers started together on an empty database
    race to create Optuna's tables (the database then refuses the second CREATE TABLE or its version row)."""
    from sqlalchemy.exc import DatabaseError, IntegrityError, OperationalError, ProgrammingError

    folder = sqlite_folder(storage)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 6):
        try:
            backend = heartbeat_storage(storage, heartbeat_interval, grace_period)  # creates the tables
            return optuna.create_study(storage=backend, load_if_exists=True, **kwargs)
        except (IntegrityError, OperationalError, ProgrammingError) as error:
            lost_race = not isinstance(error, OperationalError) or "already exists" in str(error)
            if attempt == 5 or not lost_race:  # e.g. an unreachable server: no point in retrying
                raise StorageError(storage, error) from error
            log.info("Another worker is creating the study tables (%s); retrying", type(error).__name__)
            time.sleep(0.2 + random.random())
        except DatabaseError as error:  # not a database (a corrupt or foreign file), wrong schema …
            raise StorageError(storage, error) from error
    raise AssertionError("unreachable")


class StorageError(RuntimeError):
    """The study's storage cannot be opened: its message is one sentence, without a traceback."""

    def __init__(self, storage: str | None, error: Exception):
        from src.redact import redact

        detail = str(getattr(error, "orig", error)).strip().splitlines()[0]
        super().__init__(
            redact(
                f"cannot open the study storage {storage}: {detail} (a corrupt or non-Optuna SQLite file, or "
                "a database server that cannot be reached); fix hydra.sweeper.storage or point it elsewhere"
            )
        )


def open_sweep_study(
    storage: str | None,
    study_name: str | None,
    sampler: Any,
    directions: list[str],
    metric_names: list[str],
    **heartbeat: Any,
) -> optuna.Study:
    """The sweep's study, created on first use with one direction per objective and the objectives' names
    (the report's column names); a resumed or shared study keeps what it was created with."""
    study = open_study(storage, study_name=study_name, sampler=sampler, directions=directions, **heartbeat)
    if study.metric_names is None:
        with optuna_metric_names_quietly():  # src/patches.py: Optuna calls the API experimental
            study.set_metric_names(metric_names)
    return study


IDENTITY = "sweep_identity"  # study user attribute: the search space and fixed overrides it was created for


def sweep_identity(space: dict[str, Any], fixed_params: dict[str, Any], fixed_overrides: list[str]) -> dict:
    """What makes two sweeps the same study: the searched params' distributions and every fixed override
    (data, model, LoRA targets, the preset …) as given on the command line and in the preset's params."""
    return {
        "space": {name: str(distribution) for name, distribution in sorted(space.items())},
        "fixed": sorted([f"{k}={v}" for k, v in fixed_params.items()] + [str(o) for o in fixed_overrides]),
    }


def identity_mismatch(study: optuna.Study, identity: dict) -> str | None:
    """None if the study was created for this sweep (recording it on first use), else what differs."""
    recorded = study.user_attrs.get(IDENTITY)
    if recorded is None:
        study.set_user_attr(IDENTITY, identity)
        return None
    if recorded == identity:
        return None
    changes = []
    for name in sorted(set(recorded["space"]) | set(identity["space"])):
        before, now = recorded["space"].get(name), identity["space"].get(name)
        if before != now:
            changes.append(f"{name}: {before or 'not searched'} → {now or 'not searched'}")
    gone = sorted(set(recorded["fixed"]) - set(identity["fixed"]))
    new = sorted(set(identity["fixed"]) - set(recorded["fixed"]))
    changes += [f"was {o}" for o in gone] + [f"now {o}" for o in new]
    return "; ".join(changes[:4]) + (f" and {len(changes) - 4} more" if len(changes) > 4 else "")


def unused_study_name(storage: Any, name: str) -> str:
    """The first of name_2, name_3, … that no study in `storage` has: what a refused sweep can go on as."""
    taken = set(optuna.get_all_study_names(storage))
    return next(f"{name}_{n}" for n in itertools.count(2) if f"{name}_{n}" not in taken)


def tell(study: optuna.Study, trial: optuna.Trial | int, **outcome: Any) -> None:
    """study.tell, where GridSampler's `study.stop()` after the last grid point (which raises outside
    study.optimize) is harmless: the outcome is stored before it, and the sweep loop stops by n_trials."""
    try:
        study.tell(trial, **outcome)
    except RuntimeError as error:
        if "Study.stop" not in str(error):
            raise


def stored_trial(study: optuna.Study, trial: optuna.Trial) -> FrozenTrial:
    """The trial as stored now, with what its job wrote from another process (run_dir, pruned_at_step)."""
    # Trial's attributes are a copy cached at ask(); study.get_trials() would load every trial to read one.
    return study._storage.get_trial(trial._trial_id)


def set_user_attr(study: optuna.Study, trial: FrozenTrial, key: str, value: Any) -> None:
    """Set a user attribute of a trial this process did not ask for (one from study.get_trials())."""
    # FrozenTrial has no setter, and only the storage takes a trial's id, which FrozenTrial keeps private.
    study._storage.set_trial_user_attr(trial._trial_id, key, value)


def running_trial(study: optuna.Study, number: int) -> optuna.Trial:
    """Trial `number` of the study, for the job (another process) that runs it to report to."""
    # Only study.ask() hands out a Trial; finding one by number needs the storage's number-to-id map.
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    return optuna.Trial(study, trial_id)


def grid_trial(sampler: optuna.samplers.GridSampler, params: dict[str, Any], **trial: Any) -> FrozenTrial:
    """A trial (optuna.trial.create_trial's `trial` arguments) on the grid point equal to `params`, which
    GridSampler counts as visited once added to the study, so a grid sweep runs only the points missing."""
    # GridSampler numbers its points after shuffling them with its seed, and marks a point visited by its
    # number and search space in system attrs; it exposes neither the order nor the attrs' values.
    names, points, space = sampler._param_names, sampler._all_grids, sampler._search_space
    wanted = tuple(params[name] for name in names)
    grid_id = next(i for i, point in enumerate(points) if all(a == b for a, b in zip(point, wanted)))
    return optuna.trial.create_trial(
        params=dict(zip(names, points[grid_id])),
        distributions={name: optuna.distributions.CategoricalDistribution(space[name]) for name in names},
        system_attrs={"grid_id": grid_id, "search_space": space},
        **trial,
    )
