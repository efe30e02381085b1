"""sweep/replay/plots.py: the regret band over the sweeps, and the figure files."""

from __future__ import annotations

import pytest

from sweep.replay.plots import plot, regret_band
from sweep.replay.simulate import SweepTrace
from tests.sweep.replay.grids import grid_result


def test_the_band_is_the_median_and_the_10th_and_90th_percentile_of_regret():
    """Best 0.1, baseline 0.6: a value of 0.2 is 20% regret, none yet 100%."""
    traces = [
        SweepTrace(ends=[10, 20], values=[0.2, 0.1]),
        SweepTrace(ends=[10, 20], values=[0.35, None]),
        SweepTrace(ends=[30], values=[0.1]),
    ]
    median, low, high = regret_band(traces, [5, 10, 20, 30], best=0.1, baseline=0.6)
    assert median == pytest.approx([100, 50, 50, 0])
    # within 10 steps: 20, 50 and 100 -> p10 20 + 0.2 x 30, p90 50 + 0.8 x 50; within 30: 0, 50, 0
    assert low == pytest.approx([100, 26, 10, 0])
    assert high == pytest.approx([100, 90, 90, 40])


def test_a_grid_is_drawn_as_png_and_html(tmp_path):
    grid = grid_result(traces={"a": [SweepTrace(ends=[48, 96], values=[0.3, 0.0551])], "b": [SweepTrace()]})
    png, page = plot(grid, tmp_path / "out")
    assert (png.name, page.name) == ("replay_regret_g.png", "replay_regret_g.html")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    html = page.read_text()
    assert '"name":"a"' in html and '"name":"b"' in html and (tmp_path / "out" / "plotly.min.js").is_file()
