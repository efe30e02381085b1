"""regret_in_noise_floors in TensorBoard's HParams view (sweep/hparams_regret.py): a trial declares the
metric in its experiment summary when it ends (src/callbacks.py::write_hparams), the sweep appends each
trial's value to the trial's own run afterwards."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from src.callbacks import write_hparams
from sweep.hparams_regret import append_regrets
from sweep.ties import REGRET_METRIC


def events(folder: Path) -> list:
    return [
        e for path in sorted(folder.glob("events.out.tfevents.*")) for e in EventFileLoader(str(path)).Load()
    ]


def declared_metrics(folder: Path) -> list[str]:
    """The metric columns of the run's HParams experiment (TensorBoard reads a run's first summary)."""
    for event in events(folder):
        for value in event.summary.value:
            if value.tag == "_hparams_/experiment":
                data = HParamsPluginData.FromString(value.metadata.plugin_data.content)
                return [m.name.tag for m in data.experiment.metric_infos]
    return []


def scalars(folder: Path, tag: str) -> list[tuple[int, float]]:
    found = []
    for event in events(folder):
        for value in event.summary.value:
            if value.tag == tag:
                found.append((event.step, value.simple_value or float(value.tensor.float_val[0])))
    return found


def test_a_trial_declares_the_metric_and_the_sweep_appends_its_value(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    run_dir = tmp_path / "trial_3"
    writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
    write_hparams(writer, {"learning_rate": 1e-3}, {"best_eval_loss": 0.09}, later=(REGRET_METRIC,))
    writer.close()
    folder = run_dir / "tensorboard"
    assert declared_metrics(folder) == ["hparam/best_eval_loss", f"hparam/{REGRET_METRIC}"]
    assert scalars(folder, f"hparam/{REGRET_METRIC}") == []  # declared, not yet known
    trial = optuna.trial.create_trial(value=0.09, user_attrs={"run_dir": str(run_dir)})
    trial.number = 3
    unknown = optuna.trial.create_trial(value=0.1, user_attrs={"run_dir": str(tmp_path / "gone")})
    assert append_regrets([trial, unknown], {3: 0.8, 0: 2.0}, step=7) == [folder]
    assert append_regrets([trial], {3: 0.5}, step=9) == [folder]  # a resumed sweep's later figure
    assert scalars(folder, f"hparam/{REGRET_METRIC}") == [(7, pytest.approx(0.8)), (9, pytest.approx(0.5))]


def test_a_plain_run_declares_nothing_more(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(tmp_path))
    write_hparams(writer, {"learning_rate": 1e-3}, {"best_eval_loss": 0.09})
    writer.close()
    assert declared_metrics(tmp_path) == ["hparam/best_eval_loss"]
