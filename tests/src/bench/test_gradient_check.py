"""src.bench.gradient_check: a plain step's gradients pass against the reference; a dropped one fails."""

from __future__ import annotations

import pytest
import torch

from src.bench.gradient_check import (
    GRADIENT_TOLERANCE,
    check_gradients,
    gradient_error,
    trainable_gradients,
    verdict,
)
from tests.conftest import CACHE, TINY, compose_config


def test_gradient_error_is_relative_to_the_reference_norm():
    reference = {"a": torch.tensor([3.0, 0.0]), "b": torch.tensor([0.0, 4.0])}
    assert gradient_error(reference, reference) == 0.0
    assert gradient_error({"a": torch.zeros(2), "b": reference["b"]}, reference) == pytest.approx(3 / 5)
    assert gradient_error({"a": reference["a"]}, reference) == float("inf")  # a parameter without gradient
    assert gradient_error(reference, {"a": torch.zeros(2), "b": torch.zeros(2)}) == float("inf")
    assert (verdict(GRADIENT_TOLERANCE), verdict(0.051), verdict(float("inf"))) == (
        "passed",
        "FAILED",
        "FAILED",
    )


@pytest.fixture(scope="module")
def tiny_step():
    """The tiny model's LoRA gradients after one plain step on two packed rows, with its config and batch."""
    from trl import pack_dataset

    from src.base_model import resolve_base
    from src.data.cache import prepare_data
    from src.data.collator import PackedRowsCollator
    from src.model import build_model
    from src.tokenizer import load_tokenizer

    cfg = compose_config(TINY)
    base = resolve_base(cfg.model, CACHE)
    tokenizer = load_tokenizer(cfg.model, base)
    rows = pack_dataset(prepare_data(cfg.data, tokenizer, CACHE).train, seq_length=128, strategy="bfd")
    batch = PackedRowsCollator(tokenizer.pad_token_id)([rows[0], rows[1]])
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, base)
    model.train()
    model(**batch, use_cache=False).loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.max_grad_norm)
    return cfg, base, batch, trainable_gradients(model)


def test_a_plain_step_passes_and_a_dropped_gradient_fails(tiny_step):
    cfg, base, batch, gradients = tiny_step
    assert len(gradients) == 2 * 7 * 2  # lora_A and lora_B of 7 projections in 2 layers
    passed = check_gradients({}, cfg, base, gradients, batch, max_grad_norm=cfg.optim.max_grad_norm)
    assert passed["gradient_check"] == "passed" and passed["gradient_error"] < 1e-5
    dropped = {name: torch.zeros_like(g) if "lora_B" in name else g for name, g in gradients.items()}
    failed = check_gradients({}, cfg, base, dropped, batch, max_grad_norm=cfg.optim.max_grad_norm)
    assert failed["gradient_check"] == "FAILED" and failed["gradient_error"] > 0.5
    nothing = check_gradients({}, cfg, base, None, batch, max_grad_norm=cfg.optim.max_grad_norm)
    assert nothing == {"gradient_error": float("inf"), "gradient_check": "FAILED"}
