"""Data stage: formats normalise to chat messages, only assistant tokens carry labels, bad examples fail with
their location or are skipped and counted, the report holds padding/packing waste, the cache is reused."""

from __future__ import annotations

import copy
import json
import math

import pytest
from datasets import Dataset
from omegaconf import OmegaConf
from trl import pack_dataset

from src import stages
from src.config import ConfigError, validate
from src.data import cache, loading
from src.data.cache import prepare_data
from src.data.formats import to_messages
from src.data.report import log_report_to_tensorboard, summarize_report, waste_figures
from src.data.tokenization import IGNORE_INDEX, render, tokenize_example
from src.model import load_tokenizer, resolve_base
from tests.conftest import CACHE, TINY, compose_config

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tokenizer():
    cfg = OmegaConf.to_object(compose_config(TINY))
    return load_tokenizer(cfg.model, resolve_base(cfg.model, CACHE))


def labelled_runs(tokenizer, tokens) -> list[str]:
    """Each contiguous run of labelled tokens, decoded; a label is either -100 or the token itself."""
    runs: list[list[int]] = []
    previous = IGNORE_INDEX
    for token, label in zip(tokens["input_ids"], tokens["labels"]):
        assert label in (IGNORE_INDEX, token)
        if label != IGNORE_INDEX:
            if previous == IGNORE_INDEX:
                runs.append([])
            runs[-1].append(token)
        previous = label
    return [tokenizer.decode(run) for run in runs]


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def data_config(path, *overrides, eval_path=None):
    extra = [f"data.eval_path={eval_path}"] if eval_path else []
    return OmegaConf.to_object(
        compose_config([*TINY, "data=jsonl", f"data.path={path}", *extra, *overrides])
    ).data


# ---------------------------------------------------------------- formats and masks

SYSTEM = {"role": "system", "content": "Be brief."}
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


# SmolLM2's prompt ends with "\n"; an answer starting with two whitespace characters used to merge its first
# one into the prompt's last token, which stayed unlabelled ("\n\nSure." was trained as "\nSure.")
ANSWERS = ["\n\nSure.", "  Sure.", "\n Sure.", "\t\tSure.", "\nSure.", " Sure.", "Sure.", "Sure.\n\n"]


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


def test_alpaca_input_joins_the_instruction():
    assert to_messages({"instruction": "Add.", "input": "2 and 2", "output": "4"}, "alpaca") == [
        {"role": "user", "content": "Add.\n\n2 and 2"},
        {"role": "assistant", "content": "4"},
    ]


# ---------------------------------------------------------------- local files


ROWS = [{"prompt": f"Say {i}", "completion": str(i)} for i in range(6)]


@pytest.mark.parametrize("kind", ["json_lines", "json_array", "parquet", "csv"])
def test_json_parquet_and_csv_files_load(tokenizer, tmp_path, kind):
    table = Dataset.from_list(ROWS)
    if kind == "json_lines":
        path = tmp_path / "train.json"
        table.to_json(path)
    elif kind == "json_array":
        path = tmp_path / "train.json"
        path.write_text(json.dumps(ROWS))
    elif kind == "parquet":
        path = tmp_path / "train.parquet"
        table.to_parquet(path)
    else:
        path = tmp_path / "train.csv"
        table.to_csv(path)
    data = prepare_data(data_config(path, eval_path=path), tokenizer, tmp_path / "cache")
    assert data.report["format"] == "prompt_completion" and len(data.train) == len(data.eval) == 6
    assert [labelled_runs(tokenizer, t) for t in data.train] == [[f"{i}<|im_end|>"] for i in range(6)]
    assert data.eval_conversations[5] == [
        {"role": "user", "content": "Say 5"},
        {"role": "assistant", "content": "5"},
    ]


def test_a_glob_loads_every_matching_file(tokenizer, tmp_path):
    write_jsonl(tmp_path / "part-1.jsonl", ROWS[:3])
    write_jsonl(tmp_path / "part-2.jsonl", ROWS[3:])
    data = prepare_data(
        data_config(tmp_path / "part-*.jsonl", eval_path=tmp_path / "part-1.jsonl"), tokenizer, tmp_path / "c"
    )
    assert len(data.train) == 6 and len(data.eval) == 3
    assert [labelled_runs(tokenizer, t) for t in data.train] == [[f"{i}<|im_end|>"] for i in range(6)]


def test_local_jsonl_is_cached_and_rebuilt_when_the_file_changes(tokenizer, tmp_path):
    rows = [{"prompt": f"Say {i}", "completion": str(i)} for i in range(10)]
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    first = prepare_data(data_config(path), tokenizer, tmp_path / "cache")
    second = prepare_data(data_config(path), tokenizer, tmp_path / "cache")
    assert not first.from_cache and second.from_cache
    assert first.cache_path == second.cache_path
    assert second.train["input_ids"] == first.train["input_ids"]
    assert second.eval_conversations == first.eval_conversations and len(first.eval_conversations) == 2
    assert second.report == first.report
    write_jsonl(path, rows + [{"prompt": "Say 10", "completion": "10"}])
    third = prepare_data(data_config(path), tokenizer, tmp_path / "cache")
    assert not third.from_cache and third.cache_path != first.cache_path
    assert len(third.train) + len(third.eval) == 11
    skipping = prepare_data(data_config(path, "data.on_bad_example=skip"), tokenizer, tmp_path / "cache")
    assert not skipping.from_cache and skipping.cache_path != third.cache_path


def test_missing_columns_are_listed(tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"question": "a", "answer": "b"}] * 4)
    with pytest.raises(ConfigError, match=r"cannot tell the format from columns \['answer', 'question'\]"):
        prepare_data(data_config(path, "data.on_bad_example=skip"), tokenizer, tmp_path / "cache")


def test_max_length_shorter_than_every_example(tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "long.jsonl", [{"prompt": "word " * 50, "completion": "ok"}] * 5)
    with pytest.raises(ConfigError, match="data.max_length=16 is shorter than every example"):
        prepare_data(data_config(path, "data.max_length=16"), tokenizer, tmp_path / "cache")


def test_builtin_data_is_deterministic_and_split_once(tokenizer, tmp_path):
    cfg = OmegaConf.to_object(compose_config(TINY)).data
    a = prepare_data(cfg, tokenizer, tmp_path / "a")
    b = prepare_data(cfg, tokenizer, tmp_path / "b")
    assert a.train["input_ids"] == b.train["input_ids"] and a.eval_conversations == b.eval_conversations
    assert (len(a.train), len(a.eval)) == (32, 8)
    answer = a.eval_conversations[0][-1]["content"]
    assert set(json.loads(answer)) == {"name", "age", "job", "city"}


def test_hub_dataset_revision_is_passed_and_keys_the_cache(tokenizer, tmp_path, monkeypatch):
    calls = []

    def fake_load_dataset(path, split, revision=None):
        calls.append((path, split, revision))
        return Dataset.from_list(
            [
                {
                    "messages": [
                        {"role": "user", "content": "Hi"},
                        {"role": "assistant", "content": "Hello"},
                    ]
                }
            ]
            * 3
        )

    monkeypatch.setattr(loading, "load_dataset", fake_load_dataset)
    monkeypatch.setattr(cache, "hub_revision", lambda path, revision: revision)  # no network in tests
    overrides = [*TINY, "data=ultrachat_200k", "data.revision=abc123"]
    cfg = OmegaConf.to_object(compose_config(overrides)).data
    data = prepare_data(cfg, tokenizer, tmp_path / "cache")
    assert calls == [
        ("HuggingFaceH4/ultrachat_200k", "train_sft", "abc123"),
        ("HuggingFaceH4/ultrachat_200k", "test_sft", "abc123"),
    ]
    assert (len(data.train), len(data.eval)) == (3, 3)
    cfg.revision = "def456"
    assert prepare_data(cfg, tokenizer, tmp_path / "cache").cache_path != data.cache_path


def test_an_unpinned_hub_dataset_that_changed_upstream_is_tokenized_again(tokenizer, tmp_path, monkeypatch):
    rows = [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}] * 3
    monkeypatch.setattr(loading, "load_dataset", lambda path, split, revision=None: Dataset.from_list(rows))
    cfg = OmegaConf.to_object(compose_config([*TINY, "data=ultrachat_200k"])).data  # revision: null
    monkeypatch.setattr(cache, "hub_revision", lambda path, revision: "commit-1")
    first = prepare_data(cfg, tokenizer, tmp_path / "cache")
    assert prepare_data(cfg, tokenizer, tmp_path / "cache").from_cache  # same upstream commit: reused
    monkeypatch.setattr(cache, "hub_revision", lambda path, revision: "commit-2")  # main moved upstream
    second = prepare_data(cfg, tokenizer, tmp_path / "cache")
    assert not second.from_cache and second.cache_path != first.cache_path


def test_train_and_eval_files_are_keyed_by_role(tokenizer, tmp_path):
    """`path=a,b` is a random split of a + b; `path=a eval_path=b` evaluates on b: not the same data."""
    a = write_jsonl(tmp_path / "a.jsonl", [{"prompt": f"Say {i}", "completion": str(i)} for i in range(8)])
    b = write_jsonl(tmp_path / "b.jsonl", [{"prompt": f"Tell {i}", "completion": str(i)} for i in range(4)])
    both = prepare_data(data_config(f"'{a},{b}'"), tokenizer, tmp_path / "cache")  # quoted: one value
    by_role = prepare_data(data_config(a, eval_path=b), tokenizer, tmp_path / "cache")
    assert not by_role.from_cache and by_role.cache_path != both.cache_path
    assert [c[0]["content"] for c in by_role.eval_conversations] == [f"Tell {i}" for i in range(4)]


def test_concurrent_preparers_tokenize_once_and_leave_no_temporary_folder(tokenizer, tmp_path, monkeypatch):
    import threading

    from src.data import tokenization

    path = write_jsonl(
        tmp_path / "t.jsonl", [{"prompt": f"Say {i}", "completion": str(i)} for i in range(10)]
    )
    cfg = data_config(path)
    calls, original = [], cache.tokenize_split

    def counting(*args, **kwargs):
        calls.append(args[1])
        return original(*args, **kwargs)

    monkeypatch.setattr(cache, "tokenize_split", counting)
    results, barrier = [], threading.Barrier(3)

    def prepare() -> None:
        barrier.wait()
        results.append(prepare_data(cfg, tokenizer, tmp_path / "cache"))

    threads = [threading.Thread(target=prepare) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(calls) == ["eval", "train"]  # one process tokenized; the others waited and read its cache
    assert sorted(r.from_cache for r in results) == [False, True, True]
    assert len({r.cache_path for r in results}) == 1
    leftovers = [p.name for p in (tmp_path / "cache" / "data").iterdir() if p.name.startswith(".")]
    assert leftovers == [] and tokenization.tokenize_split is original


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


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_example_fails_with_its_location_or_is_skipped_and_counted(
    tokenizer, tmp_path, monkeypatch, case
):
    bad_row, reason, message = BAD_CASES[case]
    if reason == "template_error":
        monkeypatch.setattr(tokenizer, "chat_template", RAISING_TEMPLATE)
    path = write_jsonl(tmp_path / "bad.jsonl", [*GOOD[:2], bad_row, *GOOD[2:]])
    eval_path = write_jsonl(tmp_path / "good.jsonl", GOOD)
    with pytest.raises(ConfigError, match=message) as error:
        prepare_data(data_config(path, eval_path=eval_path), tokenizer, tmp_path / "cache")
    assert "data.on_bad_example=skip" in str(error.value)
    data = prepare_data(
        data_config(path, "data.on_bad_example=skip", eval_path=eval_path), tokenizer, tmp_path / "cache"
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


def test_skip_counts_every_reason_across_splits(tokenizer, tmp_path):
    rows = [*GOOD, "not json", {"messages": []}, {"messages": [{"role": "user", "content": "?"}]}, "{"]
    path = write_jsonl(tmp_path / "mixed.jsonl", rows)
    data = prepare_data(
        data_config(path, "data.on_bad_example=skip", "data.eval_fraction=0.5"), tokenizer, tmp_path
    )
    assert data.report["skipped"] == {"empty_conversation": 1, "malformed_json": 2, "no_assistant_turn": 1}
    assert len(data.train) + len(data.eval) == 5 and len(data.eval_conversations) == len(data.eval)


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


def validated(*overrides):
    validate(OmegaConf.to_object(compose_config([*TINY, *overrides])))


def test_validate_refuses_wrapped_packing_and_unknown_choices():
    validated("data.packing_strategy=bfd_split", "data.on_bad_example=skip")
    with pytest.raises(ConfigError, match=r"packing_strategy=wrapped .* attend to each other .*; use bfd"):
        validated("data.packing_strategy=wrapped")
    with pytest.raises(ConfigError, match=r"data.packing_strategy='greedy' is not one of"):
        validated("data.packing_strategy=greedy")
    with pytest.raises(ConfigError, match=r"data.on_bad_example='ignore' is not one of \['fail', 'skip'\]"):
        validated("data.on_bad_example=ignore")
    with pytest.raises(ConfigError, match=r"data.revision applies to Hub datasets only"):
        validated("data.revision=main")


# ---------------------------------------------------------------- report


def test_waste_figures_match_hand_computed_bfd_packing():
    lengths = [7, 6, 5, 3]  # bfd into rows of 10: [7, 3], [6], [5] → 3 rows holding 21 of 30 positions
    figures = waste_figures(Dataset.from_dict({"input_ids": [[1] * n for n in lengths]}), max_length=10)
    assert figures == {
        "padded_rows": 4,
        "padding_waste": pytest.approx(1 - 21 / 40),
        "packed_rows": 3,
        "packing_waste": pytest.approx(1 - 21 / 30),
    }
    # bfd truncates a 14-token example to 10; bfd_split packs its 4 overflow tokens next to the 5-token one
    long_and_short = Dataset.from_dict({"input_ids": [[1] * 14, [1] * 5]})
    assert waste_figures(long_and_short, 10, "bfd")["packing_waste"] == pytest.approx(1 - 15 / 20)
    assert waste_figures(long_and_short, 10, "bfd_split")["packing_waste"] == pytest.approx(1 - 19 / 20)


def test_packing_wastes_less_than_padding_on_the_builtin_data(tokenizer, tmp_path):
    cfg = OmegaConf.to_object(compose_config([*TINY, "data.max_length=256"])).data
    report = prepare_data(cfg, tokenizer, tmp_path).report
    for split in ("train", "eval"):
        s = report[split]
        assert s["truncated_targets"] == 0 and s["max"] <= 256
        assert s["padded_rows"] == s["examples"] == len(s["lengths"])
        assert s["padding_waste"] == pytest.approx(1 - s["tokens"] / (s["examples"] * 256))
        assert s["packing_waste"] == pytest.approx(1 - s["tokens"] / (s["packed_rows"] * 256))
        assert math.ceil(s["tokens"] / 256) <= s["packed_rows"] < s["examples"]
        assert s["packing_waste"] < s["padding_waste"] - 0.2
    assert report["train"]["packed_rows"] == 16  # examples of 90–107 tokens: two per 256-token row


def test_build_data_writes_report_and_histogram_also_from_cache(tokenizer, tmp_path):
    cfg = OmegaConf.to_object(compose_config(TINY, cache_dir=tmp_path / "cache"))
    for run in ("first", "second"):
        run_dir = tmp_path / run
        run_dir.mkdir()
        data = stages.build_data(cfg, tokenizer, run_dir)
        assert data.from_cache == (run == "second")
        report = json.loads((run_dir / "data_report.json").read_text())
        assert report == data.report and report["train"]["examples"] == 32
        assert set(report["train"]) >= {"padding_waste", "packing_waste", "packed_rows", "lengths"}
        png = (run_dir / "data_lengths.png").read_bytes()
        assert png.startswith(PNG_SIGNATURE) and len(png) > 5000
    lines = summarize_report(report, 128)
    assert lines[2] == (
        f"  train: padding to max_length wastes {report['train']['padding_waste']:.1%} of 32×128 positions; "
        f"bfd packing wastes {report['train']['packing_waste']:.1%} of {report['train']['packed_rows']}×128"
    )
    assert not any("[" in line for line in lines)  # the per-example length lists stay out of the log


def test_report_goes_to_tensorboard(tokenizer, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    report = prepare_data(OmegaConf.to_object(compose_config(TINY)).data, tokenizer, tmp_path / "c").report
    writer = SummaryWriter(log_dir=str(tmp_path / "tb"))
    log_report_to_tensorboard(writer, report)
    writer.close()
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"tensors": 0}).Reload()
    for split in ("train", "eval"):
        histogram = events.Histograms(f"data/{split}_lengths")[0].histogram_value
        assert (histogram.num, histogram.sum) == (report[split]["examples"], report[split]["tokens"])
        assert (histogram.min, histogram.max) == (report[split]["min"], report[split]["max"])
    text = events.Tensors("data/report/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "padding to max_length wastes" in text and "format=messages" in text


def test_the_arithmetic_task_is_right_and_fits_one_example_per_grid_row(tokenizer):
    """Grid 2's task: every worked step is correct, results stay non-negative, the last line is the answer,
    and each example fits a 128-token row alone (so a 1-epoch grid trial has 24 steps and 8 evals)."""
    import re

    from src.builtin_data import arithmetic_examples

    rows = arithmetic_examples(64, seed=42)
    assert rows == arithmetic_examples(64, seed=42) and rows != arithmetic_examples(64, seed=43)
    for row in rows:
        prompt, answer = (m["content"] for m in row["messages"])
        *steps, last = answer.split("\n")
        assert len(steps) == 3
        value = int(re.search(r"(\d+)", prompt).group(1))  # the start number comes first
        for line in steps:
            left, symbol, right, _, result = line.split()
            assert int(left) == value
            value = {"+": int(left) + int(right), "-": int(left) - int(right), "*": int(left) * int(right)}[
                symbol
            ]
            assert int(result) == value >= 0
        assert last == f"Answer: {value}"
        length = len(
            tokenizer.apply_chat_template(row["messages"], tokenize=True, return_dict=True)["input_ids"]
        )
        assert 64 < length <= 128
