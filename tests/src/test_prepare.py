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

from tests.conftest import CACHE, ROOT, TINY


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
    imported = {line.rsplit("|", 1)[-1].strip() for line in third.stderr.splitlines() if "|" in line}
    assert "datasets" in imported and not imported & {"torch", "transformers", "trl"}
    assert [p.name for p in (cache / "data").iterdir() if p.name.startswith(".")] == []  # no temporary folder
