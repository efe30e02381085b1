"""The search space (sweep/space.py): Hydra's sweep syntax to Optuna distributions, and which enqueued trials
it cannot produce."""

from __future__ import annotations

from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from sweep.space import cannot_produce, grid_choices, outside_interval, search_space

PARAMS = [
    "optim.learning_rate=tag(log, interval(1e-5, 1e-3))",
    "lora.r=choice(8, 16, 32)",
    "optim.num_train_epochs=int(interval(1, 3))",
    "seed=7",
]


def test_sweep_syntax_becomes_distributions_and_a_fixed_value_is_not_searched():
    space, fixed, _ = search_space(PARAMS)
    assert space == {
        "optim.learning_rate": FloatDistribution(1e-5, 1e-3, log=True),
        "lora.r": CategoricalDistribution([8, 16, 32]),
        "optim.num_train_epochs": IntDistribution(1, 3),
    }
    assert fixed == {"seed": "7"}  # passed on as the override text
    assert grid_choices({"lora.r": space["lora.r"], "epochs": space["optim.num_train_epochs"]}) == {
        "lora.r": (8, 16, 32),
        "epochs": [1, 2, 3],
    }


def test_an_enqueued_trial_outside_the_choices_or_the_searched_keys_is_refused_with_why():
    space, _, _ = search_space(PARAMS)
    assert cannot_produce({"lora.r": 16, "optim.learning_rate": 1e-4}, space) is None
    assert cannot_produce({"lora.r": 12}, space) == "lora.r=12 is not one of its choices [8, 16, 32]"
    assert cannot_produce({"lora.alpha": 16}, space) == (
        "lora.alpha is not searched (searched: lora.r, optim.learning_rate, optim.num_train_epochs)"
    )
    assert cannot_produce({"lora.r": True}, space) is not None  # True == 1 in Python, not a choice here


def test_numbers_outside_an_interval_run_as_given_and_are_listed():
    space, _, _ = search_space(PARAMS)
    params = {"optim.learning_rate": 5e-3, "optim.num_train_epochs": 2, "lora.r": 8}
    assert cannot_produce(params, space) is None
    assert outside_interval(params, space) == ["optim.learning_rate=0.005"]
    assert outside_interval({"optim.num_train_epochs": 2.5}, space) == ["optim.num_train_epochs=2.5"]
