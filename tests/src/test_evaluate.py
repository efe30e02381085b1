"""The task metric (src/evaluate.py): which turn is the reference, how predictions are scored, and what a
reference looks like when the chat template renders it."""

from __future__ import annotations

import pytest

from src.evaluate import prompt_and_reference, rendered_reply, score, split_reply

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "4"},
]


def test_the_reference_is_the_last_assistant_turn_and_the_prompt_everything_before():
    assert split_reply(CHAT) == (CHAT[:2], CHAT[2])
    assert prompt_and_reference(CHAT) == (CHAT[:2], "4")
    with_tools = {"messages": CHAT, "tools": [{"type": "function", "function": {"name": "add"}}]}
    prompt, reply = split_reply(with_tools)
    assert prompt == {**with_tools, "messages": CHAT[:2]} and reply == CHAT[2]
    assert split_reply("plain text") is None
    assert split_reply(CHAT[:2]) is None  # ends with the user's turn: nothing to score against


def test_exact_match_ignores_only_whitespace():
    assert score("exact_match", ["4", " 4 ", "four", "4 \n"], ["4", "4", "4", "4"]) == {"exact_match": 0.75}
    assert score("exact_match", ["a  b"], ["a b"]) == {"exact_match": 1.0}


def test_json_exact_match_compares_parsed_objects_and_counts_valid_ones():
    predictions = ['{"a": 1, "b": 2}', '{"b": 2, "a": 1}', '{"a": 1', "[1, 2]"]
    references = ['{"a":1,"b":2}'] * 3 + ["[1, 2]"]
    assert score("json_exact_match", predictions, references) == pytest.approx(
        {"json_exact_match": 0.75, "json_valid": 0.5}  # a list parses but is not an object
    )
    assert score("none", ["x"], ["y"]) == {}


def test_the_reference_is_what_the_template_writes_after_the_prompt():
    from src.base_model import resolve_base
    from src.tokenizer import load_tokenizer
    from tests.conftest import CACHE, TINY, typed_config

    cfg = typed_config(TINY)
    tokenizer = load_tokenizer(cfg.model, resolve_base(cfg.model, CACHE))
    assert rendered_reply(tokenizer, CHAT[:2], {"role": "assistant", "content": "  4"}) == "4"
