"""Job side of pruning: find this job's Optuna trial through the study's storage and report eval losses.

The Hydra sweeper never hands the trial to the job (upstream issues 1710, 1954), so the sweeper passes the
trial number (`trial=N`) and the job loads the study from the same storage, with the configured pruner."""

from __future__ import annotations

import logging
import math
import os

import optuna
from hydra.utils import instantiate
from transformers import TrainerCallback

from sweep.optuna_sweeper import PRUNED_AT

log = logging.getLogger(__name__)


def job_trial(number: int | None) -> optuna.Trial | None:
    """This job's running trial, or None outside an Optuna sweep (plain runs and grid multiruns)."""
    if number is None:
        return None
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    sweeper = HydraConfig.get().sweeper
    if "study_name" not in sweeper or "storage" not in sweeper:
        return None
    pruner = instantiate(sweeper.pruner) if sweeper.get("pruner") else optuna.pruners.NopPruner()
    study = optuna.load_study(study_name=sweeper.study_name, storage=sweeper.storage, pruner=pruner)
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    trial = optuna.Trial(study, trial_id)
    trial.set_user_attr("pid", os.getpid())
    return trial


class PruningCallback(TrainerCallback):
    """Reports each eval loss to the trial; stops training when the pruner says the trial is clearly worse
    than earlier ones at the same step, and marks it for the sweeper to record as PRUNED."""

    def __init__(self, trial: optuna.Trial):
        self.trial = trial
        self.pruned_at: int | None = None

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        loss = (metrics or {}).get("eval_loss")
        if loss is None or state.global_step == 0 or not math.isfinite(loss):
            return  # a non-finite loss fails the trial instead (NonFiniteLossCallback)
        self.trial.report(loss, state.global_step)
        if self.trial.should_prune():
            self.pruned_at = state.global_step
            self.trial.set_user_attr(PRUNED_AT, state.global_step)
            log.info(
                "Trial %d pruned at step %d (eval loss %.4f)", self.trial.number, state.global_step, loss
            )
            control.should_training_stop = True
