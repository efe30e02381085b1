"""sweep/replay/strategy.py: presets composed through Hydra for a grid's model, with their real sampler
and pruner, and the spec's replacements."""

from __future__ import annotations

import optuna
import pytest

from sweep.replay.recording import ASSUMED_MODEL
from sweep.replay.strategy import (
    StrategySpec,
    compose_for_grid,
    compose_strategy,
    model_overrides,
    rule_for_grid,
    touches_model,
)
from tests.sweep.replay.grids import LLAMA_8B, RULE_LLAMA_8B, RULE_SMOLLM2

DEFAULT = ["hparams_search=default"]
SMOLLM2_WORDS = [
    "model=smollm2_135m",
    "model.architecture.hidden_size=576",
    'model.architecture.model_type="llama"',
]
ASHA = {"_target_": "optuna.pruners.SuccessiveHalvingPruner", "min_resource": 25, "reduction_factor": 3}


def test_a_csv_without_model_columns_is_smollm2_and_models_compose_by_name():
    assert model_overrides(ASSUMED_MODEL) == SMOLLM2_WORDS
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
    assert model_overrides({"model.name": "org/unknown"}) == [
        'model.name="org/unknown"',
        "model.architecture=null",
    ]


def test_overrides_that_choose_the_model_are_told_apart():
    assert touches_model(["hparams_search=default", "model=tiny"])
    assert touches_model(["+model.revision=main"]) and touches_model(["~model.architecture"])
    assert not touches_model(["hparams_search=default", "models_dir=x", "lora.r=8"])


def test_the_default_preset_composes_its_sampler_pruner_space_and_first_trial():
    strategy = compose_strategy("default", [*DEFAULT, *SMOLLM2_WORDS])
    assert strategy.pruner_config == {
        "_target_": "optuna.pruners.PercentilePruner",
        "percentile": 75.0,
        "n_startup_trials": 5,
        "n_warmup_steps": 75,
    }
    assert strategy.sampler_config["_target_"] == "optuna.samplers.TPESampler"
    assert {"optim.learning_rate", "lora.r", "optim.warmup_ratio"} <= set(strategy.params)
    (first,) = strategy.enqueue_trials  # the rule's learning rate for SmolLM2, r16, 3 epochs
    assert first["optim.learning_rate"] == pytest.approx(RULE_SMOLLM2, rel=1e-3) and first["lora.r"] == 16
    assert strategy.fixed["lora.alpha"] == 32 and strategy.report_at == "schedule"
    assert strategy.overrides == (*DEFAULT, *SMOLLM2_WORDS)
    composed = compose_strategy("p66", [*DEFAULT, "hydra.sweeper.pruner.percentile=66.0"])
    assert composed.pruner_config["percentile"] == 66.0 and composed.pruner_config["n_warmup_steps"] == 75
    assert compose_strategy("old", ["hparams_search=previous_default"]).fixed["lora.alpha"] == "2r"


def test_a_spec_replaces_the_presets_sampler_or_pruner_only_where_it_names_one():
    keep = StrategySpec.from_config({"overrides": DEFAULT})
    off = StrategySpec.from_config({"overrides": DEFAULT, "pruner": None})
    asha = StrategySpec.from_config({"overrides": DEFAULT, "pruner": ASHA})
    random = StrategySpec.from_config(
        {"overrides": DEFAULT, "sampler": {"_target_": "optuna.samplers.RandomSampler", "seed": 0}}
    )
    assert (keep.pruner, keep.no_pruner, off.pruner, off.no_pruner) == (None, False, None, True)
    composed: dict = {}
    strategies = {
        s.name: s
        for s in (
            compose_for_grid(n, spec, SMOLLM2_WORDS, composed)
            for n, spec in (("keep", keep), ("off", off), ("asha", asha), ("random", random))
        )
    }
    assert len(composed) == 1  # the same words: composed once
    assert all(s.overrides == (*DEFAULT, *SMOLLM2_WORDS) for s in strategies.values())
    assert isinstance(strategies["keep"].make_pruner(), optuna.pruners.PercentilePruner)
    assert isinstance(strategies["off"].make_pruner(), optuna.pruners.NopPruner)
    assert isinstance(strategies["asha"].make_pruner(), optuna.pruners.SuccessiveHalvingPruner)
    assert isinstance(strategies["random"].make_sampler(0, {}), optuna.samplers.RandomSampler)
    assert isinstance(strategies["keep"].make_sampler(0, {}), optuna.samplers.TPESampler)
    assert strategies["random"].pruner_config == strategies["keep"].pruner_config  # the preset's
    (cached,) = composed.values()  # the replacements left the cached composition as it was
    assert cached.name == "keep" and cached.pruner_config["_target_"] == "optuna.pruners.PercentilePruner"


def test_the_sampler_takes_the_replays_seed():
    strategy = compose_for_grid(
        "random",
        StrategySpec(DEFAULT, sampler={"_target_": "optuna.samplers.RandomSampler", "seed": 0}),
        SMOLLM2_WORDS,
        {},
    )

    def first_value(seed: int) -> float:
        study = optuna.create_study(sampler=strategy.make_sampler(seed, {}))
        return study.ask().suggest_float("x", 0.0, 1.0)

    assert first_value(3) == first_value(3) != first_value(4)


def test_a_strategy_that_chooses_its_model_keeps_it_and_the_rule_follows():
    """The grid's model is imposed unless the overrides choose one; the rule's source names the curves
    when it came from the grid's recorded architecture."""
    own = compose_for_grid("own", StrategySpec([*DEFAULT, "model=llama3_1_8b"]), SMOLLM2_WORDS, {})
    assert own.overrides == (*DEFAULT, "model=llama3_1_8b")
    prior = rule_for_grid(own, SMOLLM2_WORDS, model_assumed=True)
    assert prior.learning_rate == pytest.approx(RULE_LLAMA_8B, rel=1e-9)
    assert prior.source == "conf/model architecture"
    grid = compose_for_grid("grid", StrategySpec(DEFAULT), SMOLLM2_WORDS, {})
    assumed = rule_for_grid(grid, SMOLLM2_WORDS, model_assumed=True)
    assert assumed.learning_rate == pytest.approx(RULE_SMOLLM2, rel=1e-9)
    assert assumed.source == "assumed: the curves have no model columns"
    assert rule_for_grid(grid, SMOLLM2_WORDS, model_assumed=False).source == "the curves' model"
