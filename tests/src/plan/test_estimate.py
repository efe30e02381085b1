"""The memory planner counts parameters exactly as PEFT does, for every model option, without weights."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoConfig, AutoModelForCausalLM

from src.plan.checkpointing import resolve_checkpointing
from src.plan.estimate import GIB, largest_micro_batch, plan
from tests.conftest import run_module, typed_config

PUBLISHED = {"smollm2_135m": 134_515_008, "qwen2_5_1_5b": 1_543_714_304, "llama3_1_8b": 8_030_261_248}


def meta_peft_counts(cfg) -> tuple[int, int]:
    arch = dict(cfg.model.architecture)
    config = AutoConfig.for_model(arch.pop("model_type"), **arch)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    base_total = sum(p.numel() for p in model.parameters())
    targets = cfg.lora.target_modules
    lora = LoraConfig(
        r=cfg.lora.r,
        lora_alpha=2 * cfg.lora.r,
        target_modules=targets if isinstance(targets, str) else list(targets),
        use_dora=cfg.lora.use_dora,
        use_rslora=cfg.lora.use_rslora,
        modules_to_save=list(cfg.lora.modules_to_save) or None,
        task_type="CAUSAL_LM",
    )
    trainable, _ = get_peft_model(model, lora).get_nb_trainable_parameters()
    return trainable, base_total


@pytest.mark.parametrize("model", ["tiny", "smollm2_135m", "qwen2_5_1_5b", "llama3_1_8b"])
@pytest.mark.parametrize("lora", ["r8", "r64"])
def test_planner_counts_match_peft_on_the_meta_device(model, lora):
    cfg = typed_config([f"model={model}", f"lora={lora}"])
    trainable, total = meta_peft_counts(cfg)
    estimate = plan(cfg)
    assert estimate["trainable_params"] == trainable
    assert estimate["total_params"] == total
    if model in PUBLISHED:
        assert total == PUBLISHED[model]


@pytest.mark.parametrize("model", ["tiny", "smollm2_135m", "llama3_1_8b"])
@pytest.mark.parametrize(
    "variant",
    [
        ["lora.use_dora=true"],
        ["lora.use_rslora=true"],
        ["lora.target_modules=all-linear"],
        ["lora.target_modules=[q_proj,v_proj]", "lora.use_dora=true"],
        ["lora.modules_to_save=[lm_head]"],
        ["lora.modules_to_save=[embed_tokens,lm_head]", "lora.use_dora=true"],
    ],
    ids=["dora", "rslora", "all-linear", "dora-qv", "lm_head", "embeddings-head-dora"],
)
def test_planner_counts_lora_variants_as_peft_does(model, variant):
    cfg = typed_config([f"model={model}", *variant])
    assert plan(cfg)["trainable_params"] == meta_peft_counts(cfg)[0]


def test_memory_terms_follow_the_settings():
    qlora = plan(typed_config(["model=llama3_1_8b", "memory=gpu_24gb", "data.max_length=2048"]))
    bf16 = plan(typed_config(["model=llama3_1_8b", "memory=gpu_80gb", "data.max_length=2048"]))
    assert 3.5 * GIB < qlora["weights"] < 9 * GIB < 14 * GIB < bf16["weights"] < 16 * GIB
    assert (
        qlora["optimizer"] == 2 * qlora["gradients"] == 2 * qlora["adapter"] == 8 * qlora["trainable_params"]
    )
    assert qlora["activations_checkpointed"] < qlora["activations"] / 3
    cfg = typed_config(["model=llama3_1_8b", "memory=gpu_24gb", "data.max_length=2048"])
    fits = largest_micro_batch(cfg, 24 * GIB)
    assert plan(cfg, fits)["peak"] <= 24 * GIB < plan(cfg, fits + 1)["peak"]


def test_plan_command_prints_a_verdict():
    result = run_module("src.plan", "model=llama3_1_8b", "memory=gpu_24gb", "plan.gpu_gb=24", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "8,030,261,248 parameters, trainable 41,943,040" in result.stdout
    assert "verdict for a 24 GB GPU:" in result.stdout and "largest micro-batch" in result.stdout


def test_auto_checkpointing_turns_recomputation_on_only_when_activations_do_not_fit():
    cfg = typed_config(["model=llama3_1_8b", "memory=qlora", "memory.gradient_checkpointing=auto"])
    p = plan(cfg)
    without, with_ = p["peak_without_checkpointing"], p["peak_with_checkpointing"]
    assert with_ < without  # 8B, micro-batch 4 × 192: activations are ~2 GiB of the peak
    assert resolve_checkpointing(cfg, (without + 1, "test budget")) == (
        False,
        f"auto: off, the planned peak without it ({without / GIB:.2f} GiB) fits test budget",
    )
    checkpointing, why = resolve_checkpointing(cfg, (without - 1, "test budget"))
    assert checkpointing and why.startswith("auto: on") and f"with it: {with_ / GIB:.2f} GiB" in why
    # an explicit choice is kept whatever the budget
    assert resolve_checkpointing(typed_config(["memory=qlora"]), (1.0, "1 byte")) == (True, "as configured")
    assert (
        resolve_checkpointing(
            typed_config(["memory=bf16", "memory.gradient_checkpointing=false"]), (1.0, "x")
        )[0]
        is False
    )
