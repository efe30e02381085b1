"""The sweep's preflight: what refuses a sweep before its first trial is created. Each check raises
SweepRefused with one sentence and the fix; the sweeper catches it once and exits 2 without a traceback.

- a data or model setting searched by accident (an unquoted comma list inside -m);
- a study kept in memory, which the jobs and a resumed sweep cannot reach;
- a storage that cannot be opened;
- a study created for another sweep (other search space or fixed overrides);
- an enqueued trial the search space cannot produce.
"""

from __future__ import annotations

import logging
from typing import Any

import optuna
from optuna.distributions import BaseDistribution

from src.redact import redact
from sweep.space import cannot_produce, outside_interval
from sweep.study import StorageError, identity_mismatch, open_sweep_study, unused_study_name

log = logging.getLogger(__name__)


class SweepRefused(Exception):
    """The sweep cannot start as configured; its message is one sentence for the user (the sweep exits 2)."""


def check_searched_settings(space: dict[str, BaseDistribution], search_data_and_model: bool) -> None:
    """Refuse a search over data.* or model.* settings unless hydra.sweeper.search_data_and_model is set."""
    data_or_model = sorted(k for k in space if k.startswith(("data.", "model.")))
    if data_or_model and not search_data_and_model:
        raise SweepRefused(
            f"This sweep would search over {', '.join(data_or_model)} (each trial training on one value): "
            "inside -m an unquoted comma list is a sweep. Quote it (data.path='a.jsonl,b.jsonl') or give a list "
            "(data.path=[a.jsonl,b.jsonl]); to search over data or model settings on purpose, set "
            "hydra.sweeper.search_data_and_model=true."
        )


def check_storage(storage: Any) -> None:
    """Refuse hydra.sweeper.storage=null: the jobs report to the study, so it must live in a database."""
    if storage is None:
        raise SweepRefused(
            "hydra.sweeper.storage=null keeps the study in this process's memory, but each trial reports "
            "to it from its job and a resumed sweep reads it back: give a database, e.g. "
            "sqlite:///outputs/sweeps/<name>/optuna.db (the presets' default)."
        )


def open_checked_study(storage: Any, study_name: str | None, identity: dict, **study: Any) -> optuna.Study:
    """The sweep's study (`study`: open_sweep_study's sampler, directions, metric names and heartbeat
    settings), refused when its storage cannot be opened or it was created for another sweep than
    `identity` (sweep.study.sweep_identity)."""
    try:
        opened = open_sweep_study(storage, study_name, **study)
    except StorageError as error:
        raise SweepRefused(f"{error}.") from None
    mismatch = identity_mismatch(opened, identity)
    if mismatch:  # its trials were run for another sweep: reporting or resuming them would mislead
        raise SweepRefused(
            f"Study {opened.study_name!r} in {redact(str(storage))} was created for another sweep ({mismatch}); "
            f"give this one a new hydra.sweeper.study_name, e.g. hydra.sweeper.study_name="
            f"{unused_study_name(storage, opened.study_name)} (the old study stays as it is)."
        )
    return opened


def check_enqueued_trials(enqueue_trials: list[dict], space: dict[str, BaseDistribution]) -> None:
    """Refuse an enqueued parameter set the space cannot produce; warn about numbers outside their interval
    (Optuna runs them as given)."""
    for i, params in enumerate(enqueue_trials):
        why = cannot_produce(dict(params), space)
        if why:
            raise SweepRefused(
                f"hydra.sweeper.enqueue_trials[{i}] cannot be a trial of this sweep: {why}; change the value or "
                "the search space."
            )
        for value in outside_interval(dict(params), space):
            log.warning(
                "hydra.sweeper.enqueue_trials[%d] sets %s, outside its search space: run as given", i, value
            )
