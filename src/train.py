"""Entrypoint: `python -m src.train [group=option ...] [key=value ...]` (add -m for multiruns and sweeps).

compose config → validate → tokenizer and data → model → trainer → train → save → return best eval loss.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig, OmegaConf

from src import distributed
from src.config import TrainConfig, register_configs, validate
from src.errors import failure_policy
from src.patches import silence_library_warnings
from src.plan.checkpointing import resolve_checkpointing
from src.redact import install_log_redaction
from src.run_record import check_resume, job_log, write_record

if TYPE_CHECKING:
    from src.compute import Compute

log = logging.getLogger("src.train")


def train(dict_cfg: DictConfig) -> dict:
    """Run one fine-tuning job and return its metrics (metrics.json): the sweeper scores trials by them
    (hydra.sweeper.objective, best_eval_loss by default)."""
    cfg: TrainConfig = OmegaConf.to_object(dict_cfg)  # typed; Hydra has already refused unknown keys
    run_dir, resume_from, compute = claim_run_folder(cfg, dict_cfg)
    from src import stages  # heavy imports (torch, transformers) only after the config is known good
    from src.console import quiet_library_bars

    quiet_library_bars()
    with job_log(run_dir) if distributed.is_main() else contextlib.nullcontext():
        # memory.gradient_checkpointing=auto: the planner decides (the same answer on every process)
        checkpointing, why = distributed.main_decides(lambda: resolve_checkpointing(cfg, compute=compute))
        cfg.memory.gradient_checkpointing = checkpointing
        log.info("gradient checkpointing %s (%s)", "on" if checkpointing else "off", why)
        cfg.paths.output_dir = str(run_dir)
        started = time.perf_counter()
        base, tokenizer = stages.build_tokenizer(cfg)
        data = stages.build_data(cfg, tokenizer, run_dir)
        model = stages.build_model(cfg, base)
        run = stages.build_run(cfg, compute, model, tokenizer, data, run_dir, resume_from)
        metrics = run.train()
        stages.save(cfg, run, base, tokenizer, run_dir)
        metrics["wall_seconds"] = time.perf_counter() - started
        stages.finish(run, metrics, run_dir)
        return metrics


def claim_run_folder(cfg: TrainConfig, dict_cfg: DictConfig) -> tuple[Path, Path | None, Compute]:
    """Validate, decide where the run computes, and claim its folder: (run folder, checkpoint to resume from
    or None, compute). Under accelerate launch/torchrun the main process claims the folder and writes the
    run's record; the others write into it too. Refusals leave earlier runs' files untouched."""
    own_dir = Path(cfg.paths.output_dir)
    with distributed.own_folder_removed_if_unused(own_dir) as shared:
        validate(cfg)
        from src import stages
        from src.compute import Compute, check_compute

        compute = Compute.of(cfg)  # decided once: every stage gets this value
        check_compute(cfg, compute)
        distributed.init(cpu=compute.on_cpu)
        run_dir, resume_from = distributed.main_decides(
            lambda: (own_dir, stages.claim_run_dir(own_dir, cfg.resume))
        )
        shared.append(run_dir)
        if resume_from is not None:  # the checkpoints must be continued with the settings they had
            distributed.main_decides(lambda: check_resume(run_dir, dict_cfg))
        elif distributed.is_main():  # this attempt owns the folder now: its record is written here only
            write_record(run_dir, dict_cfg)
    return run_dir, resume_from, compute


def release_memory() -> None:
    """Free the finished job's model before the next job of a multirun starts in this process. A job refused
    before it imported torch leaves it unimported, so a refusal never waits for torch to load."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


@hydra.main(config_path="../conf", config_name="train")
@failure_policy(cleanup=release_memory)  # src/errors.py: what each failure means to the user and the sweeper
def main(cfg: DictConfig) -> dict:
    return train(cfg)


def run_cli() -> None:
    """`python -m src.train`: the process-wide settings a run needs, then Hydra. Kept out of import time, so
    importing this module registers, patches and installs nothing."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # one progress bar per run (src/console.py): not one per datasets map/filter/save of the data stage and
    # TRL's preparation (the data report says what they did); export it as 0 to see them again
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    install_log_redaction()  # no token or database password reaches a log, the sweeper's launch lines included
    silence_library_warnings()  # src/patches.py: warnings the user can do nothing about
    register_configs()  # the typed schemas conf/ is validated against
    sys.argv = distributed.launcher_argv(sys.argv)
    main()


if __name__ == "__main__":
    run_cli()
