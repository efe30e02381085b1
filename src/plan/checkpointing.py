"""memory.gradient_checkpointing=auto, decided at run time: recompute activations only when they would not fit."""

from __future__ import annotations

from typing import TYPE_CHECKING

from src.plan.budget import memory_budget
from src.plan.estimate import GIB, plan

if TYPE_CHECKING:
    from src.compute import Compute


def resolve_checkpointing(
    cfg, budget: tuple[float, str] | None = None, *, compute: Compute | None = None
) -> tuple[bool, str]:
    """memory.gradient_checkpointing=auto → on only if the planned peak without it exceeds the budget: this
    run's device (`compute`) or, when given, `budget` (bytes, where) planned as on a GPU. Recomputing
    activations costs ~30% more compute and saves nothing when they fit anyway."""
    if cfg.memory.gradient_checkpointing != "auto":
        return bool(cfg.memory.gradient_checkpointing), "as configured"
    if not cfg.model.architecture:
        return True, f"auto: on, since model {cfg.model.name} has no architecture in conf/model to plan from"
    on_cpu = False  # a given budget is a GPU's
    if budget is None:
        from src.compute import Compute

        on_cpu = (compute or Compute.of(cfg)).on_cpu
    limit, where = budget or memory_budget(on_cpu)
    p = plan(cfg, on_cpu=on_cpu)
    need = p["peak_without_checkpointing"]
    if need <= limit:
        return False, f"auto: off, the planned peak without it ({need / GIB:.2f} GiB) fits {where}"
    return True, (
        f"auto: on, the planned peak without it ({need / GIB:.2f} GiB) exceeds {where} "
        f"(with it: {p['peak_with_checkpointing'] / GIB:.2f} GiB)"
    )
