"""The model stage: LoRA attaches where and how the config says on the tiny model; LoRA variants passed
straight to PEFT (DoRA, rsLoRA, PiSSA/OLoRA/LoftQ initialisation, all-linear targets, modules_to_save) build,
train and count their parameters as the planner does, and those that cannot work on 4-bit weights are refused
before any weights load; the real default, SmolLM2-135M-Instruct from the embedded GGUF, trains for a few
QLoRA steps."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from omegaconf import OmegaConf

from src import stages
from src.base_model import resolve_base
from src.compute import Compute
from src.config import ConfigError, validate
from src.model import build_model, count_parameters
from src.plan.estimate import plan
from src.tokenizer import load_tokenizer
from sweep.space import search_space
from tests.conftest import CACHE, TINY, compose_config, run_module, typed_config

# ---------------------------------------------------------------------------------------------------------
# From test_model.py

# tiny: 2 layers, hidden 64, MLP 128, 4 heads / 2 KV heads of 16 → per layer, LoRA adds r × (in + out) for
# q 64→64, k 64→32, v 64→32, o 64→64, gate 64→128, up 64→128, down 128→64 = r × 1024.
LORA_PER_RANK = 2 * 1024


def tiny(overrides=()):
    return typed_config([*TINY, *overrides])


@pytest.mark.parametrize("rank", [8, 16])
def test_lora_trainable_parameters_are_exact(rank):
    cfg = tiny([f"lora=r{rank}"])
    base = resolve_base(cfg.model, CACHE)
    model = build_model(cfg, base)
    trainable, total = count_parameters(model)
    assert trainable == rank * LORA_PER_RANK
    vocab = len(load_tokenizer(cfg.model, base))
    base_params = vocab * 64 + 2 * (64 * 64 * 2 + 64 * 32 * 2 + 3 * 64 * 128 + 2 * 64) + 64
    assert total == base_params + trainable
    scaling = model.base_model.model.model.layers[0].self_attn.q_proj.scaling["default"]
    assert scaling == 2.0  # alpha = 2 × r


def test_full_finetuning_trains_every_weight():
    cfg = tiny(["lora=none"])
    model = build_model(cfg, resolve_base(cfg.model, CACHE))
    trainable, total = count_parameters(model)
    assert trainable == total > 3_000_000


def test_tiny_model_is_deterministic():
    cfg = tiny()
    base = resolve_base(cfg.model, CACHE)
    assert base == resolve_base(cfg.model, CACHE)
    model = build_model(cfg, base)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        first = model(input_ids=ids).logits
        second = build_model(cfg, base)(input_ids=ids).logits
    torch.testing.assert_close(first, second)


def test_tokenizer_has_pad_and_chat_template():
    cfg = tiny()
    tokenizer = load_tokenizer(cfg.model, resolve_base(cfg.model, CACHE))
    assert tokenizer.pad_token is not None
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert "<|im_start|>user\nhi<|im_end|>" in text


# ---------------------------------------------------------------------------------------------------------
# From test_lora_variants.py

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
    metrics = stages.build_run(cfg, Compute.of(cfg), model, tokenizer, data, tmp_path).train()
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
    cfg = typed_config(["memory=qlora", override])
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        validate(cfg)


def test_a_sweep_can_search_over_variants():
    space, _, _ = search_space(["lora.use_dora=choice(true,false)", "lora.init=choice(default,pissa)"])
    assert space["lora.use_dora"].choices == (True, False)
    assert space["lora.init"].choices == ("default", "pissa")


# ---------------------------------------------------------------------------------------------------------
# From test_default_model.py

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("smollm") / "run"
    overrides = [
        "optim.max_steps=8",  # the eval loss halves by the eval at step 4
        "optim.learning_rate=1e-3",  # the published LoRA rule for this model's width (docs/sweeps.md)
        "eval.steps=4",
        "data.builtin_examples=40",
        "eval.task_examples=4",
        "eval.max_new_tokens=24",
        "monitor.num_samples=0",  # no sample generations: the task metric already generates
        "monitor.progress_bar=false",
        "save.merge=true",
        f"hydra.run.dir={run_dir}",
    ]
    result = run_module("src.train", *overrides, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, result.stdout + result.stderr


def test_default_model_trains_with_qlora(smollm_run):
    run_dir, output = smollm_run
    assert "quantization: nf4 4-bit" in output
    assert (
        "trainable params: 4,884,480 || all params: 139,399,488" in output
    )  # r=16 on 7 projections × 30 layers
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["global_step"] == 8
    assert 0.2 < metrics["baseline_eval_loss"] < 2.0  # a pretrained model, not random (random: ~10.8)
    assert metrics["best_eval_loss"] < metrics["baseline_eval_loss"] / 2  # it really learnt the task


def test_merged_default_model_still_knows_paris(smollm_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir, _ = smollm_run
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "merged")
    model = AutoModelForCausalLM.from_pretrained(run_dir / "merged", dtype=torch.float32).eval()
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    output = model.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert "Paris" in tokenizer.decode(output[0, ids.shape[1] :], skip_special_tokens=True)


def test_converted_base_is_a_plain_safetensors_folder():
    folders = list((CACHE / "models").glob("SmolLM2-135M-Instruct.Q4_1-*"))
    assert folders, "the GGUF conversion should have been cached by the run above"
    assert (folders[0] / "model.safetensors").is_file() and (folders[0] / "tokenizer.json").is_file()
    config = json.loads((folders[0] / "config.json").read_text())
    assert (
        config["num_hidden_layers"] == 30 and config["hidden_size"] == 576 and config["vocab_size"] == 49152
    )
    assert "quantization_config" not in config
