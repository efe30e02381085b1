"""One figure per grid: each strategy's median regret, with its p10-p90 band, against cumulative optimizer
steps, as PNG and as offline HTML."""

from __future__ import annotations

import statistics
from pathlib import Path

from sweep.replay.recording import regret_percent
from sweep.replay.run import GridResult
from sweep.replay.score import deciles
from sweep.replay.simulate import SweepTrace


def regret_band(
    traces: list[SweepTrace], steps: list[int], best: float, baseline: float
) -> tuple[list[float], list[float], list[float]]:
    """At each budget in `steps`, the median, 10th and 90th percentile over the sweeps of their regret."""
    curves = [
        [regret_percent(trace.best_within(budget), best, baseline) for budget in steps] for trace in traces
    ]
    columns = [list(column) for column in zip(*curves)]
    median = [statistics.median(column) for column in columns]
    bands = [deciles(column) for column in columns]
    return median, [band[0] for band in bands], [band[-1] for band in bands]


def plot(grid: GridResult, folder: Path) -> list[Path]:
    """The grid's figure, named after it: replay_regret_<label>.png and .html in `folder`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go

    total = grid.grid.total_steps
    steps = [round(total * f / 100) for f in range(1, 51)]
    figure, axis = plt.subplots(figsize=(8, 5))
    html = go.Figure()
    for name, traces in grid.traces.items():
        median, low, high = regret_band(traces, steps, grid.grid.best_eval_loss, grid.grid.baseline_eval_loss)
        (line,) = axis.plot(steps, median, label=name)
        axis.fill_between(steps, low, high, alpha=0.15, color=line.get_color())
        html.add_trace(go.Scatter(x=steps, y=median, name=name, mode="lines"))
    axis.set_yscale("symlog", linthresh=1.0)
    axis.set_xlabel("cumulative optimizer steps")
    axis.set_ylabel("regret, % of possible improvement (median, p10-p90)")
    target = grid.target.budget
    axis.axvline(target * total, color="grey", linestyle=":", label=f"{target:.0%} of the grid")
    axis.set_title(grid.label)
    axis.legend()
    folder.mkdir(parents=True, exist_ok=True)
    png, page = folder / f"replay_regret_{grid.label}.png", folder / f"replay_regret_{grid.label}.html"
    figure.savefig(png, dpi=120, bbox_inches="tight")
    plt.close(figure)
    html.update_layout(
        title=grid.label, xaxis_title="cumulative optimizer steps", yaxis_title="median regret (%)"
    )
    html.write_html(page, include_plotlyjs="directory")
    return [png, page]
