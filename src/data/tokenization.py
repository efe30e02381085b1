"""Tokenization: render each conversation through the model's own chat template, label only the assistant
replies (every other position gets IGNORE_INDEX), and truncate at max_length, skipping or refusing an
example that truncation would leave with nothing to learn.

A split is tokenized by `datasets.Dataset.map` in batches of 1,000 rows, in worker processes (data.num_proc)
for large splits, into Arrow files on disk. Workers never raise for a bad row: each row comes back with a
status (empty, or the reason it cannot be trained on), its message and its origin, and the parent refuses
at the first bad row in row order or adds up the skip counts, exactly as row by row."""

from __future__ import annotations

import contextlib
import json
import os
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
from datasets import Dataset, Features, List, Value
from jinja2 import TemplateError

from src.config import ConfigError, DataConfig
from src.data.formats import BadExample, conversation_messages, to_messages
from src.data.loading import ORIGIN, handle_bad_example
from src.data.progress import RowProgress
from src.data.report import length_stats, waste_figures

IGNORE_INDEX = -100


def render(tokenizer, conversation: list | dict, add_generation_prompt: bool = False) -> str:
    """The conversation (with its tools, if it declares any) as the model's chat template writes it."""
    tools = conversation.get("tools") if isinstance(conversation, dict) else None
    return tokenizer.apply_chat_template(
        conversation_messages(conversation),
        tools=tools or None,
        tokenize=False,
        add_generation_prompt=add_generation_prompt,
    )


def check_renders_tools(tokenizer, conversation: list | dict, text: str) -> None:
    """Refuse a chat template that silently drops tools or tool calls (SmolLM2's, for one): training on its
    text would teach answers without the calls. Every tool's and called function's name must appear."""
    tools = (conversation.get("tools") or []) if isinstance(conversation, dict) else []
    names = [t.get("function", t).get("name") for t in tools if isinstance(t, dict)]
    for message in conversation_messages(conversation):
        names += [call["function"]["name"] for call in message.get("tool_calls", [])]
    missing = [name for name in names if isinstance(name, str) and name not in text]
    if missing:
        template = Path(getattr(tokenizer, "name_or_path", "") or "the tokenizer").name
        raise ConfigError(
            f"data: the chat template of {template} does not render tools or tool calls ({missing[0]!r} is "
            "missing from its text); set model.chat_template to a template that renders them (the model's "
            "own tool-calling template, e.g. Qwen 2.5's or Llama 3.1's)."
        )


def assistant_spans(tokenizer, conversation: list | dict, text: str) -> list[tuple[int, int]]:
    """Character spans of each assistant reply (content plus its end-of-turn token) inside `text`.

    Works for any template that renders conversations prefix-consistently (SmolLM2, Llama 3, Qwen 2.5 …),
    so it needs no `{% generation %}` markers: the reply is what the template adds between the prompt
    with a generation header and the conversation including that reply. A reply that ends the
    conversation ends where `text` does, so that one needs a single render."""
    spans = []
    messages = conversation_messages(conversation)
    tools = {"tools": conversation["tools"]} if isinstance(conversation, dict) else {}
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = {"messages": messages[:index], **tools}
        start = len(render(tokenizer, before, add_generation_prompt=True)) if index else 0
        last = index == len(messages) - 1
        upto = text if last else render(tokenizer, {"messages": messages[: index + 1], **tools})
        if not text.startswith(upto):
            raise ConfigError(
                "data: this chat template does not render conversations prefix-consistently, so assistant "
                "tokens cannot be located; set data.assistant_only_loss=false or model.chat_template."
            )
        end = len(upto.rstrip())  # keep the end-of-turn token, drop the newline after it
        spans.append((start, end))
    return spans


def text_and_spans(
    tokenizer, example: list | dict | str, assistant_only_loss: bool
) -> tuple[str, list[tuple[int, int]]]:
    """The text one example trains on and the character spans that carry labels."""
    if isinstance(example, str):
        text = example + (tokenizer.eos_token or "")
        return text, [(0, len(text))]
    text = render(tokenizer, example)
    check_renders_tools(tokenizer, example, text)
    return text, (assistant_spans(tokenizer, example, text) if assistant_only_loss else [(0, len(text))])


def labelled_tokens(tokenizer, text: str, spans: list[tuple[int, int]], encoding) -> dict:
    """input_ids and labels of one text from its encoding (with offsets) and its labelled spans."""
    offsets = encoding["offset_mapping"]
    starts = [start for start, _ in offsets]
    ends = [end for _, end in offsets]
    ordered = all(a <= b for a, b in zip(starts, starts[1:])) and all(a <= b for a, b in zip(ends, ends[1:]))
    if _straddles(offsets, starts, ends, spans, ordered):
        pieces = tokenize_at_span_edges(tokenizer, text, spans, encoding["input_ids"])
        if pieces is not None:
            return pieces
    # Labelled: every token that overlaps an answer. Where a token straddles the answer's edge and the text
    # cannot be cut there, it is labelled too, so the answer stays whole (docs/background.md).
    input_ids = list(encoding["input_ids"])
    labels = [IGNORE_INDEX] * len(input_ids)
    for start, end in spans:
        # the tokens overlapping [start, end): found by bisection where offsets only grow (byte-level BPE)
        first, last = (bisect_right(ends, start), bisect_left(starts, end)) if ordered else (0, len(offsets))
        for position in range(first, last):
            token_start, token_end = offsets[position]
            if token_start < end and token_end > start and token_end > token_start:
                labels[position] = input_ids[position]
    return {"input_ids": input_ids, "labels": labels}


def _straddles(
    offsets, starts: list[int], ends: list[int], spans: list[tuple[int, int]], ordered: bool
) -> bool:
    """Whether a token crosses an answer's start or end (so the text must be tokenized in pieces)."""
    cuts = {cut for span in spans for cut in span}
    if not ordered:
        return any(start < cut < end for start, end in offsets for cut in cuts)
    for cut in cuts:
        # the tokens starting before the cut are a prefix, and the last of them ends furthest
        before = bisect_left(starts, cut)
        if before and ends[before - 1] > cut:
            return True
    return False


def tokenize_batch(tokenizer, texts: list[str], spans: list[list[tuple[int, int]]]) -> list[dict]:
    """input_ids and labels of many texts, encoded in one batched tokenizer call."""
    if not texts:
        return []
    encodings = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    return [
        labelled_tokens(
            tokenizer,
            text,
            text_spans,
            {"input_ids": encodings["input_ids"][i], "offset_mapping": encodings["offset_mapping"][i]},
        )
        for i, (text, text_spans) in enumerate(zip(texts, spans))
    ]


def tokenize_example(tokenizer, example: list | dict | str, assistant_only_loss: bool) -> dict:
    """input_ids and labels (-100 where no loss is taken) for one conversation or plain text: the one-row
    case of the batched path."""
    text, spans = text_and_spans(tokenizer, example, assistant_only_loss)
    return tokenize_batch(tokenizer, [text], [spans])[0]


def tokenize_at_span_edges(
    tokenizer, text: str, spans: list[tuple[int, int]], whole: list[int]
) -> dict | None:
    """The text tokenized piece by piece, cut at every answer's start and end, with the answer pieces
    labelled; None if the pieces do not decode to the same text as the whole (a tokenizer that adds a
    prefix space to every piece, for one).

    Needed where a token would straddle an answer's edge: SmolLM2's template ends the prompt with "\n" and
    an answer "\n\nSure." starts with "\n", which the tokenizer merges into one token of the prompt. Cut
    there, every character of the answer is labelled and the prompt's tokens are those of the inference
    prompt (rendered with add_generation_prompt=True) on their own."""
    edges = [0, *(edge for span in spans for edge in span), len(text)]
    pieces = [text[start:end] for start, end in zip(edges, edges[1:])]
    input_ids: list[int] = []
    labels: list[int] = []
    for index, ids in enumerate(tokenizer(pieces, add_special_tokens=False)["input_ids"]):
        input_ids += ids
        labels += ids if index % 2 else [IGNORE_INDEX] * len(ids)  # odd pieces are the answers
    if tokenizer.decode(input_ids) != tokenizer.decode(whole):
        return None
    return {"input_ids": input_ids, "labels": labels}


def truncates(cfg: DataConfig, split: str) -> bool:
    """Whether the data stage cuts this split at max_length. A split TRL packs with bfd_split stays whole:
    TRL splits its long examples into pieces instead of dropping their overflow."""
    packed = cfg.packing if split == "train" else cfg.eval_packing
    return not (packed and cfg.packing_strategy == "bfd_split")


# Row statuses besides "" (usable) and a BadExample's reason
ANSWER_TRUNCATED = "answer_truncated"  # truncation leaves no answer token (counted after the whole split)
REFUSED = "refused"  # a ConfigError that no data.on_bad_example setting skips (the template itself)
CONVERSATION = "conversation"  # eval split only: the example as JSON, for the task metric and samples
# Splits smaller than this per worker are tokenized in-process: starting a worker costs more than it saves
ROWS_PER_PROCESS = 2000
# The automatic data.num_proc never exceeds this (see docs/benchmarks.md, "Data at scale")
MAX_AUTO_PROCESSES = 8


def _features(keep_conversations: bool) -> Features:
    columns = {
        "input_ids": List(Value("int32")),
        "labels": List(Value("int32")),
        ORIGIN: Value("string"),
        "status": Value("string"),
        "message": Value("string"),
        "length": Value("int32"),
        "truncated_target": Value("bool"),
    }
    if keep_conversations:
        columns[CONVERSATION] = Value("string")
    return Features(columns)


def tokenize_rows(
    batch: dict[str, list],
    tokenizer,
    fmt: str,
    assistant_only_loss: bool,
    max_length: int | None,
    keep_conversations: bool,
    count_rows: Callable[[int], None] | None = None,
) -> dict[str, list]:
    """One map batch: raw rows in, tokenized rows out with status, message, origin and full length; a row
    that cannot be used comes back empty with its status, never as an exception (workers cannot pickle
    one back, and the parent decides what a bad row means). `count_rows` is told the batch's row count
    when it is done (the progress bar, src/data/progress.py)."""
    count = len(batch[ORIGIN])
    out: dict[str, list] = {"input_ids": [[] for _ in range(count)], "labels": [[] for _ in range(count)]}
    out.update(
        status=[""] * count, message=[""] * count, length=[0] * count, truncated_target=[False] * count
    )
    out[ORIGIN] = batch[ORIGIN]
    conversations = [""] * count
    texts, spans, rows = [], [], []
    for i in range(count):
        row = {column: values[i] for column, values in batch.items() if column != ORIGIN}
        try:
            example = to_messages(row, fmt)
            try:
                text, text_spans = text_and_spans(tokenizer, example, assistant_only_loss)
            except TemplateError as error:
                message = f"the chat template rejects this conversation ({error})"
                raise BadExample("template_error", message) from error
        except BadExample as bad:
            out["status"][i], out["message"][i] = bad.reason, str(bad)
            continue
        except ConfigError as error:
            out["status"][i], out["message"][i] = REFUSED, str(error)
            continue
        texts.append(text)
        spans.append(text_spans)
        rows.append(i)
        if keep_conversations:
            conversations[i] = json.dumps(example)
    for i, tokens in zip(rows, tokenize_batch(tokenizer, texts, spans)):
        length = len(tokens["input_ids"])
        out["length"][i] = length
        if max_length is not None and length > max_length:
            out["truncated_target"][i] = any(label != IGNORE_INDEX for label in tokens["labels"][max_length:])
            tokens = {key: values[:max_length] for key, values in tokens.items()}
            if all(label == IGNORE_INDEX for label in tokens["labels"]):
                out["status"][i] = ANSWER_TRUNCATED
                continue
        out["input_ids"][i], out["labels"][i] = tokens["input_ids"], tokens["labels"]
    if keep_conversations:
        out[CONVERSATION] = conversations
    if count_rows is not None:
        count_rows(count)
    return out


def worker_processes(configured: int | None, rows: int) -> int | None:
    """Processes to tokenize `rows` with: data.num_proc when set (1 = in-process), else the cores this
    process may use, capped at MAX_AUTO_PROCESSES, with at least ROWS_PER_PROCESS rows each; None means
    in-process."""
    if configured is None:
        configured = min(len(os.sched_getaffinity(0)), MAX_AUTO_PROCESSES, rows // ROWS_PER_PROCESS)
    return configured if configured > 1 and rows > 1 else None


def _column(dataset: Dataset, name: str) -> np.ndarray:
    """One scalar column as a numpy array, read from the Arrow table (no Python object per row)."""
    return dataset.data.column(name).to_numpy(zero_copy_only=False)


def tokenize_split(
    split: Dataset,
    name: str,
    tokenizer,
    cfg: DataConfig,
    fmt: str,
    skipped: Counter,
    work_dir: Path,
    fingerprint: str,
    bar: RowProgress | None = None,
) -> tuple[Dataset, dict]:
    """The split tokenized into Arrow files in `work_dir` (usable rows only; the eval split keeps each
    example's conversation as JSON), and its length statistics; its rows are counted on `bar`."""
    keep = name == "eval"
    mapped = _map_split(split, name, tokenizer, cfg, fmt, work_dir, fingerprint, bar, keep)
    statuses, answer_cut = _judge_rows(mapped, cfg, skipped)
    tokenized_rows = (statuses == "") | (statuses == ANSWER_TRUNCATED)
    lengths = _column(mapped, "length")[tokenized_rows]
    truncated_targets = int(_column(mapped, "truncated_target")[tokenized_rows].sum())
    _check_truncation(lengths, answer_cut, name, cfg, skipped)
    usable = np.flatnonzero(statuses == "")
    if not len(usable):
        raise ConfigError(
            f"data: no usable {name} examples left (skipped: {dict(skipped) or 'none'}, "
            f"max_length={cfg.max_length}); fix the data or raise data.max_length."
        )
    kept = ["input_ids", "labels", *([CONVERSATION] if keep else [])]
    tokenized = mapped.select_columns(kept)
    if len(usable) < len(mapped):
        tokenized = tokenized.select(usable, indices_cache_file_name=str(work_dir / f"usable-{name}.indices"))
    stats = length_stats(lengths)
    stats["truncated_targets"] = truncated_targets
    stats.update(waste_figures(tokenized, cfg.max_length, cfg.packing_strategy))
    return tokenized, stats


def _map_split(split, name, tokenizer, cfg, fmt, work_dir, fingerprint, bar, keep) -> Dataset:
    """`tokenize_rows` over the split in batches, in `data.num_proc` worker processes where it is large
    enough: every row with its status, origin and length columns."""
    processes = worker_processes(cfg.num_proc, len(split))
    with bar.counter(processes) if bar else contextlib.nullcontext() as count_rows:
        return split.map(
            tokenize_rows,
            batched=True,
            remove_columns=[c for c in split.column_names if c != ORIGIN],
            features=_features(keep),
            fn_kwargs={
                "tokenizer": tokenizer,
                "fmt": fmt,
                "assistant_only_loss": cfg.assistant_only_loss,
                "max_length": cfg.max_length if truncates(cfg, name) else None,
                "keep_conversations": keep,
                "count_rows": count_rows,
            },
            num_proc=processes,
            cache_file_name=str(work_dir / f"tokenized-{name}.arrow"),
            new_fingerprint=f"{fingerprint}-{name}",  # our cache key: nothing is hashed, nothing reused
            load_from_cache_file=False,
        )


def _judge_rows(mapped: Dataset, cfg: DataConfig, skipped: Counter) -> tuple[np.ndarray, list]:
    """The bad rows in row order, as the parent judges them: the first refused one raises (naming its
    file:line), the others fail or are counted by data.on_bad_example. Returns every row's status and the
    (origin, length) of the rows truncation leaves without an answer."""
    status = mapped.data.column("status")
    bad_rows = np.flatnonzero(pc.not_equal(status, "").to_numpy(zero_copy_only=False))
    answer_cut: list[tuple[str, int]] = []  # (where, length) of examples truncation leaves without answer
    verdicts = mapped.select_columns([ORIGIN, "status", "message", "length"])
    for index in bad_rows.tolist():  # in row order: the first bad row is the one a refusal names
        row = verdicts[index]
        if row["status"] == ANSWER_TRUNCATED:
            answer_cut.append((row[ORIGIN], row["length"]))
        elif row["status"] == REFUSED:
            raise ConfigError(row["message"])
        else:
            handle_bad_example(
                cfg.on_bad_example, row[ORIGIN], BadExample(row["status"], row["message"]), skipped
            )
    return status.to_numpy(zero_copy_only=False), answer_cut


def _check_truncation(
    lengths: np.ndarray, answer_cut: list, name: str, cfg: DataConfig, skipped: Counter
) -> None:
    """Refuse a max_length shorter than every example; fail or count the examples it leaves without an
    answer (data.on_bad_example)."""
    if truncates(cfg, name) and len(lengths) and lengths.min() > cfg.max_length:
        raise ConfigError(
            f"data.max_length={cfg.max_length} is shorter than every example (shortest: {lengths.min()} "
            f"tokens); raise it to at least {length_stats(lengths)['p95']}."
        )
    if answer_cut:
        if cfg.on_bad_example == "fail":
            raise ConfigError(
                f"data: {len(answer_cut)} {name} example(s) lose every answer token to truncation at "
                f"max_length={cfg.max_length} (first: {answer_cut[0][0]}); raise data.max_length to "
                f"{max(length for _, length in answer_cut)} or set data.on_bad_example=skip."
            )
        skipped[ANSWER_TRUNCATED] += len(answer_cut)
