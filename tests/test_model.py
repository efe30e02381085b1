"""Model stage on the tiny model: LoRA attaches where and how the config says."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from src.model import build_model, count_parameters, load_tokenizer, resolve_base
from tests.conftest import CACHE, TINY, compose_config

# tiny: 2 layers, hidden 64, MLP 128, 4 heads / 2 KV heads of 16 → per layer, LoRA adds r × (in + out) for
# q 64→64, k 64→32, v 64→32, o 64→64, gate 64→128, up 64→128, down 128→64 = r × 1024.
LORA_PER_RANK = 2 * 1024


def tiny(overrides=()):
    return OmegaConf.to_object(compose_config([*TINY, *overrides]))


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
