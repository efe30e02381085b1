"""The stopping rule (sweep/stopping.py) on hand-made sweeps."""

from __future__ import annotations

import pytest

from sweep.stopping import Outcome, StoppingRule, decide

FIRST = {"lr": 1.32e-3, "r": 16}
REPEATS = [Outcome(0, FIRST, 0.100), Outcome(1, FIRST, 0.104, repeat=True), Outcome(2, FIRST, 0.098, True)]


def search(start: int, values: list[float | None]) -> list[Outcome]:
    return [Outcome(start + i, {"lr": 1e-4 * (i + 1), "r": 8}, v) for i, v in enumerate(values)]


def test_no_stop_before_the_floor_is_measured():
    decision = decide([Outcome(0, FIRST, 0.1), *search(1, [0.2] * 8)], StoppingRule(patience=4, min_trials=6))
    assert not decision.stop and decision.reason == "the noise floor is not measured yet"


def test_it_stops_after_patience_trials_that_do_not_beat_the_best_by_more_than_the_floor():
    rule = StoppingRule(patience=4, min_trials=6)
    # floor 0.006 (0.104 - 0.098); 0.097 beats the mean 0.1007 by 0.0037 < floor: not an improvement
    assert not decide([*REPEATS, *search(3, [0.2, None, 0.097])], rule).stop
    decision = decide([*REPEATS, *search(3, [0.2, None, 0.097, 0.3])], rule)
    assert decision.stop and decision.finished == 7
    assert decision.noise_floor == pytest.approx(0.006)
    assert decision.reason == (  # trial 5's 0.097 is now the best mean, but within the floor of trial 0's
        "the last 4 search trials did not beat the best configuration (trial 5: 0.0970) by more than the noise "
        "floor 0.0060"
    )
    stopped = decide([*REPEATS, *search(3, [0.2, None, 0.2, 0.3])], rule)
    assert stopped.reason.endswith(
        "(trial 0: 0.1007, the mean of 3 seeds) by more than the noise floor 0.0060"
    )


def test_a_real_improvement_restarts_the_count():
    rule = StoppingRule(patience=4, min_trials=6)
    decision = decide([*REPEATS, *search(3, [0.2, 0.2, 0.2, 0.05, 0.2])], rule)  # 0.05 beats 0.1007 by 0.05
    assert not decision.stop and decision.reason == "1 of 4 trials without improvement"
    assert decision.best.trials == (6,)


def test_repeats_never_count_towards_patience_and_min_trials_holds_the_rule_back():
    rule = StoppingRule(patience=2, min_trials=6)
    # trials 0, 1 (repeat), 2 (repeat), 3, 4: two search trials without improvement, but only 5 finished
    assert decide([*REPEATS, *search(3, [0.2, None])], rule).reason == "5 of at least 6 trials finished"
    late = [
        Outcome(0, FIRST, 0.100),
        *search(1, [0.2]),
        Outcome(2, FIRST, 0.104, True),
        *search(3, [0.3, 0.3]),
    ]
    assert not decide(late, rule).stop  # 4 finished < 6, although 3 search trials did not improve
    assert decide(
        [*late, Outcome(5, FIRST, 0.098, True)], rule
    ).stop  # the repeat is the 6th, not a 4th stale


def test_maximize_reads_improvement_upwards():
    rule = StoppingRule(patience=2, min_trials=5)
    up = [Outcome(0, FIRST, 0.50), Outcome(1, FIRST, 0.52, True), Outcome(2, FIRST, 0.48, True)]
    assert not decide([*up, *search(3, [0.60, 0.40])], rule, minimize=False).stop  # 0.60 beats 0.50 by 0.1
    decision = decide([*up, *search(3, [0.51, 0.40])], rule, minimize=False)
    assert decision.stop and decision.best.mean == pytest.approx(0.51) and decision.finished == 5
