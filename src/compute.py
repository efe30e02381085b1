"""Where and how a run computes: on the CPU or a CUDA device, and in which dtype its matmuls run.

Decided once per run (`src/train.py`) and passed to every stage that depends on it, so the device summary,
the trainer's arguments, the planner's budget and the baseline's cache key can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from src.config import trains_on_cpu
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

    @classmethod
    def of(cls, cfg: Any) -> Compute:
        """Decide it for a composed config (TrainConfig or DictConfig)."""
        return cls(on_cpu=trains_on_cpu(cfg), dtype=compute_dtype(cfg))
