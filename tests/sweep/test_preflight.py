"""Each refusal before a sweep's first trial raises SweepRefused with its sentence; what passes, passes."""

from __future__ import annotations

import logging

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution

from sweep.preflight import (
    SweepRefused,
    check_enqueued_trials,
    check_searched_settings,
    check_storage,
    open_checked_study,
)
from sweep.study import sweep_identity

SPACE = {
    "lora.r": CategoricalDistribution([4, 8, 16]),
    "optim.learning_rate": FloatDistribution(1e-5, 1e-3, log=True),
}


def open_study(storage: str, identity: dict) -> optuna.Study:
    return open_checked_study(
        storage,
        "tiny",
        identity,
        sampler=optuna.samplers.RandomSampler(seed=0),
        directions=["minimize"],
        metric_names=["best_eval_loss"],
    )


def test_a_data_or_model_setting_is_searched_only_when_asked_for():
    space = {
        **SPACE,
        "data.path": CategoricalDistribution(["a.jsonl", "b.jsonl"]),
        "model.name": SPACE["lora.r"],
    }
    with pytest.raises(SweepRefused) as refusal:
        check_searched_settings(space, search_data_and_model=False)
    assert str(refusal.value) == (
        "This sweep would search over data.path, model.name (each trial training on one value): inside -m an "
        "unquoted comma list is a sweep. Quote it (data.path='a.jsonl,b.jsonl') or give a list "
        "(data.path=[a.jsonl,b.jsonl]); to search over data or model settings on purpose, set "
        "hydra.sweeper.search_data_and_model=true."
    )
    check_searched_settings(space, search_data_and_model=True)
    check_searched_settings(SPACE, search_data_and_model=False)


def test_a_study_in_memory_is_refused():
    with pytest.raises(
        SweepRefused, match=r"^hydra\.sweeper\.storage=null keeps the study in this process's"
    ):
        check_storage(None)
    check_storage("sqlite:///outputs/sweeps/tiny/optuna.db")


def test_a_storage_that_cannot_be_opened_is_refused_in_one_sentence(tmp_path):
    (tmp_path / "optuna.db").write_text("not a database")
    with pytest.raises(SweepRefused) as refusal:
        open_study(f"sqlite:///{tmp_path}/optuna.db", sweep_identity(SPACE, {}, []))
    message = str(refusal.value)
    assert message.startswith(f"cannot open the study storage sqlite:///{tmp_path}/optuna.db: file is not a")
    assert message.endswith("; fix hydra.sweeper.storage or point it elsewhere.") and "\n" not in message


def test_a_study_created_for_another_sweep_is_refused_with_a_free_name(tmp_path):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    first = open_study(storage, sweep_identity(SPACE, {}, ["data.max_length=64"]))
    assert (
        open_study(storage, sweep_identity(SPACE, {}, ["data.max_length=64"])).study_name == first.study_name
    )
    with pytest.raises(SweepRefused) as refusal:
        open_study(storage, sweep_identity(SPACE, {}, ["data.max_length=128"]))
    assert str(refusal.value) == (
        f"Study 'tiny' in {storage} was created for another sweep (was data.max_length=64; now "
        "data.max_length=128); give this one a new hydra.sweeper.study_name, e.g. "
        "hydra.sweeper.study_name=tiny_2 (the old study stays as it is)."
    )


@pytest.mark.parametrize(
    ("params", "why"),
    [
        (
            {"optim.weight_decay": 0.1},
            "optim.weight_decay is not searched (searched: lora.r, optim.learning_rate)",
        ),
        ({"lora.r": 12}, "lora.r=12 is not one of its choices [4, 8, 16]"),
    ],
    ids=["not-searched", "not-a-choice"],
)
def test_an_enqueued_trial_the_space_cannot_produce_is_refused(params, why):
    with pytest.raises(SweepRefused) as refusal:
        check_enqueued_trials([{"lora.r": 8}, params], SPACE)
    assert str(refusal.value) == (
        f"hydra.sweeper.enqueue_trials[1] cannot be a trial of this sweep: {why}; change the value or the "
        "search space."
    )


def test_an_enqueued_number_outside_its_interval_runs_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="sweep.preflight"):
        check_enqueued_trials([{"lora.r": 8, "optim.learning_rate": 0.1}], SPACE)
    assert caplog.messages == [
        "hydra.sweeper.enqueue_trials[0] sets optim.learning_rate=0.1, outside its search space: run as given"
    ]
