"""The save stage (src/export.py): a merged model computes what base + adapter does, in full precision."""

from __future__ import annotations

import torch

from src.base_model import resolve_base
from src.export import merge_adapter
from src.model import build_model
from src.tokenizer import load_tokenizer
from tests.conftest import CACHE, TINY, typed_config


def test_merging_a_saved_adapter_gives_a_plain_model_with_the_adapters_logits(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cfg = typed_config(TINY)
    base = resolve_base(cfg.model, CACHE)
    tokenizer = load_tokenizer(cfg.model, base)
    model = build_model(cfg, base)
    with torch.no_grad():  # a fresh adapter adds exactly zero (B = 0): give it something to merge
        for name, weight in model.named_parameters():
            if "lora_B" in name:
                weight.normal_(std=0.05, generator=torch.Generator().manual_seed(len(name)))
    model.save_pretrained(tmp_path / "adapter")
    merged_dir = merge_adapter(cfg.model, base, tmp_path / "adapter", tmp_path / "merged", tokenizer)

    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()
    assert not any("lora" in name for name, _ in merged.named_parameters())
    assert merged.config.use_cache and (merged_dir / "tokenizer.json").is_file()
    base_model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    adapted = PeftModel.from_pretrained(base_model, tmp_path / "adapter").eval()
    ids = torch.tensor([[1, 400, 2000, 31, 9]])
    with torch.no_grad():
        expected, got = adapted(ids).logits, merged(ids).logits
        plain = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)(ids).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert (got - plain).abs().max() > 1e-3  # the adapter changed the logits, and the merge kept that
