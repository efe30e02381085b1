"""What this machine offers a training run: the memory budget the planner's decisions are measured against."""

from __future__ import annotations

from src.plan.estimate import GIB


def memory_budget(on_cpu: bool) -> tuple[float, str]:
    """(Bytes this process can use for training, where they are): 90% of the GPU's memory, or on the CPU 80%
    of the RAM now available."""
    import torch

    if not on_cpu:
        device = torch.cuda.current_device()
        total = torch.cuda.get_device_properties(device).total_memory
        return 0.9 * total, f"90% of {torch.cuda.get_device_name(device)}'s {total / GIB:.1f} GiB"
    import psutil

    available = psutil.virtual_memory().available
    return 0.8 * available, f"80% of the {available / GIB:.1f} GiB of RAM available"
