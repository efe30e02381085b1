"""The benchmark command keeps working (on the tiny model; no timing assertions)."""

from __future__ import annotations

import json

from tests.conftest import run_module


def test_bench_runs_all_variants_on_the_tiny_model(tmp_path):
    out = tmp_path / "bench.json"
    args = [
        "model=tiny",
        "memory=bf16",
        "memory.per_device_train_batch_size=2",
        "data.max_length=128",
        "data.builtin_examples=40",
        "bench.warmup_steps=1",
        "bench.measure_steps=2",
        f"bench.output={out}",
    ]
    result = run_module("src.bench", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    names = [r["variant"] for r in report["results"]]
    assert names == [
        "ours",
        "ours_callbacks",
        "trainer",
        "trl_script",
        "padding",
        "bare",
        "bare_ckpt",
        "bare_bf16_adapters",
        "bare_dropout",
    ]
    # memory=bf16 checkpoints; ours lets the planner decide (auto: a tiny model's activations fit → off), and
    # the bare loop runs with ours' decision; bare_ckpt and the plain TRL script checkpoint
    checkpointing = dict(zip(names, (r["gradient_checkpointing"] for r in report["results"])))
    assert checkpointing == {
        "ours": False,
        "ours_callbacks": False,
        "trainer": False,
        "trl_script": True,
        "padding": True,
        "bare": False,
        "bare_ckpt": True,
        "bare_bf16_adapters": False,
        "bare_dropout": False,
    }
    # every variant's first step passed its gradient check before it was timed (a dropped gradient is ~1.0)
    for r in report["results"]:
        assert r["gradient_check"] == "passed" and 0 <= r["gradient_error"] < 5e-2, r
    assert report["results"][0]["gradient_error"] < 1e-4  # ours, fp32: fp32 precision
    assert report["cpu"] and report["results"][5]["tokens_per_second_vs_bare"] == 1.0
    ours = report["results"][0]
    assert ours["tokens_per_second_vs_ours"] == 1.0 and ours["steps_measured"] == 2
    for r in report["results"]:
        assert r["tokens_per_second"] > 0 and r["peak_memory_gb"] > 0 and r["mfu_vs_measured_matmul"] > 0
        assert r["positions_per_real_token"] >= 1.0
        assert r["training_memory_gb"] <= r["peak_memory_gb"]
    # the planner's estimate is compared with this project's step (it models our trainer's memory)
    assert ours["planned_memory_gb"] > 0 and ours["plan_error"] is not None
    assert all(r["planned_memory_gb"] is None for r in report["results"][1:])
    assert report["matmul_flops_per_second"] > 1e8
    # every variant computes in one dtype: unquantized, the model's own (tiny: float32), so the plain TRL
    # variants no longer autocast to bf16 while ours runs fp32
    assert report["compute_dtype"] == "torch.float32"
    assert "× bare" in result.stdout and "grad check" in result.stdout
