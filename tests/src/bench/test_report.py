"""src.bench.report: ratios to ours and to the bare loop, MFU, the table and the exit message."""

from __future__ import annotations

import json

import pytest
import torch

from src.bench.report import add_comparisons, failure_message, print_table, write_results
from src.plan.flops import training_flops_per_token
from tests.conftest import TINY, compose_config


def result(name: str, tokens_per_second: float, peak_gb: float, checkpointing: bool = False) -> dict:
    return {
        "variant": name,
        "tokens_per_second": tokens_per_second,
        "steps_per_second": 0.5,
        "positions_per_real_token": 1.0,
        "peak_memory_gb": peak_gb,
        "training_memory_gb": peak_gb / 2,
        "planned_memory_gb": None,
        "plan_error": None,
        "gradient_checkpointing": checkpointing,
        "gradient_error": 0.0,
        "gradient_check": "passed",
    }


def test_ratios_are_to_ours_and_the_bare_loop_and_mfu_to_the_matmul_throughput():
    cfg = compose_config(TINY)
    results = [result("trl_script", 50.0, 3.0, True), result("ours", 200.0, 2.0), result("bare", 100.0, 4.0)]
    add_comparisons(results, cfg, matmul_flops=1e9)
    assert [r["tokens_per_second_vs_ours"] for r in results] == [0.25, 1.0, 0.5]
    assert [r["tokens_per_second_vs_bare"] for r in results] == [0.5, 2.0, 1.0]
    assert [r["peak_memory_vs_ours"] for r in results] == [1.5, 1.0, 2.0]
    # the TRL script recomputes activations: more FLOPs per token
    assert results[0]["mfu_vs_measured_matmul"] == pytest.approx(50 * 13_287_424 / 1e9)
    assert results[1]["mfu_vs_measured_matmul"] == pytest.approx(
        200 * training_flops_per_token(cfg, False) / 1e9
    )


def test_without_ours_and_bare_the_first_variant_is_the_reference():
    results = [result("padding", 40.0, 2.0), result("trl_script", 80.0, 1.0)]
    add_comparisons(results, compose_config(TINY), matmul_flops=1e9)
    assert [r["tokens_per_second_vs_ours"] for r in results] == [1.0, 2.0]
    assert [r["tokens_per_second_vs_bare"] for r in results] == [None, None]


def test_table_json_and_the_failure_message(tmp_path, capsys):
    results = [result("ours", 200.0, 2.0), result("bare_dropout", 100.0, 4.0)]
    results[1].update(gradient_error=1.0, gradient_check="FAILED")
    add_comparisons(results, compose_config(TINY), matmul_flops=1e9)
    print_table(results, torch.float32, 2.5e9)
    write_results(tmp_path / "out" / "results.json", results, torch.float32, 2.5e9, ["model=tiny"])
    printed = capsys.readouterr().out
    assert "compute dtype torch.float32; measured matmul throughput: 2.5 GFLOP/s" in printed
    assert "bare_dropout        off     100.0    0.50       -    0.500" in printed
    written = json.loads((tmp_path / "out" / "results.json").read_text())
    assert written["settings"] == ["model=tiny"] and written["results"] == results
    assert failure_message(results) == "gradient check FAILED for bare_dropout (relative error > 0.05)"
    assert failure_message(results[:1]) is None
