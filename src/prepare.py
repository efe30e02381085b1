"""`python -m src.prepare <the same overrides as training>`: tokenize and cache the data a run would train on,
print its data report, and end with the cache folder and the command that trains on it.

It needs the tokenizer only: once the base model is in the cache (or for a Hub model) it loads no weights,
and a second call with the same overrides is a cache hit that returns in seconds (torch, transformers and
TRL are imported only when needed). Run it before a multi-process (`accelerate launch`) run on large data,
so that no rank waits on the tokenization."""

from __future__ import annotations

import logging
import os
import shlex
import sys
import time

log = logging.getLogger("src.prepare")


def prepare(overrides: list[str]) -> int:
    """Tokenize (or find in the cache) the data of `python -m src.train <overrides>`; prints the report."""
    from omegaconf import OmegaConf

    from src.config import ConfigError, compose, validate

    started = time.perf_counter()
    try:
        # this command has no run folder; the data stage never reads it
        cfg = OmegaConf.to_object(compose([*overrides, "paths.output_dir=unused"]))
        validate(cfg)
    except ConfigError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 2
    from datasets.utils import disable_progress_bars

    from src.data.cache import prepare_data
    from src.data.report import summarize_report

    disable_progress_bars()  # one bar, over all rows (src/data/progress.py): not one per map, split or save
    from src.base_model import resolve_base
    from src.tokenizer import TokenizerSource

    try:
        # the tokenizer is loaded only on a cache miss, or when its files changed (src/tokenizer.py)
        tokenizer = TokenizerSource(
            cfg.model, resolve_base(cfg.model, cfg.paths.cache_dir), cfg.paths.cache_dir
        )
        data = prepare_data(cfg.data, tokenizer, cfg.paths.cache_dir, progress=True)
    except ConfigError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 2
    for line in summarize_report(data.report, cfg.data.max_length):
        print(line)
    seconds = time.perf_counter() - started
    state = "read from the cache" if data.from_cache else "tokenized"
    print(f"Data {state} in {seconds:.1f} s: {data.cache_path}")
    print(f"Train on it: python -m src.train {shlex.join(overrides)}".rstrip())
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m src.prepare`: the process settings of `python -m src.train`, then `prepare`."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # worker processes fork after the tokenizer ran
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("httpx", "huggingface_hub", "filelock", "datasets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return prepare(list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
