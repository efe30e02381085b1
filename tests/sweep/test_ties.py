"""Ties (sweep/ties.py) in `python -m sweep.report`: configurations ranked by seed mean, those within the
noise floor of the best marked tied in the leaderboard and best_overrides.txt, with the noise floor, the stop
decision and what stopping saved; on a study built in SQLite with told values (no training)."""

from __future__ import annotations

import csv

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from sweep.convergence import STOP_DECISION
from sweep.cost import PLANNED, STEPS
from sweep.repeats import REPEAT_OF, SEED
from sweep.report import report
from sweep.ties import standing

SPACE = {
    "optim.learning_rate": FloatDistribution(1e-5, 1e-1, log=True),
    "lora.r": CategoricalDistribution([8, 16, 32]),
}
A, B, C, D = (
    {"optim.learning_rate": lr, "lora.r": r} for lr, r in ((2e-3, 16), (1e-3, 8), (3e-3, 8), (1e-2, 32))
)
# A at three seeds (spread 0.01: the floor, mean 0.085); B 0.082 is the best mean though A's first seed is the
# best single value; A (0.003 behind) and C (0.008) are within the floor of B, D (0.018) is not.
TRIALS = [
    (A, 0.0800, {}),
    (A, 0.0850, {REPEAT_OF: 0, SEED: 43}),
    (A, 0.0900, {REPEAT_OF: 0, SEED: 44}),
    (B, 0.0820, {}),
    (C, 0.0900, {}),
    (D, 0.1000, {}),
]


def tied_study(sweep_dir) -> optuna.Study:
    study = optuna.create_study(study_name="ties", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    for params, value, attrs in TRIALS:
        cost = {STEPS: 100, PLANNED: 100}
        study.add_trial(
            optuna.trial.create_trial(
                params=params, distributions=SPACE, value=value, user_attrs={**attrs, **cost}
            )
        )
    pruned = {STEPS: 75, PLANNED: 100}
    study.add_trial(
        optuna.trial.create_trial(params=D, distributions=SPACE, state=TrialState.PRUNED, user_attrs=pruned)
    )
    return study


def test_three_configurations_within_the_noise_and_one_outside(tmp_path, capsys):
    study = tied_study(tmp_path)
    place = standing(study.trials)
    assert place.floor == pytest.approx(0.01)
    assert [m.trials[0] for m in place.tied] == [3, 0, 4] and [m.trials[0] for m in place.order] == [
        3,
        0,
        4,
        5,
    ]
    result = report(tmp_path)
    printed = capsys.readouterr().out
    assert result["best_trial"] == 3 != study.best_trial.number  # by seed mean, not by one lucky seed
    assert result["tied_trials"] == [3, 0, 4] and result["noise_floor"] == pytest.approx(0.01)
    rows = list(csv.DictReader((tmp_path / "leaderboard.csv").open()))
    assert [r["trial"] for r in rows] == ["3", "0", "1", "2", "4", "5", "6"]
    assert {r["trial"]: r["tied"] for r in rows} == {
        "3": "tied",
        "0": "tied",
        "1": "tied",
        "2": "tied",
        "4": "tied",
        "5": "",
        "6": "",
    }
    assert float(rows[1]["seed_mean"]) == pytest.approx(0.085) and rows[1]["seeds"] == "3"
    assert rows[2]["note"] == "noise repeat of trial 0 at seed 43"
    lines = (tmp_path / "best_overrides.txt").read_text().splitlines()
    assert lines[0].startswith(
        "# tied: 3 configurations have seed means within the noise floor 0.01 of the best:"
    )
    assert (
        "trial 3 (0.082 over 1 seeds), trial 0 (0.085 over 3 seeds), trial 4 (0.09 over 1 seeds)" in lines[0]
    )
    assert "trial 5" not in lines[0] and lines[1].startswith("#")
    assert lines[2] == "python -m src.train optim.learning_rate=0.001 lora.r=8"  # B, the best seed mean
    assert "Tied with it within the noise floor 0.01: trials 0 (0.0850), 4 (0.0900)" in printed
    assert "noise floor 0.01 (median seed spread; trial 0's configuration over 3 seeds)" in printed


def test_the_report_says_why_the_sweep_stopped_and_what_stopping_saved(tmp_path, capsys):
    study = tied_study(tmp_path)
    study.set_user_attr(
        STOP_DECISION,
        {
            "reason": "the last 4 search trials did not beat it",
            "finished": 7,
            "n_trials": 20,
            "noise_floor": 0.01,
            "best_trial": 3,
            "best_seed_mean": 0.082,
            "patience": 4,
            "min_trials": 6,
        },
    )
    result = report(tmp_path)
    printed = capsys.readouterr().out
    assert (
        "Sweep stopped itself after 7 of n_trials=20 trials (noise floor 0.01, best seed mean 0.082 of trial 3)"
        in printed
    )
    cost = result["cost"]
    assert (cost.steps, cost.best_run_steps, cost.unrun_trials, cost.stopping_saved_steps) == (
        675,
        100,
        13,
        1300,
    )
    assert (
        "compute: 675 optimizer steps, 0 tokens over 7 trials = 6.8 runs of the best configuration (saved 1,325 "
        "steps: pruning 25, stopping 13 unrun trials x 100 mean planned steps)"
    ) in printed


def test_without_a_floor_the_best_stands_alone(tmp_path, capsys):
    study = optuna.create_study(study_name="alone", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    for params, value, _attrs in TRIALS[3:]:
        study.add_trial(optuna.trial.create_trial(params=params, distributions=SPACE, value=value))
    result = report(tmp_path)
    assert result["tied_trials"] == [] and result["noise_floor"] is None
    assert (tmp_path / "best_overrides.txt").read_text().startswith("python -m src.train ")
    assert "noise floor not measured" in capsys.readouterr().out
