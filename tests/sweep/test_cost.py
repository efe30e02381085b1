"""What a sweep cost (sweep/cost.py): steps and tokens recorded per trial, added up, and as runs of the best
configuration."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from sweep.cost import PLANNED, STEPS, TOKENS, record_cost, sweep_cost


def told(study, value, metrics, state=TrialState.COMPLETE):
    trial = study.ask()
    trial.suggest_int("x", 0, 1000)  # each trial its own configuration (equal params are one, sweep/noise.py)
    record_cost(trial, metrics)
    study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)


def test_trials_steps_and_tokens_add_up_to_runs_of_the_best_configuration():
    study = optuna.create_study()
    told(study, 0.5, {"global_step": 120, "planned_steps": 120, "train_tokens": 12_000})
    told(study, 0.4, {"global_step": 40, "planned_steps": 40, "train_tokens": 4_000})  # the best: 40 steps
    told(study, None, {"global_step": 30, "planned_steps": 120, "train_tokens": 3_000}, TrialState.PRUNED)
    told(study, None, {"error": "x"}, TrialState.FAIL)  # failed: not counted
    assert study.trials[0].user_attrs == {STEPS: 120, PLANNED: 120, TOKENS: 12_000}
    cost = sweep_cost(study)
    assert (cost.trials, cost.steps, cost.tokens, cost.best_run_steps) == (3, 190, 19_000, 40)
    assert cost.pruning_saved_steps == 90 and cost.runs_of_best == 190 / 40
    assert cost.line() == (
        "compute: 190 optimizer steps, 19,000 tokens over 3 trials = 4.8 runs of the best configuration "
        "(pruning saved 90 steps)"
    )


def test_no_complete_trial_has_no_best_run_to_count_in():
    study = optuna.create_study()
    told(study, None, {"global_step": 3, "planned_steps": 9, "train_tokens": 30}, TrialState.PRUNED)
    cost = sweep_cost(study)
    assert cost.runs_of_best is None
    assert cost.line() == "compute: 3 optimizer steps, 30 tokens over 1 trials (pruning saved 6 steps)"
