"""`python -m src.bench` end to end on the tiny model (no timing assertions), and its argument parsing."""

from __future__ import annotations

import json
import statistics

import pytest

from src.bench.__main__ import parse_arguments
from src.plan.flops import training_flops_per_token
from tests.conftest import CACHE, compose_config, run_module

ARGS = [
    "model=tiny",
    "memory=bf16",
    "memory.per_device_train_batch_size=2",
    "data.max_length=128",
    "data.builtin_examples=40",
    "bench.warmup_steps=1",
    "bench.measure_steps=2",
]


def bare_loop_tokens_per_step(cfg, warmup: int, measured: int) -> float:
    """Real tokens per step the bare loop trains on: the median over its measured steps of consecutive
    packed rows, counted here from the prepared data."""
    from trl import pack_dataset

    from src.base_model import resolve_base
    from src.data.cache import prepare_data
    from src.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(cfg.model, resolve_base(cfg.model, CACHE))
    rows = pack_dataset(prepare_data(cfg.data, tokenizer, CACHE).train, seq_length=128, strategy="bfd")
    b = cfg.memory.per_device_train_batch_size
    starts = [(step * b) % max(len(rows) - b, 1) for step in range(warmup, warmup + measured)]
    return statistics.median(sum(len(rows[i]["input_ids"]) for i in range(s, s + b)) for s in starts)


def test_bench_runs_all_variants_on_the_tiny_model(tmp_path):
    out = tmp_path / "bench.json"
    result = run_module("src.bench", *ARGS, f"bench.output={out}")
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
    results = dict(zip(names, report["results"]))
    # memory=bf16 checkpoints; ours lets the planner decide (auto: a tiny model's activations fit → off), and
    # the bare loop runs with ours' decision; bare_ckpt and the plain TRL script checkpoint
    checkpointing = {name: r["gradient_checkpointing"] for name, r in results.items()}
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
    assert results["ours"]["gradient_error"] < 1e-4  # ours, fp32: fp32 precision
    # tokens per step: the bare loop's consecutive packed rows, counted from the data; the bare variants
    # train on the same rows, ours and the Trainer on the same sampled rows
    _, train_overrides = parse_arguments(ARGS)
    cfg = compose_config(train_overrides)
    bare_tokens = bare_loop_tokens_per_step(cfg, warmup=1, measured=2)
    for name in ("bare", "bare_ckpt", "bare_bf16_adapters", "bare_dropout"):
        assert results[name]["real_tokens_per_step"] == bare_tokens, name
    assert results["ours_callbacks"]["real_tokens_per_step"] == results["ours"]["real_tokens_per_step"]
    assert results["trainer"]["real_tokens_per_step"] == results["ours"]["real_tokens_per_step"]
    # every speed and ratio field is computed from the step times and tokens it comes from
    ours, bare, peak = results["ours"], results["bare"], report["matmul_flops_per_second"]
    for r in report["results"]:
        assert r["steps_measured"] == 2
        assert r["tokens_per_second"] == pytest.approx(r["real_tokens_per_step"] / r["median_step_seconds"])
        assert r["steps_per_second"] == pytest.approx(1 / r["median_step_seconds"])
        assert r["tokens_per_second_vs_ours"] == pytest.approx(
            r["tokens_per_second"] / ours["tokens_per_second"]
        )
        assert r["tokens_per_second_vs_bare"] == pytest.approx(
            r["tokens_per_second"] / bare["tokens_per_second"]
        )
        assert r["peak_memory_vs_ours"] == pytest.approx(r["peak_memory_gb"] / ours["peak_memory_gb"])
        flops = training_flops_per_token(cfg, r["gradient_checkpointing"])
        assert r["mfu_vs_measured_matmul"] == pytest.approx(r["tokens_per_second"] * flops / peak)
        assert r["positions_per_real_token"] >= 1.0
        assert 0 < r["training_memory_gb"] <= r["peak_memory_gb"]
    # the planner's estimate is compared with this project's step (it models our trainer's memory)
    used = ours["training_memory_gb"]
    assert ours["plan_error"] == pytest.approx((ours["planned_memory_gb"] - used) / used)
    assert all(r["planned_memory_gb"] is None for r in report["results"][1:])
    assert report["matmul_flops_per_second"] > 1e8
    # every variant computes in one dtype: unquantized, the model's own (tiny: float32), so the plain TRL
    # variants no longer autocast to bf16 while ours runs fp32
    assert report["compute_dtype"] == "torch.float32"
    assert report["settings"] == train_overrides and report["cpu"]
    assert "× bare" in result.stdout and "grad check" in result.stdout


def test_arguments_split_into_the_bench_settings_and_train_overrides():
    bench, train_overrides = parse_arguments(["bench.measure_steps=3", "model=tiny", "bench.variants=[bare]"])
    assert bench.measure_steps == 3 and list(bench.variants) == ["bare"] and bench.warmup_steps == 2
    assert train_overrides == [*bench.train_overrides, "model=tiny"]
    assert train_overrides[0] == "memory=qlora"  # conf/bench/default.yaml's, before the command's


def test_an_unknown_variant_is_refused_naming_the_known_ones():
    with pytest.raises(SystemExit) as refused:
        parse_arguments(["bench.variants=[ours,fast]"])
    known = (
        "['bare', 'bare_bf16_adapters', 'bare_ckpt', 'bare_dropout', 'ours', 'ours_callbacks', 'padding', "
    )
    assert str(refused.value) == f"bench.variants: unknown ['fast']; known: {known}'trainer', 'trl_script']"
