"""Every trial's eval-loss curve as rows of a small CSV: what `python -m sweep.replay` replays.

    python -m sweep.curves outputs/sweeps/grid_default outputs/sweeps/grid_default_seeds_* \
        -o benchmarks/grid_default.csv [--keep benchmarks/grid_default.csv]
    python -m sweep.curves --restore benchmarks/grid_default.csv hparams_search=grid_default [overrides]

One row per eval of a finished trial: the study and trial, the hyperparameters that define the run (read
from the trial's own resolved config.yaml, so fixed overrides are recorded too, not only searched ones), its
planned steps and wall time, and the eval's step, phase of the schedule, tokens seen and eval loss.
Reading the trial folders (not the study) keeps the export independent of where the study was stored.

`--restore` is how a grid recording resumes on a machine that has only the CSV (hours of CPU are not
repeated): the CSV's finished trials of the grid study named by the overrides are added to a fresh study
in its storage as COMPLETE trials on their grid points, so GridSampler runs only the points still missing.
`--keep` then carries their rows into the new export.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from src.atomic import write_text_atomic

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
# The model a grid was recorded on, so replay can derive a preset's model-aware prior for that grid
# (sweep/lr_prior.py); empty in CSVs written before these columns existed (both were SmolLM2-135M).
MODEL_KEYS = ("model.name", "model.architecture.model_type", "model.architecture.hidden_size")
# Settings recorded for reading the CSV (a grid pins them; the dropout study varies lora.dropout)
SETTING_KEYS = ("lora.dropout",)
EVAL_COLUMNS = ("step", "schedule_fraction", "tokens_seen", "eval_loss")
COLUMNS = (*TRIAL_COLUMNS, *CONFIG_KEYS, *SETTING_KEYS, *MODEL_KEYS, *EVAL_COLUMNS)


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
    settings = {key: config_value(config, key) for key in (*CONFIG_KEYS, *SETTING_KEYS, *MODEL_KEYS)}
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
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, text.getvalue())
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


def restore_grid_study(csv_path: Path, overrides: list[str]) -> int:
    """Add the CSV's finished trials of the grid study that `overrides` (those of the recording's
    `python -m src.train -m …` command) define to that study's storage, each on its grid point; returns
    how many were added. Trials already in the study are left alone."""
    import optuna
    from omegaconf import OmegaConf

    from src.config import compose
    from sweep.space import grid_choices, search_space
    from sweep.study import grid_trial, open_study

    cfg = compose(overrides, with_hydra=True)
    sweeper = cfg.hydra.sweeper
    if OmegaConf.select(sweeper, "sampler._target_") != "optuna.samplers.GridSampler":
        raise SystemExit("--restore needs a grid sweep (hydra/sweeper/sampler=grid).")
    params = [f"{k}={v}" for k, v in sweeper.params.items()]
    space, _, _ = search_space(params + [o for o in overrides if "=" in o])
    grid = grid_choices(space)
    # GridSampler numbers its grid points after shuffling them with its seed: the same seed, the same ids.
    sampler = optuna.samplers.GridSampler(grid, seed=sweeper.sampler.get("seed"))
    study = open_study(
        OmegaConf.to_container(sweeper, resolve=True)["storage"], study_name=sweeper.study_name
    )
    done = {(t.user_attrs.get("restored_trial"), t.number) for t in study.get_trials(deepcopy=False)}
    by_trial: dict[int, list[dict[str, Any]]] = {}
    for row in read_csv(csv_path):
        if row["study"] == sweeper.study_name and row["status"] == "finished":
            by_trial.setdefault(row["trial"], []).append(row)
    added = 0
    for number, rows in sorted(by_trial.items()):
        if any(number in pair for pair in done):
            continue
        study.add_trial(
            grid_trial(
                sampler,
                rows[0],
                state=optuna.trial.TrialState.COMPLETE,
                value=min(r["eval_loss"] for r in rows),
                user_attrs={"restored_trial": number, "restored_from": str(csv_path)},
            )
        )
        added += 1
    return added


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dirs", nargs="*", type=Path, help="sweep folders holding trial_N/ folders")
    parser.add_argument("-o", "--output", type=Path, help="the CSV to write")
    parser.add_argument("--keep", type=Path, help="an earlier CSV whose trials missing from the folders stay")
    parser.add_argument("--restore", type=Path, help="a CSV to restore a grid study from (see above)")
    args, overrides = parser.parse_known_args(argv)
    if args.restore:
        added = restore_grid_study(args.restore, [*map(str, args.sweep_dirs), *overrides])
        print(f"Restored {added} finished trial(s) from {args.restore}")
        return
    missing = [str(d) for d in args.sweep_dirs if not d.is_dir()]
    if missing or not args.sweep_dirs or not args.output:
        raise SystemExit(f"Give sweep folders and -o CSV (not a sweep folder: {', '.join(missing) or '-'}).")
    rows = [row for folder in args.sweep_dirs for row in sweep_rows(folder)]
    if args.keep and args.keep.is_file():
        exported = {(r["study"], r["trial"]) for r in rows}
        rows = [r for r in read_csv(args.keep) if (r["study"], r["trial"]) not in exported] + rows
    count = write_csv(rows, args.output)
    print(f"Wrote {count} evals to {args.output}")


if __name__ == "__main__":
    main()
