"""Sweep report: `python -m sweep.report outputs/sweeps/<study>` prints a leaderboard, the best parameters
and parameter importances, and writes plots (PNG and HTML), leaderboard.csv and a re-runnable command
for the best trial next to the study."""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from sweep.optuna_sweeper import FAIL_REASON, PRUNED_AT

STATE_ORDER = {TrialState.COMPLETE: 0, TrialState.PRUNED: 1, TrialState.RUNNING: 2, TrialState.FAIL: 3}
SWEEP_ONLY_OVERRIDES = ("trial=", "hydra.")  # set by the sweeper, not part of a trial's own config


def load_study(sweep_dir: Path, storage: str | None, study_name: str | None) -> optuna.Study:
    storage = storage or f"sqlite:///{sweep_dir / 'optuna.db'}"
    if storage.startswith("sqlite:///") and not Path(storage.removeprefix("sqlite:///")).is_file():
        sys.exit(
            f"No study database at {storage.removeprefix('sqlite:///')}; pass --storage for other backends."
        )
    names = optuna.get_all_study_names(storage)
    if study_name is None:
        if len(names) != 1:
            sys.exit(f"{storage} holds studies {names}; choose one with --study-name.")
        study_name = names[0]
    return optuna.load_study(study_name=study_name, storage=storage)


def trial_metrics(trial: FrozenTrial) -> dict[str, Any]:
    run_dir = trial.user_attrs.get("run_dir")
    path = Path(run_dir) / "metrics.json" if run_dir else None
    return json.loads(path.read_text()) if path and path.is_file() else {}


def trial_overrides(trial: FrozenTrial) -> list[str]:
    """The overrides that reproduce this trial as a single run (from its Hydra job record)."""
    run_dir = trial.user_attrs.get("run_dir")
    path = Path(run_dir) / ".hydra" / "overrides.yaml" if run_dir else None
    if path and path.is_file():
        overrides = yaml.safe_load(path.read_text())
    else:
        overrides = [f"{k}={v}" for k, v in trial.params.items()]
    return [o for o in overrides if not o.startswith(SWEEP_ONLY_OVERRIDES)]


def leaderboard(study: optuna.Study) -> list[dict[str, Any]]:
    rows = []
    for trial in study.get_trials(deepcopy=False):
        metrics = trial_metrics(trial)
        steps = metrics.get("global_step") or (
            max(trial.intermediate_values) if trial.intermediate_values else None
        )
        seconds = trial.duration.total_seconds() if trial.duration else None
        note = trial.user_attrs.get(FAIL_REASON) or (
            f"pruned at step {trial.user_attrs[PRUNED_AT]}" if PRUNED_AT in trial.user_attrs else ""
        )
        rows.append(
            {
                "trial": trial.number,
                "state": trial.state.name,
                "best_eval_loss": trial.value,
                "steps": steps,
                "wall_seconds": seconds,
                **{name: trial.params.get(name) for name in sorted(study_params(study))},
                "note": note,
            }
        )
    rows.sort(key=lambda r: (STATE_ORDER.get(TrialState[r["state"]], 4), r["best_eval_loss"] or math.inf))
    return rows


def study_params(study: optuna.Study) -> set[str]:
    return {name for trial in study.get_trials(deepcopy=False) for name in trial.params}


def format_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no trials)"
    columns = list(rows[0])

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}" if abs(value) < 1e-2 or abs(value) >= 1e4 else f"{value:.4f}"
        return "" if value is None else str(value)

    table = [list(columns)] + [[cell(r[c])[:70] for c in columns] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip() for line in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def importances(study: optuna.Study) -> dict[str, float]:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2 or len(study_params(study)) < 1:
        return {}
    try:
        return optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError) as error:  # e.g. every complete trial has the same value
        logging.getLogger(__name__).warning("Parameter importances unavailable: %s", error)
        return {}


def plot_curves(study: optuna.Study, target: Path) -> None:
    """Every trial's eval loss against step, overlaid (pruned dashed, failed dotted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5))
    styles = {TrialState.COMPLETE: "-", TrialState.PRUNED: "--", TrialState.FAIL: ":"}
    for trial in study.get_trials(deepcopy=False):
        points = sorted((s, v) for s, v in trial.intermediate_values.items() if math.isfinite(v))
        if points:
            steps, values = zip(*points)
            axes.plot(steps, values, styles.get(trial.state, "-."), marker="o", label=f"trial {trial.number}")
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("eval loss")
    axes.set_title(f"Eval loss of every trial — study {study.study_name}")
    axes.legend(fontsize="small", ncol=2)
    figure.tight_layout()
    figure.savefig(target, dpi=120)
    plt.close(figure)


def write_plots(study: optuna.Study, folder: Path, with_importances: bool) -> list[Path]:
    """PNG (matplotlib) and HTML (plotly) plots: optimization history, importances, eval-loss curves."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna import visualization

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    from optuna.visualization import matplotlib as mpl_visualization

    written = []
    plots = [
        ("optimization_history", "plot_optimization_history"),
        ("intermediate_values", "plot_intermediate_values"),
    ]
    if with_importances:
        plots.append(("param_importances", "plot_param_importances"))
    for name, function in plots:
        axes = getattr(mpl_visualization, function)(study)
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        figure.set_size_inches(8, 5)
        figure.tight_layout()
        figure.savefig(folder / f"{name}.png", dpi=120)
        plt.close(figure)
        getattr(visualization, function)(study).write_html(
            folder / f"{name}.html", include_plotlyjs="directory"
        )  # works offline
        written += [folder / f"{name}.png", folder / f"{name}.html"]
    plot_curves(study, folder / "eval_loss_curves.png")
    written.append(folder / "eval_loss_curves.png")
    return written


def report(sweep_dir: Path, storage: str | None = None, study_name: str | None = None) -> dict[str, Any]:
    """Build the report; returns what it printed and wrote (for tests and scripts)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = load_study(sweep_dir, storage, study_name)
    rows = leaderboard(study)
    print(f"Study {study.study_name!r}: {len(rows)} trials")
    print(format_table(rows))
    result: dict[str, Any] = {"study": study.study_name, "rows": rows}
    with (sweep_dir / "leaderboard.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["trial"])
        writer.writeheader()
        writer.writerows(rows)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        print("No complete trial yet.")
        return result
    best = study.best_trial
    command = "python -m src.train " + " ".join(trial_overrides(best))
    (sweep_dir / "best_overrides.txt").write_text(command + "\n")
    print(f"\nBest trial {best.number}: best eval loss {best.value:.4f}")
    for name, value in best.params.items():
        print(f"  {name} = {value}")
    print(f"Re-run it: {command}")
    scores = importances(study)
    if scores:
        print("\nParameter importances:")
        for name, value in scores.items():
            print(f"  {name:30s} {value:.3f}")
    result.update(best_trial=best.number, best_value=best.value, command=command, importances=scores)
    result["plots"] = write_plots(study, sweep_dir, with_importances=bool(scores))
    print(f"\nWrote leaderboard.csv, best_overrides.txt and {len(result['plots'])} plots to {sweep_dir}")
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="the sweep folder (hydra.sweep.dir)")
    parser.add_argument("--storage", help="Optuna storage URL (default: sqlite:///<sweep_dir>/optuna.db)")
    parser.add_argument("--study-name", help="study to report (default: the only one in the storage)")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        sys.exit(f"{args.sweep_dir} is not a folder; give the sweep folder, e.g. outputs/sweeps/default.")
    report(args.sweep_dir, args.storage, args.study_name)


if __name__ == "__main__":
    main()
