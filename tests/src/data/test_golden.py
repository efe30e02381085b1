"""The data stage's input_ids and labels, token for token, for every format and template the suite covers,
held to fixtures saved from the row-by-row code this stage replaced (tests/src/data/golden/labels.json).

Regenerate (only when a change of labels is intended): `python -m tests.src.data.test_golden`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from src.data.cache import prepare_data
from src.model import load_tokenizer, resolve_base
from tests.conftest import CACHE, TINY, compose_config

GOLDEN = Path(__file__).parent / "golden" / "labels.json"

# A ChatML template that renders tools (Hermes / Qwen 2.5 style), as tests/src/data/test_formats.py uses
TOOL_TEMPLATE = (
    "{% if tools %}<|im_start|>system\nTools: {{ tools | tojson }}<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
    "{% for c in m.get('tool_calls', []) %}<tool_call>{{ c['function'] | tojson }}</tool_call>{% endfor %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
SYSTEM = {"role": "system", "content": "Be brief."}
# SmolLM2's prompt ends with "\n": answers starting with whitespace are where tokens straddle the answer's edge
ANSWERS = ["\n\nSure.", "  Sure.", "\n Sure.", "\t\tSure.", "\nSure.", " Sure.", "Sure.", "Sure.\n\n"]


def chat(*turns: str) -> dict:
    roles = ["user", "assistant"] * len(turns)
    return {"messages": [{"role": role, "content": text} for role, text in zip(roles, turns)]}


def openai_tool_row(i: int) -> dict:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
    }
    return {
        "messages": [
            {"role": "user", "content": f"Weather in Oslo? ({i})"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 3}'},
            {"role": "assistant", "content": f"It is 3 degrees. ({i})"},
        ],
        "tools": [WEATHER],
    }


# case -> (rows of one JSONL file, the chat template (None: the model's own), extra overrides)
CASES = {
    "leading_whitespace": ([chat("Hi", answer) for answer in ANSWERS], None, []),
    "multi_turn": (
        [
            {
                "messages": [
                    SYSTEM,
                    *chat("Name a colour.", "Blue.", "Another?", "Green, of course.")["messages"],
                ]
            },
            chat("Hi", "\n\nFirst.", "Again", "  Second."),
            chat("One", "1", "Two", "2", "Three", "3"),
        ],
        None,
        [],
    ),
    "whole_sequence_loss": (
        [chat("Hi", "Hello!"), chat("Hi", "\n\nSure.", "More", " Yes.")],
        None,
        ["data.assistant_only_loss=false"],
    ),
    "tool_calls": (
        [openai_tool_row(i) for i in range(3)]
        + [{**openai_tool_row(9), "messages": openai_tool_row(9)["messages"][:2]}],
        TOOL_TEMPLATE,
        ["data.max_length=256"],  # the tool schema alone is ~100 tokens
    ),
    "sharegpt": (
        [
            {
                "conversations": [
                    {"from": "system", "value": "Be brief."},
                    {"from": "human", "value": f"Say {i}"},
                    {"from": "gpt", "value": str(i)},
                    {"from": "user", "value": "Again?"},
                    {"from": "assistant", "value": f"{i} again"},
                ]
            }
            for i in range(3)
        ],
        None,
        [],
    ),
    "sharegpt_tool_calls": (
        [
            {
                "conversations": [
                    {"from": "human", "value": f"Weather in Oslo? ({i})"},
                    {
                        "from": "function_call",
                        "value": '{"name": "get_weather", "arguments": {"city": "Oslo"}}',
                    },
                    {"from": "observation", "value": '{"temp": 3}'},
                    {"from": "gpt", "value": f"It is 3 degrees. ({i})"},
                ],
                "system": "Be brief.",
                "tools": json.dumps([WEATHER]),
            }
            for i in range(3)
        ],
        TOOL_TEMPLATE,
        ["data.max_length=256"],  # the tool schema alone is ~100 tokens
    ),
    "prompt_completion": (
        [
            {"prompt": "2+2?", "completion": "4"},
            {"prompt": "Say hi", "completion": "\n\nhi"},
            {
                "prompt": [SYSTEM, {"role": "user", "content": "2+2?"}],
                "completion": [{"role": "assistant", "content": "Four."}],
            },
        ],
        None,
        [],
    ),
    "alpaca": (
        [
            {"instruction": "Add.", "input": "2 and 2", "output": "4"},
            {"instruction": "Say hi.", "input": "", "output": "hi"},
            {"instruction": "Say hi.", "output": "  hi there"},
        ],
        None,
        [],
    ),
    "text": ([{"text": "Once upon a time."}, {"text": "\n\nTwo lines.\nEnd."}], None, []),
    "truncated": ([chat("Count.", "one two three " * 30), chat("Hi", "Hello")], None, ["data.max_length=64"]),
}


def tokenized(case: str, folder: Path) -> dict[str, list]:
    """input_ids and labels of the case's rows, in file order, through the whole data stage."""
    rows, template, overrides = CASES[case]
    path = folder / "train.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    extra = [f"model.chat_template={folder / 'template.jinja'}"] if template else []
    if template:
        (folder / "template.jinja").write_text(template)
    cfg = OmegaConf.to_object(
        compose_config(
            [*TINY, "data=jsonl", f"data.path={path}", f"data.eval_path={path}", *extra, *overrides]
        )
    )
    tokenizer = load_tokenizer(cfg.model, resolve_base(cfg.model, CACHE))
    data = prepare_data(cfg.data, tokenizer, folder / "cache")
    return {
        "input_ids": [list(ids) for ids in data.train["input_ids"]],
        "labels": [list(x) for x in data.train["labels"]],
    }


@pytest.mark.parametrize("case", CASES)
def test_tokens_and_labels_are_the_golden_ones(tmp_path, case):
    golden = json.loads(GOLDEN.read_text())[case]
    assert tokenized(case, tmp_path) == golden


def test_the_golden_fixtures_cover_every_case_and_label_something():
    golden = json.loads(GOLDEN.read_text())
    assert set(golden) == set(CASES)
    for case, tokens in golden.items():
        assert len(tokens["input_ids"]) == len(CASES[case][0])
        for ids, labels in zip(tokens["input_ids"], tokens["labels"]):
            assert len(ids) == len(labels) and any(label != -100 for label in labels)


if __name__ == "__main__":
    import tempfile

    fixtures = {}
    for name in CASES:
        with tempfile.TemporaryDirectory() as folder:
            fixtures[name] = tokenized(name, Path(folder))
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(fixtures, indent=None) + "\n")
    counts = ", ".join(f"{name} {len(tokens['input_ids'])} rows" for name, tokens in fixtures.items())
    print(f"wrote {GOLDEN}: {counts}")
