"""Local data files named in the config (data.path, data.eval_path): expanded and checked to exist, without
importing `datasets`, so that config validation can refuse a missing file before anything heavy loads."""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

from src.errors import ConfigError


def saved_dataset(path: Path) -> bool:
    """A folder written by `datasets`' save_to_disk (a Dataset, or a DatasetDict of splits)."""
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def local_files(spec: Any, key: str = "data.path") -> list[Path]:
    """Expand paths and globs, given as a comma-separated string or a list; each must match a file or a
    save_to_disk folder. Returns the matches in order (each glob's sorted); raises ConfigError naming `key`
    (the config key `spec` came from) and the part that matches nothing, or the folder that is not a saved
    dataset."""
    parts = (
        str(spec).split(",") if isinstance(spec, str) else [str(p) for p in spec]
    )  # a list (or ListConfig)
    files: list[Path] = []
    for part in [p.strip() for p in parts if p.strip()]:
        matches = sorted(glob.glob(str(Path(part).expanduser())))
        if not matches:
            raise ConfigError(
                f"{key}: no file matches '{part}'; give an existing .jsonl/.json/.parquet/.csv file or glob "
                f"(relative paths start from {Path.cwd()})."
            )
        for match in matches:
            if Path(match).is_dir() and not saved_dataset(Path(match)):
                raise ConfigError(
                    f"{key}: '{match}' is a folder but not one written by datasets' save_to_disk; give "
                    f"its files or a glob (e.g. '{match}/*.jsonl')."
                )
        files.extend(Path(m) for m in matches)
    return files
