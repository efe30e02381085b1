"""Every trial's eval-loss curve as rows of a small CSV: what `python -m sweep.replay` replays.

    python -m sweep.curves outputs/sweeps/grid_default outputs/sweeps/grid_default_seeds_* \
        -o benchmarks/grid_default.csv

One row per eval of a finished trial: the study and trial, the hyperparameters that define the run (read
from the trial's own resolved config.yaml, so fixed overrides are recorded too, not only searched ones), its
planned steps and wall time, and the eval's step, phase of the schedule, tokens seen and eval loss.
Reading the trial folders (not the study) keeps the export independent of where the study was stored.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

# The run settings that define a configuration in a LoRA sweep, as config keys (the sweep's param names).
CONFIG_KEYS = (
    "optim.learning_rate",
    "lora.r",
    "lora.alpha",
    "optim.num_train_epochs",
    "optim.warmup_ratio",
    "seed",
)
TRIAL_COLUMNS = (
    "study",
    "trial",
    "status",
    "planned_steps",
    "global_step",
    "wall_seconds",
    "baseline_eval_loss",
)
EVAL_COLUMNS = ("step", "schedule_fraction", "tokens_seen", "eval_loss")
COLUMNS = (*TRIAL_COLUMNS, *CONFIG_KEYS, *EVAL_COLUMNS)


def config_value(config: dict[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def trial_rows(trial_dir: Path, study: str) -> list[dict[str, Any]]:
    """The CSV rows of one trial folder; none for a trial that did not finish (failed, interrupted)."""
    metrics_file, config_file = trial_dir / "metrics.json", trial_dir / "config.yaml"
    if not metrics_file.is_file() or not config_file.is_file():
        return []
    try:
        metrics = json.loads(metrics_file.read_text())
    except (OSError, ValueError):
        return []  # a torn file is an unfinished trial
    if metrics.get("status") not in ("finished", "pruned"):
        return []
    config = OmegaConf.to_container(OmegaConf.load(config_file))
    settings = {key: config_value(config, key) for key in CONFIG_KEYS}
    if settings["lora.alpha"] is None and settings["lora.r"] is not None:
        settings["lora.alpha"] = 2 * settings["lora.r"]  # alpha: null means 2 × r
    trial = {
        "study": study,
        "trial": config.get("trial"),
        "status": metrics["status"],
        "planned_steps": metrics["planned_steps"],
        "global_step": metrics["global_step"],
        "wall_seconds": round(metrics.get("wall_seconds", math.nan), 2),
        "baseline_eval_loss": metrics.get("baseline_eval_loss"),
    }
    return [
        {**trial, **settings, **{key: point.get(key) for key in EVAL_COLUMNS}}
        for point in metrics.get("eval_history", [])
    ]


def sweep_rows(sweep_dir: Path) -> Iterator[dict[str, Any]]:
    """Rows of every finished trial_N folder of a sweep, in trial order; the study is the folder's name."""
    folders = [p for p in sweep_dir.glob("trial_*") if p.name.removeprefix("trial_").isdigit()]
    for folder in sorted(folders, key=lambda p: int(p.name.removeprefix("trial_"))):
        yield from trial_rows(folder, sweep_dir.name)


def write_csv(rows: Iterable[dict[str, Any]], path: Path) -> int:
    """Write the rows (atomically) and return how many."""
    rows = list(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    temporary.replace(path)
    return len(rows)


def read_csv(path: Path) -> list[dict[str, Any]]:
    """The rows back, numbers as numbers (empty cells as None)."""

    def number(text: str) -> Any:
        if text == "":
            return None
        try:
            value = float(text)
        except ValueError:
            return text
        return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value

    with path.open(newline="") as handle:
        return [{key: number(value) for key, value in row.items()} for row in csv.DictReader(handle)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dirs", nargs="+", type=Path, help="sweep folders holding trial_N/ folders")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the CSV to write")
    args = parser.parse_args(argv)
    missing = [str(d) for d in args.sweep_dirs if not d.is_dir()]
    if missing:
        raise SystemExit(f"Not a sweep folder: {', '.join(missing)}.")
    count = write_csv((row for folder in args.sweep_dirs for row in sweep_rows(folder)), args.output)
    print(f"Wrote {count} evals of {len(args.sweep_dirs)} sweep folder(s) to {args.output}")


if __name__ == "__main__":
    main()
