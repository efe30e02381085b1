"""Entrypoint: `python -m src.train [group=option ...] [key=value ...]` (add -m for multiruns and sweeps).

compose config → validate → tokenizer and data → model → trainer → train → save → return best eval loss.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from src import distributed  # noqa: E402
from src.config import ConfigError, TrainConfig, trains_on_cpu, validate  # noqa: E402
from src.plan import resolve_checkpointing  # noqa: E402
from src.redact import install_log_redaction, redact, redact_files  # noqa: E402

install_log_redaction()  # no token or database password reaches a log
log = logging.getLogger("src.train")


def train(dict_cfg: DictConfig) -> dict:
    """Run one fine-tuning job and return its metrics (metrics.json): the sweeper scores trials by them
    (hydra.sweeper.objective, best_eval_loss by default)."""
    cfg: TrainConfig = OmegaConf.to_object(dict_cfg)  # typed; Hydra has already refused unknown keys
    own_dir = Path(cfg.paths.output_dir)
    with distributed.own_folder_removed_if_unused(own_dir) as shared:
        validate(cfg)
        from src import stages  # heavy imports (torch, transformers) only after the config is known good

        # Under accelerate launch/torchrun the main process claims its folder; the others write into it too.
        distributed.init(cpu=trains_on_cpu(cfg))
        run_dir, resume_from = distributed.main_decides(
            lambda: (own_dir, stages.claim_run_dir(own_dir, cfg.resume))
        )
        shared.append(run_dir)
        # memory.gradient_checkpointing=auto: the planner decides (the same answer on every process)
        checkpointing, why = distributed.main_decides(lambda: resolve_checkpointing(cfg))
    cfg.memory.gradient_checkpointing = checkpointing
    log.info("gradient checkpointing %s (%s)", "on" if checkpointing else "off", why)
    cfg.paths.output_dir = str(run_dir)
    if distributed.is_main():
        redact_files(run_dir / ".hydra")  # Hydra saved the overrides as typed, secrets included
        (run_dir / "config.yaml").write_text(redact(OmegaConf.to_yaml(dict_cfg, resolve=True)))
    started = time.perf_counter()
    base, tokenizer = stages.build_tokenizer(cfg)
    data = stages.build_data(cfg, tokenizer, run_dir)
    model = stages.build_model(cfg, base)
    run = stages.build_run(cfg, model, tokenizer, data, run_dir, resume_from)
    metrics = run.train()
    stages.save(cfg, run, base, tokenizer, run_dir)
    metrics["wall_seconds"] = time.perf_counter() - started
    stages.finish(run, metrics, run_dir)
    return metrics


def _in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def release_memory() -> None:
    """Free the finished job's model before the next job of a multirun starts in this process."""
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@hydra.main(config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> dict:
    failure = None
    try:
        return train(cfg)
    except ConfigError as error:
        if not _in_multirun():  # the user's mistake: one sentence, no traceback
            log.error("Config error: %s", error)
            sys.exit(2)
        failure = f"ConfigError: {error}"
    except Exception as error:
        if not _in_multirun():
            log.error("%s: %s", type(error).__name__, error)
            if (
                type(error).__name__ == "TrainingDiverged"
            ):  # explained in one message; metrics.json says so too
                sys.exit(1)
            raise
        log.exception("Job failed")  # full traceback in this job's train.log
        failure = f"{type(error).__name__}: {error}"
    finally:
        release_memory()
    # Raised outside the except block so the failed job's frames (and its model) are not kept alive.
    raise JobFailed(failure)


class JobFailed(RuntimeError):
    """A multirun job failed; the sweeper records the message as the trial's failure reason."""


if __name__ == "__main__":
    sys.argv = distributed.launcher_argv(sys.argv)
    main()
