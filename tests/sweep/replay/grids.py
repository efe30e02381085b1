"""What the replay's tests replay and report: synthetic recorded grids (a bowl in log(learning rate) with its
floor at 4e-4) as curves CSV rows (sweep.curves) or as a finished sweep's trial folders, the recorded grids
of benchmarks/, and a small grid result built by hand for the report and the plots."""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml

from sweep.replay.grid_stats import Effect, NoiseFloor, RulePosition, Separation
from sweep.replay.recording import ASSUMED_MODEL
from sweep.replay.run import GridInfo, GridResult
from sweep.replay.score import Regret, StrategyRow, Target
from sweep.replay.simulate import SweepTrace
from sweep.replay.strategy import Strategy
from sweep.stopping import StoppingRule

REPO = Path(__file__).resolve().parents[3]
GPU_GRID = REPO / "benchmarks" / "grid_gpu.csv"
ARITHMETIC_GRID = REPO / "benchmarks" / "grid_arithmetic.csv"

LEARNING_RATES = (1e-5, 2.5e-5, 6.3e-5, 1.6e-4, 4e-4, 1e-3)
RANKS = (8, 16, 32, 64)
BASELINE = 0.7
LLAMA_8B = {
    "model.name": "meta-llama/Llama-3.1-8B-Instruct",
    "model.architecture.model_type": "llama",
    "model.architecture.hidden_size": 4096,
}
RULE_SMOLLM2, RULE_LLAMA_8B = 5e-4 * (2000 / 576) ** 0.781, 5e-4 * (2000 / 4096) ** 0.781  # tinker get_lr


def final_loss(learning_rate: float, rank: int, epochs: int) -> float:
    """A bowl in log(lr) with its floor at 4e-4, a slight rank effect and more epochs helping."""
    distance = math.log10(learning_rate / 4e-4)
    return 0.1 + 0.08 * distance**2 + 0.002 * math.log2(64 / rank) + (0.02 if epochs == 1 else 0.0)


def curve_rows(trial: int, learning_rate: float, rank: int, epochs: int, warmup: float, model: dict | None):
    """The 8 evals of one trial: from the baseline towards its floor (warmups other than 0.05 add a little)."""
    planned = 24 * epochs
    floor = final_loss(learning_rate, rank, epochs) + 0.02 * abs(warmup - 0.05)
    rows = []
    for k in range(1, 9):
        step = planned * k // 8
        rows.append(
            {
                "study": "grid",
                "trial": trial,
                "status": "finished",
                "planned_steps": planned,
                "global_step": planned,
                "wall_seconds": 1.0,
                "baseline_eval_loss": BASELINE,
                "optim.learning_rate": learning_rate,
                "lora.r": rank,
                "lora.alpha": 32,
                "optim.num_train_epochs": epochs,
                "optim.warmup_ratio": warmup,
                "seed": 42,
                **(model or {}),
                "step": step,
                "schedule_fraction": step / planned,
                "tokens_seen": step * 200,
                "eval_loss": floor + (BASELINE - floor) * math.exp(-4 * k / 8),
            }
        )
    return rows


def synthetic_rows(
    warmups: tuple[float, ...] = (0.05,),
    model: dict | None = None,
    seed_shifts: tuple[tuple[int, float], ...] = ((43, 0.001), (44, -0.002)),
    ranks: tuple[int, ...] = RANKS,
) -> list[dict]:
    """Curves of the synthetic grid, recorded on `model` (its MODEL_KEYS columns; None: a CSV written
    before they existed), with the seeds of trial 9 shifted."""
    rows, trial = [], 0
    for learning_rate in LEARNING_RATES:
        for rank in ranks:
            for epochs in (1, 3):
                for warmup in warmups:
                    rows += curve_rows(trial, learning_rate, rank, epochs, warmup, model)
                    trial += 1
    for seed, shift in seed_shifts:  # more seeds of one configuration: the noise floor
        repeat = [
            dict(r, study="seeds", trial=r["trial"] + 1000 * seed, seed=seed) for r in rows if r["trial"] == 9
        ]
        for row in repeat:
            row["eval_loss"] += shift
        rows += repeat
    return rows


def second_grid_rows() -> list[dict]:
    """A grid recorded on Llama-3.1-8B (model columns) with warmup {0, 0.05, 0.15} at r16 and seeds that
    spread by 0.02: a noise floor above 1%."""
    return synthetic_rows((0.0, 0.05, 0.15), LLAMA_8B, ((43, 0.02), (44, -0.0)), ranks=(16,))


def write_sweep_folder(sweep: Path) -> None:
    """The synthetic grid's r16 trials as a finished sweep's trial folders; the first one pruned."""
    by_trial: dict[int, list[dict]] = {}
    for row in synthetic_rows():
        if row["study"] == "grid" and row["lora.r"] == 16:
            by_trial.setdefault(row["trial"], []).append(row)
    for number, (trial, evals) in enumerate(sorted(by_trial.items())):
        first, pruned = evals[0], number == 0
        kept = evals[:3] if pruned else evals
        folder = sweep / f"trial_{trial}"
        folder.mkdir(parents=True)
        optim = {key: first[f"optim.{key}"] for key in ("learning_rate", "num_train_epochs")}
        config = {
            "trial": trial,
            "seed": 42,
            "optim": {**optim, "warmup_ratio": 0.05},
            "lora": {"r": 16, "alpha": 32},
        }
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
        history = [{k: e[k] for k in ("step", "schedule_fraction", "tokens_seen", "eval_loss")} for e in kept]
        metrics = {
            "status": "pruned" if pruned else "finished",
            "planned_steps": first["planned_steps"],
            "global_step": kept[-1]["step"],
            "baseline_eval_loss": BASELINE,
            "eval_history": history,
        }
        (folder / "metrics.json").write_text(json.dumps(metrics))


def strategy_row(name: str, median: float, pruned: int, met: bool, outside: dict) -> StrategyRow:
    """A row of 20 seeds with `median` regret at the target budget (0.15)."""
    regret = {0.1: Regret(median + 1, 2 * median + 1), 0.15: Regret(median, median), 0.5: Regret(0.0, median)}
    return StrategyRow(name, 20, regret, 12.5, 0.254, pruned, outside, met)


def grid_result(**changes) -> GridResult:
    """A small grid's result, built by hand (no replay): two strategies, every report section filled."""
    info = GridInfo(
        configurations=2,
        fixed={"lora.alpha": 32},
        model=ASSUMED_MODEL,
        model_assumed=True,
        keys=["optim.learning_rate"],
        total_steps=96,
        baseline_eval_loss=0.71234,
        best_eval_loss=0.05511,
        best_config={"optim.learning_rate": 0.001},
    )
    outside = {"optim.learning_rate": {"below": 0.0, "above": 0.594}}
    fields = dict(
        label="g",
        source="benchmarks/g.csv",
        grid=info,
        noise=NoiseFloor([], 0.4012, 3, 0.2316),
        separation=Separation(10, 0.0551, 0.0665, 0.0114, 1.734, 7.49),
        effects={
            "optim.learning_rate": [
                Effect(1e-4, 0, 2, 0.01234, 1.88, 0.0701),
                Effect(1e-3, 2, 2, 0.0, 0.0, 0.0551),
            ]
        },
        target=Target(0.15, 1.0),
        learning_rate_rule=RulePosition(
            1.32e-3, "1.32e-3 from a rule", 1e-3, 1.3214, [1e-5, 1e-3], False, "top"
        ),
        differs_from_grid={"b": {"lora.alpha": ["2r", 32]}},
        rows=[strategy_row("a", 0.0, 0, True, outside), strategy_row("b", 2.7712, 3, False, {})],
        traces={"a": [SweepTrace()], "b": [SweepTrace()]},
    )
    return GridResult(**{**fields, **changes})


def tiny_rows() -> list[dict]:
    """Three learning rates at r16, 1 epoch (24 steps each, 8 evals), the bowl's best (4e-4) with seeds 43
    (+0.001) and 44 (-0.002): a one-run floor of 0.003."""
    rows = []
    for trial, learning_rate in enumerate((1e-4, 4e-4, 1e-3)):
        rows += curve_rows(trial, learning_rate, 16, 1, 0.05, None)
    for seed, shift in ((43, 0.001), (44, -0.002)):
        rows += [
            dict(r, trial=100 + seed, seed=seed, eval_loss=r["eval_loss"] + shift)
            for r in rows
            if r["trial"] == 1
        ]
    return rows


def tiny_strategy(first_learning_rate: float, **changes) -> Strategy:
    """A random search over the tiny grid's learning rate, no pruner, first trial at `first_learning_rate`,
    at most 8 trials with 2 noise repeats and the stopping rule of patience 2 after 4 trials."""
    fields = dict(
        name="tiny",
        overrides=(),
        sampler_config={"_target_": "optuna.samplers.RandomSampler", "seed": 0},
        pruner_config=None,
        params={"optim.learning_rate": "tag(log, interval(1e-4, 1e-3))"},
        fixed={"lora.r": 16, "lora.alpha": 32, "optim.num_train_epochs": 1, "optim.warmup_ratio": 0.05},
        enqueue_trials=[{"optim.learning_rate": first_learning_rate}],
        report_at="schedule",
        eval_fraction=0.125,
        warmup_ratio=0.05,
        early_stopping_patience=0,
        early_stopping_threshold=0.0,
        n_trials=8,
        noise_repeats=2,
        stopping=StoppingRule(patience=2, min_trials=4),
    )
    return Strategy(**{**fields, **changes})
