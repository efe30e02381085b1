"""Noise repeats: the sweep re-runs its best configuration at other training seeds, so it measures its own
noise floor (sweep/noise.py) instead of assuming a recorded grid's.

When: as soon as the study has its first COMPLETE trial, its best configuration so far is queued
`hydra.sweeper.noise_repeats` more times, with `seed=<base seed + k>` (k = 1 … noise_repeats; the base seed
is the sweep's top-level `seed`). The default sweep's first trial is the model-derived one, which lands
within the noise of the grid's best on every recorded grid (docs/sweeps.md), so its repeats measure the floor
of a configuration near the best, and early: the stopping rule (sweep/convergence.py) cannot stop before the
floor is known. Once per study: a resumed or shared study does not queue them again.

What a repeat is:
- an Optuna trial with the repeated trial's parameters, queued by `study.enqueue_trial` with the user
  attributes `noise_repeat_of` (the trial it repeats) and `seed` (its training seed);
- one of the n_trials places: n_trials stays the most trials, and so the most compute, a sweep may spend;
- never pruned, and it reports nothing to the pruner (sweep/pruning.py), so it does not move other trials'
  pruning thresholds either;
- not a duplicate: sweep/places.py tells two queued trials apart by parameters and these attributes, so
  only a second copy of the same repeat (two workers queueing at the same moment) is dropped.
"""

from __future__ import annotations

import logging
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweep.noise import ranked, seed_means

log = logging.getLogger(__name__)

REPEAT_OF = "noise_repeat_of"  # trial user attribute: the trial whose configuration a repeat re-runs
SEED = "seed"  # trial user attribute: a repeat's training seed (the top-level config key `seed`)
QUEUED = "noise_repeats"  # study user attribute: {"of": trial number, "seeds": [...]} once queued


def is_repeat(trial: FrozenTrial | optuna.Trial) -> bool:
    return REPEAT_OF in trial.user_attrs


def seed_override(trial: optuna.Trial) -> tuple[str, ...]:
    """The job override that gives a repeat its seed (`seed=43`); nothing for other trials."""
    return (f"seed={int(trial.user_attrs[SEED])}",) if is_repeat(trial) else ()


def complete_values(trials: list[FrozenTrial]) -> list[tuple[int, dict[str, Any], float]]:
    """`(number, params, value)` of the single-objective COMPLETE trials, what sweep.noise groups."""
    return [(t.number, t.params, t.value) for t in trials if t.state == TrialState.COMPLETE]


def queue_noise_repeats(
    study: optuna.Study, trials: list[FrozenTrial], count: int, base_seed: int
) -> list[int] | None:
    """Queue `count` repeats of the best configuration so far, once per study, after its first COMPLETE
    trial; returns their seeds, or None when nothing was queued (already queued, or nothing complete)."""
    if count <= 0 or QUEUED in study.user_attrs:
        return None
    order = ranked(
        seed_means(complete_values(trials)), study.direction == optuna.study.StudyDirection.MINIMIZE
    )
    if not order:
        return None
    number = order[0].trials[0]
    seeds = [base_seed + k for k in range(1, count + 1)]
    study.set_user_attr(QUEUED, {"of": number, "seeds": seeds})  # first: another worker looking now skips
    params = next(t.params for t in trials if t.number == number)
    for seed in seeds:
        study.enqueue_trial(params, user_attrs={REPEAT_OF: number, SEED: seed})
    log.info(
        "Noise repeats: trial %d's configuration queued again at seeds %s (hydra.sweeper.noise_repeats=%d), "
        "to measure this sweep's noise floor",
        number,
        ", ".join(map(str, seeds)),
        count,
    )
    return seeds
