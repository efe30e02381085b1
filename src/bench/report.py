"""The bench's comparison: each variant's ratios to ours and to the bare loop, its MFU, the printed table
and the JSON file."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from src.bench.gradient_check import GRADIENT_TOLERANCE
from src.plan.flops import training_flops_per_token


def add_comparisons(results: list[dict], cfg, matmul_flops: float) -> None:
    """Add to every result its tokens/s and peak memory over ours' (the first result without an `ours`),
    its tokens/s over the bare loop's (None without `bare`), and its MFU against `matmul_flops` (FLOP/s)."""
    reference = next((r for r in results if r["variant"] == "ours"), results[0])
    bare = next((r for r in results if r["variant"] == "bare"), None)
    for r in results:
        r["tokens_per_second_vs_ours"] = r["tokens_per_second"] / reference["tokens_per_second"]
        r["tokens_per_second_vs_bare"] = r["tokens_per_second"] / bare["tokens_per_second"] if bare else None
        r["peak_memory_vs_ours"] = r["peak_memory_gb"] / reference["peak_memory_gb"]
        flops = training_flops_per_token(cfg, r["gradient_checkpointing"])
        r["mfu_vs_measured_matmul"] = r["tokens_per_second"] * flops / matmul_flops


def cpu_description() -> str:
    """The CPU model and whether it has AVX512-BF16 (the figures differ between CPU kinds)."""
    import platform

    from src.patches import cpu_has_native_bf16

    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    kind = "AVX512-BF16/AMX (bf16 in hardware)" if cpu_has_native_bf16() else "no bf16 instructions (AVX2)"
    return f"{name}, {kind}, {torch.get_num_threads()} threads"


def _optional(value: float | None, spec: str) -> str:
    return format(value, spec) if value is not None else format("-", ">" + spec.split(".")[0])


def print_table(results: list[dict], dtype: torch.dtype, matmul_flops: float) -> None:
    """The machine, the compute dtype and one row per variant, as docs/benchmarks.md quotes them."""
    print(
        f"\nCPU: {cpu_description()}"
        if not torch.cuda.is_available()
        else f"\nGPU: {torch.cuda.get_device_name()}"
    )
    print(f"compute dtype {dtype}; measured matmul throughput: {matmul_flops / 1e9:.1f} GFLOP/s")
    header = (
        f"{'variant':18} {'ckpt':>4} {'tokens/s':>9} {'× ours':>7} {'× bare':>7} {'steps/s':>8} "
        f"{'pos/token':>9} {'peak GB':>8} {'train GB':>8} {'plan GB':>8} {'plan err':>8} {'MFU':>6} "
        f"{'grad err':>9} {'grad check':>10}"
    )
    print(header)
    for r in results:
        print(
            f"{r['variant']:18} {'on' if r['gradient_checkpointing'] else 'off':>4} "
            f"{r['tokens_per_second']:9.1f} {r['tokens_per_second_vs_ours']:7.2f} "
            f"{_optional(r['tokens_per_second_vs_bare'], '7.2f')} "
            f"{r['steps_per_second']:8.3f} {r['positions_per_real_token']:9.2f} {r['peak_memory_gb']:8.2f} "
            f"{r['training_memory_gb']:8.2f} {_optional(r['planned_memory_gb'], '8.2f')} "
            f"{_optional(r['plan_error'], '8.1%')} "
            f"{r['mfu_vs_measured_matmul']:6.1%} {r['gradient_error']:9.1e} {r['gradient_check']:>10}"
        )


def write_results(out: Path, results: list[dict], dtype, matmul_flops: float, settings: list[str]) -> None:
    """The JSON file: compute dtype, CPU, matmul throughput (FLOP/s), the train overrides, the results."""
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "compute_dtype": str(dtype),
        "cpu": cpu_description(),
        "matmul_flops_per_second": matmul_flops,
        "settings": settings,
        "results": results,
    }
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


def failure_message(results: list[dict]) -> str | None:
    """The exit message when a variant failed its gradient check, else None: a fast but wrong step must not
    count, its figures are not comparable."""
    failed = [r["variant"] for r in results if r["gradient_check"] != "passed"]
    if not failed:
        return None
    return f"gradient check FAILED for {', '.join(failed)} (relative error > {GRADIENT_TOLERANCE:g})"
