"""Where and how a run computes: on the CPU or a CUDA device, and in which dtype its matmuls run.

Decided once per run (`src/train.py`) and passed to every stage that depends on it, so the device summary,
the trainer's arguments, the planner's budget and the baseline's cache key can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from src.config import trains_on_cpu
from src.errors import ConfigError
from src.model import torch_dtype


def compute_dtype(cfg: Any) -> torch.dtype:
    """The dtype matmuls run in: bnb's compute dtype for 4-bit weights, else the weights' dtype ("auto"
    resolved for this machine by `src.model.torch_dtype`)."""
    return torch_dtype(cfg.memory.bnb_4bit_compute_dtype if cfg.memory.load_in_4bit else cfg.model.dtype)


@dataclass(frozen=True)
class Compute:
    """A run's device kind and compute dtype."""

    on_cpu: bool  # use_cpu=true, or no CUDA device is visible
    dtype: torch.dtype

    @property
    def device(self) -> str:
        """ "cpu" or "cuda", as the run summary and the baseline's cache key name it."""
        return "cpu" if self.on_cpu else "cuda"

    @property
    def precision(self) -> str:
        """The run summary's name for it: "float16 with loss scaling" on a GPU (transformers' AMP with a
        gradient scaler, for GPUs without bf16 such as the T4 and V100), else the dtype's name."""
        name = str(self.dtype).removeprefix("torch.")
        return f"{name} with loss scaling" if self.dtype == torch.float16 and not self.on_cpu else name

    @classmethod
    def of(cls, cfg: Any) -> Compute:
        """Decide it for a composed config (TrainConfig or DictConfig)."""
        return cls(on_cpu=trains_on_cpu(cfg), dtype=compute_dtype(cfg))


def check_compute(cfg: Any, compute: Compute) -> None:
    """Refuse float16 on the CPU: transformers' gradient scaler exists only for GPUs, so fp16 would train
    without loss scaling (small gradients underflow to zero), and its CPU kernels are emulated.

    Raises ConfigError naming the key that chose it."""
    if compute.on_cpu and compute.dtype == torch.float16:
        key = "memory.bnb_4bit_compute_dtype" if cfg.memory.load_in_4bit else "model.dtype"
        raise ConfigError(
            f"{key}=float16 on the CPU trains without loss scaling (the gradient scaler needs a GPU) and ran at "
            f"8 tokens/s against 161 in bfloat16 (SmolLM2-135M); use {key}=bfloat16, float32 or auto."
        )
