"""Extra experiment trackers (`monitor.report_to: [mlflow, wandb, trackio]`), next to the TensorBoard writer
every run keeps. transformers' own integration callbacks do the logging; this module only tells them where:
- the group: the MLflow experiment, the W&B run group and the Trackio project. `monitor.experiment`, else
  the sweep's study name inside a sweep (so a sweep's trials sit together), else the tracker's own setting
  from the environment (MLFLOW_EXPERIMENT_NAME, WANDB_RUN_GROUP), else "sft-sweep";
- the run name: `trial_<N>` inside a sweep, else the run folder's name;
- our hyperparameters (LoRA rank, variant…, which TrainingArguments do not hold), logged as params.
Where the trackers store runs is theirs to configure (MLFLOW_TRACKING_URI, WANDB_MODE, …).
Checked on transformers 5.23 (MLflowCallback reads MLFLOW_EXPERIMENT_NAME when training begins; WandbCallback
passes WANDB_PROJECT, and wandb.init reads WANDB_RUN_GROUP; TrackioCallback uses TrainingArguments.project).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

DEFAULT_GROUP = "sft-sweep"
_SET_BY_US: dict[str, str] = {}  # env values this process set for an earlier job (a sweep runs several)


def group_name(cfg) -> str:
    if cfg.monitor.experiment:
        return cfg.monitor.experiment
    from hydra.core.hydra_config import HydraConfig

    if cfg.trial is not None and HydraConfig.initialized():
        return str(HydraConfig.get().sweeper.study_name)
    return DEFAULT_GROUP


def run_name(cfg, run_dir: Path) -> str:
    return f"trial_{cfg.trial}" if cfg.trial is not None else run_dir.name


def _set(name: str, value: str, force: bool) -> None:
    """Set an env var for the trackers, keeping a value the user exported unless `force`."""
    users = name in os.environ and _SET_BY_US.get(name) != os.environ[name]
    if force or not users:
        os.environ[name] = value
        _SET_BY_US[name] = value


def configure(cfg, run_dir: Path) -> dict[str, Any]:
    """The TrainingArguments fields for the configured trackers (report_to, run_name, project), with their
    grouping env vars set for this job."""
    report_to = list(cfg.monitor.report_to)
    if not report_to:
        return {"report_to": "none"}
    group = group_name(cfg)
    chosen = bool(cfg.monitor.experiment) or cfg.trial is not None  # a sweep files trials under its study
    if "mlflow" in report_to:
        _set("MLFLOW_EXPERIMENT_NAME", group, chosen)
    if "wandb" in report_to:
        _set("WANDB_RUN_GROUP", group, chosen)
    return {"report_to": report_to, "run_name": run_name(cfg, run_dir), "project": group}


class TrackerParams(TrainerCallback):
    """Our hyperparameters (src/run_info.hparams) as tracker params, once each tracker's run has started
    (the integration callbacks start it in their on_train_begin, which runs before ours)."""

    def __init__(self, params: dict[str, Any], report_to: list[str]):
        self.params, self.report_to = params, report_to

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        if "mlflow" in self.report_to:
            import mlflow

            if mlflow.active_run() is not None:
                mlflow.log_params({f"sft.{k}": v for k, v in self.params.items()})
        if "wandb" in self.report_to:
            import wandb

            if wandb.run is not None:
                wandb.config.update({"sft": self.params}, allow_val_change=True)
