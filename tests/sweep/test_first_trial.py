"""The first trial's length follows the training set's size (sweep/first_trial.py)."""

from __future__ import annotations

import pytest

from sweep.first_trial import EPOCHS, first_trial_epochs, with_data_length
from tests.conftest import CACHE, TINY


@pytest.mark.parametrize(
    ("examples", "epochs"),
    [(0, 3), (48, 3), (9_999, 3), (10_000, 2), (99_999, 2), (100_000, 1), (200_000, 1), (939_000, 1)],
)
def test_the_first_trials_epochs_follow_the_training_set_size(examples, epochs):
    assert first_trial_epochs(examples).epochs == epochs


def test_a_48_example_set_and_a_200k_set_get_different_first_trials():
    first = {"optim.learning_rate": 1.32e-3, "lora.r": 16, EPOCHS: 3, "optim.warmup_ratio": 0.05}
    small = with_data_length(first, first_trial_epochs(48))
    large = with_data_length(first, first_trial_epochs(200_000))
    assert (small[EPOCHS], large[EPOCHS]) == (3, 1)
    assert {k: v for k, v in large.items() if k != EPOCHS} == {k: v for k, v in first.items() if k != EPOCHS}
    assert first[EPOCHS] == 3  # the preset's own list is not changed
    assert first_trial_epochs(200_000).describe() == (
        "first trial: 1 epoch for 200,000 training examples (3 under 10,000, 2 under 100,000, 1 from "
        "100,000: sweep/first_trial.py)"
    )


def test_a_negative_size_is_refused():
    with pytest.raises(ValueError, match="train_examples=-1 must be ≥ 0"):
        first_trial_epochs(-1)


def test_the_training_set_is_counted_after_the_eval_split_and_the_cap(tmp_path):
    from src.config import compose
    from sweep.first_trial import training_examples

    base = [*TINY, f"paths.cache_dir={CACHE}", "hparams_search=tiny_cpu"]
    assert training_examples(compose(base, with_hydra=True)) == 32  # 40 generated, 20% held out
    capped = compose([*base, "data.max_train_examples=10"], with_hydra=True)
    assert training_examples(capped) == 10
