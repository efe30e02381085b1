"""sweep/replay/run.py: every strategy on every grid in one run, and its results."""

from __future__ import annotations

import json
import math

import pytest

from sweep.replay.cli import parse_arguments
from sweep.replay.loading import load_recording
from sweep.replay.recording import ASSUMED_MODEL
from sweep.replay.run import ReplayResult, run
from tests.sweep.replay.grids import (
    LLAMA_8B,
    RULE_LLAMA_8B,
    RULE_SMOLLM2,
    final_loss,
    synthetic_rows,
    write_sweep_folder,
)


def test_replay_is_deterministic_and_compares_strategies(grid_csv, tmp_path):
    sources, specs, settings = parse_arguments([str(grid_csv), "replay.seeds=3", f"replay.output={tmp_path}"])
    (first,) = run(sources, specs, settings).grids
    (second,) = run(sources, specs, settings).grids
    assert first.rows == second.rows and [r.strategy for r in first.rows] == list(specs)
    # the grid fixed alpha at 32; only the previous default fixes it otherwise (2 × r)
    assert first.differs_from_grid == {"previous_default": {"lora.alpha": ["2r", 32]}}
    rows = {row.strategy: row for row in first.rows}
    assert rows["random"].pruned_share == 0 and rows["tpe"].pruned_share == 0
    assert rows["default"].pruned_share > 0
    for row in rows.values():  # more budget never makes the best found worse
        medians = [row.regret[b].median for b in settings.budgets]
        assert medians == sorted(medians, reverse=True) and 0 <= medians[-1] <= 100
    # the default preset's enqueued trial (lr 1e-3, r16, 3 epochs) runs first, to the end: its value is that
    # configuration's recorded best, and it cost that curve's 72 steps
    default_first = first.traces["default"][0]
    assert default_first.ends[0] == 72
    assert default_first.values[0] == pytest.approx(final_loss(1e-3, 16, 3), abs=0.02)
    assert default_first.values[0] == pytest.approx(
        min(
            r["eval_loss"]
            for r in synthetic_rows()
            if (r["optim.learning_rate"], r["lora.r"], r["optim.num_train_epochs"]) == (1e-3, 16, 3)
        )
    )


@pytest.fixture(scope="module")
def two_grids(grid_csv, second_grid_csv) -> ReplayResult:
    """The default preset on both synthetic grids, 2 seeds, in one run."""
    sources, specs, settings = parse_arguments(
        [str(grid_csv), str(second_grid_csv), "hparams_search=default", "replay.seeds=2"]
    )
    return run(sources, specs, settings)


def test_two_grids_replay_in_one_run_each_for_its_own_model(two_grids, grid_csv, second_grid_csv):
    """One command, two grids: the default preset is composed for each grid's model, so its first trial is
    the rule's learning rate for that model (1.32e-3 for the CSV without model columns, taken as SmolLM2;
    2.86e-4 for Llama-3.1-8B), snapped to the grid."""
    first, second = two_grids.grids
    assert (first.label, second.label) == ("grid", "grid_llama")
    assert first.grid.model == ASSUMED_MODEL and first.grid.model_assumed
    assert second.grid.model == LLAMA_8B and not second.grid.model_assumed
    assert second.grid.keys == ["optim.learning_rate", "optim.num_train_epochs", "optim.warmup_ratio"]

    # the rule against each grid's best (4e-4 on both)
    for grid, rule in ((first, RULE_SMOLLM2), (second, RULE_LLAMA_8B)):
        position = grid.learning_rate_rule
        assert position.rule == pytest.approx(rule, rel=1e-9) and position.best == 4e-4
        assert position.best_at_grid_edge is None
    assert first.learning_rate_rule.rule_over_best == pytest.approx(3.305, abs=1e-3)
    assert not first.learning_rate_rule.rule_in_grid  # 1.32e-3 > the grid's 1e-3
    assert "(assumed: the curves have no model columns)" in first.learning_rate_rule.rule_from
    assert second.learning_rate_rule.rule_over_best == pytest.approx(0.714, abs=1e-3)
    assert second.learning_rate_rule.rule_in_grid
    assert "(the curves' model)" in second.learning_rate_rule.rule_from

    # the first trial: the rule's lr at r16, 3 epochs, warmup 0.05, snapped (1.32e-3 -> 1e-3, 2.86e-4 -> 4e-4)
    grid_one, grid_two = load_recording(grid_csv), load_recording(second_grid_csv)
    expected = (grid_one.curves[(1e-3, 16, 3)].best, grid_two.curves[(4e-4, 3, 0.05)].best)
    for grid, value in zip((first, second), expected):
        assert [t.values[0] for t in grid.traces["default"]] == [value, value]
        assert [t.ends[0] for t in grid.traces["default"]] == [72, 72]


def test_each_grid_has_its_own_target_and_the_summary_has_every_grid(two_grids):
    first, second = two_grids.grids
    # each grid's own target: 1% on the first, its grid points' noise floor on the second
    assert first.target.median_regret_percent == 1.0
    assert second.target.median_regret_percent == pytest.approx(
        second.noise.floor_regret_percent / math.sqrt(3), rel=1e-9
    )
    assert second.target.median_regret_percent > 1.0

    # the summary has every strategy on both grids, from this one run
    (entry,) = two_grids.summary
    assert entry.strategy == "default" and set(entry.grids) == {"grid", "grid_llama"}
    verdict = entry.grids["grid_llama"]
    (row,) = second.rows
    assert verdict.target == second.target.median_regret_percent and verdict.seeds == 2
    assert (verdict.median_regret, verdict.p90_regret) == (row.regret[0.15].median, row.regret[0.15].p90)
    assert entry.target_met_on_all == (entry.grids["grid"].target_met and verdict.target_met)


def test_replay_json_holds_everything_but_the_sweeps(two_grids, grid_csv, second_grid_csv):
    (row,), (entry,) = two_grids.grids[1].rows, two_grids.summary
    kept = json.loads(json.dumps(two_grids.to_json()))
    assert kept["sources"] == [str(grid_csv), str(second_grid_csv)]
    assert "traces" not in kept["grids"][0] and kept["grids"][1]["grid"]["model"] == LLAMA_8B
    assert kept["grids"][1]["rows"][0]["median_regret@0.15"] == row.regret[0.15].median
    assert kept["grids"][1]["noise"]["configs"][0]["seeds"] == 3
    assert kept["summary"][0]["grid_llama"]["target"] == entry.grids["grid_llama"].target
    assert list(kept["summary"][0]) == ["strategy", "grid", "grid_llama", "target_met_on_all"]


def test_a_finished_sweep_folder_replays_like_its_csv(tmp_path):
    write_sweep_folder(tmp_path / "my_study")
    sources, specs, settings = parse_arguments(
        [str(tmp_path / "my_study"), "hparams_search=default", "replay.seeds=2", f"replay.output={tmp_path}"]
    )
    (grid,) = run(sources, specs, settings).grids
    assert grid.grid.configurations == 12 and grid.rows[0].strategy == "default" and grid.label == "my_study"


def test_a_missing_grid_stops_the_run_before_any_replay(grid_csv, tmp_path):
    _, specs, settings = parse_arguments(["replay.seeds=1"])
    with pytest.raises(SystemExit, match="missing.csv does not exist"):
        run([grid_csv, tmp_path / "missing.csv"], specs, settings)


def test_values_sampled_outside_the_grid_are_counted_in_a_replay(grid_csv):
    """Every trial of the default on the first grid samples warmup in 0…0.15 except its enqueued first
    trial (exactly 0.05); its learning rates reach 5.3e-3, never below 4.1e-5."""
    sources, specs, settings = parse_arguments([str(grid_csv), "hparams_search=default", "replay.seeds=2"])
    (grid,) = run(sources, specs, settings).grids
    (row,) = grid.rows
    trials = sum(len(t.ends) for t in grid.traces["default"])
    warmup = row.outside_grid["optim.warmup_ratio"]
    assert warmup["below"] + warmup["above"] == pytest.approx((trials - 2) / trials)
    assert row.outside_grid["optim.learning_rate"]["below"] == 0
    assert row.outside_grid["optim.learning_rate"]["above"] > 0
    assert row.outside_grid["lora.r"] == {"below": 0, "above": 0}
