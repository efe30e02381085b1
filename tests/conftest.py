"""Shared fixtures: compose the real configs with Hydra's compose API, on CPU and tiny sizes."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra

from src.config import compose
from tests.forked_cli import run_python

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
# Converted base models are shared with normal runs (converting SmolLM2's GGUF takes ~20 s once).
CACHE = Path(os.environ.get("SFT_CACHE_DIR", Path.home() / ".cache" / "sft-sweep"))

# Small, fast settings for the tiny random model: a few dozen short examples, short generations.
TINY = [
    "model=tiny",
    "memory=bf16",
    "memory.per_device_train_batch_size=2",
    "memory.gradient_accumulation_steps=1",
    "memory.gradient_checkpointing=false",
    "data.builtin_examples=40",
    "data.eval_fraction=0.2",
    "data.max_length=128",
    "eval.task_examples=4",
    "eval.max_new_tokens=8",
    "monitor.num_samples=2",
    "monitor.progress_bar=false",
]


# The longest test files, scheduled first: `make test` runs one file per pytest-xdist worker, in this order
# (--no-loadscope-reorder: xdist would otherwise start with the files holding the most tests), so a long file
# started last would leave the other worker idle at the end.
LONGEST_FIRST = (  # by their time in a full run (`make test PYTEST_ARGS=--durations=0` shows it)
    "test_optuna_sweeper.py",
    "test_model.py",
    "test_trainer.py",
    "test_train_cli.py",
    "test_tokenization.py",
    "test_run_record.py",
    "test_workers.py",
    "test_distributed.py",
    "test_config_checks.py",
    "test_formats.py",
    "test_study.py",
    "test_main.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


def run_module(
    module: str,
    *args: str,
    timeout: int = 600,
    env: dict | None = None,
    cwd: Path = ROOT,
    input_text: str | None = None,
):
    """`python -m <module> <args>` in a process of its own, as a user would start it (a fork of this worker's
    preloaded server where that is the same: tests/forked_cli.py); output captured as text."""
    return run_python(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=None if env is None else {**os.environ, **env},
        input=input_text,
        timeout=timeout,
    )


def compose_config(overrides: list[str], output_dir: Path | None = None, cache_dir: Path | None = None):
    """The config `python -m src.train <overrides>` would run with, without Hydra's run-dir machinery."""
    GlobalHydra.instance().clear()
    paths = [
        f"paths.output_dir={output_dir or '/nonexistent-run-dir'}",
        f"paths.cache_dir={cache_dir or CACHE}",
    ]
    return compose([*overrides, *paths])


def typed_config(overrides: list[str], output_dir: Path | None = None, cache_dir: Path | None = None):
    """compose_config's result as the typed TrainConfig every stage takes (OmegaConf.to_object)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_object(compose_config(overrides, output_dir, cache_dir))


@pytest.fixture
def cfg_train(tmp_path):
    """The one tiny-config fixture (lightning-hydra-template's cfg_train): `cfg_train(*overrides)` is the typed
    config of `python -m src.train <TINY> <overrides>`, its run folder inside this test's tmp_path."""

    def make(*overrides: str):
        return typed_config([*TINY, *overrides], output_dir=tmp_path / "run")

    return make


def imported_modules(importtime_stderr: str) -> set[str]:
    """The modules a `python -X importtime` process imported, from its stderr."""
    return {line.rsplit("|", 1)[-1].strip() for line in importtime_stderr.splitlines() if "|" in line}


def logged_hparams(log_dir: Path) -> dict:
    """The hyperparameters TensorBoard's HPARAMS tab reads (session_start_info of the hparams plugin)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    for events in log_dir.rglob("events.out.tfevents.*"):
        for event in EventFileLoader(str(events)).Load():
            for value in event.summary.value:
                if value.tag == "_hparams_/session_start_info":
                    data = HParamsPluginData.FromString(value.metadata.plugin_data.content)
                    return {
                        k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
                        for k, v in data.session_start_info.hparams.items()
                    }
    return {}


def logged_session_status(log_dir: Path) -> str | None:
    """The session status TensorBoard's HPARAMS tab shows (session_end_info), e.g. STATUS_SUCCESS."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams.api_pb2 import Status
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    for events in log_dir.rglob("events.out.tfevents.*"):
        for event in EventFileLoader(str(events)).Load():
            for value in event.summary.value:
                if value.tag == "_hparams_/session_end_info":
                    data = HParamsPluginData.FromString(value.metadata.plugin_data.content)
                    return Status.Name(data.session_end_info.status)
    return None


@pytest.fixture(scope="session")
def postgres_url():
    """URL of a throwaway PostgreSQL database on loopback (tests/postgres.py), removed after the session.
    Missing server programs fail the test; SFT_SKIP_POSTGRES=1 turns that into an explicit skip."""
    from tests.postgres import INSTALL_HINT, running_postgres, server_bindir

    if server_bindir() is None:
        message = f"PostgreSQL server programs (initdb, pg_ctl) not found: {INSTALL_HINT}"
        if os.environ.get("SFT_SKIP_POSTGRES") == "1":
            pytest.skip(f"{message} (skipped because SFT_SKIP_POSTGRES=1)")
        pytest.fail(f"{message}; or set SFT_SKIP_POSTGRES=1 to skip the PostgreSQL tests", pytrace=False)
    with running_postgres() as url:
        yield url
