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

from sweep.repeats import REPEAT_OF, is_repeat
from sweep.study import OPTUNA_TARGETS, PRUNED_AT, running_trial

log = logging.getLogger(__name__)


def job_trial(number: int | None) -> tuple[optuna.Trial, str] | None:
    """This job's running trial and the sweeper's report_at, or None outside an Optuna sweep (plain runs
    and Hydra's basic multiruns)."""
    if number is None:
        return None
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    sweeper = HydraConfig.get().sweeper
    if "study_name" not in sweeper or "storage" not in sweeper:
        return None
    pruner = (
        instantiate(sweeper.pruner, _execution_whitelist_=OPTUNA_TARGETS)
        if sweeper.get("pruner")
        else optuna.pruners.NopPruner()
    )
    study = optuna.load_study(study_name=sweeper.study_name, storage=sweeper.storage, pruner=pruner)
    if len(study.directions) > 1:
        log.info("Pruning is off: Optuna prunes single-objective studies only")
        return None
    trial = running_trial(study, number)
    trial.set_user_attr("pid", os.getpid())
    return trial, sweeper.get("report_at", "schedule")


def report_step(step: int, max_steps: int, report_at: str, eval_fraction: float | None = None) -> int:
    """The step an eval is reported at. "schedule": percent of the trial's own schedule (0-100), so trials of
    1 and 3 epochs are compared at the same phase of their learning-rate schedules (at global step s, a
    1-epoch trial is deeper into its decay than a 3-epoch one). "step": the global optimizer step.

    With evals every `eval_fraction` of the run (`eval.steps` below 1), the phase is first snapped to the
    nearest multiple of that fraction. transformers evaluates every ceil(fraction x max_steps) steps, so the
    exact phases depend on the length: at 0.125, a 37-step trial evaluates at 14%, 27%, … and a 111-step one
    at 13%, 25%, …; both report 12, 25, 38, … Pruners that compare trials at the same reported step (median,
    percentile) would otherwise find no other trial to compare with and never prune."""
    if report_at == "schedule":
        phase = step / max_steps
        if eval_fraction:
            phase = round(phase / eval_fraction) * eval_fraction
        return round(100 * phase)
    return step


class PruningCallback(TrainerCallback):
    """Reports each eval loss to the trial (at its phase of the schedule, see `report_step`), never inside
    warmup; stops training when the pruner says the trial is clearly worse than others at the same phase,
    and marks it for the sweeper to record as PRUNED. A noise repeat (sweep/repeats.py) reports nothing:
    it is never pruned, and its seeds of the best configuration do not move other trials' thresholds."""

    def __init__(self, trial: optuna.Trial, report_at: str = "schedule"):
        self.trial = trial
        self.report_at = report_at
        self.pruned_at: int | None = None
        self.repeat = is_repeat(trial)
        if self.repeat:
            log.info(
                "Trial %d is a noise repeat of trial %d: never pruned",
                trial.number,
                trial.user_attrs[REPEAT_OF],
            )

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if self.repeat:
            return
        loss = (metrics or {}).get("eval_loss")
        if loss is None or state.global_step == 0 or not math.isfinite(loss):
            return  # a non-finite loss fails the trial instead (NonFiniteLossCallback)
        if state.global_step <= args.get_warmup_steps(state.max_steps):
            return  # the loss is still falling at the rate warmup allows: no judgement yet
        # the pruner judges eval loss whatever the objective: negated where the study maximises (task_metric)
        sign = 1.0 if self.trial.study.direction == optuna.study.StudyDirection.MINIMIZE else -1.0
        fraction = args.eval_steps if args.eval_steps is not None and args.eval_steps < 1 else None
        at = report_step(state.global_step, state.max_steps, self.report_at, fraction)
        self.trial.report(sign * loss, at)
        if self.trial.should_prune():
            self.pruned_at = state.global_step
            self.trial.set_user_attr(PRUNED_AT, state.global_step)
            log.info(
                "Trial %d pruned at step %d (eval loss %.4f)", self.trial.number, state.global_step, loss
            )
            control.should_training_stop = True
