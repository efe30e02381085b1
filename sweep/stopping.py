"""When a sweep stops itself: once further trials are unlikely to beat its best configuration by more than
the noise the sweep measured (sweep/noise.py).

The idea is optuna.terminator's (stop once the remaining improvement is below the objective's own noise),
written small: that module is deprecated since Optuna 4.9, its evaluators need scipy, it counts only COMPLETE
trials (ours are often PRUNED) and it hooks study.optimize, which our ask/tell sweeper does not use.

The rule here: with the noise floor known, stop after
`patience` consecutive finished search trials that did not beat the best seed mean so far by more than the
floor. A pruned trial did not beat it (the pruner stopped it for being worse at the same phase). Noise
repeats are not search trials: they measure the floor and move the best's mean, and never count towards
patience.

Its constants are the replay's (`python -m sweep.replay replay=stopping`, docs/sweeps.md, "Stopping, noise
repeats and n_trials"): with 2 noise repeats after the first trial, patience 4 stops the default sweep
after 7 trials on both recorded grids, at 35-37% of a fixed 20-trial sweep's optimizer steps, with every
seed's recommendation within the grid's floor; patience 5 reaches 38-40% and 3 saves 3 points more.
Without its first trial no patience up to 8 keeps the within-floor share near the fixed sweep's within 60%
of its compute (the figures are in the docs). min_trials 6 does not bind while 2 repeats follow the first
complete trial (the first stop comes after 3 + patience trials); it holds back a sweep run with fewer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sweep.noise import SeedMean, config_key, noise_floor, ranked, seed_means


@dataclass(frozen=True)
class Outcome:
    """One finished trial, in the order the study told them."""

    number: int
    params: dict[str, Any]
    value: float | None  # None: pruned (did not finish its schedule)
    repeat: bool = False  # a noise repeat of an earlier configuration at another seed


@dataclass(frozen=True)
class StoppingRule:
    """patience: consecutive finished search trials without an improvement larger than the floor;
    min_trials: finished trials (repeats included) before the rule may stop."""

    patience: int = 4
    min_trials: int = 6


@dataclass(frozen=True)
class StopDecision:
    stop: bool
    reason: str  # one sentence with the figures, printed by the sweep and stored in the study
    finished: int
    best: SeedMean | None
    noise_floor: float | None


def decide(outcomes: Sequence[Outcome], rule: StoppingRule, minimize: bool = True) -> StopDecision:
    """Whether a sweep whose finished trials are `outcomes` (told order) should start no more trials."""
    complete = [(o.number, o.params, o.value) for o in outcomes if o.value is not None]
    means = seed_means(complete)
    floor = noise_floor(means)
    order = ranked(means, minimize)
    best = order[0] if order else None
    n = len(outcomes)
    if floor is None or best is None:
        return StopDecision(False, "the noise floor is not measured yet", n, best, floor)
    if n < rule.min_trials:
        return StopDecision(False, f"{n} of at least {rule.min_trials} trials finished", n, best, floor)
    stale = _trials_since_improvement(outcomes, floor, minimize)
    if stale < rule.patience:
        return StopDecision(False, f"{stale} of {rule.patience} trials without improvement", n, best, floor)
    seeds = f", the mean of {len(best.values)} seeds" if len(best.values) > 1 else ""
    reason = (
        f"the last {stale} search trials did not beat the best configuration (trial {best.trials[0]}: "
        f"{best.mean:.4f}{seeds}) by more than the noise floor {floor:.4f}"
    )
    return StopDecision(True, reason, n, best, floor)


def _trials_since_improvement(outcomes: Sequence[Outcome], floor: float, minimize: bool) -> int:
    """Search trials since the last one that beat the best seed mean before it by more than `floor`."""
    stale, seen = 0, []
    for outcome in outcomes:
        before = ranked(seed_means(seen), minimize)
        if outcome.value is not None:
            seen.append((outcome.number, outcome.params, outcome.value))
        if outcome.repeat:
            continue
        sign = 1.0 if minimize else -1.0
        new_config = not before or config_key(outcome.params) not in {m.config for m in before}
        improved = (
            outcome.value is not None
            and new_config
            and (not before or sign * (before[0].mean - outcome.value) > floor)
        )
        stale = 0 if improved else stale + 1
    return stale
