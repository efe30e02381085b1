"""data.path and data.eval_path expand to existing files (or save_to_disk folders), or are refused in one
sentence naming the part that matches nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from src.data_files import local_files, saved_dataset
from src.errors import ConfigError


@pytest.fixture
def files(tmp_path) -> list[Path]:
    made = [tmp_path / name for name in ("b.jsonl", "a.jsonl", "c.csv")]
    for path in made:
        path.write_text("{}\n")
    return made


def test_paths_globs_and_lists_expand_in_the_order_given(files, tmp_path):
    b, a, c = files
    assert local_files(f"{c}, {tmp_path}/*.jsonl") == [c, a, b]  # each glob sorted, the parts as given
    assert local_files([str(b), str(a)]) == [b, a]
    assert local_files(f"{a},,") == [a]  # empty parts of a comma list are ignored


def test_a_part_that_matches_nothing_is_refused_naming_it(files, tmp_path):
    with pytest.raises(ConfigError) as error:
        local_files(f"{files[0]},{tmp_path}/*.parquet")
    assert str(error.value) == (
        f"data.path: no file matches '{tmp_path}/*.parquet'; give an existing .jsonl/.json/.parquet/.csv file "
        f"or glob (relative paths start from {Path.cwd()})."
    )


def test_a_folder_counts_only_when_save_to_disk_wrote_it(tmp_path):
    folder = tmp_path / "rows"
    folder.mkdir()
    with pytest.raises(ConfigError) as error:
        local_files(str(folder))
    assert str(error.value) == (
        f"data.path: '{folder}' is a folder but not one written by datasets' save_to_disk; give its files or a "
        f"glob (e.g. '{folder}/*.jsonl')."
    )
    (folder / "dataset_dict.json").write_text(json.dumps({"splits": ["train"]}))
    assert saved_dataset(folder) and local_files(str(folder)) == [folder]
