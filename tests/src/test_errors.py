"""The failure policy (src/errors.py): outside a multirun, a config error is one sentence and exit 2, a
diverged run exit 1, and a bug keeps its traceback; the cleanup runs after every job."""

from __future__ import annotations

import logging

import pytest

from src.errors import ConfigError, TrainingDiverged, failure_policy


def policy(error: Exception | None, cleaned: list):
    @failure_policy(cleanup=lambda: cleaned.append(True))
    def task():
        if error is not None:
            raise error
        return {"best_eval_loss": 0.5}

    return task


@pytest.mark.parametrize(
    "error, code, logged",
    [
        (
            ConfigError("data.path: no file matches x.jsonl"),
            2,
            "Config error: data.path: no file matches x.jsonl",
        ),
        (TrainingDiverged("loss became nan at step 3"), 1, "TrainingDiverged: loss became nan at step 3"),
    ],
)
def test_user_failures_exit_with_their_code_and_one_sentence(error, code, logged, caplog):
    cleaned: list = []
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as exit_info:
        policy(error, cleaned)()
    assert exit_info.value.code == code
    assert [r.getMessage() for r in caplog.records] == [logged]
    assert cleaned == [True]


def test_a_bug_keeps_its_traceback_and_a_success_returns_the_metrics():
    cleaned: list = []
    with pytest.raises(KeyError, match="missing"):
        policy(KeyError("missing"), cleaned)()
    assert policy(None, cleaned)() == {"best_eval_loss": 0.5}
    assert cleaned == [True, True]
