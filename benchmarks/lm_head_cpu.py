"""Times the LM head + loss of one training step on CPU, forward and backward, three ways (docs/benchmarks.md):
the model's own loss over full logits, TRL 1.16's fused head (its torch fallback for devices without Triton)
on the labelled positions, and src/patches.py::CpuLogProbs on the same positions.

    OMP_NUM_THREADS=1 python benchmarks/lm_head_cpu.py [--positions 2048] [--labelled 0.3 1.0]

SmolLM2-135M's shapes (hidden 576, vocabulary 49152), bf16 autocast where the CPU has bf16 instructions,
else float32; median of 3 after one warm-up."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from src.patches import CpuLogProbs, cpu_has_native_bf16  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positions", type=int, default=2048)
    parser.add_argument("--labelled", type=float, nargs="+", default=[0.3, 1.0])
    args = parser.parse_args()
    from trl.kernels import ChunkedLogProbFunction
    from trl.trainer.utils import _CHUNKED_LOGPROB_CHUNK_SIZE

    torch.manual_seed(0)
    n, hidden, vocab = args.positions, 576, 49152
    dtype = torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    weight = torch.randn(vocab, hidden, dtype=dtype) * 0.02
    targets = torch.randint(0, vocab, (n,))
    outputs = ("log_probs", "entropy", "is_top1")  # what TRL's SFTTrainer asks for

    def full_logits(mask):
        h = torch.randn(n, hidden, dtype=dtype, requires_grad=True)
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            logits = h @ weight.t()
        labels = targets.masked_fill(~mask, -100)
        loss = torch.nn.functional.cross_entropy(logits.float(), labels, ignore_index=-100, reduction="sum")
        (loss / mask.sum()).backward()

    def fused(function):
        def run(mask):
            h = torch.randn(n, hidden, dtype=dtype, requires_grad=True)
            with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
                log_probs = function.apply(
                    h[mask], weight, None, targets[mask], 1.0, _CHUNKED_LOGPROB_CHUNK_SIZE, None, 1.0, outputs
                )[0]
            (-log_probs.sum() / mask.sum()).backward()

        return run

    ways = {
        "model's own loss, full logits": full_logits,
        "TRL fused head, labelled positions": fused(ChunkedLogProbFunction),
        "CpuLogProbs, labelled positions": fused(CpuLogProbs(ChunkedLogProbFunction)),
    }
    print(f"{n} positions, vocabulary {vocab}, {dtype}, {torch.get_num_threads()} thread(s)")
    for share in args.labelled:
        mask = torch.rand(n) < share
        for name, way in ways.items():
            way(mask)
            seconds = []
            for _ in range(3):
                began = time.perf_counter()
                way(mask)
                seconds.append(time.perf_counter() - began)
            print(f"labelled {share:.0%}  {name:38} {statistics.median(seconds):.3f} s")


if __name__ == "__main__":
    main()
