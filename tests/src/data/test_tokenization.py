"""Tokenization: only assistant tokens carry labels (token for token against saved golden fixtures, for every
format and template), leading whitespace stays in the answer, bad examples fail with their location or are
skipped and counted, in-process and in worker processes alike.

Regenerate the golden fixtures (only when a change of labels is intended): `python -m tests.src.data.test_tokenization`."""

import copy
import json
from pathlib import Path

import pytest
from datasets import Dataset
from omegaconf import OmegaConf
from trl import pack_dataset

from src.base_model import resolve_base
from src.config import ConfigError
from src.data.cache import prepare_data
from src.data.report import summarize_report
from src.data.tokenization import IGNORE_INDEX, render, tokenize_example
from src.tokenizer import load_tokenizer
from tests.conftest import CACHE, TINY, compose_config
from tests.src.data.test_formats import TOOL_TEMPLATE, openai_tool_row, sharegpt_row, sharegpt_tool_row
from tests.src.data.test_loading import ROWS, data_config, labelled_runs, write_jsonl


@pytest.fixture(scope="module")
def tokenizer():
    cfg = OmegaConf.to_object(compose_config(TINY))
    return load_tokenizer(cfg.model, resolve_base(cfg.model, CACHE))


# ---------------------------------------------------------------- golden labels

GOLDEN = Path(__file__).parent / "golden" / "labels.json"

SYSTEM = {"role": "system", "content": "Be brief."}
# SmolLM2's prompt ends with "\n": answers starting with whitespace are where tokens straddle the answer's edge
ANSWERS = ["\n\nSure.", "  Sure.", "\n Sure.", "\t\tSure.", "\nSure.", " Sure.", "Sure.", "Sure.\n\n"]


def chat(*turns: str) -> dict:
    roles = ["user", "assistant"] * len(turns)
    return {"messages": [{"role": role, "content": text} for role, text in zip(roles, turns)]}


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
        [sharegpt_row(i) for i in range(3)],
        None,
        [],
    ),
    "sharegpt_tool_calls": (
        [sharegpt_tool_row(i) for i in range(3)],
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


def tokenized(case: str, folder: Path, num_proc: int = 1) -> dict[str, list]:
    """input_ids and labels of the case's rows, in file order, through the whole data stage."""
    rows, template, overrides = CASES[case]
    path = folder / "train.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    extra = [f"model.chat_template={folder / 'template.jinja'}"] if template else []
    if template:
        (folder / "template.jinja").write_text(template)
    cfg = OmegaConf.to_object(
        compose_config(
            [
                *TINY,
                "data=jsonl",
                f"data.path={path}",
                f"data.eval_path={path}",
                f"data.num_proc={num_proc}",
                *extra,
                *overrides,
            ]
        )
    )
    tokenizer = load_tokenizer(cfg.model, resolve_base(cfg.model, CACHE))
    data = prepare_data(cfg.data, tokenizer, folder / "cache")
    return {
        "input_ids": [list(ids) for ids in data.train["input_ids"]],
        "labels": [list(x) for x in data.train["labels"]],
    }


@pytest.mark.parametrize("num_proc", [1, 2])
@pytest.mark.parametrize("case", CASES)
def test_tokens_and_labels_are_the_golden_ones(tmp_path, case, num_proc):
    golden = json.loads(GOLDEN.read_text())[case]
    assert tokenized(case, tmp_path, num_proc) == golden


def test_the_golden_fixtures_cover_every_case_and_label_something():
    golden = json.loads(GOLDEN.read_text())
    assert set(golden) == set(CASES)
    for case, tokens in golden.items():
        assert len(tokens["input_ids"]) == len(CASES[case][0])
        for ids, labels in zip(tokens["input_ids"], tokens["labels"]):
            assert len(ids) == len(labels) and any(label != -100 for label in labels)


# ---------------------------------------------------------------- formats and masks

FORMAT_CASES = {
    "messages_multi_turn_with_system": (
        "messages",
        {
            "messages": [
                SYSTEM,
                {"role": "user", "content": "Name a colour."},
                {"role": "assistant", "content": "Blue."},
                {"role": "user", "content": "Another?"},
                {"role": "assistant", "content": "Green, of course."},
            ]
        },
        ["Blue.<|im_end|>", "Green, of course.<|im_end|>"],
    ),
    "prompt_completion_strings": (
        "prompt_completion",
        {"prompt": "2+2?", "completion": "4"},
        ["4<|im_end|>"],
    ),
    "prompt_completion_conversational": (
        "prompt_completion",
        {
            "prompt": [SYSTEM, {"role": "user", "content": "2+2?"}],
            "completion": [{"role": "assistant", "content": "Four."}],
        },
        ["Four.<|im_end|>"],
    ),
    "alpaca_with_input": (
        "alpaca",
        {"instruction": "Add.", "input": "2 and 2", "output": "4"},
        ["4<|im_end|>"],
    ),
    "alpaca_empty_input": (
        "alpaca",
        {"instruction": "Say hi.", "input": "", "output": "hi"},
        ["hi<|im_end|>"],
    ),
    "alpaca_without_input": (
        "alpaca",
        {"instruction": "Say hi.", "output": "hi there"},
        ["hi there<|im_end|>"],
    ),
    "text": ("text", {"text": "Once upon a time."}, ["Once upon a time.<|im_end|>"]),
}


@pytest.mark.parametrize("case", FORMAT_CASES)
def test_each_format_labels_exactly_the_answer_tokens(tokenizer, tmp_path, case):
    fmt, row, answers = FORMAT_CASES[case]
    path = write_jsonl(tmp_path / "train.jsonl", [row, row])
    data = prepare_data(data_config(path, eval_path=path), tokenizer, tmp_path / "cache")
    assert data.report["format"] == fmt
    for tokens in data.train:
        assert labelled_runs(tokenizer, tokens) == answers
        labelled = sum(label != IGNORE_INDEX for label in tokens["labels"])
        assert labelled == len(tokenizer("".join(answers), add_special_tokens=False)["input_ids"])
    # the training text is exactly what the chat template renders for inference
    conversation = data.eval_conversations[0]
    expected_text = conversation + "<|im_end|>" if case == "text" else render(tokenizer, conversation)
    assert tokenizer.decode(data.train[0]["input_ids"]) == expected_text


def test_system_and_prompt_stay_unlabelled_in_multi_turn(tokenizer):
    messages = FORMAT_CASES["messages_multi_turn_with_system"][1]["messages"]
    tokens = tokenize_example(tokenizer, messages, assistant_only_loss=True)
    unlabelled = tokenizer.decode(
        [t for t, x in zip(tokens["input_ids"], tokens["labels"]) if x == IGNORE_INDEX]
    )
    assert unlabelled.count("<|im_start|>") == 5 and "Be brief." in unlabelled and "Another?" in unlabelled
    assert "Blue." not in unlabelled and "Green" not in unlabelled


def test_whole_sequence_loss_labels_everything(tokenizer):
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    tokens = tokenize_example(tokenizer, messages, assistant_only_loss=False)
    assert tokens["labels"] == tokens["input_ids"]


@pytest.mark.parametrize("answer", ANSWERS)
def test_every_character_of_the_answer_is_labelled_after_the_inference_prompt(tokenizer, answer):
    conversation = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": answer}]
    tokens = tokenize_example(tokenizer, conversation, assistant_only_loss=True)
    assert labelled_runs(tokenizer, tokens) == [answer + "<|im_end|>"]
    prompt = render(tokenizer, conversation[:1], add_generation_prompt=True)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert tokens["input_ids"][: len(prompt_ids)] == prompt_ids  # generation continues these very tokens
    assert set(tokens["labels"][: len(prompt_ids)]) == {IGNORE_INDEX}
    assert IGNORE_INDEX not in tokens["labels"][len(prompt_ids) : len(prompt_ids) + 2]
    assert tokenizer.decode(tokens["input_ids"]) == render(tokenizer, conversation)  # the text is unchanged


def test_leading_whitespace_is_kept_in_every_turn(tokenizer):
    conversation = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "\n\nFirst."},
        {"role": "user", "content": "Again"},
        {"role": "assistant", "content": "  Second."},
    ]
    tokens = tokenize_example(tokenizer, conversation, assistant_only_loss=True)
    assert labelled_runs(tokenizer, tokens) == ["\n\nFirst.<|im_end|>", "  Second.<|im_end|>"]
    assert tokenizer.decode(tokens["input_ids"]) == render(tokenizer, conversation)


def test_a_tokenizer_that_cannot_cut_at_the_answer_keeps_the_answer_whole(tokenizer):
    """A tokenizer that prefixes every piece it is given with a space (GPT-2's add_prefix_space) cannot
    tokenize the prompt and the answer apart without changing the text: the token the two share is then
    labelled, so the answer is trained whole along with the template's last character."""
    from tokenizers.pre_tokenizers import ByteLevel

    prefixing = copy.deepcopy(tokenizer)
    prefixing.backend_tokenizer.pre_tokenizer = ByteLevel(add_prefix_space=True, use_regex=True)
    conversation = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "\n\nSure."}]
    tokens = tokenize_example(prefixing, conversation, assistant_only_loss=True)
    assert labelled_runs(prefixing, tokens) == ["\n\n\nSure.<|im_end|>"]
    whole = prefixing(render(prefixing, conversation), add_special_tokens=False)["input_ids"]
    assert tokens["input_ids"] == whole


def test_max_length_shorter_than_every_example(tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "long.jsonl", [{"prompt": "word " * 50, "completion": "ok"}] * 5)
    with pytest.raises(ConfigError, match="data.max_length=16 is shorter than every example"):
        prepare_data(data_config(path, "data.max_length=16"), tokenizer, tmp_path / "cache")


# ---------------------------------------------------------------- bad examples

GOOD = [
    {"messages": [{"role": "user", "content": f"Say {i}"}, {"role": "assistant", "content": str(i)}]}
    for i in range(5)
]
RAISING_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
BAD_CASES = {
    "malformed_json": ('{"messages": [', "malformed_json", r"bad\.jsonl:3: malformed JSON line"),
    "not_an_object": (
        "[1, 2]",
        "malformed_json",
        r"bad\.jsonl:3: each example must be a JSON object, got list",
    ),
    "empty_conversation": ({"messages": []}, "empty_conversation", r"bad\.jsonl:3: empty conversation"),
    "non_string_content": (
        {"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "5"}]},
        "non_string_content",
        r"bad\.jsonl:3: message content must be a string, got \{'role': 'user', 'content': 5\}",
    ),
    "unknown_role": (
        {"messages": [{"role": "robot", "content": "beep"}, {"role": "assistant", "content": "ok"}]},
        "unknown_role",
        r"bad\.jsonl:3: unknown role 'robot'; use system, user, assistant or tool",
    ),
    "role_the_template_rejects": (
        {"messages": [SYSTEM, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hey"}]},
        "template_error",
        r"bad\.jsonl:3: the chat template rejects this conversation \(System role not supported\)",
    ),
    "no_assistant_turn": (
        {"messages": [{"role": "user", "content": "Anyone?"}]},
        "no_assistant_turn",
        r"bad\.jsonl:3: the conversation has no assistant turn",
    ),
    "answer_cut_by_truncation": (
        {"messages": [{"role": "user", "content": "word " * 200}, {"role": "assistant", "content": "ok"}]},
        "answer_truncated",
        r"1 train example\(s\) lose every answer token to truncation at max_length=128 \(first: .*bad\.jsonl:3\); "
        r"raise data\.max_length to 2\d\d or set data\.on_bad_example=skip",
    ),
}


@pytest.mark.parametrize("num_proc", [1, 2])  # 2: bad rows found in worker processes, judged by the parent
@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_example_fails_with_its_location_or_is_skipped_and_counted(
    tokenizer, tmp_path, monkeypatch, case, num_proc
):
    bad_row, reason, message = BAD_CASES[case]
    workers = f"data.num_proc={num_proc}"
    if reason == "template_error":
        monkeypatch.setattr(tokenizer, "chat_template", RAISING_TEMPLATE)
    path = write_jsonl(tmp_path / "bad.jsonl", [*GOOD[:2], bad_row, *GOOD[2:]])
    eval_path = write_jsonl(tmp_path / "good.jsonl", GOOD)
    with pytest.raises(ConfigError, match=message) as error:
        prepare_data(data_config(path, workers, eval_path=eval_path), tokenizer, tmp_path / "cache")
    assert "data.on_bad_example=skip" in str(error.value)
    data = prepare_data(
        data_config(path, "data.on_bad_example=skip", workers, eval_path=eval_path),
        tokenizer,
        tmp_path / "cache",
    )
    assert data.report["skipped"] == {reason: 1}
    assert len(data.train) == 5 and len(data.eval) == 5
    assert [labelled_runs(tokenizer, t) for t in data.train] == [[f"{i}<|im_end|>"] for i in range(5)]
    lines = summarize_report(data.report, 128)
    assert f"  skipped 1 bad examples (data.on_bad_example=skip): {reason} 1" in lines


@pytest.mark.parametrize(
    ("kind", "where"),
    [("parquet", r"bad\.parquet row 1"), ("csv", r"bad\.csv:3"), ("json", r"bad\.json row 1")],
)
def test_bad_rows_of_other_files_are_located(tokenizer, tmp_path, kind, where):
    """Parquet and JSON arrays name the row index; CSV (header on line 1) names the line."""
    rows = [{"instruction": "Add.", "input": "2 and 2", "output": "4"}] * 4
    rows = [*rows[:1], {"instruction": "Add.", "input": "", "output": None}, *rows[1:]]
    path = tmp_path / f"bad.{kind}"
    if kind == "json":
        path.write_text(json.dumps(rows))
    else:
        getattr(Dataset.from_list(rows), f"to_{kind}")(path)
    with pytest.raises(
        ConfigError, match=rf"{where}: message content must be a string, got .*'content': None"
    ):
        prepare_data(data_config(path, eval_path=path), tokenizer, tmp_path / "cache")
    data = prepare_data(
        data_config(path, "data.on_bad_example=skip", eval_path=path), tokenizer, tmp_path / "c"
    )
    assert data.report["skipped"] == {"non_string_content": 2} and len(data.train) == 4


@pytest.mark.parametrize("num_proc", [1, 2])
def test_skip_counts_every_reason_across_splits(tokenizer, tmp_path, num_proc, capfd):
    rows = [*GOOD, "not json", {"messages": []}, {"messages": [{"role": "user", "content": "?"}]}, "{"]
    path = write_jsonl(tmp_path / "mixed.jsonl", rows)
    workers = f"data.num_proc={num_proc}"
    data = prepare_data(
        data_config(path, "data.on_bad_example=skip", "data.eval_fraction=0.5", workers), tokenizer, tmp_path
    )
    assert data.report["skipped"] == {"empty_conversation": 1, "malformed_json": 2, "no_assistant_turn": 1}
    assert len(data.train) + len(data.eval) == 5 and len(data.eval_conversations) == len(data.eval)
    # one bar over both splits' 7 readable rows, counted in the worker processes too; no bar of datasets'
    bars = capfd.readouterr().err
    assert bars.rstrip().rsplit("\r", 1)[-1].startswith("Tokenizing: 100%") and "7/7 [" in bars
    assert "rows/s" in bars and "examples/s" not in bars and bars.count("\n") == 1


def test_only_bad_examples_is_an_error_even_when_skipping(tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "empty.jsonl", [{"messages": []}] * 4)
    with pytest.raises(
        ConfigError, match=r"no usable train examples left \(skipped: \{'empty_conversation': 3\}"
    ):
        prepare_data(
            data_config(path, "data.on_bad_example=skip", "data.eval_fraction=0.25"), tokenizer, tmp_path
        )


# ---------------------------------------------------------------- packing strategies and validation


def test_bfd_split_keeps_long_training_examples_whole(tokenizer, tmp_path):
    long_row = {"prompt": "Count.", "completion": "one two three " * 30}
    path = write_jsonl(tmp_path / "train.jsonl", [long_row, *ROWS])
    eval_path = write_jsonl(tmp_path / "eval.jsonl", [long_row, *ROWS])
    truncated = prepare_data(
        data_config(path, "data.max_length=64", eval_path=eval_path), tokenizer, tmp_path
    )
    split = prepare_data(
        data_config(path, "data.max_length=64", "data.packing_strategy=bfd_split", eval_path=eval_path),
        tokenizer,
        tmp_path,
    )
    assert split.cache_path != truncated.cache_path
    full_length = truncated.report["train"]["max"]
    assert full_length > 64
    assert len(truncated.train[0]["input_ids"]) == 64 and truncated.report["train"]["truncated_targets"] == 1
    assert len(split.train[0]["input_ids"]) == full_length and split.report["train"]["truncated_targets"] == 0
    # eval is not packed (eval_packing=false), so it is still truncated
    assert len(split.eval[0]["input_ids"]) == 64 and split.report["eval"]["truncated_targets"] == 1
    expected = pack_dataset(split.train.select_columns(["input_ids"]), 64, "bfd_split")
    assert split.report["train"]["packed_rows"] == len(expected)
    assert split.report["packing_strategy"] == "bfd_split"


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
