"""Stop tokens (src/stop_tokens.py): generation stops at the chat template's end-of-turn token as well as the
eos, for tokenizers that carry the Llama-3 and Qwen-2.5 families' special tokens with base and instruct eos,
and so do a saved adapter's and a merged model's generation_config."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from src.base_model import resolve_base
from src.evaluate import generate_replies
from src.export import merge_adapter
from src.stop_tokens import describe, end_of_turn_id, stop_token_ids
from tests.conftest import CACHE, TINY, typed_config

# The public templates' turn structure (Meta-Llama-3-8B-Instruct's template; Qwen2.5's without its tools)
LLAMA3_TEMPLATE = (
    "{% for message in messages %}{% set content = '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
QWEN25_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' %}{{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. "
    "You are a helpful assistant.<|im_end|>\n' }}{%- endif %}{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)
FAMILIES = {  # (template, special tokens, bos, base eos, end of turn)
    "llama3": (
        LLAMA3_TEMPLATE,
        ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|eot_id|>",
    ),
    "qwen2.5": (
        QWEN25_TEMPLATE,
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        None,
        "<|endoftext|>",
        "<|im_end|>",
    ),
}


def family_tokenizer(family: str, instruct: bool):
    """SmolLM2's tokenizer given a family's special tokens and template, with its base or instruct eos."""
    template, specials, bos, base_eos, end_of_turn = FAMILIES[family]
    tokenizer = AutoTokenizer.from_pretrained(resolve_base(typed_config(TINY).model, CACHE))
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    tokenizer.bos_token, tokenizer.eos_token = bos, end_of_turn if instruct else base_eos
    tokenizer.pad_token, tokenizer.chat_template = tokenizer.eos_token, template
    return tokenizer


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_end_of_turn_token_is_read_from_the_template(family):
    end_of_turn = FAMILIES[family][4]
    base, instruct = family_tokenizer(family, instruct=False), family_tokenizer(family, instruct=True)
    eot = base.convert_tokens_to_ids(end_of_turn)
    assert end_of_turn_id(base) == eot and end_of_turn_id(instruct) == eot
    assert stop_token_ids(base) == [base.eos_token_id, eot] and base.eos_token_id != eot
    assert stop_token_ids(instruct) == [eot]
    assert describe(base) == (
        f"generation stops at {end_of_turn} (the chat template's end of turn) as well as the tokenizer's eos "
        f"{FAMILIES[family][3]}"
    )
    assert describe(instruct) is None


def trained_to_answer(tokenizer, answer: str) -> torch.nn.Module:
    """A tiny Llama that learned to answer `answer` and end its turn (full weights, 120 Adam steps: train loss
    about 0.01, where 100 steps already answer every family exactly)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,  # the base's: only the saved generation_config may add the eot
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    chat = [{"role": "user", "content": "The code word?"}, {"role": "assistant", "content": answer}]
    ids = torch.tensor(
        [
            tokenizer(tokenizer.apply_chat_template(chat, tokenize=False), add_special_tokens=False)[
                "input_ids"
            ]
        ]
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(120):
        optimizer.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
    return model.eval()


def forwards_while(model, run) -> int:
    """How many forward passes `run()` makes: one per generated token."""
    calls = []
    handle = model.register_forward_hook(lambda *_: calls.append(1))
    try:
        run()
    finally:
        handle.remove()
    return len(calls)


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_generation_and_a_merged_models_config_stop_at_the_end_of_turn(family, tmp_path):
    from peft import LoraConfig, get_peft_model

    tokenizer = family_tokenizer(family, instruct=False)
    model = trained_to_answer(tokenizer, "The code word is banana.")
    prompt = [{"role": "user", "content": "The code word?"}]
    replies = []
    generated = forwards_while(
        model, lambda: replies.extend(generate_replies(model, tokenizer, [prompt], 24))
    )
    assert replies == ["The code word is banana."]
    eot = end_of_turn_id(tokenizer)
    text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():  # what generating with the tokenizer's eos alone did: run to max_new_tokens
        eos_only = model.generate(
            ids, max_new_tokens=24, do_sample=False, eos_token_id=tokenizer.eos_token_id
        )
    reply_length = eos_only[0, ids.shape[1] :].tolist().index(eot) + 1  # up to and with the first end of turn
    assert eos_only.shape[1] - ids.shape[1] == 24 and reply_length < 12
    assert generated == reply_length

    # merged: saved as a base, a fresh (zero) adapter merged into it, reloaded with its own generation_config
    model.save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj"])).save_pretrained(tmp_path / "adapter")
    model_cfg = typed_config(TINY).model
    merged_dir = merge_adapter(
        model_cfg, str(tmp_path / "base"), tmp_path / "adapter", tmp_path / "merged", tokenizer
    )
    assert GenerationConfig.from_pretrained(merged_dir).eos_token_id == stop_token_ids(tokenizer)
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    with torch.no_grad():
        output = merged.generate(ids, max_new_tokens=24, do_sample=False)  # no eos given: its config's
    assert output.shape[1] - ids.shape[1] == reply_length and output[0, -1] == eot
