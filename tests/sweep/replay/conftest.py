"""The synthetic grids as curves CSVs, written once per test module."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweep.curves import write_csv
from tests.sweep.replay.grids import second_grid_rows, synthetic_rows


@pytest.fixture(scope="module")
def grid_csv(tmp_path_factory) -> Path:
    """The synthetic grid without model columns (taken as SmolLM2-135M), trial 9 with three seeds."""
    path = tmp_path_factory.mktemp("grid") / "grid.csv"
    write_csv(synthetic_rows(), path)
    return path


@pytest.fixture(scope="module")
def second_grid_csv(tmp_path_factory) -> Path:
    """The second synthetic grid (second_grid_rows), recorded on Llama-3.1-8B."""
    path = tmp_path_factory.mktemp("grid2") / "grid_llama.csv"
    write_csv(second_grid_rows(), path)
    return path
