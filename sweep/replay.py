"""Replay sweep strategies against recorded curves: what a sampler and pruner would have found, in seconds.

    python -m sweep.replay                                                  # conf/replay: both recorded grids
    python -m sweep.replay benchmarks/grid_gpu.csv benchmarks/grid_arithmetic.csv replay.seeds=20
    python -m sweep.replay benchmarks/grid_gpu.csv hparams_search=default,previous_default
    python -m sweep.replay outputs/sweeps/my_study                          # your own finished study
    python -m sweep.replay replay=pruners                                   # the pruners tried for the default

A strategy is an `hparams_search` preset (plus overrides): its real Optuna sampler, pruner, search space,
enqueued trials, early stopping and reporting unit. Each replayed trial's sampled configuration is snapped
to the nearest recorded one (log scale for numbers; a key the grid recorded at one value, such as the GPU
grid's warmup, snaps to that value), and that configuration's recorded evals are reported to the pruner one
by one, as the training job would, until it is pruned, stopped early or finished. A configuration recorded
with several seeds is one grid point: the mean of its seeds' curves (a lucky seed would otherwise become
the best configuration no sweep can be expected to find). Its cost is the optimizer
steps it ran; its value is its best eval loss so far, as a real trial's objective.

Several grids replay in one run, each with every strategy. A preset is composed for each grid's own model
(its curves' model columns), so a model-derived learning-rate prior (sweep/lr_prior.py) is the one a sweep
on that grid's model would use. A curves CSV without model columns (written before they existed, as
benchmarks/grid_gpu.csv) is taken as recorded on SmolLM2-135M-Instruct (llama, hidden 576), the model
every grid of that time ran.

Regret of a sweep after a budget of optimizer steps = (best value among the trials finished within the
budget - the best recorded value) / (untrained baseline - the best recorded value), in percent: 0 means the
sweep found the best recorded configuration, 100 means it found nothing better than the untrained model
(also the value before any trial finished). Normalising by what training can gain keeps regret meaningful
when losses approach zero. Budgets are fractions of the recorded grid's total optimizer steps. The target
at `replay.target_budget` is a median regret of at most max(1%, the grid's noise floor), with the grid's
best configuration pruned in at most 1 of 20 seeds.
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

from sweep.curves import CONFIG_KEYS, MODEL_KEYS, SETTING_KEYS, read_csv
from sweep.lr_prior import short
from sweep.space import grid_choices, search_space
from sweep.study import OPTUNA_TARGETS

log_scale_keys = ("optim.learning_rate", "lora.r", "lora.alpha", "optim.num_train_epochs")
RUN_KEYS = (*CONFIG_KEYS, *SETTING_KEYS)  # what defines a recorded configuration (the seed aside)
# The model of a curves CSV written before the model columns existed: every grid of that time (GPU, CPU)
# ran the default model.
ASSUMED_MODEL = {
    "model.name": "SmolLM2-135M-Instruct",
    "model.architecture.model_type": "llama",
    "model.architecture.hidden_size": 576,
}


@dataclass
class Curve:
    """One recorded trial, or the mean of a configuration's seeds: its configuration and evals (step,
    fraction of its schedule, eval loss)."""

    config: dict[str, Any]
    planned_steps: int
    evals: list[tuple[int, float, float]]
    complete: bool = True  # false for a trial that was itself pruned: nothing is known after its last eval
    seeds: int = 1  # runs whose eval losses this curve averages
    # per eval, the seeds' mean best eval loss so far (a trial's objective); None for one run: the running
    # minimum of its evals. The minimum of mean losses would be higher where the seeds' minima fall at
    # different evals.
    best_so_far: list[float] | None = None

    def best_until(self, index: int) -> float:
        """The objective after the eval at `index`: best eval loss so far (seed mean for a mean curve)."""
        if self.best_so_far is not None:
            return self.best_so_far[index]
        return min(loss for _, _, loss in self.evals[: index + 1])

    @property
    def best(self) -> float:
        return self.best_until(len(self.evals) - 1)


@dataclass
class Recording:
    """The recorded grid (one curve per configuration), the untrained baseline, the seed repeats and the
    model it was recorded on."""

    curves: dict[tuple, Curve]
    keys: tuple[str, ...]  # the config keys that vary across the grid
    fixed: dict[str, Any]  # the keys that do not
    baseline: float
    repeats: dict[tuple, list[float]] = field(default_factory=dict)  # config -> best loss of every seed
    model: dict[str, Any] = field(default_factory=lambda: dict(ASSUMED_MODEL))  # MODEL_KEYS -> value
    model_assumed: bool = True  # no model columns: ASSUMED_MODEL

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

    def value_range(self, key: str) -> tuple[float, float] | None:
        """The lowest and highest recorded value of a numeric key (one value for a key the grid fixes);
        None for a key the grid did not record or that is not a number."""
        if key in self.keys:
            values = [config[self.keys.index(key)] for config in self.curves]
        else:
            values = [self.fixed.get(key)]
        if not values or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            return None
        return min(values), max(values)

    def noise_floor(self) -> dict[str, Any] | None:
        """Spread of the best eval loss across seeds of the same configuration, in loss and regret units:
        per configuration max - min; the floor of one run is their median. A grid point that averages n
        seeds (build_recording) is known about sqrt(n) times better: `grid_point_floor_regret_percent` is
        the floor over sqrt(median n of the seeded configurations), the standard error of a mean of n
        independent runs; it equals the one-run floor when grid points are single runs."""
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
        averaged = statistics.median(
            self.curves[config].seeds for config, values in self.repeats.items() if len(values) >= 2
        )
        return {
            "configs": spreads,
            "floor_regret_percent": floor,
            "grid_point_seeds": averaged,
            "grid_point_floor_regret_percent": floor / math.sqrt(averaged),
        }

    def separation(self, rank: int = 10) -> dict[str, Any] | None:
        """How far the `rank`-th best configuration lies behind the best, in loss and regret units, and as a
        multiple of the grid points' noise floor (a grid whose top configurations lie within the noise cannot tell
        strategies apart). None with fewer configurations than `rank`."""
        losses = sorted(curve.best for curve in self.curves.values())
        if len(losses) < rank:
            return None
        gap = losses[rank - 1] - losses[0]
        noise = self.noise_floor()
        gap_regret = 100.0 * gap / (self.baseline - self.best)
        return {
            "rank": rank,
            "best": losses[0],
            "ranked": losses[rank - 1],
            "gap": gap,
            "gap_regret_percent": gap_regret,
            "noise_floors": gap_regret / noise["grid_point_floor_regret_percent"] if noise else None,
        }

    def effects(self) -> dict[str, list[dict[str, Any]]]:
        """What each varied key does, the others held fixed: the configurations are grouped by all other
        keys; in every group that recorded each value of the key, the value with the lowest best eval loss
        wins, and every value's excess over its group's best is taken. Per value: wins, groups, and the
        median excess (loss units and % of the grid's regret scale)."""
        effects = {}
        for index, key in enumerate(self.keys):
            values = sorted({config[index] for config in self.curves})
            if len(values) < 2:
                continue
            groups: dict[tuple, dict[Any, float]] = defaultdict(dict)
            for config, curve in self.curves.items():
                groups[config[:index] + config[index + 1 :]][config[index]] = curve.best
            complete = [group for group in groups.values() if len(group) == len(values)]
            if not complete:
                continue
            rows = []
            for value in values:
                excess = [group[value] - min(group.values()) for group in complete]
                rows.append(
                    {
                        "value": value,
                        "wins": sum(group[value] == min(group.values()) for group in complete),
                        "groups": len(complete),
                        "median_excess": statistics.median(excess),
                        "median_excess_regret_percent": 100.0
                        * statistics.median(excess)
                        / (self.baseline - self.best),
                        "best": min(group[value] for group in complete),
                    }
                )
            effects[key] = rows
        return effects


def _curves_from_rows(rows: list[dict[str, Any]]) -> tuple[list[Curve], list[float]]:
    by_trial: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_trial[(row["study"], row["trial"])].append(row)
    curves, baselines = [], []
    for trial_rows in by_trial.values():
        first = trial_rows[0]
        evals = sorted((r["step"], r["schedule_fraction"], r["eval_loss"]) for r in trial_rows)
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


def mean_curve(runs: list[Curve]) -> Curve:
    """The grid point of a configuration run with several seeds: at each eval, the mean eval loss of the
    runs that finished with the same evals as the first (the grid's own seed), reported to the pruner, and
    the mean of their best eval loss so far, the objective (the mean of each seed's best, as a real trial
    of the configuration would score on average); the first run alone when it was pruned or no other run
    matches. A single seed's curve can be lucky (grid 2's best configuration:
    0.058 at seed 42, 0.076 at seeds 43 and 44), and a sweep's regret is judged against the grid's best."""
    first = runs[0]
    steps = [step for step, _, _ in first.evals]
    same = [
        run
        for run in runs
        if run.complete and run.planned_steps == first.planned_steps and [s for s, _, _ in run.evals] == steps
    ]
    if not first.complete or len(same) < 2:
        return first
    evals = [
        (step, fraction, statistics.fmean(run.evals[index][2] for run in same))
        for index, (step, fraction, _) in enumerate(first.evals)
    ]
    best_so_far = [statistics.fmean(run.best_until(index) for run in same) for index in range(len(evals))]
    return Curve(first.config, first.planned_steps, evals, True, seeds=len(same), best_so_far=best_so_far)


def build_recording(curves: list[Curve], baselines: list[float]) -> Recording:
    """Group curves into the grid: keys that vary define a configuration; a configuration recorded more
    than once (other seeds) is replayed as the mean curve of its seeds (mean_curve), and each seed's best
    eval loss goes into the noise floor. The seed is not a grid key: a sweep does not search over it."""
    if not curves:
        raise SystemExit("No finished trial with an eval history found.")
    if not baselines:
        raise SystemExit("The recording has no untrained baseline (eval.before_training=false?).")
    keys = tuple(k for k in RUN_KEYS if k != "seed" and len({repr(c.config.get(k)) for c in curves}) > 1)
    fixed = {k: curves[0].config.get(k) for k in RUN_KEYS if k not in keys and k != "seed"}
    runs_of: dict[tuple, list[Curve]] = defaultdict(list)  # configuration -> its runs, grid seed first
    seeds = [c.config.get("seed") for c in curves]
    grid_seed = max(set(seeds), key=seeds.count)  # the seed most curves share: the grid's own runs
    seen = set()  # (configuration, seed): a second trial of the same run (e.g. a grid study that re-ran a
    # point after a failed trial) repeats its numbers exactly, so it is not another seed of the noise floor
    for curve in sorted(curves, key=lambda c: c.config.get("seed") != grid_seed):
        config = tuple(curve.config[k] for k in keys)
        if (config, curve.config.get("seed")) in seen:
            continue
        seen.add((config, curve.config.get("seed")))
        runs_of[config].append(curve)
    grid = {config: mean_curve(runs) for config, runs in runs_of.items()}
    repeats = {config: [run.best for run in runs] for config, runs in runs_of.items()}
    return Recording(grid, keys, fixed, statistics.median(baselines), repeats)


def load_recording(source: Path) -> Recording:
    """A recording from a curves CSV (sweep.curves) or from a finished sweep folder: its trial folders
    hold the curves (pruned trials' curves end where they were pruned). Without model columns the
    recording is taken as SmolLM2-135M-Instruct's (ASSUMED_MODEL)."""
    if source.is_file() and source.suffix == ".csv":
        rows = read_csv(source)
    elif source.is_dir():
        from sweep.curves import sweep_rows

        rows = list(sweep_rows(source))
    elif not source.exists():
        raise SystemExit(
            f"{source} does not exist: give a curves CSV (python -m sweep.curves) or a sweep folder; the "
            "recorded grids are made by the scripts in benchmarks/ (docs/sweeps.md)."
        )
    else:
        raise SystemExit(f"{source} is neither a curves CSV nor a sweep folder.")
    recording = build_recording(*_curves_from_rows(rows))
    model = recorded_model(rows, source)
    if model is not None:
        recording.model, recording.model_assumed = model, False
    return recording


def model_overrides(model: dict[str, Any]) -> list[str]:
    """The overrides that compose a run on the grid's model, for its learning-rate prior: the conf/model
    option of that name if there is one, and the recorded hidden size and family; a model known only by
    name has its prior read from its own config.json (sweep/lr_prior.py)."""
    from omegaconf import OmegaConf

    from src.config import CONF_DIR

    name = model.get("model.name")
    option = next(
        (
            p.stem
            for p in sorted((CONF_DIR / "model").glob("*.yaml"))
            if OmegaConf.load(p).get("name") == name
        ),
        None,
    )
    words = [f"model={option}"] if option else [f"model.name={json.dumps(str(name))}"]
    hidden_size, model_type = (
        model.get("model.architecture.hidden_size"),
        model.get("model.architecture.model_type"),
    )
    if hidden_size is not None:
        words.append(f"model.architecture.hidden_size={int(hidden_size)}")
        words.append(f"model.architecture.model_type={json.dumps(model_type)}")  # None: null
    elif option is None:
        words.append("model.architecture=null")
    return words


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
    eval_fraction: float | None  # eval.steps below 1: evals every this fraction of a trial's steps
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
    for key in RUN_KEYS:
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
        eval_fraction=float(cfg.eval.steps) if cfg.eval.steps < 1 else None,
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
    Keys the strategy does not search take its fixed value (alpha = 2r follows the sampled rank). A key the
    grid recorded at one value is not compared: every sampled value snaps to it (the GPU grid's warmup).
    A value beyond the grid's range snaps to its edge (counted by `outside_grid`)."""
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
    """Report a recorded curve to the trial as the job's PruningCallback would (nothing inside the curve's
    own warmup: the replayed trial is the recorded run); early stopping as transformers'
    EarlyStoppingCallback would. Returns (best eval loss, steps run, pruned)."""
    from sweep.pruning import report_step

    best, stalls = math.inf, 0
    warmup_ratio = curve.config.get("optim.warmup_ratio")
    warmup_ratio = strategy.warmup_ratio if warmup_ratio is None else warmup_ratio
    warmup_steps = math.ceil(warmup_ratio * curve.planned_steps)
    for index, (step, _fraction, loss) in enumerate(curve.evals):
        if loss < best - strategy.early_stopping_threshold:
            stalls = 0
        else:
            stalls += 1
        best = min(best, loss)
        if step > warmup_steps:
            at = report_step(step, curve.planned_steps, strategy.report_at, strategy.eval_fraction)
            trial.report(loss, at)
            if trial.should_prune():
                return curve.best_until(index), step, True
        if strategy.early_stopping_patience and stalls >= strategy.early_stopping_patience:
            return curve.best_until(index), step, False
    return curve.best, curve.evals[-1][0], False


@dataclass
class SweepTrace:
    """One replayed sweep: for every trial, the cumulative steps when it ended, its value and outcome, and
    which of its sampled values lay beyond the grid (snapped to its edge)."""

    ends: list[int] = field(default_factory=list)
    values: list[float | None] = field(default_factory=list)  # None for pruned trials
    configs: list[tuple] = field(default_factory=list)
    pruned: list[bool] = field(default_factory=list)
    outside: list[dict[str, str]] = field(default_factory=list)  # sampled key -> "below" or "above"

    def best_within(self, budget: float) -> float | None:
        found = [v for end, v in zip(self.ends, self.values) if end <= budget and v is not None]
        return min(found) if found else None


def outside_grid(recording: Recording, params: dict[str, Any]) -> dict[str, str]:
    """The sampled values below or above the range the grid recorded for their key (a key recorded at one
    value: any other value); snapping moves each to the grid's edge."""
    found = {}
    for key, value in params.items():
        bounds = recording.value_range(key)
        if bounds is None or not isinstance(value, int | float):
            continue
        if value < bounds[0] and not math.isclose(value, bounds[0], rel_tol=1e-9):
            found[key] = "below"
        elif value > bounds[1] and not math.isclose(value, bounds[1], rel_tol=1e-9):
            found[key] = "above"
    return found


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
        trace.outside.append(outside_grid(recording, params))
    return trace


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = (len(ordered) - 1) * q
    low, high = math.floor(index), math.ceil(index)
    return ordered[low] + (ordered[high] - ordered[low]) * (index - low)


def target_regret(recording: Recording) -> float:
    """The median regret a strategy should reach: max(1%, the noise floor of the grid's points, which are
    seed means where seeds were recorded); 1% without seeds."""
    noise = recording.noise_floor()
    return max(1.0, noise["grid_point_floor_regret_percent"]) if noise else 1.0


def summarize(
    recording: Recording,
    strategy: Strategy,
    traces: list[SweepTrace],
    budgets: list[float],
    target_budget: float,
) -> dict:
    """One strategy's row on one grid: regret at each budget, trials, pruning, values outside the grid."""
    name, total = strategy.name, recording.total_steps
    best_config = recording.best_config
    row: dict[str, Any] = {"strategy": name, "seeds": len(traces)}
    for budget in sorted({*budgets, target_budget}):
        regrets = [recording.regret(t.best_within(budget * total)) for t in traces]
        row[f"median_regret@{budget:g}"] = statistics.median(regrets)
        row[f"p90_regret@{budget:g}"] = percentile(regrets, 0.9)
    row["median_trials@max"] = statistics.median(len(t.ends) for t in traces)
    row["pruned_share"] = statistics.mean(sum(t.pruned) / len(t.pruned) for t in traces)
    row["grid_best_pruned_seeds"] = sum(
        any(c == best_config and p for c, p in zip(t.configs, t.pruned)) for t in traces
    )
    trials = sum(len(t.ends) for t in traces)
    searched = [key for key in strategy.params if recording.value_range(key) is not None]
    row["outside_grid"] = {  # share of all replayed trials whose sampled value lay below / above the grid
        key: {
            side: sum(o.get(key) == side for t in traces for o in t.outside) / trials
            for side in ("below", "above")
        }
        for key in searched
    }
    row["target_met"] = (
        row[f"median_regret@{target_budget:g}"] <= target_regret(recording)
        and row["grid_best_pruned_seeds"] <= len(traces) / 20
    )
    return row


# --- what each grid says about the strategies ----------------------------------------------------------


def learning_rate_against_rule(recording: Recording, prior: Any) -> dict[str, Any] | None:
    """Where the published rule's learning rate for the grid's model (`prior`, sweep/lr_prior.py) sits
    against the learning rate of the grid's best configuration, and against the grid's range."""
    bounds = recording.value_range("optim.learning_rate")
    if bounds is None:
        return None
    best = dict(zip(recording.keys, recording.best_config)).get(
        "optim.learning_rate", recording.fixed.get("optim.learning_rate")
    )
    low, high = bounds
    edge = None
    if low < high:
        edge = "top" if math.isclose(best, high) else "bottom" if math.isclose(best, low) else None
    return {
        "rule": prior.learning_rate,
        "rule_from": prior.describe(),
        "best": best,
        "rule_over_best": prior.learning_rate / best,
        "grid_range": [low, high],
        "rule_in_grid": low <= prior.learning_rate <= high,
        "best_at_grid_edge": edge,
    }


def differs_from_grid(recording: Recording, strategy: Strategy) -> dict[str, list[Any]]:
    """Settings the strategy fixes (does not search) at another value than the one the grid recorded for
    every curve: the replay uses the grid's curves anyway, so they are named beside its results."""
    found = {}
    for key, grid_value in recording.fixed.items():
        value = strategy.fixed.get(key)
        if grid_value is None or value is None or key in strategy.params:
            continue
        numbers = all(isinstance(v, int | float) for v in (value, grid_value))
        if not (numbers and math.isclose(value, grid_value)):
            found[key] = [value, grid_value]
    return found


def touches_model(overrides: list[str]) -> bool:
    """Whether overrides choose the model themselves (then the grid's model is not imposed)."""
    return any(word.lstrip("+~").split("=")[0].split(".")[0] == "model" for word in overrides)


def grid_prior(model_words: list[str]) -> Any:
    """The learning-rate prior (sweep/lr_prior.py) of the run these model overrides compose."""
    from src.config import compose
    from sweep.lr_prior import model_prior

    return model_prior(compose(model_words).model)


def replay_grid(
    label: str,
    source: Path,
    recording: Recording,
    strategies: dict[str, dict[str, Any]],
    settings: dict[str, Any],
    composed: dict[tuple, Strategy],
) -> dict[str, Any]:
    """Every strategy replayed `settings.seeds` times on one grid, each composed for the grid's model."""
    import dataclasses

    budgets = [float(b) for b in settings["budgets"]]
    target_budget = float(settings["target_budget"])
    max_steps = max(*budgets, target_budget) * recording.total_steps
    grid_model_words = model_overrides(recording.model)
    rows, traces, differences, prior_words = [], {}, {}, None
    for name, spec in strategies.items():
        words = [*spec["overrides"]]
        if not touches_model(words):
            words = [*words, *grid_model_words]
        if prior_words is None:
            prior_words = [w for w in words if touches_model([w])]
        key = tuple(words)
        if key not in composed:
            composed[key] = compose_strategy(name, words)
        strategy = dataclasses.replace(composed[key], name=name)
        if spec.get("sampler"):
            strategy.sampler_config = dict(spec["sampler"])
        if "pruner" in spec:
            strategy.pruner_config = dict(spec["pruner"]) if spec["pruner"] else None
        traces[name] = [
            replay_sweep(recording, strategy, seed, max_steps) for seed in range(int(settings["seeds"]))
        ]
        rows.append(summarize(recording, strategy, traces[name], budgets, target_budget))
        if found := differs_from_grid(recording, strategy):
            differences[name] = found
    prior = grid_prior(prior_words or [])
    if prior_words == grid_model_words and prior.source == "conf/model architecture":
        assumed = "assumed: the curves have no model columns"
        prior = dataclasses.replace(prior, source=assumed if recording.model_assumed else "the curves' model")
    return {
        "label": label,
        "source": str(source),
        "grid": {
            "configurations": len(recording.curves),
            "keys": list(recording.keys),
            "fixed": recording.fixed,
            "model": recording.model,
            "model_assumed": recording.model_assumed,
            "total_steps": recording.total_steps,
            "baseline_eval_loss": recording.baseline,
            "best_eval_loss": recording.best,
            "best_config": dict(zip(recording.keys, recording.best_config)),
        },
        "noise": recording.noise_floor(),
        "separation": recording.separation(),
        "effects": recording.effects(),
        "target": {"budget": target_budget, "median_regret_percent": target_regret(recording)},
        "learning_rate_rule": learning_rate_against_rule(recording, prior),
        "differs_from_grid": differences,
        "rows": rows,
        "traces": {name: [{"ends": t.ends, "values": t.values} for t in ts] for name, ts in traces.items()},
    }


def grid_labels(sources: list[Path]) -> list[str]:
    """A short name per grid (the file or folder name), made unique."""
    labels: list[str] = []
    for source in sources:
        label = source.stem
        while label in labels:
            label += "+"
        labels.append(label)
    return labels


def run(
    sources: list[Path], strategies: dict[str, dict[str, Any]], settings: dict[str, Any]
) -> dict[str, Any]:
    """Every strategy on every grid, in one run; the summary says which reach the target on all grids."""
    recordings = [load_recording(source) for source in sources]  # a missing grid stops the run at once
    composed: dict[tuple, Strategy] = {}
    grids = [
        replay_grid(label, source, recording, strategies, settings, composed)
        for label, source, recording in zip(grid_labels(sources), sources, recordings)
    ]
    target_budget = float(settings["target_budget"])
    summary = []
    for name in strategies:
        entry: dict[str, Any] = {"strategy": name}
        for grid in grids:
            row = next(r for r in grid["rows"] if r["strategy"] == name)
            entry[grid["label"]] = {
                "median_regret": row[f"median_regret@{target_budget:g}"],
                "p90_regret": row[f"p90_regret@{target_budget:g}"],
                "target": grid["target"]["median_regret_percent"],
                "grid_best_pruned_seeds": row["grid_best_pruned_seeds"],
                "seeds": row["seeds"],
                "target_met": row["target_met"],
            }
        entry["target_met_on_all"] = all(entry[g["label"]]["target_met"] for g in grids)
        summary.append(entry)
    return {"sources": [str(s) for s in sources], "grids": grids, "summary": summary}


# --- command line ------------------------------------------------------------------------------------


def parse_arguments(argv: list[str]) -> tuple[list[Path], dict[str, dict[str, Any]], dict[str, Any]]:
    """SOURCES (curves CSVs or sweep folders; none: replay.sources), then Hydra-style words:
    replay=NAME (the strategies of conf/replay/NAME.yaml instead of default.yaml's; its other keys
    override default.yaml's), hparams_search=a,b (strategies), replay.KEY=VALUE, other overrides (applied
    to every strategy). Without hparams_search, the strategies of the replay config."""
    from omegaconf import OmegaConf

    from src.config import CONF_DIR

    sources = []
    while argv and "=" not in argv[0]:
        sources.append(Path(argv[0]))
        argv = argv[1:]
    settings = OmegaConf.load(CONF_DIR / "replay" / "default.yaml")
    presets, common, replay_words = None, [], []
    for word in argv:
        key, _, value = word.partition("=")
        if key == "replay":
            chosen = CONF_DIR / "replay" / f"{value}.yaml"
            if not chosen.is_file():
                options = ", ".join(sorted(p.stem for p in chosen.parent.glob("*.yaml")))
                raise SystemExit(f"replay={value}: no conf/replay/{value}.yaml (options: {options}).")
            own = OmegaConf.load(chosen)
            settings = OmegaConf.merge(
                OmegaConf.masked_copy(settings, [k for k in settings if k != "strategies"]), own
            )
        elif key == "hparams_search":
            presets = value.split(",")
        elif key.startswith("replay."):
            replay_words.append(word.removeprefix("replay."))
        else:
            common.append(word)
    settings = OmegaConf.to_container(OmegaConf.merge(settings, OmegaConf.from_dotlist(replay_words)))
    if not sources:  # the recorded grids, named from the repository root
        sources = [p if p.is_absolute() else CONF_DIR.parent / p for p in map(Path, settings["sources"])]
    if presets is None:
        strategies = settings["strategies"]
    else:
        strategies = {name: {"overrides": [f"hparams_search={name}"]} for name in presets}
    for spec in strategies.values():
        spec["overrides"] = [*spec["overrides"], *common]
    return sources, strategies, settings


def _percent(value: float) -> str:
    return f"{100 * value:.0f}%"


def format_grid(grid: dict[str, Any], budgets: list[float]) -> list[str]:
    """One grid's lines: what it is, its noise floor and target, the rule against its best, the table."""
    info, model = grid["grid"], grid["grid"]["model"]
    assumed = " (no model columns: assumed)" if info["model_assumed"] else ""
    lines = [
        f"== {grid['label']} ({grid['source']}): {info['configurations']} configurations over "
        f"{', '.join(info['keys'])} ({info['total_steps']} optimizer steps in all)",
        f"Model: {model['model.name']}, {model['model.architecture.model_type']}, hidden "
        f"{model['model.architecture.hidden_size']}{assumed}; baseline eval loss "
        f"{info['baseline_eval_loss']:.4f}, best {info['best_eval_loss']:.4f} at {info['best_config']}",
    ]
    noise, target = grid["noise"], grid["target"]
    if noise:
        lines.append(
            f"Noise floor (median spread of best eval loss across seeds, {len(noise['configs'])} "
            f"configurations): {noise['floor_regret_percent']:.2f}% regret for one run; "
            f"{noise['grid_point_floor_regret_percent']:.2f}% for a grid point "
            f"(mean of {noise['grid_point_seeds']:g} seeds where seeded)"
        )
    else:
        lines.append("Noise floor: unknown (no configuration recorded with several seeds)")
    gap = grid["separation"]
    if gap:
        floors = f" = {gap['noise_floors']:.1f} x the noise floor" if gap["noise_floors"] is not None else ""
        lines.append(
            f"Best vs {gap['rank']}th-best configuration: {gap['best']:.4f} vs {gap['ranked']:.4f}, "
            f"{gap['gap_regret_percent']:.2f}% regret{floors} (>= 3 needed to tell strategies apart)"
        )
    for key, rows in grid["effects"].items():
        cells = [
            f"{r['value']:g}: wins {r['wins']}/{r['groups']}, "
            f"median excess {r['median_excess']:.4f} ({r['median_excess_regret_percent']:.1f}%), best {r['best']:.4f}"
            for r in rows
        ]
        lines.append(f"Effect of {key} (others fixed): " + "; ".join(cells))
    lines.append(
        f"Target at {target['budget']:g} of the steps: median regret <= {target['median_regret_percent']:.2f}%, "
        "grid best pruned in <= 1 of 20 seeds"
    )
    rule = grid["learning_rate_rule"]
    if rule:
        low, high = rule["grid_range"]
        edge = f", the grid's {rule['best_at_grid_edge']} edge" if rule["best_at_grid_edge"] else ""
        inside = "inside" if rule["rule_in_grid"] else "outside"
        lines.append(
            f"Learning-rate rule {rule['rule_from']} = {rule['rule_over_best']:.2f} x the grid best's "
            f"{short(rule['best'])}{edge}; {inside} the grid's {short(low)}…{short(high)}"
        )
    differences: dict[str, list[str]] = defaultdict(list)  # "key value (grid value)" -> strategies
    for name, found in grid["differs_from_grid"].items():
        for key, (value, grid_value) in found.items():
            differences[f"{key} {value} (grid {grid_value})"].append(name)
    for difference, names in differences.items():
        who = "every strategy" if len(names) == len(grid["rows"]) else ", ".join(names)
        lines.append(
            f"Fixed otherwise than the grid, whose curves are replayed anyway: {difference} in {who}"
        )
    header = (
        ["strategy"]
        + [f"{b:g}: median / p90" for b in budgets]
        + ["trials", "pruned", "best pruned", "target"]
    )
    lines.append(" | ".join(header))
    for row in grid["rows"]:
        cells = [row["strategy"]]
        cells += [f"{row[f'median_regret@{b:g}']:.2f}% / {row[f'p90_regret@{b:g}']:.2f}%" for b in budgets]
        cells += [
            f"{row['median_trials@max']:g}",
            _percent(row["pruned_share"]),
            f"{row['grid_best_pruned_seeds']}/{row['seeds']}",
            "met" if row["target_met"] else "missed",
        ]
        lines.append(" | ".join(cells))
    lines.append("Sampled values outside the grid, snapped to its edge (share of trials, below / above):")
    for row in grid["rows"]:
        cells = [
            f"{key.split('.')[-1]} {_percent(sides['below'])} / {_percent(sides['above'])}"
            for key, sides in row["outside_grid"].items()
        ]
        lines.append(f"  {row['strategy']}: {', '.join(cells) or 'none'}")
    return lines


def format_summary(result: dict[str, Any]) -> list[str]:
    """Every strategy on every grid at the target budget, and whether it meets the target on all."""
    grids = result["grids"]
    budget = grids[0]["target"]["budget"]
    lines = [
        f"== All grids at {budget:g} of each grid's steps: median / p90 regret (target), grid best pruned",
        " | ".join(["strategy", *(g["label"] for g in grids), "target on all"]),
    ]
    for entry in result["summary"]:
        cells = [entry["strategy"]]
        for grid in grids:
            e = entry[grid["label"]]
            cells.append(
                f"{e['median_regret']:.2f}% / {e['p90_regret']:.2f}% ({e['target']:.2f}%), "
                f"{e['grid_best_pruned_seeds']}/{e['seeds']}"
            )
        cells.append("yes" if entry["target_met_on_all"] else "no")
        lines.append(" | ".join(cells))
    return lines


def format_table(result: dict[str, Any], budgets: list[float]) -> list[str]:
    """The whole report: each grid, then the summary over all of them."""
    lines = []
    for grid in result["grids"]:
        lines += [*format_grid(grid, budgets), ""]
    return lines + format_summary(result)


def plot(grid: dict[str, Any], folder: Path) -> list[Path]:
    """One grid's median regret (with the p10-p90 band) against cumulative optimizer steps: PNG and
    offline HTML, named after the grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go

    total = grid["grid"]["total_steps"]
    best, gap = (
        grid["grid"]["best_eval_loss"],
        grid["grid"]["baseline_eval_loss"] - grid["grid"]["best_eval_loss"],
    )
    steps = [round(total * f / 100) for f in range(1, 51)]
    figure, axis = plt.subplots(figsize=(8, 5))
    html = go.Figure()
    for name, traces in grid["traces"].items():
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
    target = grid["target"]["budget"]
    axis.axvline(target * total, color="grey", linestyle=":", label=f"{target:.0%} of the grid")
    axis.set_title(grid["label"])
    axis.legend()
    folder.mkdir(parents=True, exist_ok=True)
    png, page = folder / f"replay_regret_{grid['label']}.png", folder / f"replay_regret_{grid['label']}.html"
    figure.savefig(png, dpi=120, bbox_inches="tight")
    plt.close(figure)
    html.update_layout(
        title=grid["label"], xaxis_title="cumulative optimizer steps", yaxis_title="median regret (%)"
    )
    html.write_html(page, include_plotlyjs="directory")
    return [png, page]


def main(argv: list[str] | None = None) -> None:
    sources, strategies, settings = parse_arguments(sys.argv[1:] if argv is None else argv)
    result = run(sources, strategies, settings)
    for line in format_table(result, [float(b) for b in settings["budgets"]]):
        print(line)
    name = "+".join(grid["label"] for grid in result["grids"])
    folder = Path(settings.get("output") or Path("outputs/replay") / name)
    folder.mkdir(parents=True, exist_ok=True)
    kept = {**result, "grids": [{k: v for k, v in g.items() if k != "traces"} for g in result["grids"]]}
    (folder / "replay.json").write_text(json.dumps(kept, indent=1))
    print(f"Wrote {folder / 'replay.json'}")
    for grid in result["grids"]:
        for path in plot(grid, folder):
            print(f"Wrote {path}")


if __name__ == "__main__":
    main()
