"""The data report: token-length statistics per split, how much of max_length padding or packing would
waste, and the three views of it: printed lines, a length histogram PNG and TensorBoard."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
from datasets import Dataset


def length_stats(lengths: list[int] | np.ndarray) -> dict[str, Any]:
    """Count, total and min/median/p95/max of per-example token lengths, plus the sorted lengths."""
    ordered = np.sort(np.asarray(lengths, dtype=np.int64)).tolist()
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
    """Share of row positions holding no real token, as in the usual padding-vs-packing comparison:
    every example padded to max_length, versus packed into max_length rows by TRL's own `pack_dataset`
    (the rows SFTTrainer builds with this packing strategy). Read in Arrow batches: no Python list of every
    row's tokens is built."""
    from trl import pack_dataset  # imported here: `python -m src.prepare` on a cache hit never needs TRL

    lengths = _list_lengths(tokenized, "input_ids")
    padded_tokens = int(np.minimum(lengths, max_length).sum())
    packed = pack_dataset(
        tokenized.select_columns(["input_ids"]),
        max_length,
        packing_strategy,
        map_kwargs={"desc": "Counting packed rows for the data report"},
    )
    packed_tokens = int(_list_lengths(packed, "input_ids").sum())
    return {
        "padded_rows": len(lengths),
        "padding_waste": 1 - padded_tokens / (len(lengths) * max_length),
        "packed_rows": len(packed),
        "packing_waste": 1 - packed_tokens / (len(packed) * max_length),
        **(split_figures(tokenized, lengths, max_length) if packing_strategy == "bfd_split" else {}),
    }


def split_figures(tokenized: Dataset, lengths: np.ndarray, max_length: int) -> dict[str, int]:
    """What bfd_split does to examples longer than max_length: TRL 1.16 cuts them into max_length pieces
    (`_pack_bfd`, on_seq_length_overflow="split"), and the first token of each continuation piece is
    predicted from nothing, so its label is not trained. Returns the split examples, their continuation
    pieces and the labelled tokens that lose their training that way. Reads the long rows' labels only."""
    from src.data.tokenization import IGNORE_INDEX  # here: that module imports this one

    long_rows = np.flatnonzero(lengths > max_length)
    pieces = int((np.ceil(lengths[long_rows] / max_length) - 1).sum())
    untrained = 0 if "labels" in tokenized.column_names else pieces  # no labels: every token is trained
    for start in range(0, len(long_rows) if "labels" in tokenized.column_names else 0, 1_000):
        for labels in tokenized.select(long_rows[start : start + 1_000])["labels"]:
            untrained += sum(label != IGNORE_INDEX for label in labels[max_length::max_length])
    return {
        "split_examples": len(long_rows),
        "split_pieces": pieces,
        "untrained_split_tokens": untrained,
    }


def _list_lengths(dataset: Dataset, column: str) -> np.ndarray:
    """The length of each row's list in `column`, read 10,000 rows at a time from Arrow."""
    batches = dataset.select_columns([column]).with_format("arrow").iter(batch_size=10_000)
    parts = [pc.list_value_length(batch[column]).to_numpy(zero_copy_only=False) for batch in batches]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


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
        if s.get("split_examples"):
            lines.append(
                f"  {split}: bfd_split cuts {s['split_examples']} examples longer than max_length into "
                f"{s['split_pieces']} more pieces; the first token of each is not trained "
                f"({s['untrained_split_tokens']} labelled tokens)"
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


def eval_cost_lines(
    report: dict[str, Any], total_steps: int, eval_steps: float, rows_per_step: int, packing: bool
) -> list[str]:
    """The eval set's size and how often it runs, plus one hint naming data.max_eval_examples when one eval
    costs more than the training between two evals. Costs in forward-token equivalents: a training token
    costs about 3 (forward and backward), an eval token 1; a training row holds max_length tokens minus the
    packing waste when packed, else the mean example."""
    every = max(math.ceil(eval_steps * total_steps), 1) if eval_steps < 1 else int(eval_steps)
    evals = total_steps // every
    train, eval_ = report["train"], report["eval"]
    per_row = (
        report["max_length"] * (1 - train["packing_waste"])
        if packing
        else train["tokens"] / train["examples"]
    )
    between = 3 * every * rows_per_step * per_row
    lines = [
        f"eval: {eval_['examples']} examples, {eval_['tokens']} tokens, {evals} evals per run "
        f"(every {every} steps of {total_steps})"
    ]
    if evals and eval_["tokens"] > between:
        cap = max(int(eval_["examples"] * between / eval_["tokens"]), 1)
        lines.append(
            f"  each eval costs more than the {every} training steps between evals (~{eval_['tokens'] / between:.1f}×); "
            f"set data.max_eval_examples={cap} (or fewer evals: eval.steps) to cap it"
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
