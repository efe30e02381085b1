"""Replay of sweep strategies on synthetic recorded curves, schedule-phase reporting and warmup."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest

from sweep.curves import read_csv, write_csv
from sweep.pruning import PruningCallback, report_step
from sweep.replay import (
    ASSUMED_MODEL,
    Curve,
    Recording,
    grid_prior,
    learning_rate_against_rule,
    load_recording,
    model_overrides,
    outside_grid,
    parse_arguments,
    run,
    run_curve,
    snap,
)

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
    ranks: tuple[int, ...] = RANKS,
) -> list[dict]:
    """Curves of the synthetic grid (warmups other than 0.05 add a little loss), recorded on `model` (its
    MODEL_KEYS columns; None: a CSV written before they existed), with the seeds of trial 9 shifted."""
    rows, trial = [], 0
    for learning_rate in LEARNING_RATES:
        for rank in ranks:
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
    # the seeded configuration's grid point is the mean of its three curves (shifts 0, +0.001, -0.002)
    seeded = (
        config["config"]["optim.learning_rate"],
        config["config"]["lora.r"],
        config["config"]["optim.num_train_epochs"],
    )
    single = [r["eval_loss"] for r in rows if r["trial"] == 9]
    point = recording.curves[seeded]
    assert point.seeds == 3 and [loss for _, _, loss in point.evals] == pytest.approx(
        [x - 0.001 / 3 for x in single]
    )
    assert noise["grid_point_seeds"] == 3
    assert noise["grid_point_floor_regret_percent"] == pytest.approx(
        noise["floor_regret_percent"] / math.sqrt(3)
    )


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
        "default_asha",
        "default_median",
        "default_hyperband",
        "previous_default",
    }
    (first,) = run(sources, strategies, settings)["grids"]
    (second,) = run(sources, strategies, settings)["grids"]
    assert first["rows"] == second["rows"]
    # the grid fixed alpha at 32; only the previous default fixes it otherwise (2 × r)
    assert first["differs_from_grid"] == {"previous_default": {"lora.alpha": ["2r", 32]}}
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


LLAMA_8B = {
    "model.name": "meta-llama/Llama-3.1-8B-Instruct",
    "model.architecture.model_type": "llama",
    "model.architecture.hidden_size": 4096,
}
RULE_SMOLLM2, RULE_LLAMA_8B = 5e-4 * (2000 / 576) ** 0.781, 5e-4 * (2000 / 4096) ** 0.781  # tinker get_lr


@pytest.fixture(scope="module")
def second_grid_csv(tmp_path_factory) -> Path:
    """A grid recorded on Llama-3.1-8B (model columns) with warmup {0, 0.05, 0.15} at r16 and seeds that
    spread by 0.02: a noise floor above 1%."""
    path = tmp_path_factory.mktemp("grid2") / "grid_llama.csv"
    rows = synthetic_rows((0.0, 0.05, 0.15), LLAMA_8B, ((43, 0.02), (44, -0.0)), ranks=(16,))
    write_csv(rows, path)
    return path


def test_two_grids_replay_in_one_run_each_for_its_own_model(grid_csv, second_grid_csv, tmp_path):
    """One command, two grids: the default preset is composed for each grid's model, so its first trial is
    the rule's learning rate for that model (1.32e-3 for the CSV without model columns, taken as SmolLM2;
    2.86e-4 for Llama-3.1-8B), snapped to the grid; each grid reports its own noise floor and target."""
    sources, strategies, settings = parse_arguments(
        [str(grid_csv), str(second_grid_csv), "hparams_search=default", "replay.seeds=2"]
    )
    assert sources == [grid_csv, second_grid_csv]
    result = run(sources, strategies, settings)
    first, second = result["grids"]
    assert (first["label"], second["label"]) == ("grid", "grid_llama")
    assert first["grid"]["model"] == ASSUMED_MODEL and first["grid"]["model_assumed"]
    assert second["grid"]["model"] == LLAMA_8B and not second["grid"]["model_assumed"]
    assert second["grid"]["keys"] == ["optim.learning_rate", "optim.num_train_epochs", "optim.warmup_ratio"]

    # the rule against each grid's best (4e-4 on both)
    for grid, rule in ((first, RULE_SMOLLM2), (second, RULE_LLAMA_8B)):
        position = grid["learning_rate_rule"]
        assert position["rule"] == pytest.approx(rule, rel=1e-9) and position["best"] == 4e-4
        assert position["rule_over_best"] == pytest.approx(rule / 4e-4, rel=1e-9)
        assert position["best_at_grid_edge"] is None
    assert first["learning_rate_rule"]["rule_over_best"] == pytest.approx(3.305, abs=1e-3)
    assert not first["learning_rate_rule"]["rule_in_grid"]  # 1.32e-3 > the grid's 1e-3
    assert second["learning_rate_rule"]["rule_over_best"] == pytest.approx(0.714, abs=1e-3)
    assert second["learning_rate_rule"]["rule_in_grid"]

    # the first trial: the rule's lr at r16, 3 epochs, warmup 0.05, snapped (1.32e-3 -> 1e-3, 2.86e-4 -> 4e-4)
    grid_one, grid_two = load_recording(grid_csv), load_recording(second_grid_csv)
    expected = (grid_one.curves[(1e-3, 16, 3)].best, grid_two.curves[(4e-4, 3, 0.05)].best)
    for grid, value in zip((first, second), expected):
        assert [t["values"][0] for t in grid["traces"]["default"]] == [value, value]
        assert [t["ends"][0] for t in grid["traces"]["default"]] == [72, 72]

    # noise floor per grid: spread of the seeds' best eval loss in regret units; the target follows it
    spread_one = 0.003 / (BASELINE - grid_one.best) * 100
    spread_two = 0.02 / (BASELINE - grid_two.best) * 100
    assert first["noise"]["floor_regret_percent"] == pytest.approx(spread_one, rel=1e-6)
    assert second["noise"]["floor_regret_percent"] == pytest.approx(spread_two, rel=1e-6)
    # the target: the floor of a grid point, a mean of 3 seeds
    assert first["target"]["median_regret_percent"] == 1.0 < spread_two / math.sqrt(3)
    assert second["target"]["median_regret_percent"] == pytest.approx(spread_two / math.sqrt(3), rel=1e-6)

    # the summary has every strategy on both grids, from this one run
    (entry,) = result["summary"]
    assert entry["strategy"] == "default" and {"grid", "grid_llama"} <= set(entry)
    assert entry["grid_llama"]["target"] == pytest.approx(spread_two / math.sqrt(3), rel=1e-6)
    assert entry["target_met_on_all"] == (entry["grid"]["target_met"] and entry["grid_llama"]["target_met"])


def test_without_sources_both_recorded_grids_replay_and_a_missing_one_is_refused(grid_csv, tmp_path):
    sources, strategies, settings = parse_arguments(["replay.seeds=1"])
    benchmarks = Path(__file__).parents[1] / "benchmarks"
    assert sources == [benchmarks / "grid_gpu.csv", benchmarks / "grid_arithmetic.csv"]
    with pytest.raises(SystemExit, match="missing.csv does not exist"):
        run([grid_csv, tmp_path / "missing.csv"], strategies, settings)


def test_another_replay_config_replaces_the_strategies_and_keeps_the_settings():
    """replay=pruners: the pruners tried for the default (conf/replay/pruners.yaml), with default.yaml's
    sources, seeds and budgets; a later replay.KEY still wins; an unknown name is refused in one sentence."""
    sources, strategies, settings = parse_arguments(["replay=pruners", "replay.seeds=3"])
    assert len(sources) == 2 and settings["seeds"] == 3 and settings["target_budget"] == 0.15
    assert "default" not in strategies and len(strategies) == 18
    assert strategies["asha_50_rf2"]["pruner"] == {
        "_target_": "optuna.pruners.SuccessiveHalvingPruner",
        "min_resource": 50,
        "reduction_factor": 2,
    }
    from sweep.replay import compose_strategy

    default = compose_strategy("percentile_75_75", strategies["percentile_75_75"]["overrides"])
    assert default.pruner_config == {
        "_target_": "optuna.pruners.PercentilePruner",
        "percentile": 75.0,
        "n_startup_trials": 5,
        "n_warmup_steps": 75,
    }
    assert "pruner" not in strategies["percentile_75_75"]  # the default preset's own pruner
    composed = compose_strategy("percentile_66_50", strategies["percentile_66_50"]["overrides"])
    assert composed.pruner_config["percentile"] == 66.0 and composed.pruner_config["n_warmup_steps"] == 50
    with pytest.raises(
        SystemExit, match=r"replay=nope: no conf/replay/nope.yaml \(options: default, pruners\)"
    ):
        parse_arguments(["replay=nope"])


def test_values_outside_the_grid_snap_to_its_edge_and_are_counted(grid_csv, second_grid_csv):
    """A grid that recorded warmup at one value (0.05) snaps every sampled warmup to it, and counts every
    other value as outside; a learning rate above the grid's top snaps to the top."""
    one = load_recording(grid_csv)
    strategy = SimpleNamespace(fixed={"lora.alpha": 32})
    params = {"optim.learning_rate": 2e-3, "lora.r": 16, "optim.num_train_epochs": 3}
    for warmup in (0.0, 0.05, 0.15):
        assert snap(one, {**params, "optim.warmup_ratio": warmup}, strategy) == (1e-3, 16, 3)
    assert outside_grid(one, {**params, "optim.warmup_ratio": 0.0}) == {
        "optim.learning_rate": "above",
        "optim.warmup_ratio": "below",
    }
    assert outside_grid(one, {"optim.learning_rate": 5e-6, "lora.r": 64, "optim.warmup_ratio": 0.05}) == {
        "optim.learning_rate": "below"
    }
    two = load_recording(second_grid_csv)  # warmup {0, 0.05, 0.15}: snapped to the nearest, never outside
    for warmup, snapped in ((0.02, 0.0), (0.04, 0.05), (0.12, 0.15)):
        chosen = snap(
            two,
            {"optim.learning_rate": 4e-4, "optim.num_train_epochs": 3, "optim.warmup_ratio": warmup},
            strategy,
        )
        assert chosen == (4e-4, 3, snapped)
    assert outside_grid(two, {"optim.warmup_ratio": 0.12, "lora.r": 32}) == {"lora.r": "above"}

    # counted in a replay: every trial of the default on the first grid samples warmup in 0…0.15 except its
    # enqueued first trial (exactly 0.05); its learning rates reach 5.3e-3, never below 4.1e-5
    sources, strategies, settings = parse_arguments(
        [str(grid_csv), "hparams_search=default", "replay.seeds=2"]
    )
    (grid,) = run(sources, strategies, settings)["grids"]
    (row,) = grid["rows"]
    trials = sum(len(t["ends"]) for t in grid["traces"]["default"])
    warmup = row["outside_grid"]["optim.warmup_ratio"]
    assert warmup["below"] + warmup["above"] == pytest.approx((trials - 2) / trials)
    assert row["outside_grid"]["optim.learning_rate"]["below"] == 0
    assert row["outside_grid"]["optim.learning_rate"]["above"] > 0
    assert row["outside_grid"]["lora.r"] == {"below": 0, "above": 0}


def test_a_csv_without_model_columns_is_smollm2_and_models_compose_by_name():
    assert model_overrides(ASSUMED_MODEL) == [
        "model=smollm2_135m",
        "model.architecture.hidden_size=576",
        'model.architecture.model_type="llama"',
    ]
    assert model_overrides(LLAMA_8B)[0] == "model=llama3_1_8b"
    other = {
        "model.name": "org/other-1b",
        "model.architecture.model_type": "qwen2",
        "model.architecture.hidden_size": 2048,
    }
    assert model_overrides(other) == [
        'model.name="org/other-1b"',
        "model.architecture.hidden_size=2048",
        'model.architecture.model_type="qwen2"',
    ]


def test_the_gpu_grid_noise_floor_and_rule_position():
    """benchmarks/grid_gpu.csv (no model columns: SmolLM2-135M): seeds of three configurations spread by
    0.0026, 0.0012 and 0.0074, median 0.40% of the possible improvement; the rule's 1.32e-3 is 1.32 × the
    grid best's 1e-3, the grid's top edge, above the grid."""
    gpu = load_recording(Path(__file__).parents[1] / "benchmarks" / "grid_gpu.csv")
    assert gpu.model_assumed and gpu.best_config == (1e-3, 16, 3)
    noise = gpu.noise_floor()
    assert [round(c["spread"], 4) for c in noise["configs"]] == [0.0026, 0.0012, 0.0074]
    assert noise["floor_regret_percent"] == pytest.approx(0.0026432 / (0.7117322 - 0.0550783) * 100, rel=1e-4)
    assert round(noise["floor_regret_percent"], 2) == 0.40
    position = learning_rate_against_rule(gpu, grid_prior(model_overrides(gpu.model)))
    assert position["rule_over_best"] == pytest.approx(RULE_SMOLLM2 / 1e-3, rel=1e-9)
    assert position["best_at_grid_edge"] == "top" and not position["rule_in_grid"]
    assert position["grid_range"] == [1e-5, 1e-3]


def test_a_csv_of_two_models_is_refused(tmp_path):
    rows = synthetic_rows(model=LLAMA_8B, seed_shifts=())
    rows += [dict(r, study="other", **ASSUMED_MODEL) for r in rows]
    write_csv(rows, tmp_path / "mixed.csv")
    with pytest.raises(SystemExit, match="several models"):
        load_recording(tmp_path / "mixed.csv")


def test_a_replayed_trial_reports_nothing_inside_its_curves_own_warmup():
    """The replayed trial is the recorded run: its own warmup (15% here) gates pruning, not the preset's."""
    evals = [(step, step / 40, 1.0) for step in range(4, 41, 4)]
    curve = Curve({"optim.warmup_ratio": 0.15}, 40, evals)
    strategy = SimpleNamespace(
        warmup_ratio=0.0,
        report_at="step",
        eval_fraction=None,
        early_stopping_patience=0,
        early_stopping_threshold=0.0,
    )
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=0.0))
    _, steps, pruned = run_curve(study.ask(), curve, strategy)
    assert pruned and steps == 8  # 15% of 40 = 6 warmup steps: the eval at step 4 is not reported


def test_schedule_reporting_puts_one_and_three_epoch_trials_at_the_same_phase():
    one_epoch = [report_step(step, 24, "schedule") for step in range(3, 25, 3)]
    three_epochs = [report_step(step, 72, "schedule") for step in range(9, 73, 9)]
    assert one_epoch == three_epochs == [12, 25, 38, 50, 62, 75, 88, 100]
    assert [report_step(step, 72, "step") for step in (9, 18)] == [9, 18]
    # lengths that 8 does not divide: transformers evaluates every ceil(0.125 x max_steps) steps
    snapped = {
        max_steps: [
            report_step(step, max_steps, "schedule", 0.125) for step in range(every, max_steps, every)
        ]
        for max_steps, every in ((37, 5), (74, 10), (111, 14))
    }
    assert snapped[37] == snapped[74] == [12, 25, 38, 50, 62, 75, 100]  # the 7th at 95% of the schedule
    assert snapped[111] == [12, 25, 38, 50, 62, 75, 88]
    assert [report_step(step, 37, "schedule") for step in range(5, 37, 5)][:3] == [14, 27, 41]  # unsnapped


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


def test_a_percentile_pruner_compares_trials_whose_lengths_8_does_not_divide():
    """eval.steps 0.125 on 37- and 111-step trials: evals land at different exact phases, but both report
    at the same snapped steps, so a percentile pruner finds the finished trial to compare with."""
    from transformers import TrainingArguments

    pruner = optuna.pruners.PercentilePruner(75.0, n_startup_trials=1, n_warmup_steps=50)
    study = optuna.create_study(pruner=pruner)
    args = TrainingArguments(output_dir="unused", eval_steps=0.125, report_to="none", use_cpu=True)
    first = study.ask()
    for step in range(14, 111, 14):
        first.report(0.1, report_step(step, 111, "schedule", 0.125))
    study.tell(first, 0.1)
    callback = PruningCallback(study.ask(), "schedule")
    for step in range(5, 37, 5):
        state = SimpleNamespace(global_step=step, max_steps=37)
        control = SimpleNamespace(should_training_stop=False)
        callback.on_evaluate(args, state, control, metrics={"eval_loss": 0.5})
        if control.should_training_stop:
            break
    assert callback.pruned_at == 20  # 54% of its schedule, reported at 50: the first step past warmup


def test_no_trial_is_pruned_inside_warmup():
    always = optuna.pruners.ThresholdPruner(upper=0.0)  # would prune at any reported loss above 0
    study = optuna.create_study(pruner=always)
    trial = study.ask()
    # 100 steps, 20% warmup: evals at steps 5, 10, 15, 20 are inside warmup; step 25 is the first after it
    callback = evaluate_through_callback(trial, [5, 10, 15, 20, 25, 30], 100, 0.2)
    assert callback.pruned_at == 25
    assert sorted(study.get_trials()[0].intermediate_values) == [25]


def test_separation_and_effects_of_each_key_on_the_gpu_grid():
    """Best vs 10th best in noise floors, and each key's effect with the others fixed, on grid_gpu.csv."""
    import statistics

    gpu = load_recording(Path(__file__).parents[1] / "benchmarks" / "grid_gpu.csv")
    gap = gpu.separation()
    losses = sorted(curve.best for curve in gpu.curves.values())
    assert gap["best"] == losses[0] == gpu.best and gap["ranked"] == losses[9]
    scale = gpu.baseline - gpu.best
    assert gap["gap_regret_percent"] == pytest.approx(100 * (losses[9] - losses[0]) / scale)
    floor = gpu.noise_floor()["grid_point_floor_regret_percent"]  # the grid points are 3-seed means
    assert gap["noise_floors"] == pytest.approx(gap["gap_regret_percent"] / floor)
    effects = gpu.effects()
    assert set(effects) == {"optim.learning_rate", "lora.r", "optim.num_train_epochs"}  # warmup: one value
    rows = {row["value"]: row for row in effects["optim.learning_rate"]}
    others = {config[1:] for config in gpu.curves}  # every (rank, epochs) recorded at every learning rate
    assert all(row["groups"] == len(others) for row in rows.values())
    assert sum(row["wins"] for row in rows.values()) == len(others)  # no ties
    assert rows[1e-3]["best"] == gpu.best and rows[1e-3]["median_excess"] == 0.0
    for value, row in rows.items():
        excess = [
            gpu.curves[(value, *rest)].best - min(gpu.curves[c].best for c in gpu.curves if c[1:] == rest)
            for rest in others
        ]
        assert row["median_excess"] == pytest.approx(statistics.median(excess))
        assert row["median_excess_regret_percent"] == pytest.approx(100 * statistics.median(excess) / scale)
    assert gpu.separation(rank=len(gpu.curves) + 1) is None


def test_a_rerun_of_the_same_seed_is_not_another_seed_of_the_noise_floor():
    """A grid study that ran a point twice with seed 42 (after a failed trial) holds identical numbers:
    only other seeds count towards the spread."""
    from sweep.replay import build_recording

    def curve(learning_rate: float, seed: int, loss: float) -> Curve:
        config = {"optim.learning_rate": learning_rate, "seed": seed}
        return Curve(config, 24, [(12, 0.5, loss + 0.1), (24, 1.0, loss)])

    curves = [curve(1e-3, 42, 0.10), curve(1e-4, 42, 0.20), curve(1e-4, 42, 0.20), curve(1e-3, 43, 0.12)]
    recording = build_recording(curves, [0.7])
    assert recording.repeats == {(1e-3,): [0.10, 0.12], (1e-4,): [0.20]}
    noise = recording.noise_floor()
    assert [c["spread"] for c in noise["configs"]] == [pytest.approx(0.02)]


def test_a_grid_point_averages_only_the_seeds_with_the_same_evals():
    """A seed pruned early, or evaluated at other steps, cannot be averaged eval by eval: the grid point
    averages the rest; a configuration whose own (grid-seed) run was pruned stays that run."""
    from sweep.replay import build_recording, mean_curve

    def curve(
        seed: int, losses: tuple[float, ...], steps: tuple[int, ...] = (12, 24), complete=True
    ) -> Curve:
        evals = [(step, step / 24, loss) for step, loss in zip(steps, losses)]
        return Curve({"optim.learning_rate": 1e-3, "seed": seed}, 24, evals, complete)

    grid_run, other, pruned, shifted = (
        curve(42, (0.3, 0.10)),
        curve(43, (0.5, 0.14)),
        curve(44, (0.4,), (12,), complete=False),
        curve(45, (0.2, 0.0), (8, 24)),
    )
    point = mean_curve([grid_run, other, pruned, shifted])
    assert point.seeds == 2 and point.complete and point.config["seed"] == 42
    assert [(s, loss) for s, _, loss in point.evals] == [(12, pytest.approx(0.4)), (24, pytest.approx(0.12))]
    assert point.best == pytest.approx(0.12)
    assert mean_curve([pruned, grid_run]) is pruned
    # seeds whose minima fall at different evals: the objective is the mean of their bests (0.1), not the
    # minimum of the mean curve (0.15)
    early, late = curve(42, (0.1, 0.2)), curve(43, (0.3, 0.1))
    point = mean_curve([early, late])
    assert [loss for _, _, loss in point.evals] == pytest.approx([0.2, 0.15])
    assert point.best_so_far == pytest.approx([0.2, 0.1]) and point.best == pytest.approx(0.1)
    assert point.best_until(0) == pytest.approx(0.2) and early.best_until(1) == 0.1
    assert mean_curve([grid_run]) is grid_run

    single = Curve({"optim.learning_rate": 1e-4, "seed": 42}, 24, [(12, 0.5, 0.3), (24, 1.0, 0.11)])
    recording = build_recording([other, grid_run, single], [0.7])
    assert recording.best_config == (1e-4,) and recording.best == 0.11  # 0.10 was seed 42's luck: mean 0.12
    assert recording.curves[(1e-3,)].config["seed"] == 42  # the grid's own seed leads, whatever the order
    noise = recording.noise_floor()
    assert noise["grid_point_seeds"] == 2
    assert noise["floor_regret_percent"] == pytest.approx(100 * 0.04 / (0.7 - 0.11))
    assert noise["grid_point_floor_regret_percent"] == pytest.approx(100 * 0.04 / (0.7 - 0.11) / math.sqrt(2))
