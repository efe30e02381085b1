"""Data stage: load (built-in, Hub, local files), normalise every common SFT format to chat messages,
render through the model's own chat template, label assistant tokens only, truncate, cache, report."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset, DatasetDict, load_dataset, load_from_disk
from jinja2 import TemplateError
from trl import pack_dataset

from src.atomic import atomic_folder
from src.builtin_data import BUILTIN
from src.config import ConfigError, DataConfig, local_files

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
CACHE_VERSION = 2  # bump when tokenization logic or the cache layout changes, so old caches are not reused
ROLES = {"system", "user", "assistant"}

FORMAT_COLUMNS = {
    "messages": {"messages"},
    "prompt_completion": {"prompt", "completion"},
    "alpaca": {"instruction", "output"},
    "text": {"text"},
}
# Extra columns every raw split carries: where each row came from ("file.jsonl:12", "… row 7"), and for
# local files the row itself as JSON, so rows whose value types differ never meet Arrow's one-type columns.
ORIGIN = "_origin"
ROW_JSON = "_row_json"


class BadExample(ConfigError):
    """One example the data stage cannot train on; `reason` is the count it adds to when skipped."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass
class RawData:
    """Untokenized train/eval rows, the detected format and the bad rows already skipped while reading."""

    train: Dataset
    eval: Dataset
    format: str
    skipped: Counter


@dataclass
class PreparedData:
    """Tokenized train/eval sets plus the raw eval conversations used for generation and the task metric."""

    train: Dataset
    eval: Dataset
    eval_conversations: list[list[dict[str, str]] | str]
    report: dict[str, Any]
    cache_path: Path
    from_cache: bool


def handle_bad_example(on_bad_example: str, where: str, bad: BadExample, skipped: Counter) -> None:
    """Fail with the example's location (data.on_bad_example=fail) or count it by reason (skip)."""
    if on_bad_example == "fail":
        raise ConfigError(
            f"{where}: {bad}; fix the example or set data.on_bad_example=skip to skip and count such examples."
        ) from None
    skipped[bad.reason] += 1


# ---------------------------------------------------------------- loading


def _read_jsonl(path: Path, on_bad_example: str, skipped: Counter) -> list[tuple[str, Any]]:
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                handle_bad_example(
                    on_bad_example,
                    f"{path}:{number}",
                    BadExample("malformed_json", f"malformed JSON line ({error.msg})"),
                    skipped,
                )
                continue
            rows.append((f"{path}:{number}", row))
    return rows


def _read_json(path: Path, on_bad_example: str, skipped: Counter) -> list[tuple[str, Any]]:
    """A JSON array of objects, or JSON Lines saved with a .json name (as `Dataset.to_json` writes them)."""
    text = path.read_text(encoding="utf-8")
    if not text.lstrip().startswith("["):
        return _read_jsonl(path, on_bad_example, skipped)
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path}: malformed JSON ({error.msg} at line {error.lineno}).") from None
    return [(f"{path} row {index}", row) for index, row in enumerate(rows)]


def _read_csv(path: Path) -> list[tuple[str, Any]]:
    """Every cell as text (no type guessing turns an answer "4" into a number); empty cells are missing."""
    rows = []
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        start = reader.line_num + 1
        for row in reader:
            row.pop(None, None)  # cells beyond the header's columns
            rows.append((f"{path}:{start}", {key: value or None for key, value in row.items()}))
            start = reader.line_num + 1
    return rows


def _read_parquet(path: Path) -> list[tuple[str, Any]]:
    table = load_dataset("parquet", data_files=str(path), split="train")
    return [(f"{path} row {index}", row) for index, row in enumerate(table.to_list())]


def _read_file(path: Path, on_bad_example: str, skipped: Counter) -> list[tuple[str, Any]]:
    """Rows of one local file; an undecodable file is refused in one sentence."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            return _read_jsonl(path, on_bad_example, skipped)
        if suffix == ".json":
            return _read_json(path, on_bad_example, skipped)
        if suffix == ".csv":
            return _read_csv(path)
        if suffix == ".parquet":
            return _read_parquet(path)
    except ConfigError:  # already one clear sentence (and a ValueError, like the errors below)
        raise
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path} is not UTF-8 text (bad byte at offset {error.start}); save it as UTF-8."
        ) from None
    except csv.Error as error:
        raise ConfigError(f"{path}: malformed CSV ({error}).") from None
    except (OSError, ValueError) as error:  # pyarrow's errors for a damaged parquet file derive from these
        raise ConfigError(f"{path}: cannot be read as {suffix[1:]} ({type(error).__name__}).") from None
    raise ConfigError(f"data.path: {path} has an unsupported extension; use .jsonl, .json, .parquet or .csv.")


def _load_local(spec: str, on_bad_example: str, skipped: Counter) -> tuple[Dataset, list[str]]:
    """All files of a comma list/glob as one split, plus the union of their columns."""
    rows: list[tuple[str, Any]] = []
    for path in local_files(spec):
        rows.extend(_read_file(path, on_bad_example, skipped))
    records, columns = [], {}
    for where, row in rows:
        if not isinstance(row, dict):
            bad = BadExample(
                "malformed_json", f"each example must be a JSON object, got {type(row).__name__}"
            )
            handle_bad_example(on_bad_example, where, bad, skipped)
            continue
        columns.update(dict.fromkeys(row))
        records.append({ORIGIN: where, ROW_JSON: json.dumps(row, default=str)})
    if not records:
        raise ConfigError(f"data.path: {spec} holds no examples.")
    return Dataset.from_list(records), list(columns)


def _with_origin(split: Dataset, label: str) -> Dataset:
    return split.add_column(ORIGIN, [f"{label} row {index}" for index in range(len(split))])


def load_raw(cfg: DataConfig) -> RawData:
    """Load the train and eval splits as raw rows (no tokenization yet) and detect their format."""
    skipped: Counter = Counter()
    if cfg.source == "builtin":
        if cfg.name not in BUILTIN:
            raise ConfigError(
                f"data.name={cfg.name!r} is not a built-in dataset; choose one of {sorted(BUILTIN)}."
            )
        train = Dataset.from_list(BUILTIN[cfg.name](cfg.builtin_examples, seed=cfg.split_seed))
        train_columns = eval_columns = list(train.column_names)
        train, eval_ = _with_origin(train, f"built-in {cfg.name}"), None
    elif cfg.source == "hub":
        train = load_dataset(cfg.path, split=cfg.train_split, revision=cfg.revision)
        train_columns = eval_columns = list(train.column_names)
        train = _with_origin(train, f"{cfg.path} {cfg.train_split}")
        eval_ = None
        if cfg.eval_split:
            eval_ = load_dataset(cfg.path, split=cfg.eval_split, revision=cfg.revision)
            eval_columns = list(eval_.column_names)
            eval_ = _with_origin(eval_, f"{cfg.path} {cfg.eval_split}")
    else:
        train, train_columns = _load_local(cfg.path, cfg.on_bad_example, skipped)
        eval_, eval_columns = None, train_columns
        if cfg.eval_path:
            eval_, eval_columns = _load_local(cfg.eval_path, cfg.on_bad_example, skipped)
    fmt = detect_format(train_columns, cfg.format)
    detect_format(eval_columns, fmt)
    if eval_ is None:
        if len(train) < 2:
            raise ConfigError(
                f"data: only {len(train)} example(s); need at least 2 to hold some out for eval."
            )
        split = train.train_test_split(test_size=cfg.eval_fraction, seed=cfg.split_seed, shuffle=True)
        train, eval_ = split["train"], split["test"]
    if cfg.max_train_examples:
        train = train.select(range(min(cfg.max_train_examples, len(train))))
    if cfg.max_eval_examples:
        eval_ = eval_.select(range(min(cfg.max_eval_examples, len(eval_))))
    return RawData(train=train, eval=eval_, format=fmt, skipped=skipped)


# ---------------------------------------------------------------- formats


def detect_format(columns: list[str], configured: str) -> str:
    """The dataset format named in the config, or the first one whose columns are all present."""
    if configured != "auto":
        missing = FORMAT_COLUMNS[configured] - set(columns)
        if missing:
            raise ConfigError(
                f"data.format={configured} needs columns {sorted(FORMAT_COLUMNS[configured])}; "
                f"missing {sorted(missing)} (found {sorted(columns)})."
            )
        return configured
    for name, needed in FORMAT_COLUMNS.items():
        if needed <= set(columns):
            return name
    expected = ", ".join("/".join(sorted(c)) for c in FORMAT_COLUMNS.values())
    raise ConfigError(
        f"data: cannot tell the format from columns {sorted(columns)}; expected one of: {expected}."
    )


def _as_messages(value: Any, role: str, column: str) -> list:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, list):
        return value
    raise BadExample(
        "non_string_content", f"`{column}` must be a string or a list of messages, got {value!r:.80}"
    )


def to_messages(row: dict[str, Any], fmt: str) -> list[dict[str, str]] | str:
    """One row as chat messages (or, for plain `text`, the text itself); raises BadExample if unusable."""
    if ROW_JSON in row:
        row = json.loads(row[ROW_JSON])
    if fmt == "text":
        text = row.get("text")
        if not isinstance(text, str):
            raise BadExample("non_string_content", f"`text` must be a string, got {text!r:.80}")
        if not text.strip():
            raise BadExample("empty_text", "`text` is empty")
        return text
    if fmt == "messages":
        messages = row.get("messages") or []
        if not isinstance(messages, list):
            raise BadExample(
                "non_string_content", f"`messages` must be a list of messages, got {messages!r:.80}"
            )
    elif fmt == "prompt_completion":
        messages = _as_messages(row.get("prompt"), "user", "prompt") + _as_messages(
            row.get("completion"), "assistant", "completion"
        )
    else:
        prompt, extra = row.get("instruction"), row.get("input")
        if extra:  # an empty or missing input means the instruction alone
            if not (isinstance(prompt, str) and isinstance(extra, str)):
                raise BadExample(
                    "non_string_content",
                    f"`instruction` and `input` must be strings, got {prompt!r:.40} and {extra!r:.40}",
                )
            prompt = f"{prompt}\n\n{extra}"
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": row.get("output")}]
    if not messages:
        raise BadExample("empty_conversation", "empty conversation")
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise BadExample("non_string_content", f"message content must be a string, got {message!r:.120}")
        if message.get("role") not in ROLES:
            raise BadExample(
                "unknown_role", f"unknown role {message.get('role')!r}; use system, user or assistant"
            )
    if not any(m["role"] == "assistant" for m in messages):
        raise BadExample("no_assistant_turn", "the conversation has no assistant turn to learn from")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


# ---------------------------------------------------------------- tokenization and masks


def render(tokenizer, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )


def assistant_spans(tokenizer, messages: list[dict[str, str]], text: str) -> list[tuple[int, int]]:
    """Character spans of each assistant reply (content plus its end-of-turn token) inside `text`.

    Works for any template that renders conversations prefix-consistently (SmolLM2, Llama 3, Qwen 2.5 …),
    so it needs no `{% generation %}` markers: the reply is what the template adds between the prompt
    with a generation header and the conversation including that reply."""
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(render(tokenizer, messages[:index], add_generation_prompt=True)) if index else 0
        upto = render(tokenizer, messages[: index + 1])
        if not text.startswith(upto):
            raise ConfigError(
                "data: this chat template does not render conversations prefix-consistently, so assistant "
                "tokens cannot be located; set data.assistant_only_loss=false or model.chat_template."
            )
        end = len(upto.rstrip())  # keep the end-of-turn token, drop the newline after it
        spans.append((start, end))
    return spans


def tokenize_example(tokenizer, example: list[dict[str, str]] | str, assistant_only_loss: bool) -> dict:
    """input_ids and labels (-100 where no loss is taken) for one conversation or plain text."""
    if isinstance(example, str):
        text = example + (tokenizer.eos_token or "")
        spans = [(0, len(text))]
    else:
        text = render(tokenizer, example)
        spans = assistant_spans(tokenizer, example, text) if assistant_only_loss else [(0, len(text))]
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids = encoding["input_ids"]
    labels = [IGNORE_INDEX] * len(input_ids)
    for position, (token_start, token_end) in enumerate(encoding["offset_mapping"]):
        if any(start <= token_start < end for start, end in spans) and token_end > token_start:
            labels[position] = input_ids[position]
    return {"input_ids": input_ids, "labels": labels}


def truncates(cfg: DataConfig, split: str) -> bool:
    """Whether the data stage cuts this split at max_length. A split TRL packs with bfd_split stays whole:
    TRL splits its long examples into pieces instead of dropping their overflow."""
    packed = cfg.packing if split == "train" else cfg.eval_packing
    return not (packed and cfg.packing_strategy == "bfd_split")


def _tokenize_split(
    split: Dataset, name: str, tokenizer, cfg: DataConfig, fmt: str, skipped: Counter
) -> tuple[Dataset, list, dict]:
    """Tokenized rows, the conversations they came from, and the split's length statistics."""
    rows_out: list[dict] = []
    conversations: list = []
    lengths: list[int] = []
    answer_cut: list[tuple[str, int]] = []  # (where, length) of examples truncation leaves without answer
    truncated_targets = 0
    cut = truncates(cfg, name)
    for row in split:
        try:
            example = to_messages(row, fmt)
            try:
                tokens = tokenize_example(tokenizer, example, cfg.assistant_only_loss)
            except TemplateError as error:
                message = f"the chat template rejects this conversation ({error})"
                raise BadExample("template_error", message) from error
        except BadExample as bad:
            handle_bad_example(cfg.on_bad_example, row[ORIGIN], bad, skipped)
            continue
        length = len(tokens["input_ids"])
        lengths.append(length)
        if cut and length > cfg.max_length:
            if any(label != IGNORE_INDEX for label in tokens["labels"][cfg.max_length :]):
                truncated_targets += 1
            tokens = {key: values[: cfg.max_length] for key, values in tokens.items()}
            if all(label == IGNORE_INDEX for label in tokens["labels"]):
                answer_cut.append((row[ORIGIN], length))
                continue
        rows_out.append(tokens)
        conversations.append(example)
    if cut and lengths and min(lengths) > cfg.max_length:
        raise ConfigError(
            f"data.max_length={cfg.max_length} is shorter than every example (shortest: {min(lengths)} "
            f"tokens); raise it to at least {length_stats(lengths)['p95']}."
        )
    if answer_cut:
        if cfg.on_bad_example == "fail":
            raise ConfigError(
                f"data: {len(answer_cut)} {name} example(s) lose every answer token to truncation at "
                f"max_length={cfg.max_length} (first: {answer_cut[0][0]}); raise data.max_length to "
                f"{max(length for _, length in answer_cut)} or set data.on_bad_example=skip."
            )
        skipped["answer_truncated"] += len(answer_cut)
    if not rows_out:
        raise ConfigError(
            f"data: no usable {name} examples left (skipped: {dict(skipped) or 'none'}, "
            f"max_length={cfg.max_length}); fix the data or raise data.max_length."
        )
    stats = length_stats(lengths)
    stats["truncated_targets"] = truncated_targets
    tokenized = Dataset.from_list(rows_out)
    stats.update(waste_figures(tokenized, cfg.max_length, cfg.packing_strategy))
    return tokenized, conversations, stats


def length_stats(lengths: list[int]) -> dict[str, Any]:
    ordered = sorted(lengths)
    return {
        "examples": len(ordered),
        "tokens": sum(ordered),
        "min": ordered[0],
        "median": statistics.median(ordered),
        "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        "max": ordered[-1],
        "lengths": ordered,
    }


def waste_figures(tokenized: Dataset, max_length: int, packing_strategy: str = "bfd") -> dict[str, Any]:
    """Share of row positions holding no real token, as in the article's padding-vs-packing example:
    every example padded to max_length, versus packed into max_length rows by TRL's own `pack_dataset`
    (the rows SFTTrainer builds with this packing strategy)."""
    lengths = [len(ids) for ids in tokenized["input_ids"]]
    padded_tokens = sum(min(length, max_length) for length in lengths)
    packed = pack_dataset(
        tokenized.select_columns(["input_ids"]),
        max_length,
        packing_strategy,
        map_kwargs={"desc": "Counting packed rows for the data report"},
    )
    packed_tokens = sum(sum(row) for row in packed["seq_lengths"])
    return {
        "padded_rows": len(lengths),
        "padding_waste": 1 - padded_tokens / (len(lengths) * max_length),
        "packed_rows": len(packed),
        "packing_waste": 1 - packed_tokens / (len(packed) * max_length),
    }


# ---------------------------------------------------------------- cache


def _source_fingerprint(cfg: DataConfig) -> Any:
    if cfg.source == "builtin":
        # the generated rows themselves: a change to the generator must not be served from an old cache
        rows = BUILTIN[cfg.name](cfg.builtin_examples, seed=cfg.split_seed) if cfg.name in BUILTIN else []
        return ["builtin", cfg.name, hashlib.sha256(json.dumps(rows).encode()).hexdigest()]
    if cfg.source == "hub":
        return ["hub", cfg.path, cfg.revision, cfg.train_split, cfg.eval_split]
    digests = []
    for spec in filter(None, [cfg.path, cfg.eval_path]):
        for path in local_files(spec):
            digests.append([str(path.resolve()), hashlib.sha256(path.read_bytes()).hexdigest()])
    return ["local", digests]


def cache_key(cfg: DataConfig, tokenizer) -> str:
    """Everything that changes the tokenized output: source contents, tokenizer, template, settings."""
    vocab = hashlib.sha256(json.dumps(sorted(tokenizer.get_vocab().items())).encode()).hexdigest()
    parts = [
        CACHE_VERSION,
        _source_fingerprint(cfg),
        cfg.format,
        cfg.eval_fraction,
        cfg.split_seed,
        cfg.max_train_examples,
        cfg.max_eval_examples,
        cfg.max_length,
        cfg.assistant_only_loss,
        cfg.on_bad_example,
        cfg.packing_strategy,  # the report's packed row counts
        [truncates(cfg, "train"), truncates(cfg, "eval")],
        vocab,
        tokenizer.chat_template,
        tokenizer.eos_token,
    ]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def prepare_data(cfg: DataConfig, tokenizer, cache_dir: str | Path) -> PreparedData:
    """Data stage: load, normalise, tokenize with masks, truncate; reuse the on-disk cache when it matches."""
    path = Path(cache_dir) / "data" / f"{cfg.name}-{cache_key(cfg, tokenizer)}"
    if (path / "report.json").exists():
        log.info("Tokenized data: reusing cache %s", path)
        tokenized = load_from_disk(str(path / "dataset"))
        report = json.loads((path / "report.json").read_text())
        eval_conversations = json.loads((path / "eval_conversations.json").read_text())
        from_cache = True
    else:
        raw = load_raw(cfg)
        log.info("Tokenizing %s (%s format) into %s", cfg.name, raw.format, path)
        skipped = raw.skipped
        train, _, train_stats = _tokenize_split(raw.train, "train", tokenizer, cfg, raw.format, skipped)
        eval_, eval_conversations, eval_stats = _tokenize_split(
            raw.eval, "eval", tokenizer, cfg, raw.format, skipped
        )
        tokenized = DatasetDict(train=train, eval=eval_)
        report = {
            "format": raw.format,
            "max_length": cfg.max_length,
            "packing_strategy": cfg.packing_strategy,
            "on_bad_example": cfg.on_bad_example,
            "skipped": dict(sorted(skipped.items())),
            "train": train_stats,
            "eval": eval_stats,
        }
        with atomic_folder(path) as tmp:  # a unique temporary folder: concurrent writers leave nothing behind
            tokenized.save_to_disk(str(tmp / "dataset"))
            (tmp / "eval_conversations.json").write_text(json.dumps(eval_conversations))
            (tmp / "report.json").write_text(json.dumps(report))  # written last: marks a complete cache
        from_cache = False
    return PreparedData(
        train=tokenized["train"],
        eval=tokenized["eval"],
        eval_conversations=eval_conversations,
        report=report,
        cache_path=path,
        from_cache=from_cache,
    )


# ---------------------------------------------------------------- report


def summarize_report(report: dict[str, Any], max_length: int) -> list[str]:
    """Human-readable lines of the data report (without the per-example length lists)."""
    lines = [f"Data: format={report['format']} max_length={max_length}"]
    for split in ("train", "eval"):
        s = report[split]
        lines.append(
            f"  {split}: {s['examples']} examples, {s['tokens']} tokens, length min/median/p95/max = "
            f"{s['min']}/{s['median']:.0f}/{s['p95']}/{s['max']}"
        )
        lines.append(
            f"  {split}: padding to max_length wastes {s['padding_waste']:.1%} of {s['padded_rows']}×"
            f"{max_length} positions; {report['packing_strategy']} packing wastes {s['packing_waste']:.1%} "
            f"of {s['packed_rows']}×{max_length}"
        )
        if s["truncated_targets"]:
            lines.append(
                f"  WARNING: {s['truncated_targets']} {split} examples lose answer tokens to truncation at "
                f"max_length={max_length}; consider data.max_length={s['max']}."
            )
    if report["skipped"]:
        counts = ", ".join(f"{reason} {count}" for reason, count in report["skipped"].items())
        lines.append(
            f"  skipped {sum(report['skipped'].values())} bad examples (data.on_bad_example=skip): {counts}"
        )
    return lines


def plot_lengths(report: dict[str, Any], path: Path) -> Path:
    """Token-length histogram of both splits with the max_length cut, as a PNG (Agg, no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    max_length = report["max_length"]
    longest = max(max_length, report["train"]["max"], report["eval"]["max"])
    bins = [longest * i / 40 for i in range(41)]
    figure = Figure(figsize=(7, 4))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for split in ("train", "eval"):
        lengths = report[split]["lengths"]
        axes.hist(lengths, bins=bins, alpha=0.6, label=f"{split} ({len(lengths)} examples)")
    axes.axvline(max_length, color="black", linestyle="--", label=f"max_length={max_length}")
    axes.set_xlabel("tokens per example (chat template applied)")
    axes.set_ylabel("examples")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def log_report_to_tensorboard(writer, report: dict[str, Any]) -> None:
    """Token-length histograms (data/train_lengths, data/eval_lengths) and the report lines as text."""
    for split in ("train", "eval"):
        writer.add_histogram(f"data/{split}_lengths", np.asarray(report[split]["lengths"]), 0)
    lines = summarize_report(report, report["max_length"])
    writer.add_text("data/report", "\n".join(f"    {line}" for line in lines), 0)  # indented: monospace
