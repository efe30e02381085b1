"""sweep/replay/cli.py: the documented command line (docs/sweeps.md, "Replay")."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweep.replay.cli import parse_arguments
from sweep.replay.run import Settings
from sweep.replay.strategy import StrategySpec
from tests.sweep.replay.grids import ARITHMETIC_GRID, GPU_GRID

DEFAULT_STRATEGIES = {
    "default_stop",
    "default_no_enqueue_stop",
    "default",
    "default_no_enqueue",
    "tpe",
    "random",
    "default_asha",
    "default_median",
    "default_hyperband",
    "previous_default",
}


def test_without_sources_both_recorded_grids_and_the_default_strategies():
    sources, specs, settings = parse_arguments([])
    assert sources == [GPU_GRID, ARITHMETIC_GRID]
    assert set(specs) == DEFAULT_STRATEGIES
    assert settings == Settings(
        seeds=100, budgets=[0.05, 0.1, 0.15, 0.25, 0.5], target_budget=0.15, output=None
    )
    assert specs["default"] == StrategySpec(["hparams_search=default"])
    assert specs["tpe"].no_pruner and specs["tpe"].sampler is None
    assert specs["random"].sampler == {"_target_": "optuna.samplers.RandomSampler", "seed": 0}
    assert specs["default_stop"] == StrategySpec(["hparams_search=default"], live=True)
    assert not specs["tpe"].live and settings.curves == "mean"


def test_a_strategy_takes_its_cap_from_the_preset_and_curves_can_be_the_seeds_own():
    with pytest.raises(SystemExit, match=r"no key \['n_trials'\].*come from the preset's hydra.sweeper"):
        StrategySpec.from_config({"overrides": [], "n_trials": 9})
    spec = StrategySpec.from_config({"overrides": ["hydra.sweeper.stopping.patience=3"], "live": True})
    assert spec.live and not StrategySpec.from_config({"overrides": []}).live
    assert parse_arguments(["replay.curves=seed"])[2].curves == "seed"


def test_sources_then_presets_settings_and_overrides_for_every_strategy():
    sources, specs, settings = parse_arguments(
        ["a.csv", "outputs/sweeps/b", "hparams_search=default,previous_default", "replay.seeds=7",
         "replay.budgets=[0.2,0.1]", "replay.output=/tmp/x", "lora.dropout=0.1"]
    )  # fmt: skip
    assert sources == [Path("a.csv"), Path("outputs/sweeps/b")]
    assert specs == {
        "default": StrategySpec(["hparams_search=default", "lora.dropout=0.1"]),
        "previous_default": StrategySpec(["hparams_search=previous_default", "lora.dropout=0.1"]),
    }
    assert settings == Settings(seeds=7, budgets=[0.2, 0.1], target_budget=0.15, output="/tmp/x")
    # an override goes to the replay config's strategies too
    _, specs, _ = parse_arguments(["x.csv", "+eval.extra=1"])
    assert specs["tpe"].overrides == [
        "hparams_search=default",
        "hydra.sweeper.enqueue_trials=[]",
        "+eval.extra=1",
    ]


def test_another_replay_config_replaces_the_strategies_and_keeps_the_settings():
    """replay=pruners: the pruners tried for the default (conf/replay/pruners.yaml), with default.yaml's
    sources, seeds and budgets; a later replay.KEY still wins; an unknown name is refused in one sentence."""
    sources, specs, settings = parse_arguments(["replay=pruners", "replay.seeds=3"])
    assert sources == [GPU_GRID, ARITHMETIC_GRID] and settings.seeds == 3 and settings.target_budget == 0.15
    assert "default" not in specs and len(specs) == 18
    assert specs["asha_50_rf2"].pruner == {
        "_target_": "optuna.pruners.SuccessiveHalvingPruner",
        "min_resource": 50,
        "reduction_factor": 2,
    }
    assert specs["percentile_75_75"] == StrategySpec(["hparams_search=default"])  # the preset's own pruner
    assert specs["percentile_66_50"].overrides == [
        "hparams_search=default",
        "hydra.sweeper.pruner.percentile=66.0",
        "hydra.sweeper.pruner.n_warmup_steps=50",
    ]
    with pytest.raises(
        SystemExit, match=r"replay=nope: no conf/replay/nope.yaml \(options: default, pruners, stopping\)"
    ):
        parse_arguments(["replay=nope"])
