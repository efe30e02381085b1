"""The data report: padding and packing waste as TRL packs, the printed lines, histogram and TensorBoard."""

import json
import math

import pytest
from datasets import Dataset
from omegaconf import OmegaConf

from src import stages
from src.base_model import resolve_base
from src.data.cache import prepare_data
from src.data.report import eval_cost_lines, log_report_to_tensorboard, summarize_report, waste_figures
from src.tokenizer import load_tokenizer
from tests.conftest import CACHE, TINY, compose_config

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tokenizer():
    cfg = OmegaConf.to_object(compose_config(TINY))
    return load_tokenizer(cfg.model, resolve_base(cfg.model, CACHE))


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


def test_eval_cost_names_the_cap_when_an_eval_costs_more_than_the_training_between():
    report = {
        "max_length": 100,
        "train": {"examples": 1000, "tokens": 50_000, "packing_waste": 0.2},
        "eval": {"examples": 2000, "tokens": 100_000},
    }
    # packed rows hold 80 tokens; 10 steps × 4 rows × 80 tokens × 3 (forward + backward) = 9,600 < 100,000
    lines = eval_cost_lines(report, total_steps=100, eval_steps=10, rows_per_step=4, packing=True)
    assert lines == [
        "eval: 2000 examples, 100000 tokens, 10 evals per run (every 10 steps of 100)",
        "  each eval costs more than the 10 training steps between evals (~10.4×); "
        "set data.max_eval_examples=192 (or fewer evals: eval.steps) to cap it",
    ]
    # unpacked rows hold the mean example (50 tokens); eval.steps=0.5 of 100 steps: every 50, 2 evals
    cheap = {**report, "eval": {"examples": 20, "tokens": 1000}}
    assert eval_cost_lines(cheap, 100, 0.5, 4, packing=False) == [
        "eval: 20 examples, 1000 tokens, 2 evals per run (every 50 steps of 100)"
    ]


def test_bfd_split_reports_its_split_examples_and_the_continuation_tokens_it_cannot_train():
    from trl import pack_dataset

    ignored = -100
    rows = Dataset.from_dict(
        {
            "input_ids": [list(range(10)), list(range(3)), list(range(9))],
            # row 0: pieces start at 4 (labelled) and 8 (not); row 2: at 4 and 8, both labelled
            "labels": [[ignored] * 4 + [1] * 4 + [ignored, 1], [ignored, 1, 1], [ignored] * 2 + [1] * 7],
        }
    )
    figures = waste_figures(rows, max_length=4, packing_strategy="bfd_split")
    assert (figures["split_examples"], figures["split_pieces"], figures["untrained_split_tokens"]) == (
        2,
        4,
        3,
    )
    pieces = pack_dataset(rows.select_columns(["input_ids"]), 4, "bfd_split")
    assert sum(len(r) for r in pieces["input_ids"]) == 22  # TRL keeps every token, cut at multiples of 4
    assert "split_examples" not in waste_figures(rows, max_length=4, packing_strategy="bfd")
    report = {"format": "messages", "packing_strategy": "bfd_split", "skipped": {}}
    stats = {"examples": 3, "tokens": 22, "min": 3, "median": 9, "p95": 10, "max": 10, "truncated_targets": 0}
    report["train"] = report["eval"] = {**stats, **figures}
    assert (
        "  train: bfd_split cuts 2 examples longer than max_length into 4 more pieces; the first token of each "
        "is not trained (3 labelled tokens)" in summarize_report(report, 4)
    )
