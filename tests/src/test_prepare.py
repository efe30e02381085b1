"""`python -m src.prepare`: tokenizes and caches the data of a training command, prints its report, and ends
with the cache folder and the command that trains on it; of two started at once, only one tokenizes, and a
third finds the cache without loading the tokenizer."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import CACHE, ROOT, TINY, imported_modules
from tests.src.test_tokenizer import copy_tokenizer_files


def chats(count: int) -> list[dict]:
    return [
        {
            "messages": [
                {"role": "user", "content": f"Say {i} " + "and more " * 20},
                {"role": "assistant", "content": f"{i} " + "then some " * 30},
            ]
        }
        for i in range(count)
    ]


@pytest.mark.slow  # three processes that import the libraries and tokenize 2,000 rows: ~60 s on 2 shared cores
def test_two_prepares_at_once_tokenize_once_and_the_cache_serves_a_third(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in chats(2000)))
    overrides = [*TINY, "data=jsonl", f"data.path={path}", "data.max_length=256", "data.num_proc=1"]
    cache = tmp_path / "cache"
    cache.mkdir()
    (CACHE / "models").mkdir(parents=True, exist_ok=True)
    (cache / "models").symlink_to(CACHE / "models")  # the suite's converted base model; the data stays here
    env = {**os.environ, "SFT_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "src.prepare", *overrides]
    processes = [
        subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=600)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    states = sorted(
        re.search(r"^Data (tokenized|read from the cache) in", out, re.M).group(1) for out in outputs
    )
    assert states == ["read from the cache", "tokenized"]
    folders = {re.search(r"^Data .* s: (\S+)$", out, re.M).group(1) for out in outputs}
    assert len(folders) == 1
    for out in outputs:
        assert "  train: 1600 examples" in out and "  eval: 400 examples" in out  # eval_fraction=0.2
        assert f"Train on it: python -m src.train {' '.join(overrides)}" in out
    # the hit, in a fresh interpreter as a user starts it: no tokenizer, so neither torch nor transformers
    third = subprocess.run(
        [sys.executable, "-X", "importtime", *command[1:]],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert third.returncode == 0 and "Data read from the cache in" in third.stdout, third.stderr[-2000:]
    imported = imported_modules(third.stderr)
    assert "datasets" in imported and not imported & {"torch", "transformers", "trl"}
    assert [p.name for p in (cache / "data").iterdir() if p.name.startswith(".")] == []  # no temporary folder


def test_a_hub_model_is_prepared_offline_from_the_hub_cache_and_its_hit_loads_no_tokenizer(tmp_path):
    """model.source=hub: the tokenizer's files come from the local Hub cache (HF_HUB_OFFLINE=1, as a user
    with the model downloaded runs), its identity is remembered by them, and the second call is a hit that
    imports neither transformers nor torch. Fresh interpreters: Hugging Face settings are read at import."""
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--example--tiny-chat"
    copy_tokenizer_files(repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in chats(40)))
    overrides = [
        *TINY,
        "model.source=hub",
        "model.name=example/tiny-chat",
        "data=jsonl",
        "data.max_length=256",
        f"data.path={path}",
    ]
    env = {
        **os.environ,
        "SFT_CACHE_DIR": str(tmp_path / "cache"),
        "HF_HUB_CACHE": str(tmp_path / "hub"),
        "HF_HUB_OFFLINE": "1",
    }
    command = [sys.executable, "-X", "importtime", "-m", "src.prepare", *overrides]
    runs = [
        subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300) for _ in "ab"
    ]
    assert [run.returncode for run in runs] == [0, 0], runs[0].stderr[-2000:] + runs[1].stderr[-2000:]
    assert "Data tokenized in" in runs[0].stdout and "Data read from the cache in" in runs[1].stdout
    assert "  train: 32 examples" in runs[1].stdout  # eval_fraction=0.2 of 40
    imported = [imported_modules(run.stderr) for run in runs]
    assert "transformers" in imported[0] and not imported[1] & {"torch", "transformers", "trl"}
    memo = json.loads((tmp_path / "cache" / "data" / "tokenizer_identities.json").read_text())
    assert len(memo) == 1 and next(iter(memo.values()))[2] == "<|im_end|>"
