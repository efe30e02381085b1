"""The tokens generation stops at: the tokenizer's eos and the chat template's end-of-turn token.

The two differ for base models whose tokenizer was not made for chat: Llama-3.1-8B's eos is
`<|end_of_text|>` while its template ends every turn with `<|eot_id|>`; base Qwen2.5 has `<|endoftext|>`
against `<|im_end|>` (and Llama-3-8B-Instruct first shipped with the base eos: meta-llama/llama3 #104,
transformers #34172). Training teaches the template's token, so a model generating with the eos alone runs
to max_new_tokens. Every place the project generates, and the generation_config it saves beside an adapter
or merged model, stops at both.
"""

from __future__ import annotations

import logging

from transformers import GenerationConfig, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

_REPLY = "stop-token probe reply"  # a reply no template rewrites, to find what follows it


def end_of_turn_id(tokenizer: PreTrainedTokenizerBase) -> int | None:
    """The id of the first special token the chat template writes after an assistant reply (`<|eot_id|>`,
    `<|im_end|>`, or the eos itself); None when the template writes none (plain text follows the reply)."""
    turn = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": _REPLY}]
    text = tokenizer.apply_chat_template(turn, tokenize=False)
    after = text[text.rindex(_REPLY) + len(_REPLY) :]
    special = set(tokenizer.all_special_ids) | {
        i for i, token in tokenizer.added_tokens_decoder.items() if token.special
    }
    for token_id in tokenizer(after, add_special_tokens=False)["input_ids"]:
        if token_id in special:
            return token_id
    return None


def stop_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """[eos, end of turn] (one id when they are the same token), the `eos_token_id` list to generate with."""
    ids = [tokenizer.eos_token_id, end_of_turn_id(tokenizer)]
    return [i for n, i in enumerate(ids) if i is not None and i not in ids[:n]]


def describe(tokenizer: PreTrainedTokenizerBase) -> str | None:
    """One line for the run's log when the end-of-turn token is not the eos; None when it is."""
    eot = end_of_turn_id(tokenizer)
    if eot is None or eot == tokenizer.eos_token_id:
        return None
    return (
        f"generation stops at {tokenizer.convert_ids_to_tokens(eot)} (the chat template's end of turn) as well "
        f"as the tokenizer's eos {tokenizer.eos_token}"
    )


def with_stop_tokens(config: GenerationConfig, tokenizer: PreTrainedTokenizerBase) -> GenerationConfig:
    """`config` with eos_token_id set to every stop token (and a pad id), as saved beside a model."""
    config.eos_token_id = stop_token_ids(tokenizer)
    if config.pad_token_id is None:
        config.pad_token_id = tokenizer.pad_token_id
    return config
