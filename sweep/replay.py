"""Replay sweep strategies against recorded curves: what a sampler and pruner would have found, in seconds.

    python -m sweep.replay benchmarks/grid_default.csv                     # the strategies of conf/replay
    python -m sweep.replay benchmarks/grid_default.csv hparams_search=default replay.seeds=20
    python -m sweep.replay outputs/sweeps/my_study                          # your own finished study

A strategy is an `hparams_search` preset (plus overrides): its real Optuna sampler, pruner, search space,
enqueued trials, early stopping and reporting unit. Each replayed trial's sampled configuration is snapped
to the nearest recorded one (log scale for numbers), and that configuration's recorded evals are reported
to the pruner one by one, as the training job would, until it is pruned, stopped early or finished. Its
cost is the optimizer steps it ran; its value is its best eval loss so far, as a real trial's objective.

Regret of a sweep after a budget of optimizer steps = (best value among the trials finished within the
budget - the best recorded value) / (untrained baseline - the best recorded value), in percent: 0 means the
sweep found the best recorded configuration, 100 means it found nothing better than the untrained model
(also the value before any trial finished). Normalising by what training can gain keeps regret meaningful
when losses approach zero. Budgets are fractions of the recorded grid's total optimizer steps.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from sweep.curves import CONFIG_KEYS, read_csv
from sweep.space import grid_choices, search_space
from sweep.study import OPTUNA_TARGETS

log_scale_keys = ("optim.learning_rate", "lora.r", "lora.alpha", "optim.num_train_epochs")


@dataclass
class Curve:
    """One recorded trial: its configuration and evals (step, fraction of its schedule, eval loss)."""

    config: dict[str, Any]
    planned_steps: int
    evals: list[tuple[int, float, float]]
    complete: bool = True  # false for a trial that was itself pruned: nothing is known after its last eval

    @property
    def best(self) -> float:
        return min(loss for _, _, loss in self.evals)


@dataclass
class Recording:
    """The recorded grid (one curve per configuration), the untrained baseline and the seed repeats."""

    curves: dict[tuple, Curve]
    keys: tuple[str, ...]  # the config keys that vary across the grid
    fixed: dict[str, Any]  # the keys that do not
    baseline: float
    repeats: dict[tuple, list[float]] = field(default_factory=dict)  # config -> best loss of every seed

    @property
    def best(self) -> float:
        return min(curve.best for curve in self.curves.values())

    @property
    def best_config(self) -> tuple:
        return min(self.curves, key=lambda c: self.curves[c].best)

    @property
    def total_steps(self) -> int:
        return sum(curve.planned_steps for curve in self.curves.values())

    def regret(self, value: float | None) -> float:
        """Percent of the possible improvement not achieved (see the module docstring)."""
        if value is None:
            return 100.0
        return 100.0 * (value - self.best) / (self.baseline - self.best)

    def noise_floor(self) -> dict[str, Any] | None:
        """Spread of the best eval loss across seeds of the same configuration, in loss and regret units:
        per configuration max - min; the floor is their median."""
        spreads = []
        for config, values in sorted(self.repeats.items()):
            if len(values) >= 2:
                spread = max(values) - min(values)
                spreads.append(
                    {
                        "config": dict(zip(self.keys, config)),
                        "seeds": len(values),
                        "best_eval_losses": values,
                        "spread": spread,
                        "spread_regret_percent": 100.0 * spread / (self.baseline - self.best),
                    }
                )
        if not spreads:
            return None
        floor = statistics.median(s["spread_regret_percent"] for s in spreads)
        return {"configs": spreads, "floor_regret_percent": floor}


def _curves_from_rows(rows: list[dict[str, Any]]) -> tuple[list[Curve], list[float]]:
    by_trial: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_trial[(row["study"], row["trial"])].append(row)
    curves, baselines = [], []
    for trial_rows in by_trial.values():
        first = trial_rows[0]
        evals = sorted((r["step"], r["schedule_fraction"], r["eval_loss"]) for r in trial_rows)
        config = {key: first.get(key) for key in CONFIG_KEYS}
        curves.append(Curve(config, first["planned_steps"], evals, first["status"] == "finished"))
        if first.get("baseline_eval_loss") is not None:
            baselines.append(first["baseline_eval_loss"])
    return curves, baselines


def build_recording(curves: list[Curve], baselines: list[float]) -> Recording:
    """Group curves into the grid: keys that vary define a configuration; a configuration recorded more
    than once (other seeds) keeps its first curve for replay and all of them for the noise floor. The seed
    is not a grid key: a sweep does not search over it."""
    if not curves:
        raise SystemExit("No finished trial with an eval history found.")
    if not baselines:
        raise SystemExit("The recording has no untrained baseline (eval.before_training=false?).")
    keys = tuple(k for k in CONFIG_KEYS if k != "seed" and len({repr(c.config.get(k)) for c in curves}) > 1)
    fixed = {k: curves[0].config.get(k) for k in CONFIG_KEYS if k not in keys and k != "seed"}
    grid: dict[tuple, Curve] = {}
    repeats: dict[tuple, list[float]] = defaultdict(list)
    seeds = [c.config.get("seed") for c in curves]
    grid_seed = max(set(seeds), key=seeds.count)  # the seed most curves share: the grid's own runs
    for curve in sorted(curves, key=lambda c: c.config.get("seed") != grid_seed):
        config = tuple(curve.config[k] for k in keys)
        grid.setdefault(config, curve)
        repeats[config].append(curve.best)
    return Recording(grid, keys, fixed, statistics.median(baselines), dict(repeats))


def load_recording(source: Path, study_name: str | None = None) -> Recording:
    """A recording from a curves CSV (sweep.curves) or from a finished sweep folder: its trial folders
    hold the curves (pruned trials' curves end where they were pruned)."""
    if source.is_file() and source.suffix == ".csv":
        return build_recording(*_curves_from_rows(read_csv(source)))
    if source.is_dir():
        from sweep.curves import sweep_rows

        return build_recording(*_curves_from_rows(list(sweep_rows(source))))
    raise SystemExit(f"{source} is neither a curves CSV nor a sweep folder.")


# --- strategies --------------------------------------------------------------------------------------


@dataclass
class Strategy:
    """What a sweep preset decides: sampler, pruner, search space, enqueued trials, and the job settings
    that change what a trial reports (early stopping, the reporting unit)."""

    name: str
    sampler_config: Any
    pruner_config: Any
    params: dict[str, str]
    fixed: dict[str, Any]  # the composed run's values of the recording's keys
    enqueue_trials: list[dict[str, Any]]
    report_at: str
    warmup_ratio: float
    early_stopping_patience: int
    early_stopping_threshold: float


def compose_strategy(name: str, overrides: list[str]) -> Strategy:
    """Compose `train.yaml` with the preset's overrides, as `python -m src.train -m …` would."""
    from omegaconf import OmegaConf

    from src.config import compose

    cfg = compose(overrides, with_hydra=True)
    sweeper = cfg.hydra.sweeper
    if "params" not in sweeper:
        raise SystemExit(f"Strategy {name!r} ({' '.join(overrides)}) is not an Optuna sweep preset.")
    run = OmegaConf.to_container(cfg, resolve=False)
    fixed = {}
    for key in CONFIG_KEYS:
        node: Any = run
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        fixed[key] = node
    if fixed.get("lora.alpha") is None and fixed.get("lora.r") is not None:
        fixed["lora.alpha"] = "2r"  # alpha: null means 2 × r, whatever r is sampled
    return Strategy(
        name=name,
        sampler_config=OmegaConf.to_container(sweeper.sampler, resolve=True),
        pruner_config=OmegaConf.to_container(sweeper.pruner, resolve=True) if sweeper.get("pruner") else None,
        params={str(k): str(v) for k, v in sweeper.params.items()},
        fixed=fixed,
        enqueue_trials=[dict(t) for t in OmegaConf.to_container(sweeper.enqueue_trials)]
        if sweeper.get("enqueue_trials")
        else [],
        report_at=sweeper.get("report_at", "schedule"),
        warmup_ratio=float(cfg.optim.warmup_ratio),
        early_stopping_patience=int(cfg.eval.early_stopping_patience),
        early_stopping_threshold=float(cfg.eval.early_stopping_threshold),
    )


def _position(value: Any, key: str) -> Any:
    """Where a value sits on its key's axis: log scale for the multiplicative knobs."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return math.log(value) if key in log_scale_keys and value > 0 else float(value)
    return value


def snap(recording: Recording, params: dict[str, Any], strategy: Strategy) -> tuple:
    """The recorded configuration nearest to a sampled one: per key, the distance on its (log) axis divided
    by the recorded range of that key, summed; a differing non-numeric value counts as the whole range.
    Nearest over whole configurations, so a partly recorded grid or an irregular study of the user's works.
    Keys the strategy does not search take its fixed value (alpha = 2r follows the sampled rank)."""
    wanted = []
    for key in recording.keys:
        value = params.get(key, strategy.fixed.get(key))
        if value == "2r":
            value = 2 * params.get("lora.r", strategy.fixed.get("lora.r"))
        wanted.append(_position(value, key))
    configs = list(recording.curves)
    spans = []
    for index, key in enumerate(recording.keys):
        positions = [_position(c[index], key) for c in configs]
        numeric = [p for p in positions if isinstance(p, float)]
        spans.append(max(numeric) - min(numeric) if len(numeric) == len(positions) and numeric else None)

    def distance(config: tuple) -> float:
        total = 0.0
        for index, key in enumerate(recording.keys):
            here, span = _position(config[index], key), spans[index]
            if span is None or not isinstance(wanted[index], float):
                total += 0.0 if here == wanted[index] else 1.0
            elif span > 0:
                total += abs(here - wanted[index]) / span
        return total

    return min(configs, key=lambda c: (distance(c), c))


def suggest(trial: optuna.Trial, name: str, distribution: optuna.distributions.BaseDistribution) -> Any:
    """The trial's value of `name` drawn from `distribution` through the public suggest_* calls, which build
    the same distribution again (the sweeper's plugin passes it to Optuna's private Trial._suggest)."""
    if isinstance(distribution, optuna.distributions.FloatDistribution):
        return trial.suggest_float(
            name, distribution.low, distribution.high, step=distribution.step, log=distribution.log
        )
    if isinstance(distribution, optuna.distributions.IntDistribution):
        return trial.suggest_int(
            name, distribution.low, distribution.high, step=distribution.step, log=distribution.log
        )
    return trial.suggest_categorical(name, distribution.choices)


def make_sampler(strategy: Strategy, seed: int, space) -> optuna.samplers.BaseSampler:
    from hydra.utils import instantiate

    config = dict(strategy.sampler_config)
    if "seed" in config:
        config["seed"] = seed
    sampler = instantiate(config, _execution_whitelist_=OPTUNA_TARGETS)
    if config.get("_target_") == "optuna.samplers.GridSampler":
        sampler = sampler(grid_choices(space))
    return sampler


def make_pruner(strategy: Strategy) -> optuna.pruners.BasePruner:
    from hydra.utils import instantiate

    if strategy.pruner_config is None:
        return optuna.pruners.NopPruner()
    return instantiate(strategy.pruner_config, _execution_whitelist_=OPTUNA_TARGETS)


def run_curve(trial: optuna.Trial, curve: Curve, strategy: Strategy) -> tuple[float, int, bool]:
    """Report a recorded curve to the trial as the job's PruningCallback would; early stopping as
    transformers' EarlyStoppingCallback would. Returns (best eval loss, steps run, pruned)."""
    from sweep.pruning import report_step

    best, stalls = math.inf, 0
    warmup_steps = math.ceil(strategy.warmup_ratio * curve.planned_steps)
    for step, _fraction, loss in curve.evals:
        if loss < best - strategy.early_stopping_threshold:
            stalls = 0
        else:
            stalls += 1
        best = min(best, loss)
        if step > warmup_steps:
            trial.report(loss, report_step(step, curve.planned_steps, strategy.report_at))
            if trial.should_prune():
                return best, step, True
        if strategy.early_stopping_patience and stalls >= strategy.early_stopping_patience:
            return best, step, False
    return best, curve.evals[-1][0], False


@dataclass
class SweepTrace:
    """One replayed sweep: for every trial, the cumulative steps when it ended, its value and outcome."""

    ends: list[int] = field(default_factory=list)
    values: list[float | None] = field(default_factory=list)  # None for pruned trials
    configs: list[tuple] = field(default_factory=list)
    pruned: list[bool] = field(default_factory=list)

    def best_within(self, budget: float) -> float | None:
        found = [v for end, v in zip(self.ends, self.values) if end <= budget and v is not None]
        return min(found) if found else None


def replay_sweep(recording: Recording, strategy: Strategy, seed: int, max_steps: float) -> SweepTrace:
    """One sweep of `strategy` (sampler seeded with `seed`) until it has used `max_steps` optimizer steps."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space, _, _ = search_space([f"{k}={v}" for k, v in strategy.params.items()])
    study = optuna.create_study(
        study_name=f"replay-{strategy.name}-{seed}",  # HyperbandPruner picks brackets by hashing the name
        direction="minimize",
        sampler=make_sampler(strategy, seed, space),
        pruner=make_pruner(strategy),
    )
    for params in strategy.enqueue_trials:
        study.enqueue_trial(params, skip_if_exists=True)
    trace, used = SweepTrace(), 0
    while used < max_steps and len(trace.ends) < 10 * len(recording.curves):
        trial = study.ask()
        params = {name: suggest(trial, name, distribution) for name, distribution in space.items()}
        config = snap(recording, params, strategy)
        curve = recording.curves[config]
        value, steps, pruned = run_curve(trial, curve, strategy)
        pruned = pruned or not curve.complete and steps < curve.planned_steps
        used += steps
        if pruned:
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, value)
        trace.ends.append(used)
        trace.values.append(None if pruned else value)
        trace.configs.append(config)
        trace.pruned.append(pruned)
    return trace


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = (len(ordered) - 1) * q
    low, high = math.floor(index), math.ceil(index)
    return ordered[low] + (ordered[high] - ordered[low]) * (index - low)


def summarize(recording: Recording, name: str, traces: list[SweepTrace], budgets: list[float]) -> dict:
    total = recording.total_steps
    best_config = recording.best_config
    row: dict[str, Any] = {"strategy": name, "seeds": len(traces)}
    for budget in budgets:
        regrets = [recording.regret(t.best_within(budget * total)) for t in traces]
        row[f"median_regret@{budget:g}"] = statistics.median(regrets)
        row[f"p90_regret@{budget:g}"] = percentile(regrets, 0.9)
    row["median_trials@max"] = statistics.median(len(t.ends) for t in traces)
    row["pruned_share"] = statistics.mean(sum(t.pruned) / len(t.pruned) for t in traces)
    row["grid_best_pruned_seeds"] = sum(
        any(c == best_config and p for c, p in zip(t.configs, t.pruned)) for t in traces
    )
    return row


# --- command line ------------------------------------------------------------------------------------


def parse_arguments(argv: list[str]) -> tuple[Path, dict[str, dict[str, Any]], dict[str, Any]]:
    """SOURCE, then Hydra-style words: hparams_search=a,b (strategies), replay.KEY=VALUE, other overrides
    (applied to every strategy). Without hparams_search, the strategies of conf/replay/default.yaml."""
    from omegaconf import OmegaConf

    from src.config import CONF_DIR

    if not argv or "=" in argv[0]:
        raise SystemExit(
            "usage: python -m sweep.replay CURVES.csv|SWEEP_DIR [hparams_search=a,b] [replay.seeds=N]"
        )
    settings = OmegaConf.load(CONF_DIR / "replay" / "default.yaml")
    presets, common, replay_words = None, [], []
    for word in argv[1:]:
        key, _, value = word.partition("=")
        if key == "hparams_search":
            presets = value.split(",")
        elif key.startswith("replay."):
            replay_words.append(word.removeprefix("replay."))
        else:
            common.append(word)
    settings = OmegaConf.to_container(OmegaConf.merge(settings, OmegaConf.from_dotlist(replay_words)))
    if presets is None:
        strategies = settings["strategies"]
    else:
        strategies = {name: {"overrides": [f"hparams_search={name}"]} for name in presets}
    for spec in strategies.values():
        spec["overrides"] = [*spec["overrides"], *common]
    return Path(argv[0]), strategies, settings


def run(source: Path, strategies: dict[str, dict[str, Any]], settings: dict[str, Any]) -> dict[str, Any]:
    recording = load_recording(source)
    budgets = [float(b) for b in settings["budgets"]]
    max_steps = max(budgets) * recording.total_steps
    rows, traces = [], {}
    for name, spec in strategies.items():
        strategy = compose_strategy(name, spec["overrides"])
        if spec.get("sampler"):
            strategy.sampler_config = dict(spec["sampler"])
        if "pruner" in spec:
            strategy.pruner_config = dict(spec["pruner"]) if spec["pruner"] else None
        traces[name] = [
            replay_sweep(recording, strategy, seed, max_steps) for seed in range(int(settings["seeds"]))
        ]
        rows.append(summarize(recording, name, traces[name], budgets))
    return {
        "source": str(source),
        "grid": {
            "configurations": len(recording.curves),
            "keys": list(recording.keys),
            "fixed": recording.fixed,
            "total_steps": recording.total_steps,
            "baseline_eval_loss": recording.baseline,
            "best_eval_loss": recording.best,
            "best_config": dict(zip(recording.keys, recording.best_config)),
        },
        "noise": recording.noise_floor(),
        "strategies": strategies,
        "rows": rows,
        "traces": {name: [{"ends": t.ends, "values": t.values} for t in ts] for name, ts in traces.items()},
    }


def format_table(result: dict[str, Any], budgets: list[float]) -> list[str]:
    grid = result["grid"]
    lines = [
        f"Grid: {grid['configurations']} configurations over {', '.join(grid['keys'])} "
        f"({grid['total_steps']} optimizer steps in all); baseline eval loss {grid['baseline_eval_loss']:.4f}, "
        f"best {grid['best_eval_loss']:.4f} at {grid['best_config']}",
    ]
    noise = result["noise"]
    if noise:
        lines.append(
            f"Noise floor (median spread of best eval loss across seeds, {len(noise['configs'])} "
            f"configurations): {noise['floor_regret_percent']:.2f}% regret"
        )
    header = ["strategy"] + [f"{b:g}: median / p90" for b in budgets] + ["trials", "pruned", "best pruned"]
    lines.append(" | ".join(header))
    for row in result["rows"]:
        cells = [row["strategy"]]
        cells += [f"{row[f'median_regret@{b:g}']:.2f}% / {row[f'p90_regret@{b:g}']:.2f}%" for b in budgets]
        cells += [
            f"{row['median_trials@max']:g}",
            f"{100 * row['pruned_share']:.0f}%",
            f"{row['grid_best_pruned_seeds']}/{row['seeds']}",
        ]
        lines.append(" | ".join(cells))
    return lines


def plot(result: dict[str, Any], folder: Path) -> list[Path]:
    """Median regret (with the p10-p90 band) against cumulative optimizer steps: PNG and offline HTML."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go

    total = result["grid"]["total_steps"]
    best, gap = (
        result["grid"]["best_eval_loss"],
        result["grid"]["baseline_eval_loss"] - result["grid"]["best_eval_loss"],
    )
    steps = [round(total * f / 100) for f in range(1, 51)]
    figure, axis = plt.subplots(figsize=(8, 5))
    html = go.Figure()
    for name, traces in result["traces"].items():
        curves = []
        for trace in traces:
            values = []
            for budget in steps:
                found = [v for e, v in zip(trace["ends"], trace["values"]) if e <= budget and v is not None]
                values.append(100.0 * (min(found) - best) / gap if found else 100.0)
            curves.append(values)
        median = [statistics.median(column) for column in zip(*curves)]
        low = [percentile(list(column), 0.1) for column in zip(*curves)]
        high = [percentile(list(column), 0.9) for column in zip(*curves)]
        (line,) = axis.plot(steps, median, label=name)
        axis.fill_between(steps, low, high, alpha=0.15, color=line.get_color())
        html.add_trace(go.Scatter(x=steps, y=median, name=name, mode="lines"))
    axis.set_yscale("symlog", linthresh=1.0)
    axis.set_xlabel("cumulative optimizer steps")
    axis.set_ylabel("regret, % of possible improvement (median, p10-p90)")
    axis.axvline(0.15 * total, color="grey", linestyle=":", label="15% of the grid")
    axis.legend()
    folder.mkdir(parents=True, exist_ok=True)
    png, page = folder / "replay_regret.png", folder / "replay_regret.html"
    figure.savefig(png, dpi=120, bbox_inches="tight")
    plt.close(figure)
    html.update_layout(xaxis_title="cumulative optimizer steps", yaxis_title="median regret (%)")
    html.write_html(page, include_plotlyjs="directory")
    return [png, page]


def main(argv: list[str] | None = None) -> None:
    source, strategies, settings = parse_arguments(sys.argv[1:] if argv is None else argv)
    result = run(source, strategies, settings)
    budgets = [float(b) for b in settings["budgets"]]
    for line in format_table(result, budgets):
        print(line)
    folder = Path(settings.get("output") or Path("outputs/replay") / source.stem)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "replay.json").write_text(
        json.dumps({k: v for k, v in result.items() if k != "traces"}, indent=1)
    )
    for path in plot(result, folder):
        print(f"Wrote {path}")


if __name__ == "__main__":
    main()
