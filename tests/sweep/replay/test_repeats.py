"""sweep/replay/repeats.py: what a search trial and a noise repeat replay."""

from __future__ import annotations

import random

import pytest

from sweep.replay.loading import curves_from_rows
from sweep.replay.recording import build_recording
from sweep.replay.repeats import MEDIAN_RANGE_OF_THREE, first_run, repeat_run
from tests.sweep.replay.grids import tiny_rows

SEEDED, UNSEEDED = (4e-4,), (1e-3,)


@pytest.fixture(scope="module")
def tiny():
    return build_recording(*curves_from_rows(tiny_rows()))


def test_a_search_trial_replays_the_grid_point_or_the_grid_seeds_own_run(tiny):
    seed_42 = tiny.runs[SEEDED][0]
    assert first_run(tiny, SEEDED, "mean").best == pytest.approx(
        seed_42.best - 0.001 / 3
    )  # (0 + .001 - .002) / 3
    assert first_run(tiny, SEEDED, "seed") is seed_42
    assert first_run(tiny, UNSEEDED, "seed") is first_run(tiny, UNSEEDED, "mean")  # one run: the same curve
    with pytest.raises(SystemExit, match="replay.curves='median': choose one of mean, seed"):
        first_run(tiny, SEEDED, "median")


def test_a_repeat_replays_a_recorded_seed_where_there_is_one_and_a_labelled_draw_otherwise(tiny):
    first = first_run(tiny, SEEDED, "mean")
    for repeat, shift in ((1, 0.001), (2, -0.002)):  # seeds 43 and 44, recorded
        curve, drawn = repeat_run(tiny, SEEDED, repeat, first, "key")
        assert not drawn and curve.best == pytest.approx(tiny.runs[SEEDED][0].best + shift)
    first = first_run(tiny, UNSEEDED, "mean")
    curve, drawn = repeat_run(tiny, UNSEEDED, 1, first, "key")
    shift = random.Random("key").gauss(0.0, 0.003 / MEDIAN_RANGE_OF_THREE)
    assert drawn and curve.best == pytest.approx(first.best + shift)
    assert [e.loss for e in curve.evals] == pytest.approx([e.loss + shift for e in first.evals])
    assert repeat_run(tiny, UNSEEDED, 1, first, "key")[0].best == curve.best  # deterministic per key
    assert repeat_run(tiny, UNSEEDED, 1, first, "other")[0].best != curve.best
