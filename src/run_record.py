"""A run folder's record (config.yaml, .hydra/, train.log), written only by the attempt that owns the folder.

Hydra would write .hydra/ and open train.log before the task starts, so a refused attempt (into a finished
run's folder, a resume with other settings) would rewrite an earlier run's record. train.yaml turns both
off (`hydra.output_subdir: null`, `hydra/job_logging: stdout`); this module writes the same files once
`claim_run_dir` has given the folder to this attempt. A resumed attempt keeps the interrupted one's record
and must have been configured like it.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from src.errors import ConfigError
from src.redact import redact

METRICS_LOGGER = "src.metrics"  # src/console.py logs every logging step's metrics there

LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # Hydra's own job-log format

# Settings a resumed run may change: where and how much it reports, what it saves at the end, how far it
# goes. Everything else (data, model, LoRA, optimizer, schedule, seed, eval cadence) must match the
# checkpoints being continued.
RESUMABLE = (
    "resume",
    "trial",
    "paths.",
    "optim.max_steps",
    "eval.task_examples",
    "eval.max_new_tokens",
    "monitor.",
    "save.",
    "plan.",
)


def read_metrics(path: Path | None) -> dict[str, Any]:
    """A run's metrics.json, or {} when it is missing, torn (a crash mid-write on a file system without
    atomic rename) or not a run's record: the reader then treats the run as unfinished, and never crashes."""
    try:
        metrics = json.loads(Path(path).read_text()) if path is not None else {}
    except (OSError, ValueError):
        return {}
    return metrics if isinstance(metrics, dict) else {}


def write_record(run_dir: Path, dict_cfg: DictConfig) -> None:
    """config.yaml (resolved) and, inside a Hydra app, .hydra/config.yaml, overrides.yaml and hydra.yaml,
    as Hydra writes them; secrets masked."""
    (run_dir / "config.yaml").write_text(redact(OmegaConf.to_yaml(dict_cfg, resolve=True)))
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():  # train() called from Python (tests): no Hydra record to keep
        return
    hydra_cfg = HydraConfig.get()
    folder = run_dir / ".hydra"
    folder.mkdir(exist_ok=True)
    files = {
        "config.yaml": OmegaConf.to_yaml(dict_cfg),
        "hydra.yaml": OmegaConf.to_yaml(OmegaConf.create({"hydra": hydra_cfg})),
        "overrides.yaml": OmegaConf.to_yaml(OmegaConf.create(list(hydra_cfg.overrides.task))),
    }
    for name, text in files.items():  # owner-only: launcher settings (env_set, storage URLs) live here
        path = folder / name
        path.touch(mode=0o600)
        path.chmod(0o600)
        path.write_text(redact(text))


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): node}


def check_resume(run_dir: Path, dict_cfg: DictConfig) -> None:
    """Refuse, naming the keys, a resume whose settings differ from those the checkpoints were trained with
    (the interrupted attempt's config.yaml), except the RESUMABLE ones."""
    recorded_file = run_dir / "config.yaml"
    if not recorded_file.is_file():
        raise ConfigError(f"resume=true but {run_dir} has no config.yaml to check the settings against.")
    recorded = _flat(OmegaConf.to_container(OmegaConf.load(recorded_file)))
    now = _flat(OmegaConf.to_container(OmegaConf.create(redact(OmegaConf.to_yaml(dict_cfg, resolve=True)))))
    differing = sorted(
        key
        for key in set(recorded) | set(now)
        if recorded.get(key) != now.get(key) and not key.startswith(RESUMABLE) and key not in RESUMABLE
    )
    if differing:
        shown = ", ".join(f"{k} ({recorded.get(k)!r} → {now.get(k)!r})" for k in differing[:6])
        more = f" and {len(differing) - 6} more" if len(differing) > 6 else ""
        raise ConfigError(
            f"resume=true continues the run in {run_dir} as it was configured; these settings differ: "
            f"{shown}{more}. Drop those overrides, or start a new run without resume=true."
        )


@contextlib.contextmanager
def job_log(run_dir: Path) -> Iterator[None]:
    """This attempt's log lines, appended to run_dir/train.log while the job runs (and a failure's traceback,
    which the entrypoint's failure policy reports only on the console)."""
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    metrics = logging.getLogger(METRICS_LOGGER)  # each logging step's metrics: in train.log, not the console
    metrics.addHandler(handler)
    try:
        yield
    except BaseException as error:
        record = logging.LogRecord("src.train", logging.ERROR, __file__, 0, "Job failed: %s", (error,), None)
        record.exc_info = (type(error), error, error.__traceback__)
        handler.handle(record)
        raise
    finally:
        root.removeHandler(handler)
        metrics.removeHandler(handler)
        handler.close()
