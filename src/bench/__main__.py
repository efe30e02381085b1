"""`python -m src.bench [bench.measure_steps=5 …] [train overrides …]`: the training step benchmark.

Reads conf/bench/default.yaml (`bench.*` overrides it), composes the train config from its train_overrides
and the command's other overrides, runs the variants (src.bench.variants) in rounds in one process, and
prints and writes the comparison (src.bench.report). Exits non-zero when a variant fails its gradient check.
"""

from __future__ import annotations

import functools
import logging
import sys
import tempfile
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from src.bench.harness import Rounds, one_malloc_arena
from src.bench.variants import VARIANTS, Shared, run_variant
from src.config import ConfigError, TrainConfig, validate

log = logging.getLogger("src.bench")
BENCH_DEFAULTS = Path(__file__).resolve().parents[2] / "conf" / "bench" / "default.yaml"


def parse_arguments(args: list[str]) -> tuple[DictConfig, list[str]]:
    """The bench's settings (`bench.*` over conf/bench/default.yaml) and the train overrides (its
    train_overrides, then the command's others). Exits with a message on an unknown variant."""
    bench = OmegaConf.load(BENCH_DEFAULTS)
    bench_overrides = [a.removeprefix("bench.") for a in args if a.startswith("bench.")]
    bench = OmegaConf.merge(bench, OmegaConf.from_dotlist(bench_overrides))
    unknown = [name for name in bench.variants if name not in VARIANTS]
    if unknown:
        sys.exit(f"bench.variants: unknown {unknown}; known: {sorted(VARIANTS)}")
    return bench, [*bench.train_overrides, *[a for a in args if not a.startswith("bench.")]]


def compose_settings(bench: DictConfig, train_overrides: list[str]) -> tuple[TrainConfig, TrainConfig]:
    """The preset's config and ours (plus bench.ours_overrides, gradient checkpointing resolved by the
    planner), both validated. Exits with a message on a config error or a dataset other than the built-in."""
    from src.config import compose
    from src.plan.checkpointing import resolve_checkpointing

    paths = ["paths.output_dir=.", f"paths.cache_dir={bench.cache_dir}"]
    # This project's step differs from the others only where the project decides differently by default,
    # bench.ours_overrides: gradient checkpointing chosen by the memory planner.
    cfg = OmegaConf.to_object(compose([*train_overrides, *paths]))
    ours = OmegaConf.to_object(compose([*train_overrides, *bench.ours_overrides, *paths]))
    try:
        validate(cfg)
        validate(ours)
    except ConfigError as error:
        sys.exit(f"Config error: {error}")
    if cfg.data.source != "builtin":
        sys.exit("src.bench uses the built-in dataset so every variant sees identical conversations.")
    checkpointing, why = resolve_checkpointing(ours)
    ours.memory.gradient_checkpointing = checkpointing
    log.info("ours: gradient checkpointing %s (%s)", "on" if checkpointing else "off", why)
    return cfg, ours


def run_variants(bench: DictConfig, cfg: TrainConfig, ours: TrainConfig) -> list[dict]:
    """Load the model source, tokenizer and data once, then run every variant's steps in rounds."""
    from datasets import Dataset

    from src.base_model import resolve_base
    from src.builtin_data import BUILTIN
    from src.data.cache import prepare_data
    from src.tokenizer import load_tokenizer

    base = resolve_base(cfg.model, cfg.paths.cache_dir)
    tokenizer = load_tokenizer(cfg.model, base)
    data = prepare_data(cfg.data, tokenizer, cfg.paths.cache_dir)
    # the plain TRL script tokenizes conversations itself: give it the same generated conversations
    raw_train = Dataset.from_list(BUILTIN[cfg.data.name](cfg.data.builtin_examples, seed=cfg.data.split_seed))
    # every variant's steps interleave in rounds (Rounds): drift of the machine falls on all of them alike
    patches = {name: variant.patch for name, variant in VARIANTS.items() if variant.patch is not None}
    turns = Rounds(list(bench.variants), scoped=patches)
    with tempfile.TemporaryDirectory() as workdir:
        shared = Shared(
            preset=cfg,
            ours=ours,
            base=base,
            tokenizer=tokenizer,
            data=data,
            raw_train=raw_train,
            warmup_steps=bench.warmup_steps,
            measure_steps=bench.measure_steps,
            workdir=Path(workdir),
            turns=turns,
        )
        log.info("variants in rounds of one step each: %s", " → ".join(bench.variants))
        return turns.run({name: functools.partial(run_variant, name, shared) for name in bench.variants})


def main(argv: list[str] | None = None) -> None:
    """Run the bench with `argv` (None: the command line, re-executed once with one malloc arena)."""
    if argv is None:  # as a command (not called from Python): before any thread exists
        one_malloc_arena(sys.argv[1:])

    from transformers.utils import logging as transformers_logging

    from src.bench.measure import matmul_flops_per_second
    from src.bench.report import add_comparisons, failure_message, print_table, write_results
    from src.compute import compute_dtype

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    transformers_logging.disable_progress_bar()  # "Loading weights" bars, once per variant and reference
    bench, train_overrides = parse_arguments(list(sys.argv[1:] if argv is None else argv))
    cfg, ours = compose_settings(bench, train_overrides)
    results = run_variants(bench, cfg, ours)
    shapes, dtype = cfg.model.architecture, compute_dtype(cfg)
    matmul_flops = matmul_flops_per_second(shapes["hidden_size"], shapes["intermediate_size"], 2048, dtype)
    add_comparisons(results, cfg, matmul_flops)
    print_table(results, dtype, matmul_flops)
    write_results(Path(bench.output), results, dtype, matmul_flops, train_overrides)
    failed = failure_message(results)
    if failed:
        sys.exit(failed)


if __name__ == "__main__":
    main()
