"""What a replayed trial runs: a configuration's first run (its grid point, or the grid seed's own curve), or
a noise repeat of it at another seed, from the recording where that seed was recorded and drawn from the
grid's noise floor where it was not (labelled: SweepTrace.drawn)."""

from __future__ import annotations

import random

from sweep.replay.recording import Curve, Eval, Recording

CURVES = ("mean", "seed")  # what a search trial replays: the grid point (seed mean) or the grid seed's run
# The median range (max - min) of three independent standard normal draws, by numerical integration of the
# range's distribution (its mean is Tippett's 1.693): a drawn seed has the standard deviation that makes the
# median spread of three seeds the grid's one-run floor.
MEDIAN_RANGE_OF_THREE = 1.588


def first_run(recording: Recording, config: tuple, curves: str) -> Curve:
    """The curve a search trial of `config` replays: its grid point ("mean": the mean of its seeds where it
    has several) or the grid seed's own run ("seed")."""
    if curves not in CURVES:
        raise SystemExit(f"replay.curves={curves!r}: choose one of {', '.join(CURVES)}.")
    runs = recording.runs.get(config)
    return runs[0] if curves == "seed" and runs else recording.curves[config]


def shifted(curve: Curve, shift: float) -> Curve:
    """The same run with every eval loss (and the objective so far) moved by `shift`: one other seed."""
    evals = [Eval(e.step, e.fraction, e.loss + shift) for e in curve.evals]
    best_so_far = [curve.best_until(index) + shift for index in range(len(evals))]
    return Curve(curve.config, curve.planned_steps, evals, curve.complete, best_so_far=best_so_far)


def repeat_run(
    recording: Recording, config: tuple, repeat: int, first: Curve, key: str
) -> tuple[Curve, bool]:
    """The curve of noise repeat number `repeat` (1, 2, …) of `config`, whose first run was `first`, and
    whether it was drawn: the configuration's recorded run of its `repeat`-th other seed where there is
    one; otherwise `first` moved by a normal draw whose standard deviation is the grid's one-run floor /
    MEDIAN_RANGE_OF_THREE (0 without a floor), seeded by `key` so a replay is deterministic."""
    runs = recording.runs.get(config, [])
    if repeat < len(runs) and runs[repeat].complete:
        return runs[repeat], False
    sigma = (recording.floor_loss or 0.0) / MEDIAN_RANGE_OF_THREE
    return shifted(first, random.Random(key).gauss(0.0, sigma)), True
