"""The sweep's ties in TensorBoard's HParams view: after the sweep, each complete trial's
`regret_in_noise_floors` (sweep/ties.py) is appended to its own TensorBoard run as the scalar
`hparam/regret_in_noise_floors`.

A trial writes its HParams summary when it ends, before the sweep knows its noise floor, so it only declares
the metric there (src/callbacks.py::write_hparams, `later`); the HParams view shows the column, filled in
once the sweep has appended the values. The value is written at step = the study's finished trials, so a
resumed sweep's later figure is the one the view shows (it shows each metric's last value)."""

from __future__ import annotations

import logging
from pathlib import Path

from optuna.trial import FrozenTrial

from sweep.ties import REGRET_METRIC

log = logging.getLogger(__name__)


def append_regrets(trials: list[FrozenTrial], regrets: dict[int, float], step: int) -> list[Path]:
    """Append each trial's regret (`regrets`: trial number -> regret in noise floors) to its run's
    tensorboard/ folder; returns the folders written to. Trials without a run folder are skipped."""
    from torch.utils.tensorboard import SummaryWriter

    written = []
    for trial in trials:
        run_dir = trial.user_attrs.get("run_dir")
        if trial.number not in regrets or not run_dir or not (Path(run_dir) / "tensorboard").is_dir():
            continue
        folder = Path(run_dir) / "tensorboard"
        writer = SummaryWriter(log_dir=str(folder))
        writer.add_scalar(f"hparam/{REGRET_METRIC}", regrets[trial.number], step)
        writer.close()
        written.append(folder)
    if written:
        log.info("Appended %s to %d trials' TensorBoard runs (HParams view)", REGRET_METRIC, len(written))
    return written
