"""sweep/replay/loading.py: recordings from curves CSVs and sweep folders."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from sweep.curves import read_csv, write_csv
from sweep.replay.loading import grid_labels, load_recording
from sweep.replay.recording import ASSUMED_MODEL
from tests.sweep.replay.grids import BASELINE, LLAMA_8B, final_loss, synthetic_rows, write_sweep_folder


def test_a_curves_csv_is_one_curve_per_configuration(grid_csv):
    rows = read_csv(grid_csv)
    assert len(rows) == 48 * 8 + 2 * 8 and rows[0]["lora.r"] == 8 and rows[0]["optim.learning_rate"] == 1e-5
    recording = load_recording(grid_csv)
    assert recording.keys == ("optim.learning_rate", "lora.r", "optim.num_train_epochs")
    assert len(recording.curves) == 48 and recording.total_steps == 24 * 48 // 2 * 4
    assert recording.best_config == (4e-4, 64, 3)
    assert recording.best == pytest.approx(
        final_loss(4e-4, 64, 3) + (BASELINE - 0.1) * math.exp(-4), abs=1e-9
    )
    assert recording.baseline == BASELINE and recording.fixed["optim.warmup_ratio"] == 0.05
    # the seeded configuration's grid point is the mean of its three curves (shifts 0, +0.001, -0.002)
    (seeded,) = [config for config, values in recording.repeats.items() if len(values) > 1]
    single = [r["eval_loss"] for r in rows if r["trial"] == 9]
    point = recording.curves[seeded]
    assert point.seeds == 3
    assert [loss for _, _, loss in point.evals] == pytest.approx([x - 0.001 / 3 for x in single])
    assert recording.model == ASSUMED_MODEL and recording.model_assumed  # no model columns


def test_a_csv_with_model_columns_is_recorded_on_that_model(second_grid_csv):
    recording = load_recording(second_grid_csv)
    assert recording.model == LLAMA_8B and not recording.model_assumed
    assert recording.keys == ("optim.learning_rate", "optim.num_train_epochs", "optim.warmup_ratio")


def test_a_finished_sweep_folder_is_read_as_its_csv_would_be(tmp_path):
    """A user's own study: its trial folders (config.yaml + metrics.json); a pruned trial's curve ends where
    it was pruned and counts as incomplete."""
    write_sweep_folder(tmp_path / "my_study")
    recording = load_recording(tmp_path / "my_study")
    assert recording.keys == ("optim.learning_rate", "optim.num_train_epochs")
    assert len(recording.curves) == 12 and recording.best_config == (4e-4, 3)
    (incomplete,) = [c for c in recording.curves.values() if not c.complete]
    assert len(incomplete.evals) == 3 and incomplete.config["optim.learning_rate"] == 1e-5


def test_a_csv_of_two_models_is_refused(tmp_path):
    rows = synthetic_rows(model=LLAMA_8B, seed_shifts=())
    rows += [dict(r, study="other", **ASSUMED_MODEL) for r in rows]
    write_csv(rows, tmp_path / "mixed.csv")
    with pytest.raises(SystemExit, match="several models"):
        load_recording(tmp_path / "mixed.csv")


def test_a_missing_source_or_one_of_another_kind_is_refused(tmp_path):
    with pytest.raises(SystemExit, match=r"missing.csv does not exist: give a curves CSV"):
        load_recording(tmp_path / "missing.csv")
    (tmp_path / "notes.txt").write_text("loss 0.1\n")
    with pytest.raises(SystemExit, match="notes.txt is neither a curves CSV nor a sweep folder"):
        load_recording(tmp_path / "notes.txt")


def test_grids_of_the_same_name_get_unique_labels():
    sources = [Path("a/grid.csv"), Path("b/grid.csv"), Path("outputs/sweeps/my_study"), Path("c/grid.csv")]
    assert grid_labels(sources) == ["grid", "grid+", "my_study", "grid++"]
