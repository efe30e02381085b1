"""What this machine offers a training run: the memory budget the planner's decisions are measured against."""

from __future__ import annotations

from src.config import trains_on_cpu
from src.plan.estimate import GIB


def memory_budget(cfg) -> tuple[float, str]:
    """Bytes this process can use for training: 90% of the GPU's memory, or 80% of the RAM now available."""
    import torch

    if not trains_on_cpu(cfg):
        device = torch.cuda.current_device()
        total = torch.cuda.get_device_properties(device).total_memory
        return 0.9 * total, f"90% of {torch.cuda.get_device_name(device)}'s {total / GIB:.1f} GiB"
    import psutil

    available = psutil.virtual_memory().available
    return 0.8 * available, f"80% of the {available / GIB:.1f} GiB of RAM available"
