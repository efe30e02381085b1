"""Recordings from curves CSVs (sweep.curves) and finished sweep folders, and a short name for each."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from sweep.curves import MODEL_KEYS, read_csv
from sweep.replay.recording import RUN_KEYS, Curve, Eval, Recording, build_recording


def curves_from_rows(rows: list[dict[str, Any]]) -> tuple[list[Curve], list[float]]:
    """One curve per (study, trial), and every trial's untrained baseline where it recorded one."""
    by_trial: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_trial[(row["study"], row["trial"])].append(row)
    curves, baselines = [], []
    for trial_rows in by_trial.values():
        first = trial_rows[0]
        evals = sorted(Eval(r["step"], r["schedule_fraction"], r["eval_loss"]) for r in trial_rows)
        config = {key: first.get(key) for key in RUN_KEYS}
        curves.append(Curve(config, first["planned_steps"], evals, first["status"] == "finished"))
        if first.get("baseline_eval_loss") is not None:
            baselines.append(first["baseline_eval_loss"])
    return curves, baselines


def recorded_model(rows: list[dict[str, Any]], source: Path) -> dict[str, Any] | None:
    """The model the rows were recorded on (MODEL_KEYS -> value), or None when they do not say."""
    models = {tuple(row.get(key) for key in MODEL_KEYS) for row in rows}
    models.discard((None,) * len(MODEL_KEYS))
    if not models:
        return None
    if len(models) > 1:
        names = ", ".join(sorted(str(m[0]) for m in models))
        raise SystemExit(f"{source} holds curves of several models ({names}); replay one grid per model.")
    return dict(zip(MODEL_KEYS, models.pop()))


def source_rows(source: Path) -> list[dict[str, Any]]:
    """The curve rows of a curves CSV, or of a sweep folder's trial folders (pruned trials' curves end
    where they were pruned)."""
    if source.is_file() and source.suffix == ".csv":
        return read_csv(source)
    if source.is_dir():
        from sweep.curves import sweep_rows

        return list(sweep_rows(source))
    if not source.exists():
        raise SystemExit(
            f"{source} does not exist: give a curves CSV (python -m sweep.curves) or a sweep folder; the "
            "recorded grids are made by the scripts in benchmarks/ (docs/sweeps.md)."
        )
    raise SystemExit(f"{source} is neither a curves CSV nor a sweep folder.")


def load_recording(source: Path) -> Recording:
    """A recording from a curves CSV or a finished sweep folder (source_rows). Without model columns the
    recording is taken as SmolLM2-135M-Instruct's (ASSUMED_MODEL)."""
    rows = source_rows(source)
    recording = build_recording(*curves_from_rows(rows))
    model = recorded_model(rows, source)
    if model is not None:
        recording.model, recording.model_assumed = model, False
    return recording


def grid_labels(sources: list[Path]) -> list[str]:
    """A short name per grid (the file or folder name), made unique."""
    labels: list[str] = []
    for source in sources:
        label = source.stem
        while label in labels:
            label += "+"
        labels.append(label)
    return labels
