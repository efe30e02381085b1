"""Loading: read the train and eval splits as raw rows from local files (jsonl, json, csv, parquet), the Hub
or a built-in generator, with where each row came from, and apply data.on_bad_example to rows that cannot
be read. Nothing is tokenized here."""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, Features, Value, load_dataset, load_from_disk
from datasets.arrow_writer import ArrowWriter

from src.builtin_data import BUILTIN
from src.config import ConfigError, DataConfig
from src.data.formats import FORMAT_COLUMNS, ROW_JSON, BadExample, detect_format
from src.data_files import local_files

# Extra column every raw split carries: where each row came from ("file.jsonl:12", "… row 7"); local files
# also carry the row itself as JSON (ROW_JSON, see src/data/formats.py).
ORIGIN = "_origin"


@dataclass
class RawData:
    """Untokenized train/eval rows, the detected format and the bad rows already skipped while reading."""

    train: Dataset
    eval: Dataset
    format: str
    skipped: Counter


def handle_bad_example(on_bad_example: str, where: str, bad: BadExample, skipped: Counter) -> None:
    """Fail with the example's location (data.on_bad_example=fail) or count it by reason (skip)."""
    if on_bad_example == "fail":
        raise ConfigError(
            f"{where}: {bad}; fix the example or set data.on_bad_example=skip to skip and count such examples."
        ) from None
    skipped[bad.reason] += 1


def _read_jsonl(path: Path, on_bad_example: str, skipped: Counter) -> Iterator[tuple[str, Any, str]]:
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
            yield f"{path}:{number}", row, line.strip()  # the line is the row's JSON already


def _read_json(path: Path, on_bad_example: str, skipped: Counter) -> Iterator[tuple[str, Any, str | None]]:
    """One JSON document (an array of rows, or an object holding one list of rows, pretty-printed or not),
    or JSON Lines saved with a .json name (as `Dataset.to_json` writes them), streamed line by line."""
    with path.open(encoding="utf-8-sig") as handle:
        head = handle.read(1 << 16).lstrip()
    if not head.startswith("[") and _first_line_parses(head) and _lines_with_text(path) > 1:
        yield from _read_jsonl(path, on_bad_example, skipped)
    else:
        yield from _document_rows(path, path.read_text(encoding="utf-8-sig"), on_bad_example, skipped)


def _lines_with_text(path: Path, enough: int = 2) -> int:
    """How many non-empty lines the file has, counting up to `enough`."""
    count = 0
    with path.open(encoding="utf-8-sig") as handle:
        for line in handle:
            count += bool(line.strip())
            if count >= enough:
                break
    return count


def _document_rows(
    path: Path, text: str, on_bad_example: str, skipped: Counter
) -> Iterator[tuple[str, Any, str | None]]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        if text.lstrip().startswith("[") or not _first_line_parses(text):
            raise ConfigError(f"{path}: malformed JSON ({error.msg} at line {error.lineno}).") from None
        yield from _read_jsonl(path, on_bad_example, skipped)
        return
    if isinstance(document, dict) and not _looks_like_a_row(document):
        lists = [key for key, value in document.items() if isinstance(value, list)]
        if len(lists) != 1:
            raise ConfigError(
                f"{path}: a JSON object must hold exactly one list of rows (found lists under {lists or 'no key'})."
            )
        for index, row in enumerate(document[lists[0]]):
            yield f"{path} {lists[0]}[{index}]", row, None
        return
    rows = document if isinstance(document, list) else [document]
    for index, row in enumerate(rows):
        yield f"{path} row {index}", row, None


def _first_line_parses(text: str) -> bool:
    try:
        json.loads(text.lstrip().splitlines()[0])
    except (json.JSONDecodeError, IndexError):
        return False
    return True


def _looks_like_a_row(document: dict) -> bool:
    """A single example (one JSON Lines row) rather than a container of rows: it has a format's columns."""
    return any(columns <= set(document) for columns in FORMAT_COLUMNS.values())


def _read_csv(path: Path) -> Iterator[tuple[str, Any, None]]:
    """Every cell as text (no type guessing turns an answer "4" into a number); empty cells are missing."""
    with path.open(encoding="utf-8-sig", newline="") as handle:  # -sig: Excel's UTF-8 starts with a BOM
        reader = csv.DictReader(handle)
        start = reader.line_num + 1
        for row in reader:
            row.pop(None, None)  # cells beyond the header's columns
            yield f"{path}:{start}", {key: value or None for key, value in row.items()}, None
            start = reader.line_num + 1


def _rows_of(table: Dataset, label: str) -> Iterator[tuple[str, Any, None]]:
    """A table's rows in batches of 1,000, so only one batch is ever held as Python objects."""
    index = 0
    for batch in table.iter(batch_size=1000):
        columns = list(batch)
        for values in zip(*(batch[column] for column in columns)):
            yield f"{label} row {index}", dict(zip(columns, values)), None
            index += 1


def _read_parquet(path: Path) -> Iterator[tuple[str, Any, None]]:
    import pyarrow.parquet as pq

    index = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1000):
        for row in batch.to_pylist():
            yield f"{path} row {index}", row, None
            index += 1


def _read_saved(path: Path, split: str) -> Iterator[tuple[str, Any, None]]:
    """Rows of a save_to_disk folder: a Dataset, or one split of a DatasetDict."""
    saved = load_from_disk(str(path))
    label = str(path)
    if isinstance(saved, DatasetDict):
        if split not in saved:
            raise ConfigError(
                f"data.path: {path} holds the splits {sorted(saved)}, not '{split}'; set data.train_split "
                "(or data.eval_split) to one of them."
            )
        saved, label = saved[split], f"{path}[{split}]"
    yield from _rows_of(saved, label)


def saved_eval_split(cfg: DataConfig) -> str | None:
    """The held-out split of a save_to_disk DatasetDict given alone as data.path: data.eval_split, else its
    `test` or `validation` split; None when there is none (eval_fraction is held out instead)."""
    paths = local_files(cfg.path)
    if cfg.eval_path or len(paths) != 1 or not (paths[0] / "dataset_dict.json").is_file():
        return None
    splits = json.loads((paths[0] / "dataset_dict.json").read_text()).get("splits", [])
    if cfg.eval_split:
        return cfg.eval_split
    return next((name for name in ("test", "validation") if name in splits), None)


def _read_file(
    path: Path, on_bad_example: str, skipped: Counter, split: str
) -> Iterator[tuple[str, Any, str | None]]:
    """(origin, row, its JSON text if the file holds it already) for each row of one local file (or
    save_to_disk folder), read as it is consumed; an undecodable file is refused in one sentence."""
    suffix = path.suffix.lower()
    try:
        if path.is_dir():
            yield from _read_saved(path, split)
        elif suffix == ".jsonl":
            yield from _read_jsonl(path, on_bad_example, skipped)
        elif suffix == ".json":
            yield from _read_json(path, on_bad_example, skipped)
        elif suffix == ".csv":
            yield from _read_csv(path)
        elif suffix == ".parquet":
            yield from _read_parquet(path)
        else:
            raise ConfigError(
                f"data.path: {path} has an unsupported extension; use .jsonl, .json, .parquet or .csv."
            )
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


RAW_FEATURES = Features({ORIGIN: Value("string"), ROW_JSON: Value("string")})


def _load_local(
    spec: str, on_bad_example: str, skipped: Counter, split: str, arrow_file: Path
) -> tuple[Dataset, list[str]]:
    """All files of a comma list/glob as one split, written row by row to `arrow_file` (each row once, as
    its JSON text, with its origin) and memory-mapped from there, plus the union of their columns."""
    columns: dict[str, None] = {}
    arrow_file.parent.mkdir(parents=True, exist_ok=True)
    writer = ArrowWriter(features=RAW_FEATURES, path=str(arrow_file), writer_batch_size=1000)
    try:
        for path in local_files(spec):
            for where, row, text in _read_file(path, on_bad_example, skipped, split):
                if not isinstance(row, dict):
                    bad = BadExample(
                        "malformed_json", f"each example must be a JSON object, got {type(row).__name__}"
                    )
                    handle_bad_example(on_bad_example, where, bad, skipped)
                    continue
                columns.update(dict.fromkeys(row))
                writer.write({ORIGIN: where, ROW_JSON: text or json.dumps(row, default=str)})
        rows, _ = writer.finalize()
    finally:
        writer.close()
    if not rows:
        raise ConfigError(f"data.path: {spec} holds no examples.")
    return Dataset.from_file(str(arrow_file)), list(columns)


def _with_origin(split: Dataset, label: str) -> Dataset:
    return split.add_column(ORIGIN, [f"{label} row {index}" for index in range(len(split))])


def load_raw(cfg: DataConfig, work_dir: Path) -> RawData:
    """Load the train and eval splits as raw rows (no tokenization yet) and detect their format; local
    files become Arrow files in `work_dir`, read from disk."""
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
        train, train_columns = _load_local(
            cfg.path, cfg.on_bad_example, skipped, cfg.train_split, work_dir / "raw-train.arrow"
        )
        eval_, eval_columns = None, train_columns
        held_out = saved_eval_split(cfg)
        if cfg.eval_path or held_out:
            eval_spec, eval_split = (
                (cfg.eval_path, cfg.eval_split or "test") if cfg.eval_path else (cfg.path, held_out)
            )
            eval_, eval_columns = _load_local(
                eval_spec, cfg.on_bad_example, skipped, eval_split, work_dir / "raw-eval.arrow"
            )
    fmt = detect_format(train_columns, cfg.format)
    detect_format(eval_columns, fmt)
    if eval_ is None:
        if len(train) < 2:
            raise ConfigError(
                f"data: only {len(train)} example(s); need at least 2 to hold some out for eval."
            )
        split = train.train_test_split(
            test_size=cfg.eval_fraction,
            seed=cfg.split_seed,
            shuffle=True,
            train_indices_cache_file_name=str(work_dir / "split-train.indices"),
            test_indices_cache_file_name=str(work_dir / "split-eval.indices"),
        )
        train, eval_ = split["train"], split["test"]
    if cfg.max_train_examples:
        train = train.select(range(min(cfg.max_train_examples, len(train))))
    if cfg.max_eval_examples:
        eval_ = eval_.select(range(min(cfg.max_eval_examples, len(eval_))))
    return RawData(train=train, eval=eval_, format=fmt, skipped=skipped)
