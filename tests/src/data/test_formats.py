"""Data formats users bring from other SFT tools: ShareGPT, OpenAI-style tool calling, datasets' save_to_disk
folders, JSON documents and CSV with a BOM. Each is rendered through the chat template with labels on the
assistant tokens only (tool calls included), proven token by token; bad rows are refused with file:line."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from datasets import Dataset, DatasetDict
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from src import chat
from src.base_model import resolve_base
from src.compute import Compute
from src.config import ConfigError
from src.data.cache import prepare_data
from src.data.tokenization import IGNORE_INDEX, render
from src.tokenizer import load_tokenizer
from src.train import train
from tests.conftest import CACHE, TINY, compose_config
from tests.src.data.test_loading import data_config, labelled_runs, write_jsonl

# A ChatML template that renders tools (Hermes / Qwen 2.5 style). SmolLM2's own template drops them.
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
CALL_TEXT = '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call><|im_end|>'


@pytest.fixture(scope="module")
def tokenizer():
    cfg = OmegaConf.to_object(compose_config(TINY))
    return load_tokenizer(cfg.model, resolve_base(cfg.model, CACHE))


@pytest.fixture
def tool_tokenizer(tokenizer, monkeypatch):
    monkeypatch.setattr(tokenizer, "chat_template", TOOL_TEMPLATE)
    return tokenizer


def openai_tool_row(i: int) -> dict:
    return {
        "messages": [
            {"role": "user", "content": f"Weather in Oslo? ({i})"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 3}'},
            {"role": "assistant", "content": f"It is 3 degrees. ({i})"},
        ],
        "tools": [WEATHER],
    }


def sharegpt_tool_row(i: int) -> dict:
    return {
        "conversations": [
            {"from": "human", "value": f"Weather in Oslo? ({i})"},
            {"from": "function_call", "value": '{"name": "get_weather", "arguments": {"city": "Oslo"}}'},
            {"from": "observation", "value": '{"temp": 3}'},
            {"from": "gpt", "value": f"It is 3 degrees. ({i})"},
        ],
        "system": "Be brief.",
        "tools": json.dumps([WEATHER]),  # LLaMA-Factory stores tools as a JSON string
    }


def sharegpt_row(i: int) -> dict:
    return {
        "conversations": [
            {"from": "system", "value": "Be brief."},
            {"from": "human", "value": f"Say {i}"},
            {"from": "gpt", "value": str(i)},
            {"from": "user", "value": "Again?"},
            {"from": "assistant", "value": f"{i} again"},
        ]
    }


def check_labels(tokenizer, data, expected) -> None:
    """Every tokenized row labels exactly the expected assistant texts, and nothing else."""
    for index, tokens in enumerate(data.train):
        assert labelled_runs(tokenizer, tokens) == expected(index)
        labelled = sum(label != IGNORE_INDEX for label in tokens["labels"])
        assert labelled == len(tokenizer("".join(expected(index)), add_special_tokens=False)["input_ids"])


def test_sharegpt_maps_speakers_to_roles_and_labels_the_replies(tokenizer, tmp_path):
    rows = [sharegpt_row(i) for i in range(4)]
    path = write_jsonl(tmp_path / "sharegpt.jsonl", rows)
    data = prepare_data(data_config(path, eval_path=path), tokenizer, tmp_path / "cache")
    assert data.report["format"] == "sharegpt"
    check_labels(tokenizer, data, lambda i: [f"{i}<|im_end|>", f"{i} again<|im_end|>"])
    assert data.eval_conversations[0] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say 0"},
        {"role": "assistant", "content": "0"},
        {"role": "user", "content": "Again?"},
        {"role": "assistant", "content": "0 again"},
    ]
    assert tokenizer.decode(data.train[0]["input_ids"]) == render(tokenizer, data.eval_conversations[0])


@pytest.mark.parametrize("kind", ["openai", "sharegpt"])
def test_tool_calls_are_rendered_with_the_tools_and_labelled(tool_tokenizer, tmp_path, kind):
    row = openai_tool_row if kind == "openai" else sharegpt_tool_row
    path = write_jsonl(tmp_path / "tools.jsonl", [row(i) for i in range(4)])
    config = data_config(path, "data.max_length=256", eval_path=path)  # the tool schema alone is ~100 tokens
    data = prepare_data(config, tool_tokenizer, tmp_path / "cache")
    assert data.report["format"] == ("messages" if kind == "openai" else "sharegpt")
    # the assistant's call and its final answer carry labels; the tools, the question and the tool result not
    check_labels(tool_tokenizer, data, lambda i: [CALL_TEXT, f"It is 3 degrees. ({i})<|im_end|>"])
    conversation = data.eval_conversations[0]
    assert conversation["tools"] == [WEATHER]
    text = tool_tokenizer.decode(data.train[0]["input_ids"])
    assert text == render(tool_tokenizer, conversation) and text.startswith("<|im_start|>system\nTools: [{")
    assert [m["role"] for m in conversation["messages"]][-3:] == ["assistant", "tool", "assistant"]


def test_a_template_that_drops_tools_is_refused_naming_the_fix(tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "tools.jsonl", [openai_tool_row(i) for i in range(4)])
    with pytest.raises(ConfigError) as error:
        prepare_data(data_config(path, "data.max_length=256", eval_path=path), tokenizer, tmp_path / "cache")
    message = str(error.value)
    assert "does not render tools or tool calls ('get_weather' is missing" in message
    assert "set model.chat_template" in message and message.count("\n") == 0


BAD_ROWS = {
    "sharegpt_turn_without_from": (
        {"conversations": [{"value": "Hi"}, {"from": "gpt", "value": "Hey"}]},
        r"bad\.jsonl:3: a ShareGPT turn needs `from` and `value`",
    ),
    "sharegpt_unknown_speaker": (
        {"conversations": [{"from": "robot", "value": "beep"}, {"from": "gpt", "value": "ok"}]},
        r"bad\.jsonl:3: unknown ShareGPT speaker 'robot'",
    ),
    "tool_message_before_any_call": (
        {
            "conversations": [
                {"from": "human", "value": "Hi"},
                {"from": "observation", "value": "{}"},
                {"from": "gpt", "value": "ok"},
            ]
        },
        r"bad\.jsonl:3: a tool message comes before any assistant tool call",
    ),
}


@pytest.mark.parametrize("case", BAD_ROWS)
def test_bad_sharegpt_and_tool_rows_are_refused_with_file_and_line(tokenizer, tmp_path, case):
    bad, message = BAD_ROWS[case]
    path = write_jsonl(tmp_path / "bad.jsonl", [sharegpt_row(0), sharegpt_row(1), bad, sharegpt_row(2)])
    with pytest.raises(ConfigError, match=message):
        prepare_data(data_config(path, eval_path=path), tokenizer, tmp_path / "cache")


def test_an_unknown_role_names_the_roles_that_exist(tokenizer, tmp_path):
    bad = {"messages": [{"role": "robot", "content": "beep"}, {"role": "assistant", "content": "ok"}]}
    good = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hey"}]}
    path = write_jsonl(tmp_path / "bad.jsonl", [good, bad, good])
    with pytest.raises(
        ConfigError, match=r"bad\.jsonl:2: unknown role 'robot'; use system, user, assistant or tool"
    ):
        prepare_data(data_config(path, eval_path=path), tokenizer, tmp_path / "cache")


ROWS = [{"prompt": f"Say {i}", "completion": str(i)} for i in range(6)]


@pytest.mark.parametrize("kind", ["dataset", "dataset_dict"])
def test_a_save_to_disk_folder_is_data(tokenizer, tmp_path, kind):
    folder = tmp_path / "saved"
    if kind == "dataset":
        Dataset.from_list(ROWS).save_to_disk(folder)
    else:
        test = [{"prompt": f"Tell {i}", "completion": str(i)} for i in range(3)]
        DatasetDict({"train": Dataset.from_list(ROWS), "test": Dataset.from_list(test)}).save_to_disk(folder)
    data = prepare_data(data_config(folder, "data.eval_fraction=0.5"), tokenizer, tmp_path / "cache")
    assert data.report["format"] == "prompt_completion"
    if kind == "dataset":  # one table: eval_fraction is held out of it
        assert (len(data.train), len(data.eval)) == (3, 3)
    else:  # a DatasetDict: train is its train split, eval its test split
        assert (len(data.train), len(data.eval)) == (6, 3)
        assert [c[0]["content"] for c in data.eval_conversations] == ["Tell 0", "Tell 1", "Tell 2"]
    for tokens in data.train:  # rows are shuffled by the split: each labels the number its prompt asked for
        asked = re.search(r"Say (\d)", tokenizer.decode(tokens["input_ids"])).group(1)
        assert labelled_runs(tokenizer, tokens) == [f"{asked}<|im_end|>"]


def test_a_folder_that_is_not_a_saved_dataset_is_refused(tokenizer, tmp_path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(ConfigError, match="is a folder but not one written by datasets' save_to_disk"):
        prepare_data(data_config(tmp_path / "folder"), tokenizer, tmp_path / "cache")


@pytest.mark.parametrize("kind", ["pretty_array", "object_with_rows", "csv_with_bom"])
def test_json_documents_and_excel_csv_load(tokenizer, tmp_path, kind):
    if kind == "pretty_array":
        path = tmp_path / "train.json"
        path.write_text(json.dumps(ROWS, indent=2))
    elif kind == "object_with_rows":
        path = tmp_path / "train.json"
        path.write_text(json.dumps({"version": "1.0", "data": ROWS}, indent=2))
    else:  # Excel's "CSV UTF-8" starts with a byte-order mark, which used to become part of the first column
        path = tmp_path / "train.csv"
        body = "prompt,completion\r\n" + "".join(f"{r['prompt']},{r['completion']}\r\n" for r in ROWS)
        path.write_bytes(b"\xef\xbb\xbf" + body.encode())
    data = prepare_data(data_config(path, eval_path=path), tokenizer, tmp_path / "cache")
    assert data.report["format"] == "prompt_completion" and len(data.train) == 6
    assert [labelled_runs(tokenizer, t) for t in data.train] == [[f"{i}<|im_end|>"] for i in range(6)]


def test_a_json_object_with_several_lists_is_refused(tokenizer, tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps({"train": ROWS, "test": ROWS}, indent=2))
    with pytest.raises(
        ConfigError, match=r"must hold exactly one list of rows \(found lists under \['train', 'test'\]\)"
    ):
        prepare_data(data_config(path), tokenizer, tmp_path / "cache")


@pytest.mark.parametrize(
    "kind", ["sharegpt", "openai_tools", "sharegpt_tools", "save_to_disk", "json_object", "csv_bom"]
)
def test_each_format_trains_the_tiny_model(tmp_path, kind):
    """Two optimizer steps and two evals of the tiny model through the run's own stages, from a file this
    test writes (the command line itself is exercised by tests/test_cli_property.py and test_train.py)."""
    from src import stages
    from src.config import validate

    extra = []
    if kind in ("sharegpt", "openai_tools", "sharegpt_tools"):
        row = {
            "sharegpt": sharegpt_row,
            "openai_tools": openai_tool_row,
            "sharegpt_tools": sharegpt_tool_row,
        }[kind]
        path = write_jsonl(tmp_path / "train.jsonl", [row(i) for i in range(10)])
        if kind != "sharegpt":
            (tmp_path / "tools.jinja").write_text(TOOL_TEMPLATE)
            extra = [f"model.chat_template={tmp_path / 'tools.jinja'}"]
    elif kind == "save_to_disk":
        path = tmp_path / "saved"
        rows = [{"prompt": f"Say {i}", "completion": str(i)} for i in range(10)]
        DatasetDict({"train": Dataset.from_list(rows), "test": Dataset.from_list(rows[:3])}).save_to_disk(
            path
        )
    elif kind == "json_object":
        path = tmp_path / "train.json"
        rows = [{"prompt": f"Say {i}", "completion": str(i)} for i in range(10)]
        path.write_text(json.dumps({"data": rows}, indent=2))
    else:
        path = tmp_path / "train.csv"
        body = "prompt,completion\r\n" + "".join(f"Say {i},{i}\r\n" for i in range(10))
        path.write_bytes(b"\xef\xbb\xbf" + body.encode())
    run = tmp_path / "run"
    run.mkdir()
    overrides = [
        *TINY,
        "data=jsonl",
        f"data.path={path}",
        "data.eval_fraction=0.2",
        "data.max_length=256",
        "data.task_metric=none",
        "optim.max_steps=2",
        "eval.steps=1",
        "eval.before_training=false",
        "monitor.num_samples=0",
        *extra,
    ]
    cfg = OmegaConf.to_object(compose_config(overrides, run, CACHE))
    validate(cfg)
    base, tokenizer = stages.build_tokenizer(cfg)
    data = stages.build_data(cfg, tokenizer, run)
    metrics = stages.build_run(
        cfg, Compute.of(cfg), stages.build_model(cfg, base), tokenizer, data, run
    ).train()
    assert metrics["status"] == "finished" and metrics["global_step"] == 2
    assert len(metrics["eval_history"]) == 2 and all(e["eval_loss"] > 0 for e in metrics["eval_history"])
    expected = {"openai_tools": "messages", "sharegpt": "sharegpt", "sharegpt_tools": "sharegpt"}
    assert data.report["format"] == expected.get(kind, "prompt_completion")
    assert data.report["eval"]["examples"] == (3 if kind == "save_to_disk" else 2)


# ---------------------------------------------------------------- every format through every stage
# (the data report, the untouched model's baseline, training and `src.chat` on the trained run; a conversation
# with tools is a dict, not a list of messages: each stage must take both)

# The call the tool-calling rows make, as TOOL_TEMPLATE renders it and generation decodes it (no <|im_end|>)
CALL = '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'


def tool_row(i: int) -> dict:
    """Odd rows end with the assistant's tool call (the reply scored is the call), even ones with an answer."""
    row = openai_tool_row(i)
    return {**row, "messages": row["messages"][:2]} if i % 2 else row


def say_row(i: int) -> dict:
    return {"prompt": f"Say {i}", "completion": f"{i}"}


def say_reply(i: int) -> tuple[str, str]:
    return f"Say {i}", f"{i}"


def tool_reply(i: int) -> tuple[str, str]:
    return (f"Weather in Oslo? ({i})", CALL) if i % 2 else ('{"temp": 3}', f"It is 3 degrees. ({i})")


# format -> (row i, the format the loader detects, the prompt text and the reference reply of eval row i;
# None for plain text, which has neither)
FORMATS = {
    "messages": (
        lambda i: {
            "messages": [{"role": "user", "content": f"Say {i}"}, {"role": "assistant", "content": f"{i}"}]
        },
        "messages",
        say_reply,
    ),
    "sharegpt": (sharegpt_row, "sharegpt", lambda i: ("Again?", f"{i} again")),
    "tool_calls": (tool_row, "messages", tool_reply),
    "sharegpt_tool_calls": (
        sharegpt_tool_row,
        "sharegpt",
        lambda i: ('{"temp": 3}', f"It is 3 degrees. ({i})"),
    ),
    "prompt_completion": (say_row, "prompt_completion", say_reply),
    "alpaca": (
        lambda i: {"instruction": "Say the number.", "input": f"{i}", "output": f"{i}"},
        "alpaca",
        lambda i: (f"Say the number.\n\n{i}", f"{i}"),
    ),
    "text": (lambda i: {"text": f"The number {i}."}, "text", None),
    "save_to_disk": (say_row, "prompt_completion", say_reply),
}
EVAL_ROWS = 3
SAMPLE_PROMPT = "Count to three."  # text data has no prompts of its own to sample from


def write_data(tmp_path: Path, name: str) -> list[str]:
    """Train rows 10..19 and eval rows 0..2 of the format, as the data overrides that point at them."""
    row = FORMATS[name][0]
    train_rows, eval_rows = [row(i) for i in range(10, 20)], [row(i) for i in range(EVAL_ROWS)]
    if name == "save_to_disk":  # a DatasetDict folder: eval is its test split
        folder = tmp_path / "saved"
        DatasetDict(
            {"train": Dataset.from_list(train_rows), "test": Dataset.from_list(eval_rows)}
        ).save_to_disk(folder)
        return [f"data.path={folder}"]
    train_file = write_jsonl(tmp_path / "train.jsonl", train_rows)
    eval_file = write_jsonl(tmp_path / "eval.jsonl", eval_rows)
    return [f"data.path={train_file}", f"data.eval_path={eval_file}"]


def logged_texts(log_dir: Path) -> dict[str, str]:
    """Every TensorBoard text entry of the run, by tag, the entries of one tag joined."""
    texts: dict[str, str] = {}
    for events in log_dir.rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events), size_guidance={"tensors": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["tensors"]:
            if tag.endswith("/text_summary"):
                entries = [e.tensor_proto.string_val[0].decode() for e in accumulator.Tensors(tag)]
                texts[tag.removesuffix("/text_summary")] = "\n".join(entries)
    return texts


@pytest.mark.parametrize("name", FORMATS)
def test_each_format_goes_through_baseline_task_metric_samples_training_and_chat(tmp_path, name):
    _, detected, expected = FORMATS[name]
    extra = [f"monitor.sample_prompts=['{SAMPLE_PROMPT}']"] if name == "text" else []
    if "tool" in name:
        (tmp_path / "tools.jinja").write_text(TOOL_TEMPLATE)
        extra.append(f"model.chat_template={tmp_path / 'tools.jinja'}")
    run = tmp_path / "run"
    overrides = [
        *TINY,
        "data=jsonl",  # its task metric: exact_match
        *write_data(tmp_path, name),
        "data.max_length=256",  # the tool schema alone is ~100 tokens
        "optim.max_steps=2",
        "eval.steps=2",
        "eval.reuse_baseline=false",  # measured here, never read from an earlier run's cache
        "monitor.samples_every_evals=1",
        *extra,
    ]
    metrics = train(compose_config(overrides, output_dir=run))

    report = json.loads((run / "data_report.json").read_text())
    assert report["format"] == detected
    assert (report["train"]["examples"], report["eval"]["examples"]) == (10, EVAL_ROWS)
    assert metrics["status"] == "finished" and metrics["global_step"] == 2
    baseline = json.loads((run / "baseline.json").read_text())
    assert math.isfinite(baseline["eval_loss"]) and baseline["eval_loss"] > 0
    assert math.isfinite(metrics["best_eval_loss"]) and metrics["best_eval_loss"] > 0

    texts = logged_texts(run / "tensorboard")
    task = metrics["task_metric"]
    assert task["name"] == "exact_match" and baseline.get("task", {}) == task["before"]
    if expected is None:  # plain text: no reply to score, and samples from monitor.sample_prompts
        assert task["before"] == task["after"] == {}
        prompts = [SAMPLE_PROMPT]
    else:
        for scores in (task["before"], task["after"]):
            assert set(scores) == {"exact_match"} and 0 <= scores["exact_match"] <= 1
        prompts, references = zip(*map(expected, range(EVAL_ROWS)))
        for tag in ("task/before_training", "task/after_training"):
            assert all(f"(reference `{reference}`)" in texts[tag] for reference in references)
        prompts = prompts[:2]  # monitor.num_samples=2
    for tag in ("samples/before_training", "samples/during_training", "samples/after_training"):
        assert [f"**prompt:** {p}\n" in texts[tag] for p in prompts] == [True] * len(prompts), texts[tag]

    prompts_file = tmp_path / "prompts.jsonl"
    lines = ['"Say 5"', json.dumps({"prompt": "Say 6"})]
    lines.append(json.dumps({"messages": [{"role": "user", "content": "Say 7"}]}))
    if "tool" in name:  # a conversation to continue after a tool call, with its tools (as OpenAI writes them)
        tool_prompt = {"messages": openai_tool_row(8)["messages"][:3], "tools": json.dumps([WEATHER])}
        lines.append(json.dumps(tool_prompt))
        read = chat.read_prompts(write_jsonl(tmp_path / "tool_prompt.jsonl", [tool_prompt]))[0]
        call = read["messages"][1]["tool_calls"][0]["function"]  # normalised as training rows are
        assert read["tools"] == [WEATHER] and call == {"name": "get_weather", "arguments": {"city": "Oslo"}}
    prompts_file.write_text("".join(line + "\n" for line in lines))
    answers_file = tmp_path / "answers.jsonl"
    chat.main([str(run), "--prompts", str(prompts_file), "--out", str(answers_file)])
    answers = [json.loads(line) for line in answers_file.read_text().splitlines()]
    expected_prompts = ["Say 5", "Say 6", "Say 7"] + (['{"temp": 3}'] if "tool" in name else [])
    assert [a["prompt"] for a in answers] == expected_prompts
    assert all(isinstance(a["answer"], str) for a in answers)
