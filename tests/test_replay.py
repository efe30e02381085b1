"""Replay of sweep strategies on synthetic recorded curves, schedule-phase reporting and warmup."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest

from sweep.curves import read_csv, write_csv
from sweep.pruning import PruningCallback, report_step
from sweep.replay import Recording, load_recording, parse_arguments, run, snap

LEARNING_RATES = (1e-5, 2.5e-5, 6.3e-5, 1.6e-4, 4e-4, 1e-3)
RANKS = (8, 16, 32, 64)
BASELINE = 0.7


def final_loss(learning_rate: float, rank: int, epochs: int) -> float:
    """A bowl in log(lr) with its floor at 4e-4, a slight rank effect and more epochs helping."""
    distance = math.log10(learning_rate / 4e-4)
    return 0.1 + 0.08 * distance**2 + 0.002 * math.log2(64 / rank) + (0.02 if epochs == 1 else 0.0)


def synthetic_rows(
    warmups: tuple[float, ...] = (0.05,),
    model: dict | None = None,
    seed_shifts: tuple[tuple[int, float], ...] = ((43, 0.001), (44, -0.002)),
) -> list[dict]:
    """Curves of the synthetic grid (warmups other than 0.05 add a little loss), recorded on `model` (its
    MODEL_KEYS columns; None: a CSV written before they existed), with the seeds of trial 9 shifted."""
    rows, trial = [], 0
    for learning_rate in LEARNING_RATES:
        for rank in RANKS:
            for epochs in (1, 3):
                for warmup in warmups:
                    planned = 24 * epochs
                    floor = final_loss(learning_rate, rank, epochs) + 0.02 * abs(warmup - 0.05)
                    for k in range(1, 9):
                        step = planned * k // 8
                        loss = floor + (BASELINE - floor) * math.exp(-4 * k / 8)
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
                                "eval_loss": loss,
                            }
                        )
                    trial += 1
    for seed, shift in seed_shifts:  # more seeds of one configuration: the noise floor
        repeat = [
            dict(r, study="seeds", trial=r["trial"] + 1000 * seed, seed=seed) for r in rows if r["trial"] == 9
        ]
        for row in repeat:
            row["eval_loss"] += shift
        rows += repeat
    return rows


@pytest.fixture(scope="module")
def grid_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("grid") / "grid.csv"
    write_csv(synthetic_rows(), path)
    return path


def test_csv_round_trip_and_recording(grid_csv):
    rows = read_csv(grid_csv)
    assert len(rows) == 48 * 8 + 2 * 8 and rows[0]["lora.r"] == 8 and rows[0]["optim.learning_rate"] == 1e-5
    recording = load_recording(grid_csv)
    assert recording.keys == ("optim.learning_rate", "lora.r", "optim.num_train_epochs")
    assert len(recording.curves) == 48 and recording.total_steps == 24 * 48 // 2 * 4
    assert recording.best_config == (4e-4, 64, 3)
    assert recording.best == pytest.approx(
        final_loss(4e-4, 64, 3) + (BASELINE - 0.1) * math.exp(-4), abs=1e-9
    )
    assert (
        recording.regret(recording.best) == 0
        and recording.regret(BASELINE) == 100
        and recording.regret(None) == 100
    )
    noise = recording.noise_floor()
    (config,) = noise["configs"]
    assert config["seeds"] == 3 and config["spread"] == pytest.approx(0.003)


def test_a_finished_sweep_folder_replays_like_its_csv(tmp_path):
    """A user's own study: its trial folders (config.yaml + metrics.json) are read as the CSV would be; a
    pruned trial's curve ends where it was pruned and counts as incomplete."""
    import json

    import yaml

    rows = [r for r in synthetic_rows() if r["study"] == "grid" and r["lora.r"] == 16]
    sweep = tmp_path / "my_study"
    by_trial: dict[int, list[dict]] = {}
    for row in rows:
        by_trial.setdefault(row["trial"], []).append(row)
    for number, (trial, evals) in enumerate(sorted(by_trial.items())):
        first, pruned = evals[0], number == 0
        kept = evals[:3] if pruned else evals
        folder = sweep / f"trial_{trial}"
        folder.mkdir(parents=True)
        config = {
            "trial": trial,
            "seed": 42,
            "optim": {
                "learning_rate": first["optim.learning_rate"],
                "num_train_epochs": first["optim.num_train_epochs"],
                "warmup_ratio": 0.05,
            },
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
    recording = load_recording(sweep)
    assert recording.keys == ("optim.learning_rate", "optim.num_train_epochs")
    assert len(recording.curves) == 12 and recording.best_config == (4e-4, 3)
    assert [c.complete for c in recording.curves.values()].count(False) == 1
    sources, strategies, settings = parse_arguments(
        [str(sweep), "hparams_search=default", "replay.seeds=2", f"replay.output={tmp_path}"]
    )
    (grid,) = run(sources, strategies, settings)["grids"]
    assert grid["grid"]["configurations"] == 12 and grid["rows"][0]["strategy"] == "default"


def test_snapping_uses_log_distance(grid_csv):
    recording: Recording = load_recording(grid_csv)
    strategy = SimpleNamespace(fixed={"optim.num_train_epochs": 1, "lora.r": 16, "lora.alpha": 32})
    assert snap(recording, {"optim.learning_rate": 3e-4, "lora.r": 20}, strategy) == (4e-4, 16, 1)
    assert snap(recording, {"optim.learning_rate": 2.6e-4, "optim.num_train_epochs": 2}, strategy) == (
        4e-4,
        16,
        3,
    )


def test_replay_is_deterministic_and_compares_strategies(grid_csv, tmp_path):
    sources, strategies, settings = parse_arguments(
        [str(grid_csv), "replay.seeds=3", f"replay.output={tmp_path}"]
    )
    assert set(strategies) == {
        "default",
        "default_no_enqueue",
        "tpe",
        "random",
        "default_median",
        "default_hyperband",
        "previous_default",
    }
    (first,) = run(sources, strategies, settings)["grids"]
    (second,) = run(sources, strategies, settings)["grids"]
    assert first["rows"] == second["rows"]
    rows = {row["strategy"]: row for row in first["rows"]}
    assert rows["random"]["pruned_share"] == 0 and rows["tpe"]["pruned_share"] == 0
    for row in rows.values():  # more budget never makes the best found worse
        medians = [row[f"median_regret@{b:g}"] for b in settings["budgets"]]
        assert medians == sorted(medians, reverse=True) and 0 <= medians[-1] <= 100
    # the default preset's enqueued trial (lr 1e-3, r16, 3 epochs) runs first, to the end: its value is that
    # configuration's recorded best, and it cost that curve's 72 steps
    default_first = first["traces"]["default"][0]
    assert default_first["ends"][0] == 72
    assert default_first["values"][0] == pytest.approx(final_loss(1e-3, 16, 3), abs=0.02)
    assert default_first["values"][0] == pytest.approx(
        min(
            r["eval_loss"]
            for r in synthetic_rows()
            if (r["optim.learning_rate"], r["lora.r"], r["optim.num_train_epochs"]) == (1e-3, 16, 3)
        )
    )


def test_schedule_reporting_puts_one_and_three_epoch_trials_at_the_same_phase():
    one_epoch = [report_step(step, 24, "schedule") for step in range(3, 25, 3)]
    three_epochs = [report_step(step, 72, "schedule") for step in range(9, 73, 9)]
    assert one_epoch == three_epochs == [12, 25, 38, 50, 62, 75, 88, 100]
    assert [report_step(step, 72, "step") for step in (9, 18)] == [9, 18]


def evaluate_through_callback(
    trial, steps: list[int], max_steps: int, warmup_ratio: float
) -> PruningCallback:
    from transformers import TrainingArguments

    args = TrainingArguments(output_dir="unused", warmup_steps=warmup_ratio, report_to="none", use_cpu=True)
    callback = PruningCallback(trial, "schedule")
    for step in steps:
        state = SimpleNamespace(global_step=step, max_steps=max_steps)
        control = SimpleNamespace(should_training_stop=False)
        callback.on_evaluate(args, state, control, metrics={"eval_loss": 1.0})
        if control.should_training_stop:
            break
    return callback


def test_trials_of_different_length_report_the_same_phases():
    study = optuna.create_study(pruner=optuna.pruners.NopPruner())
    short, long = study.ask(), study.ask()
    evaluate_through_callback(short, list(range(3, 25, 3)), 24, 0.0)
    evaluate_through_callback(long, list(range(9, 73, 9)), 72, 0.0)
    values = {t.number: sorted(t.intermediate_values) for t in study.get_trials()}
    assert values[0] == values[1] == [12, 25, 38, 50, 62, 75, 88, 100]


def test_no_trial_is_pruned_inside_warmup():
    always = optuna.pruners.ThresholdPruner(upper=0.0)  # would prune at any reported loss above 0
    study = optuna.create_study(pruner=always)
    trial = study.ask()
    # 100 steps, 20% warmup: evals at steps 5, 10, 15, 20 are inside warmup; step 25 is the first after it
    callback = evaluate_through_callback(trial, [5, 10, 15, 20, 25, 30], 100, 0.2)
    assert callback.pruned_at == 25
    assert sorted(study.get_trials()[0].intermediate_values) == [25]
