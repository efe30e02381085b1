"""LoRA variants passed straight to PEFT (DoRA, rsLoRA, PiSSA/OLoRA/LoftQ initialisation, all-linear targets,
modules_to_save): each builds and trains on the tiny model, the planner counts its parameters as PEFT does,
and the variants that cannot work on 4-bit weights are refused before any weights load."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from omegaconf import OmegaConf

from src import stages
from src.config import ConfigError, validate
from src.model import count_parameters
from src.plan.estimate import plan
from sweep.space import search_space
from tests.conftest import CACHE, TINY, compose_config

VARIANTS = {
    "dora": ["lora.use_dora=true"],
    "rslora": ["lora.use_rslora=true", "lora.r=16", "lora.alpha=32"],
    "pissa": ["lora.init=pissa"],
    "olora": ["lora.init=olora"],
    "all-linear": ["lora.target_modules=all-linear"],
    "lm_head": ["lora.modules_to_save=[lm_head]", "lora.r=4"],
}


def build(overrides, tmp_path):
    cfg = OmegaConf.to_object(
        compose_config([*TINY, *overrides, "optim.max_steps=2", "eval.steps=1"], tmp_path, CACHE)
    )
    validate(cfg)
    base, tokenizer = stages.build_tokenizer(cfg)
    return cfg, base, tokenizer


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_variant_builds_counts_like_the_planner_and_trains(variant, tmp_path):
    cfg, base, tokenizer = build(VARIANTS[variant], tmp_path)
    model = stages.build_model(cfg, base)
    trainable, _ = count_parameters(model)
    assert trainable == plan(cfg)["trainable_params"]
    lora_layers = [m for name, m in model.named_modules() if hasattr(m, "lora_A") and "default" in m.lora_A]
    if variant == "dora":
        assert all("default" in m.lora_magnitude_vector for m in lora_layers) and len(lora_layers) == 14
    if variant == "rslora":  # alpha / sqrt(r), not alpha / r
        assert {m.scaling["default"] for m in lora_layers} == {32 / math.sqrt(16)}
    if variant == "all-linear":  # every projection of both layers, not the output head
        assert len(lora_layers) == 7 * 2 and not hasattr(model.base_model.model.lm_head, "lora_A")
    if variant in ("pissa", "olora"):
        # both move the adapter's initial product out of the base weight: the adapted layer still computes
        # the original function (W_residual + scale · B A = W), with a non-zero adapter
        layer = lora_layers[0]
        product = layer.scaling["default"] * layer.lora_B["default"].weight @ layer.lora_A["default"].weight
        assert product.abs().max() > 1e-3
        reference = build_reference_weight(cfg, base, layer_name(model, layer))
        torch.testing.assert_close(layer.base_layer.weight + product, reference, atol=1e-4, rtol=1e-4)
    if variant == "lm_head":
        adapter_only = copy.deepcopy(cfg)
        adapter_only.lora.modules_to_save = []
        # the head's trained copy: vocabulary 49152 × hidden 64 on top of the adapter
        assert trainable == plan(adapter_only)["trainable_params"] + 49152 * 64
        assert any("modules_to_save" in name for name, p in model.named_parameters() if p.requires_grad)
    data = stages.build_data(cfg, tokenizer, tmp_path)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    metrics = stages.build_run(cfg, model, tokenizer, data, tmp_path).train()
    assert metrics["status"] == "finished" and metrics["global_step"] == 2
    assert math.isfinite(metrics["train_loss"]) and math.isfinite(metrics["best_eval_loss"])
    changed = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert changed, "no trainable parameter moved"


def layer_name(model, layer) -> str:
    return next(name for name, m in model.named_modules() if m is layer)


def build_reference_weight(cfg, base, name: str) -> torch.Tensor:
    """The same projection's weight in the untouched base model."""
    from src.model import load_base_model

    untouched = load_base_model(cfg.model, cfg.memory, base)
    suffix = name.split("base_model.model.", 1)[-1]
    return untouched.get_submodule(suffix).weight.detach()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("lora.init=pissa", "lora.init=pissa cannot work on 4-bit weights: PiSSA initialises from the SVD"),
        ("lora.init=loftq", "lora.init=loftq cannot work on 4-bit weights: LoftQ quantizes"),
        ("lora.modules_to_save=[norm]", "lora.modules_to_save: ['norm'] cannot be trained in full here"),
        ("lora.target_modules=everything", "lora.target_modules='everything' must be a list"),
        ("lora.init=xavier", "lora.init='xavier' is not one of"),
    ],
)
def test_variants_that_cannot_work_are_refused_in_one_sentence(override, message):
    cfg = OmegaConf.to_object(compose_config(["memory=qlora", override]))
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        validate(cfg)


def test_a_sweep_can_search_over_variants():
    space, _, _ = search_space(["lora.use_dora=choice(true,false)", "lora.init=choice(default,pissa)"])
    assert space["lora.use_dora"].choices == (True, False)
    assert space["lora.init"].choices == ("default", "pissa")
