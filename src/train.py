"""Entrypoint: `python -m src.train [group=option ...] [key=value ...]` (add -m for multiruns and sweeps).

compose config → validate → tokenizer and data → model → trainer → train → save → return best eval loss.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import hydra  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from src.config import ConfigError, TrainConfig, validate  # noqa: E402

log = logging.getLogger("src.train")


def train(dict_cfg: DictConfig) -> float:
    """Run one fine-tuning job and return its best eval loss (the sweep objective)."""
    cfg: TrainConfig = OmegaConf.to_object(dict_cfg)  # typed; Hydra has already refused unknown keys
    validate(cfg)
    run_dir = Path(cfg.paths.output_dir)

    from src import stages  # heavy imports (torch, transformers) only after the config is known good

    stages.claim_run_dir(run_dir)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(dict_cfg, resolve=True))
    started = time.perf_counter()
    base, tokenizer = stages.build_tokenizer(cfg)
    data = stages.build_data(cfg, tokenizer, run_dir)
    model = stages.build_model(cfg, base)
    run = stages.build_run(cfg, model, tokenizer, data, run_dir)
    metrics = run.train()
    stages.save(cfg, run, base, tokenizer, run_dir)
    metrics["wall_seconds"] = time.perf_counter() - started
    stages.finish(run, metrics, run_dir)
    return metrics["best_eval_loss"]


@hydra.main(config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    try:
        return train(cfg)
    except ConfigError as error:  # the user's mistake: one sentence, no traceback
        log.error("Config error: %s", error)
        sys.exit(2)


if __name__ == "__main__":
    main()
