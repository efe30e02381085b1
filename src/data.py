"""Data stage: load (built-in, Hub, local files), normalise every common SFT format to chat messages,
render through the model's own chat template, label assistant tokens only, truncate, cache, report."""

from __future__ import annotations

import hashlib
import json
import logging
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, load_dataset, load_from_disk

from src.builtin_data import BUILTIN
from src.config import ConfigError, DataConfig, local_files

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
CACHE_VERSION = 1  # bump when tokenization logic changes, so old caches are not reused

FORMAT_COLUMNS = {
    "messages": {"messages"},
    "prompt_completion": {"prompt", "completion"},
    "alpaca": {"instruction", "output"},
    "text": {"text"},
}


@dataclass
class PreparedData:
    """Tokenized train/eval sets plus the raw eval conversations used for generation and the task metric."""

    train: Dataset
    eval: Dataset
    eval_conversations: list[list[dict[str, str]]]
    report: dict[str, Any]
    cache_path: Path
    from_cache: bool


# ---------------------------------------------------------------- loading


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ConfigError(f"{path}:{number}: malformed JSON line ({error.msg}).") from None
            if not isinstance(row, dict):
                raise ConfigError(
                    f"{path}:{number}: each line must be a JSON object, got {type(row).__name__}."
                )
            rows.append(row)
    return rows


def _load_local(spec: str) -> Dataset:
    rows: list[dict] = []
    tables = []
    for path in local_files(spec):
        suffix = path.suffix.lower()
        if suffix == ".jsonl":
            rows.extend(_read_jsonl(path))
        elif suffix in {".json", ".parquet", ".csv"}:
            builder = {".json": "json", ".parquet": "parquet", ".csv": "csv"}[suffix]
            tables.append(load_dataset(builder, data_files=str(path), split="train"))
        else:
            raise ConfigError(
                f"data.path: {path} has an unsupported extension; use .jsonl, .json, .parquet or .csv."
            )
    if rows:
        tables.append(Dataset.from_list(rows))
    if not tables:
        raise ConfigError(f"data.path: {spec} holds no examples.")
    if len(tables) == 1:
        return tables[0]
    from datasets import concatenate_datasets

    return concatenate_datasets(tables)


def load_raw(cfg: DataConfig) -> DatasetDict:
    """Load the train and eval splits as raw rows (no tokenization yet)."""
    if cfg.source == "builtin":
        if cfg.name not in BUILTIN:
            raise ConfigError(
                f"data.name={cfg.name!r} is not a built-in dataset; choose one of {sorted(BUILTIN)}."
            )
        train = Dataset.from_list(BUILTIN[cfg.name](cfg.builtin_examples, seed=cfg.split_seed))
        eval_ = None
    elif cfg.source == "hub":
        train = load_dataset(cfg.path, split=cfg.train_split)
        eval_ = load_dataset(cfg.path, split=cfg.eval_split) if cfg.eval_split else None
    else:
        train = _load_local(cfg.path)
        eval_ = _load_local(cfg.eval_path) if cfg.eval_path else None
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
    return DatasetDict(train=train, eval=eval_)


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


def _as_messages(value: Any, role: str) -> list[dict[str, str]]:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    return list(value)


def to_messages(row: dict[str, Any], fmt: str) -> list[dict[str, str]] | str:
    """One row as chat messages (or, for plain `text`, the text itself)."""
    if fmt == "messages":
        messages = row["messages"]
    elif fmt == "prompt_completion":
        messages = _as_messages(row["prompt"], "user") + _as_messages(row["completion"], "assistant")
    elif fmt == "alpaca":
        prompt = row["instruction"] if not row.get("input") else f"{row['instruction']}\n\n{row['input']}"
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": row["output"]}]
    else:
        text = row["text"]
        if not isinstance(text, str) or not text:
            raise ConfigError("data: a `text` row is empty or not a string.")
        return text
    if not messages:
        raise ConfigError("data: an example has an empty conversation.")
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise ConfigError(f"data: message content must be a string, got {message!r:.120}.")
        if message.get("role") not in {"system", "user", "assistant"}:
            raise ConfigError(f"data: unknown role {message.get('role')!r}; use system, user or assistant.")
    if not any(m["role"] == "assistant" for m in messages):
        raise ConfigError("data: a conversation has no assistant turn to learn from.")
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


def _tokenize_split(split: Dataset, tokenizer, cfg: DataConfig, fmt: str) -> tuple[Dataset, dict]:
    rows_out: list[dict] = []
    lengths: list[int] = []
    truncated_targets = 0
    for row in split:
        tokens = tokenize_example(tokenizer, to_messages(row, fmt), cfg.assistant_only_loss)
        length = len(tokens["input_ids"])
        lengths.append(length)
        if length > cfg.max_length:
            kept_labels = tokens["labels"][: cfg.max_length]
            if any(label != IGNORE_INDEX for label in tokens["labels"][cfg.max_length :]):
                truncated_targets += 1
            tokens = {"input_ids": tokens["input_ids"][: cfg.max_length], "labels": kept_labels}
            if all(label == IGNORE_INDEX for label in kept_labels):
                continue  # the whole answer was cut off: nothing left to learn from
        rows_out.append(tokens)
    stats = length_stats(lengths)
    stats["truncated_targets"] = truncated_targets
    stats["dropped_fully_truncated"] = len(lengths) - len(rows_out)
    return Dataset.from_list(rows_out), stats


def length_stats(lengths: list[int]) -> dict[str, Any]:
    ordered = sorted(lengths)
    if not ordered:
        return {"examples": 0}
    return {
        "examples": len(ordered),
        "tokens": sum(ordered),
        "min": ordered[0],
        "median": statistics.median(ordered),
        "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        "max": ordered[-1],
        "lengths": ordered,
    }


# ---------------------------------------------------------------- cache


def _source_fingerprint(cfg: DataConfig) -> Any:
    if cfg.source == "builtin":
        return ["builtin", cfg.name, cfg.builtin_examples]
    if cfg.source == "hub":
        return ["hub", cfg.path, cfg.train_split, cfg.eval_split]
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
        vocab,
        tokenizer.chat_template,
        tokenizer.eos_token,
    ]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def prepare_data(cfg: DataConfig, tokenizer, cache_dir: str | Path) -> PreparedData:
    """Data stage: load, normalise, tokenize with masks, truncate; reuse the on-disk cache when it matches."""
    raw = load_raw(cfg)
    fmt = detect_format(raw["train"].column_names, cfg.format)
    detect_format(raw["eval"].column_names, fmt)
    eval_conversations = [to_messages(row, fmt) for row in raw["eval"]]
    path = Path(cache_dir) / "data" / f"{cfg.name}-{cache_key(cfg, tokenizer)}"
    if (path / "report.json").exists():
        log.info("Tokenized data: reusing cache %s", path)
        tokenized = load_from_disk(str(path / "dataset"))
        report = json.loads((path / "report.json").read_text())
        from_cache = True
    else:
        log.info("Tokenizing %s (%s format) into %s", cfg.name, fmt, path)
        train, train_stats = _tokenize_split(raw["train"], tokenizer, cfg, fmt)
        eval_, eval_stats = _tokenize_split(raw["eval"], tokenizer, cfg, fmt)
        if train_stats.get("examples", 0) and train_stats["min"] > cfg.max_length:
            raise ConfigError(
                f"data.max_length={cfg.max_length} is shorter than every example (shortest: "
                f"{train_stats['min']} tokens); raise it to at least {train_stats['p95']}."
            )
        tokenized = DatasetDict(train=train, eval=eval_)
        report = {"format": fmt, "max_length": cfg.max_length, "train": train_stats, "eval": eval_stats}
        tmp = path.with_name(path.name + ".tmp")
        tokenized.save_to_disk(str(tmp / "dataset"))
        (tmp / "report.json").write_text(json.dumps(report))
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            tmp.rename(path)
        from_cache = False
    if len(tokenized["train"]) == 0 or len(tokenized["eval"]) == 0:
        raise ConfigError(f"data: no usable examples left after truncation to max_length={cfg.max_length}.")
    return PreparedData(
        train=tokenized["train"],
        eval=tokenized["eval"],
        eval_conversations=eval_conversations,
        report=report,
        cache_path=path,
        from_cache=from_cache,
    )


def summarize_report(report: dict[str, Any], max_length: int) -> list[str]:
    """Human-readable lines of the data report (without the per-example length lists)."""
    lines = [f"Data: format={report['format']} max_length={max_length}"]
    for split in ("train", "eval"):
        s = report[split]
        lines.append(
            f"  {split}: {s['examples']} examples, {s['tokens']} tokens, length min/median/p95/max = "
            f"{s['min']}/{s['median']:.0f}/{s['p95']}/{s['max']}"
        )
        if s["truncated_targets"]:
            lines.append(
                f"  WARNING: {s['truncated_targets']} {split} examples lose answer tokens to truncation at "
                f"max_length={max_length}; consider data.max_length={s['max']}."
            )
    return lines
