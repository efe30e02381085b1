"""Packed examples are isolated: inside a packed, padding-free row each example's logits equal its logits
when run alone, with the same collator and packing TRL uses for training; the data report counts the
packed rows SFTTrainer really builds."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM
from trl import SFTTrainer, pack_dataset
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from src.base_model import resolve_base
from src.data.cache import prepare_data
from src.data.tokenization import tokenize_example
from src.tokenizer import load_tokenizer
from src.trainer import training_arguments
from tests.conftest import CACHE, TINY, compose_config

CONVERSATIONS = [
    [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."}],
    [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4, of course."}],
    [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi there, friend!"}],
    [{"role": "user", "content": "One word?"}, {"role": "assistant", "content": "Yes."}],
]


@pytest.fixture(scope="module")
def tiny_base():
    cfg = OmegaConf.to_object(compose_config(TINY))
    base = resolve_base(cfg.model, CACHE)
    return base, load_tokenizer(cfg.model, base)


def model_and_packed_rows(base, tokenizer, attention):
    """The tiny model on `attention`, the tokenized conversations, and them packed bfd into rows that
    each hold at most two examples (so there are several rows)."""
    model = AutoModelForCausalLM.from_pretrained(
        base, dtype=torch.float32, attn_implementation=attention
    ).eval()
    examples = [tokenize_example(tokenizer, c, assistant_only_loss=True) for c in CONVERSATIONS]
    lengths = [len(e["input_ids"]) for e in examples]
    packed = pack_dataset(Dataset.from_list(examples), seq_length=sum(lengths[:2]) + 1, strategy="bfd")
    return model, examples, packed


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_logits_equal_separate_logits(tiny_base, attention):
    base, tokenizer = tiny_base
    model, examples, packed = model_and_packed_rows(base, tokenizer, attention)
    collator = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id, padding_free=True)
    batch = collator([packed[i] for i in range(len(packed))])
    assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch  # one flattened row
    with torch.no_grad():
        packed_logits = model(
            input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False
        ).logits[0]
        starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist() + [batch["input_ids"].shape[1]]
        assert len(starts) - 1 == len(examples)
        for start, end in zip(starts[:-1], starts[1:]):
            ids = batch["input_ids"][0, start:end]
            alone = model(input_ids=ids[None], use_cache=False).logits[0]
            torch.testing.assert_close(packed_logits[start:end], alone, atol=1e-5, rtol=1e-5)


def test_packed_labels_keep_the_assistant_mask(tiny_base):
    _, tokenizer = tiny_base
    examples = [tokenize_example(tokenizer, c, assistant_only_loss=True) for c in CONVERSATIONS]
    packed = pack_dataset(Dataset.from_list(examples), seq_length=512, strategy="bfd")
    collator = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id, padding_free=True)
    batch = collator([packed[i] for i in range(len(packed))])
    labels = batch["labels"][0]
    kept = tokenizer.decode(batch["input_ids"][0][labels != -100])
    for conversation in CONVERSATIONS:
        assert f"{conversation[-1]['content']}<|im_end|>" in kept
    assert "Name a colour." not in kept and "user" not in kept


@pytest.mark.parametrize("strategy", ["bfd", "bfd_split"])
def test_report_counts_the_rows_sft_trainer_packs(tiny_base, tmp_path, strategy):
    """The data report's packed row count is the number of rows SFTTrainer itself trains on."""
    base, tokenizer = tiny_base
    overrides = [*TINY, "data.max_length=100", f"data.packing_strategy={strategy}"]  # examples: 90–107
    cfg = OmegaConf.to_object(compose_config(overrides, output_dir=tmp_path, cache_dir=tmp_path))
    data = prepare_data(cfg.data, tokenizer, tmp_path)
    assert data.report["train"]["max"] > 100  # some examples overflow: bfd cuts them, bfd_split splits them
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    trainer = SFTTrainer(
        model=model,
        args=training_arguments(cfg, tmp_path / "checkpoints"),
        train_dataset=data.train,
        eval_dataset=data.eval,
        processing_class=tokenizer,
    )
    assert trainer.args.packing_strategy == strategy
    assert len(trainer.train_dataset) == data.report["train"]["packed_rows"]
    packed_tokens = sum(sum(lengths) for lengths in trainer.train_dataset["seq_lengths"])
    assert data.report["train"]["packing_waste"] == pytest.approx(
        1 - packed_tokens / (data.report["train"]["packed_rows"] * 100)
    )
    if strategy == "bfd_split":  # nothing is cut: every token of every example is trained on
        assert packed_tokens == data.report["train"]["tokens"]


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_rows_collator_keeps_examples_isolated(tiny_base, attention):
    """Our collator keeps packed rows apart; each example's logits still equal its logits alone."""
    from src.data.collator import PackedRowsCollator

    base, tokenizer = tiny_base
    model, examples, packed = model_and_packed_rows(base, tokenizer, attention)
    batch = PackedRowsCollator(tokenizer.pad_token_id)([packed[i] for i in range(len(packed))])
    assert batch["input_ids"].shape[0] == len(packed) > 1 and "attention_mask" not in batch
    with torch.no_grad():
        logits = model(
            input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False
        ).logits
        seen = 0
        for row in range(len(packed)):
            for start, length in zip(
                [0, *torch.tensor(packed[row]["seq_lengths"]).cumsum(0).tolist()[:-1]],
                packed[row]["seq_lengths"],
            ):
                ids = batch["input_ids"][row, start : start + length]
                alone = model(input_ids=ids[None], use_cache=False).logits[0]
                torch.testing.assert_close(logits[row, start : start + length], alone, atol=1e-5, rtol=1e-5)
                labels = batch["labels"][row, start : start + length]
                assert labels[0] == -100
                seen += 1
    assert seen == len(examples)


def test_scoring_only_labelled_positions_gives_the_same_loss(tiny_base):
    """The CPU patch of TRL's fused LM head changes the work, not the numbers."""
    import trl.trainer.utils as trl_utils
    from trl.trainer.utils import add_fused_lm_head

    from src.data.collator import PackedRowsCollator
    from src.patches import cpu_lm_head

    base, tokenizer = tiny_base
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    add_fused_lm_head(model, outputs=("log_probs",))
    examples = [tokenize_example(tokenizer, c, assistant_only_loss=True) for c in CONVERSATIONS]
    batch = PackedRowsCollator(tokenizer.pad_token_id)(examples)
    original = trl_utils._use_triton
    with torch.no_grad():
        trl_utils._use_triton = lambda device: False
        every_position = model(**batch, fused_lm_head=True).log_probs
        trl_utils._use_triton = original
        with cpu_lm_head():
            labelled_only = model(**batch, fused_lm_head=True).log_probs
    assert trl_utils._use_triton is original  # undone on exit
    assert every_position.abs().sum() > 0
    torch.testing.assert_close(labelled_only, every_position, atol=1e-5, rtol=1e-5)
