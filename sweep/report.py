"""Sweep report: `python -m sweep.report outputs/sweeps/<study>` prints a leaderboard, the best parameters
and parameter importances, and writes plots (PNG and HTML), leaderboard.csv and a re-runnable command
for the best trial next to the study.

Configurations are ranked by their seed mean (a configuration re-run at other seeds, sweep/repeats.py, is
one configuration); every configuration whose seed mean lies within the study's noise floor of the best is
marked tied, in the leaderboard and in best_overrides.txt (sweep/ties.py). The report ends with the noise
floor, why the sweep stopped (if it stopped itself) and what it cost."""

from __future__ import annotations

import argparse
import csv
import logging
import math
import shlex
import sys
from collections.abc import Collection
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from src.redact import redact
from src.run_record import read_metrics
from sweep.convergence import minimizes, stored_decision
from sweep.cost import sweep_cost
from sweep.repeats import REPEAT_OF, SEED
from sweep.study import FAIL_REASON, PRUNED_AT
from sweep.ties import Standing, floor_line, standing, tie_lines

STATE_ORDER = {TrialState.COMPLETE: 0, TrialState.PRUNED: 1, TrialState.RUNNING: 2, TrialState.FAIL: 3}


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
    return read_metrics(path)


RUN_GROUPS = ("model", "lora", "optim", "data", "memory")  # config groups a single run picks options of
NOT_RUN_SETTINGS = ("paths", "trial", "resume")  # where a run writes, not what it trains


def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts into dotted keys (lists and values are leaves)."""
    if not isinstance(node, dict) or not node:
        return {prefix: node}
    leaves = {}
    for key, value in node.items():
        leaves.update(_leaves(value, f"{prefix}.{key}" if prefix else str(key)))
    return leaves


def override_value(value: Any) -> str:
    """A value in Hydra's override grammar."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ",".join(override_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{override_value(v)}" for k, v in value.items()) + "}"
    text = str(value)
    if text and all(c.isalnum() or c in "_-./" for c in text) and not text[0].isdigit():
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def rerun_overrides(run_dir: Path, searched: Collection[str] = ()) -> list[str]:
    """The overrides that reproduce a trial as a plain single run: the options its config groups used, then
    every `searched` parameter (even one equal to its group's default, so the line shows what the sweep
    chose) and every other value that differs from what those options compose to (whatever the sweep preset
    fixed), read from the trial's own resolved config.yaml. No hparams_search (it would turn a single run
    into a sweep preset), no trial=, no hydra settings."""
    from omegaconf import OmegaConf

    from src.config import compose

    runtime = OmegaConf.load(run_dir / ".hydra" / "hydra.yaml").hydra.runtime.choices
    choices = [f"{group}={runtime[group]}" for group in RUN_GROUPS if runtime.get(group)]
    plain_cfg = compose([*choices, "paths.output_dir=.", "paths.cache_dir=."])  # no Hydra run to resolve
    plain = _leaves(OmegaConf.to_container(plain_cfg, resolve=True))
    trained = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"))
    differences = []
    for key, value in _leaves(trained).items():
        if key.split(".")[0] in NOT_RUN_SETTINGS:
            continue
        if key not in plain:
            differences.append(f"++{key}={override_value(value)}")
        elif key in searched or plain[key] != value:
            differences.append(f"{key}={override_value(value)}")
    return choices + differences


def trial_overrides(trial: FrozenTrial) -> list[str]:
    """The overrides that reproduce this trial as a single run (from its folder; else its parameters)."""
    run_dir = trial.user_attrs.get("run_dir")
    if run_dir and (Path(run_dir) / "config.yaml").is_file() and (Path(run_dir) / ".hydra").is_dir():
        return rerun_overrides(Path(run_dir), searched=trial.params)
    return [f"{k}={override_value(v)}" for k, v in trial.params.items()]


def objective_names(study: optuna.Study) -> list[str]:
    """The study's objectives as the sweeper named them (hydra.sweeper.objective)."""
    if study.metric_names:
        return list(study.metric_names)
    if len(study.directions) == 1:
        return ["best_eval_loss"]  # studies made before the sweeper named its objectives
    return [f"objective_{i}" for i in range(len(study.directions))]


def trial_note(trial: FrozenTrial) -> str:
    """Why a trial failed or was pruned, or which trial a noise repeat re-runs at which seed."""
    if REPEAT_OF in trial.user_attrs:
        repeat = f"noise repeat of trial {trial.user_attrs[REPEAT_OF]} at seed {trial.user_attrs.get(SEED)}"
        return "; ".join(filter(None, [repeat, redact(trial.user_attrs.get(FAIL_REASON, ""))]))
    return redact(trial.user_attrs.get(FAIL_REASON, "")) or (
        f"pruned at step {trial.user_attrs[PRUNED_AT]}" if PRUNED_AT in trial.user_attrs else ""
    )


def leaderboard(study: optuna.Study, place: Standing | None = None) -> list[dict[str, Any]]:
    """One row per trial: complete trials first, best seed mean first (`place`: the study's standing, for
    single-objective studies), then pruned, running and failed ones."""
    names = objective_names(study)
    rows = []
    for trial in study.get_trials(deepcopy=False):
        metrics = trial_metrics(trial)
        steps = metrics.get("global_step") or (
            max(trial.intermediate_values) if trial.intermediate_values else None
        )
        seconds = trial.duration.total_seconds() if trial.duration else None
        values = trial.values or [None] * len(names)
        mean = place.of(trial) if place is not None and trial.state == TrialState.COMPLETE else None
        rows.append(
            {
                "trial": trial.number,
                "state": trial.state.name,
                **dict(zip(names, values)),
                "seed_mean": mean.mean if mean else None,
                "seeds": len(mean.values) if mean else None,
                "tied": "tied" if mean and place.is_tied(mean.config) else "",
                "steps": steps,
                "wall_seconds": seconds,
                **{name: trial.params.get(name) for name in sorted(study_params(study))},
                "note": trial_note(trial),
            }
        )
    first, sign = names[0], (1 if study.directions[0] == optuna.study.StudyDirection.MINIMIZE else -1)
    rows.sort(
        key=lambda r: (
            STATE_ORDER.get(TrialState[r["state"]], 4),
            sign * r["seed_mean"] if r["seed_mean"] is not None else math.inf,
            sign * r[first] if r[first] is not None else math.inf,
        )
    )
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
    single = len(study.directions) == 1
    place = standing(study.get_trials(deepcopy=False), minimizes(study)) if single else None
    rows = leaderboard(study, place)
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
    if len(study.directions) > 1:
        return report_pareto_front(study, sweep_dir, result)
    best = next(t for t in complete if t.number == place.best.trials[0])
    command = rerun_command(best)
    (sweep_dir / "best_overrides.txt").write_text("\n".join([*tie_lines(place), command]) + "\n")
    print_best(study, best, place)
    print(f"Re-run it: {command}")
    scores = importances(study)
    if scores:
        print("\nParameter importances:")
        for name, value in scores.items():
            print(f"  {name:30s} {value:.3f}")
    cost = sweep_cost(study)
    stopped = stored_decision(study)
    print(f"\n{floor_line(place)}")
    if stopped is not None:
        print(stopped.line())
    print(cost.line())
    result.update(
        best_trial=best.number,
        best_value=best.value,
        best_seed_mean=place.best.mean,
        noise_floor=place.floor,
        tied_trials=[m.trials[0] for m in place.tied] if len(place.tied) > 1 else [],
        command=command,
        importances=scores,
        cost=cost,
    )
    result["plots"] = write_plots(study, sweep_dir, with_importances=bool(scores))
    print(f"\nWrote leaderboard.csv, best_overrides.txt and {len(result['plots'])} plots to {sweep_dir}")
    return result


def print_best(study: optuna.Study, best: FrozenTrial, place: Standing) -> None:
    """The best configuration (by seed mean), its parameters and the configurations tied with it."""
    mean = place.best
    over = f" (seed mean {mean.mean:.4f} over {len(mean.values)} seeds)" if len(mean.values) > 1 else ""
    print(f"\nBest trial {best.number}: {objective_names(study)[0]} {best.value:.4f}{over}")
    for name, value in best.params.items():
        print(f"  {name} = {value}")
    if len(place.tied) > 1:
        others = ", ".join(f"{m.trials[0]} ({m.mean:.4f})" for m in place.tied[1:])
        print(f"Tied with it within the noise floor {place.floor:.4g}: trials {others}")


def rerun_command(trial: FrozenTrial) -> str:
    return "python -m src.train " + " ".join(shlex.quote(o) for o in trial_overrides(trial))


def report_pareto_front(study: optuna.Study, sweep_dir: Path, result: dict[str, Any]) -> dict[str, Any]:
    """Several objectives: the trials no other trial beats on every objective, each with its re-run line,
    pareto_front.csv, and the Pareto-front plot (PNG and HTML)."""
    names = objective_names(study)
    front = sorted(study.best_trials, key=lambda t: t.number)
    rows = [{"trial": t.number, **dict(zip(names, t.values)), **t.params} for t in front]
    directions = ", ".join(f"{n} ({d.name.lower()})" for n, d in zip(names, study.directions))
    print(f"\nPareto front over {directions}: {len(front)} trial(s)")
    print(format_table(rows))
    with (sweep_dir / "pareto_front.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = []
    for trial in front:
        values = ", ".join(f"{n}={v:.4g}" for n, v in zip(names, trial.values))
        lines += [f"# trial {trial.number}: {values}", rerun_command(trial)]
    (sweep_dir / "best_overrides.txt").write_text("\n".join(lines) + "\n")
    result.update(pareto_front=rows, plots=write_pareto_plot(study, sweep_dir, names))
    print(f"\nWrote leaderboard.csv, pareto_front.csv, best_overrides.txt and the Pareto plot to {sweep_dir}")
    return result


def write_pareto_plot(study: optuna.Study, folder: Path, names: list[str]) -> list[Path]:
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna import visualization
    from optuna.visualization import matplotlib as mpl_visualization

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    axes = mpl_visualization.plot_pareto_front(study, target_names=names)
    figure = axes.figure
    figure.set_size_inches(8, 5)
    figure.tight_layout()
    figure.savefig(folder / "pareto_front.png", dpi=120)
    plt.close(figure)
    visualization.plot_pareto_front(study, target_names=names).write_html(
        folder / "pareto_front.html", include_plotlyjs="directory"
    )
    plot_curves(study, folder / "eval_loss_curves.png")
    return [folder / "pareto_front.png", folder / "pareto_front.html", folder / "eval_loss_curves.png"]


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
