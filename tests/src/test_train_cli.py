"""`python -m src.train` as a user meets it: a bad value, an unknown option or a bad path is one sentence
without a traceback (exit 2), and random combinations of overrides (valid and invalid, into a new folder or
into an earlier run's folder) either finish or exit with one short error, and no earlier run's files change
(property-based)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.conftest import CACHE, ROOT, TINY, imported_modules, run_module
from tests.forked_cli import run_python


def run_cli(*args: str, cwd=ROOT):
    return run_module("src.train", *args, timeout=120, cwd=cwd)


def test_cli_bad_value_is_one_message_without_traceback(tmp_path):
    result = run_cli("optim.learning_rate=0", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2
    output = result.stdout + result.stderr
    assert "optim.learning_rate=0.0 must be a positive number" in output
    assert "Traceback" not in output


def test_cli_unknown_option_is_one_message(tmp_path):
    result = run_cli("lora=r7", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "Could not find 'lora/r7'" in output
    assert "Traceback" not in output


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["data=jsonl", "data.path={tmp}"],
            "is a folder but not one written by datasets' save_to_disk; give its files or a glob",
        ),
        (["model=qwen2_5_1_5b", "model.name={tmp}/no-such-model"], "looks like a local path but is not"),
        (
            ["data=jsonl", "data.path={tmp}/train.jsonl", "data.eval_path={tmp}/no-such-eval.jsonl"],
            "Config error: data.eval_path: no file matches '",  # was refused as data.path
        ),
    ],
    ids=["data-path-is-a-folder", "local-model-folder-missing", "eval-path-missing"],
)
def test_bad_paths_are_refused_in_one_sentence(tmp_path, overrides, message):
    """Each used to end in a traceback (IsADirectoryError; 79 lines from the Hub client) or named another key."""
    (tmp_path / "train.jsonl").write_text('{"messages": [{"role": "user", "content": "Hi"}]}\n')
    args = [o.format(tmp=tmp_path) for o in overrides] + [f"hydra.run.dir={tmp_path / 'run'}"]
    result = run_module("src.train", *args, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stdout + result.stderr and "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").rglob("*.*"))


# Small enough that a finishing run takes seconds: 2 optimizer steps, no baseline, no generation.
FAST = [
    *TINY,
    "optim.max_steps=2",
    "eval.steps=1",
    "eval.before_training=false",
    "data.task_metric=none",
    "monitor.num_samples=0",
    f"paths.cache_dir={CACHE}",
]

# Settings a user changes; each example draws several at once (not one field at a time).
VALID = {
    "lora": st.sampled_from(["lora=r8", "lora=r16", "lora=r32", "lora=none"]),
    "optim": st.sampled_from(["optim=cosine", "optim=linear", "optim=constant"]),
    "learning_rate": st.sampled_from(["1e-5", "3e-4", "1e-3", "2e-2"]).map("optim.learning_rate={}".format),
    "r": st.integers(1, 16).map("lora.r={}".format),
    "alpha": st.sampled_from([1, 8, 32]).map("lora.alpha={}".format),
    "dropout": st.sampled_from([0.0, 0.05, 0.3]).map("lora.dropout={}".format),
    "warmup": st.sampled_from([0.0, 0.1, 0.5]).map("optim.warmup_ratio={}".format),
    "max_length": st.sampled_from([64, 96, 128]).map("data.max_length={}".format),
    "batch": st.integers(1, 3).map("memory.per_device_train_batch_size={}".format),
    "accumulation": st.integers(1, 2).map("memory.gradient_accumulation_steps={}".format),
    "packing": st.booleans().map(lambda b: f"data.packing={str(b).lower()}"),
    "assistant_only": st.booleans().map(lambda b: f"data.assistant_only_loss={str(b).lower()}"),
    "merge": st.booleans().map(lambda b: f"save.merge={str(b).lower()}"),
    "seed": st.integers(0, 3).map("seed={}".format),
}
# Mistakes users make: each must be refused in one short message before anything is written.
INVALID = st.sampled_from(
    [
        "optim.learning_rate=-1",
        "lora.r=0",
        "data.max_length=0",
        "lora.dropout=1.5",
        "optim.lerning_rate=1e-4",
        "memory.per_device_train_batch_size=0",
        "data.eval_fraction=1.5",
        "model=no_such_model",
        "optim.warmup_ratio=2",
        "lora.target_modules=[no_such_proj]",
        "data.source=local",
        "resume=true",
    ]
)


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def error_block(output: str) -> list[str]:
    """The lines the user reads at the end: the error itself (Hydra's "Could not find" lists the options)."""
    lines = [line for line in output.strip().splitlines() if line.strip()]
    return lines[-16:]


@pytest.mark.slow
@settings(
    max_examples=15,
    deadline=None,
    derandomize=True,  # the same 15 combinations in every CI run; locally HYPOTHESIS_PROFILE may vary them
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    valid=st.dictionaries(st.sampled_from(sorted(VALID)), st.none(), min_size=2, max_size=6).flatmap(
        lambda keys: st.tuples(*(VALID[k] for k in sorted(keys)))
    ),
    invalid=st.lists(INVALID, max_size=2, unique=True),
    into_earlier=st.booleans(),
    pick=st.integers(0, 100),
)
def test_any_override_combination_finishes_or_fails_in_one_message(
    tmp_path, valid, invalid, into_earlier, pick
):
    runs = sorted(p for p in tmp_path.glob("run_*") if p.is_dir())
    finished = [p for p in runs if (p / "metrics.json").is_file()]
    if into_earlier and finished:
        folder = finished[pick % len(finished)]
    else:
        folder = tmp_path / f"run_{len(runs):02d}"
    before = {p: digest(p) for p in runs}
    overrides = [*FAST, *valid, *invalid, f"hydra.run.dir={folder}"]
    result = run_python(
        [sys.executable, "-m", "src.train", *overrides],
        cwd=ROOT,
        timeout=600,
    )
    shown = f"overrides: {valid + tuple(invalid)} into {folder.name}\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stdout + result.stderr, shown
    event("finished" if result.returncode == 0 else "refused")  # --hypothesis-show-statistics shows the split
    event("into an earlier run's folder" if folder in before else "into a new folder")
    if result.returncode == 0:
        assert not invalid and folder not in before, shown
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["status"] == "finished" and metrics["global_step"] == 2, shown
    else:
        block = error_block(result.stdout + result.stderr)
        # our refusals are one line ("Config error: …"); Hydra's own parse errors add a hint and a link
        assert any(
            line.startswith(("Config error:", "Could not", "In 'train'", "Error", "Key ")) for line in block
        ), shown
        assert len(block) <= 16, shown
    for run, files in before.items():  # no earlier run's files changed, whatever this one did
        assert digest(run) == files, f"{run.name} changed\n{shown}"


def test_a_refusal_loads_no_torch():
    """A refused command returns before torch, transformers and TRL load: a fresh interpreter, as the user
    starts it, with Python's own import log."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "src.train", "optim.learning_rate=0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (
        result.returncode == 2
        and "Config error: optim.learning_rate=0.0 must be a positive" in result.stdout + result.stderr
    )
    imported = imported_modules(result.stderr)
    assert "hydra" in imported and not imported & {"torch", "transformers", "trl", "peft"}
