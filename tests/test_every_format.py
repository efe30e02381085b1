"""Every data format the loader accepts, through every stage that reads conversations: the data report, the
untouched model's baseline (eval loss, task metric, sample generations), training, and `src.chat` on the
trained run. A conversation with tools is a dict, not a list of messages: each stage must take both."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from datasets import Dataset, DatasetDict
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from src import chat
from src.train import train
from tests.conftest import TINY, compose_config
from tests.test_data import write_jsonl
from tests.test_formats import TOOL_TEMPLATE, WEATHER, openai_tool_row, sharegpt_row, sharegpt_tool_row

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
