"""Data-parallel runs under `accelerate launch -m src.train …` or `torchrun -m src.train …`.

Every process composes the same config, but Hydra names its run folder after the time each one started, so
they would write to N folders. Here the main process decides (claims the folder, finds the checkpoint to
resume) and the others adopt its answer; only the main process writes files. accelerate does the process
group (gloo on CPU, NCCL on GPUs, DeepSpeed's when its launcher asked for it), the same one the Trainer uses.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from src.config import ConfigError

log = logging.getLogger(__name__)
T = TypeVar("T")


def world_size() -> int:
    """Number of data-parallel processes (N_gpu in effective batch = b_micro × G × N_gpu)."""
    return int(os.environ.get("WORLD_SIZE", 1))


def rank() -> int:
    return int(os.environ.get("RANK", 0))


def is_main() -> bool:
    return rank() == 0


def launcher_argv(argv: list[str]) -> list[str]:
    """Command-line overrides for this process, before Hydra reads them.

    Processes other than the main one keep Hydra's per-run files (.hydra/, train.log) out of the run folder
    and log warnings only (to stdout), so the folder holds one copy of each file and the console one copy of
    each line. A sweep (-m) under a multi-process launcher is refused: each process would run the sweeper."""
    if world_size() <= 1:
        return argv
    if any(a in ("-m", "--multirun") for a in argv[1:]):
        sys.exit(
            "Config error: a sweep (-m) cannot run under accelerate launch/torchrun: every process would run "
            "its own sweeper. Start one sweep worker per GPU instead (see README, 'Scaling out')."
        )
    if is_main():
        return argv
    return [
        *argv,
        "hydra.output_subdir=null",
        "hydra/job_logging=stdout",
        "hydra.job_logging.root.level=WARNING",
    ]


def init(cpu: bool) -> None:
    """Start the process group now (accelerate's choice of backend, reused later by the Trainer)."""
    if world_size() > 1:
        from accelerate import PartialState

        PartialState(cpu=cpu)


def main_decides(decide: Callable[[], T]) -> T:
    """Run `decide` on the main process only and give every process its result; if it raised a
    ConfigError, every process raises the same one (nobody waits forever for a main process that quit)."""
    if world_size() <= 1:
        return decide()
    from accelerate.utils import broadcast_object_list

    box: list[Any] = [None]
    if is_main():
        try:
            box[0] = ("ok", decide())
        except ConfigError as error:
            box[0] = ("error", str(error))
    broadcast_object_list(box, from_process=0)
    kind, value = box[0]
    if kind == "error":
        raise ConfigError(value)
    return value


@contextlib.contextmanager
def own_folder_removed_if_unused(own_dir: Path) -> Iterator[list[Path]]:
    """Hydra made a run folder for every process; a non-main process writes into the main process's
    folder instead (appended to the yielded list), so the empty one made for it is removed, also when the
    run is refused. With an explicit hydra.run.dir all processes share one folder, which stays."""
    shared: list[Path] = []
    try:
        yield shared
    finally:
        if not is_main() and not (shared and shared[0].resolve() == own_dir.resolve()):
            with contextlib.suppress(OSError):  # rmdir only ever removes an empty folder
                own_dir.rmdir()


@contextlib.contextmanager
def main_process_first() -> Iterator[None]:
    """Caches (converted weights, tokenized data) are written by each node's main process while the other
    processes of that node wait, then read them: paths.cache_dir may be node-local (a local disk per
    machine), so every node prepares its own, all nodes at once. Where it is shared, the nodes' main
    processes meet at the cache's file lock (src/data/cache.py) or its atomic rename (src/atomic.py), and one
    of them writes it."""
    if world_size() <= 1:
        yield
        return
    from accelerate import PartialState

    with PartialState().local_main_process_first():
        yield


def sharded(trainer) -> str | None:
    """Why the model's weights are split across processes (FSDP, DeepSpeed ZeRO-3), or None when every
    process holds them whole (one process, DDP, ZeRO-1/2). Checked on transformers 5.23 / accelerate 1.x:
    the Trainer sets `is_fsdp_enabled` / `is_deepspeed_enabled` from the accelerator's plugins."""
    if world_size() <= 1:
        return None
    if getattr(trainer, "is_fsdp_enabled", False):
        return f"FSDP shards the weights across {world_size()} processes"
    if getattr(trainer, "is_deepspeed_enabled", False):
        plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
        if getattr(plugin, "zero_stage", None) == 3:
            return f"DeepSpeed ZeRO-3 shards the weights across {world_size()} processes"
    return None


def trainable_digest(model) -> str:
    """sha256 over the trainable tensors (the adapter), in a fixed order; equal digests = equal weights."""
    digest = hashlib.sha256()
    for name, param in sorted(model.named_parameters()):
        if param.requires_grad:
            digest.update(name.encode())
            digest.update(param.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def check_replicas_agree(model, sharded_by: str | None = None) -> list[str]:
    """Every process's digest of its trained weights; data-parallel replicas must end identical. Logged by the
    main process; a mismatch (a broken all-reduce, a rank that skipped steps) is an error, not a warning.
    One process has nothing to compare, so nothing is hashed (full fine-tuning would hash every weight).
    Sharded weights (`sharded_by`, from `sharded()`) differ between processes by design: no check."""
    if world_size() <= 1:
        return []
    if sharded_by is not None:
        log.info("replica check skipped: %s, so each process holds a different part", sharded_by)
        return []
    from accelerate.utils import gather_object

    digests = gather_object([trainable_digest(model)])
    if is_main():
        log.info("trained weights sha256 on each of %d processes: %s", len(digests), ", ".join(digests))
    if len(set(digests)) != 1:
        raise RuntimeError(f"data-parallel replicas ended with different weights: {digests}")
    return digests
