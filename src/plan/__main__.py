"""`python -m src.plan <same overrides as train> [plan.gpu_gb=24]`: the planned memory of a run, whether it
fits a GPU of that size, and the largest micro-batch that does."""

from __future__ import annotations

import sys

from src.config import ConfigError
from src.plan.checkpointing import resolve_checkpointing
from src.plan.estimate import GIB, largest_micro_batch, plan


def report_lines(cfg) -> list[str]:
    gpu = cfg.plan.gpu_gb * GIB
    ckpt_state = "on" if cfg.memory.gradient_checkpointing is True else "off"
    if cfg.memory.gradient_checkpointing == "auto":
        checkpointing, why = resolve_checkpointing(cfg, (gpu, f"a {cfg.plan.gpu_gb:g} GB GPU"))
        cfg.memory.gradient_checkpointing = checkpointing
        ckpt_state = why
    p = plan(cfg)
    fits = p["peak"] <= gpu
    lines = [
        f"model {cfg.model.name}: {p['total_params']:,} parameters, trainable {p['trainable_params']:,} "
        f"({100 * p['trainable_params'] / p['total_params']:.3f}%)",
        f"  weights ({'NF4 4-bit' if cfg.memory.load_in_4bit else cfg.model.dtype}): {p['weights'] / GIB:8.2f} GiB",
        f"  LoRA parameters (fp32):   {p['adapter'] / GIB:8.2f} GiB",
        f"  gradients:                {p['gradients'] / GIB:8.2f} GiB",
        f"  optimizer states:         {p['optimizer'] / GIB:8.2f} GiB ({cfg.optim.optimizer})",
        f"  activations, micro-batch {p['micro_batch']} × {cfg.data.max_length} tokens: "
        f"{p['activations'] / GIB:.2f} GiB without, {p['activations_checkpointed'] / GIB:.2f} GiB with "
        "gradient checkpointing",
        f"  estimated peak (checkpointing {ckpt_state}): {p['peak'] / GIB:.2f} GiB",
        f"verdict for a {cfg.plan.gpu_gb:g} GB GPU: {'fits' if fits else 'does NOT fit'}; largest micro-batch "
        f"that fits: {largest_micro_batch(cfg, gpu)}",
    ]
    return lines


def main(argv: list[str] | None = None) -> None:
    from omegaconf import OmegaConf

    from src.config import compose, validate

    overrides = list(sys.argv[1:] if argv is None else argv)
    dict_cfg = compose([*overrides, "paths.output_dir=.", "paths.cache_dir=."])
    cfg = OmegaConf.to_object(dict_cfg)
    try:
        validate(cfg)
        print("\n".join(report_lines(cfg)))
    except ConfigError as error:
        sys.exit(f"Config error: {error}")


if __name__ == "__main__":
    main()
