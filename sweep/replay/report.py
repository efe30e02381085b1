"""The printed report: per grid what it is, what it can tell apart and each strategy's row; then every
strategy on every grid at the target budget."""

from __future__ import annotations

from collections import defaultdict

from sweep.lr_prior import short
from sweep.replay.run import GridResult, ReplayResult
from sweep.replay.score import BEST_PRUNED_ONE_IN


def _percent(value: float) -> str:
    return f"{100 * value:.0f}%"


def grid_lines(grid: GridResult) -> list[str]:
    """What the grid is: its configurations and steps, its model, baseline and best."""
    info, model = grid.grid, grid.grid.model
    assumed = " (no model columns: assumed)" if info.model_assumed else ""
    return [
        f"== {grid.label} ({grid.source}): {info.configurations} configurations over "
        f"{', '.join(info.keys)} ({info.total_steps} optimizer steps in all)",
        f"Model: {model['model.name']}, {model['model.architecture.model_type']}, hidden "
        f"{model['model.architecture.hidden_size']}{assumed}; baseline eval loss "
        f"{info.baseline_eval_loss:.4f}, best {info.best_eval_loss:.4f} at {info.best_config}",
    ]


def statistics_lines(grid: GridResult) -> list[str]:
    """What the grid can tell apart: its noise floor, the best against the 10th best, each key's effect."""
    noise, gap = grid.noise, grid.separation
    if noise:
        lines = [
            f"Noise floor (median spread of best eval loss across seeds, {len(noise.configs)} "
            f"configurations): {noise.floor_regret_percent:.2f}% regret for one run; "
            f"{noise.grid_point_floor_regret_percent:.2f}% for a grid point "
            f"(mean of {noise.grid_point_seeds:g} seeds where seeded)"
        ]
    else:
        lines = ["Noise floor: unknown (no configuration recorded with several seeds)"]
    if gap:
        floors = f" = {gap.noise_floors:.1f} x the noise floor" if gap.noise_floors is not None else ""
        lines.append(
            f"Best vs {gap.rank}th-best configuration: {gap.best:.4f} vs {gap.ranked:.4f}, "
            f"{gap.gap_regret_percent:.2f}% regret{floors} (>= 3 needed to tell strategies apart)"
        )
    for key, rows in grid.effects.items():
        cells = [
            f"{r.value:g}: wins {r.wins}/{r.groups}, "
            f"median excess {r.median_excess:.4f} ({r.median_excess_regret_percent:.1f}%), best {r.best:.4f}"
            for r in rows
        ]
        lines.append(f"Effect of {key} (others fixed): " + "; ".join(cells))
    return lines


def context_lines(grid: GridResult) -> list[str]:
    """The target, the learning-rate rule against the grid's best, the settings fixed otherwise."""
    target, rule = grid.target, grid.learning_rate_rule
    lines = [
        f"Target at {target.budget:g} of the steps: median regret <= {target.median_regret_percent:.2f}%, "
        f"grid best pruned in <= 1 of {BEST_PRUNED_ONE_IN} seeds"
    ]
    if rule:
        low, high = rule.grid_range
        edge = f", the grid's {rule.best_at_grid_edge} edge" if rule.best_at_grid_edge else ""
        inside = "inside" if rule.rule_in_grid else "outside"
        lines.append(
            f"Learning-rate rule {rule.rule_from} = {rule.rule_over_best:.2f} x the grid best's "
            f"{short(rule.best)}{edge}; {inside} the grid's {short(low)}…{short(high)}"
        )
    differences: dict[str, list[str]] = defaultdict(list)  # "key value (grid value)" -> strategies
    for name, found in grid.differs_from_grid.items():
        for key, (value, grid_value) in found.items():
            differences[f"{key} {value} (grid {grid_value})"].append(name)
    for difference, names in differences.items():
        who = "every strategy" if len(names) == len(grid.rows) else ", ".join(names)
        lines.append(
            f"Fixed otherwise than the grid, whose curves are replayed anyway: {difference} in {who}"
        )
    return lines


def table_lines(grid: GridResult, budgets: list[float]) -> list[str]:
    """One row per strategy, then the values each sampled outside the grid."""
    header = [
        "strategy",
        *(f"{b:g}: median / p90" for b in budgets),
        "trials",
        "pruned",
        "best pruned",
        "target",
    ]
    lines = [" | ".join(header)]
    for row in grid.rows:
        cells = [row.strategy]
        cells += [f"{row.regret[b].median:.2f}% / {row.regret[b].p90:.2f}%" for b in budgets]
        cells += [
            f"{row.median_trials:g}",
            _percent(row.pruned_share),
            f"{row.grid_best_pruned_seeds}/{row.seeds}",
            "met" if row.target_met else "missed",
        ]
        lines.append(" | ".join(cells))
    lines.append("Sampled values outside the grid, snapped to its edge (share of trials, below / above):")
    for row in grid.rows:
        cells = [
            f"{key.split('.')[-1]} {_percent(sides['below'])} / {_percent(sides['above'])}"
            for key, sides in row.outside_grid.items()
        ]
        lines.append(f"  {row.strategy}: {', '.join(cells) or 'none'}")
    return lines


def stop_lines(grid: GridResult) -> list[str]:
    """The capped strategies: each run to its n_trials and stopped by its rule, with compute and regret at
    the end, and which noise repeats were drawn from the floor instead of recorded seeds."""
    if not grid.stop_rows:
        return []
    lines = [
        f"Compute until the sweep ends (optimizer steps; runs of the grid's best configuration; median share of "
        f"each seed's fixed sweep / median over median), regret of its recommendation (median / p90), seeds "
        f"within max(1%, floor) = {grid.target.median_regret_percent:.2f}%:",
        "strategy | sweep | trials | steps | runs of best | of fixed | regret at end | within floor | "
        "best pruned | stopped | drawn repeats",
    ]
    for row in grid.stop_rows:
        lines.append(
            f"{row.strategy} | {row.sweep} | {row.median_trials:g} | {row.median_steps:g} | "
            f"{row.median_runs_of_best:.2f} | {_percent(row.median_share_of_fixed)} / "
            f"{_percent(row.share_of_median_fixed)} | {row.regret.median:.2f}% / {row.regret.p90:.2f}% | "
            f"{_percent(row.within_floor)} | {row.grid_best_pruned_seeds}/{row.seeds} | "
            f"{row.stopped_seeds}/{row.seeds} | {_percent(row.drawn_repeats)}"
        )
    lines.append(
        "Drawn repeats: a noise repeat of a configuration without a recorded seed replays its first run moved "
        "by a normal draw from the grid's one-run floor (seeded per replay seed and trial), not a recorded run."
    )
    return lines


def format_grid(grid: GridResult, budgets: list[float]) -> list[str]:
    """One grid's lines: what it is, its noise floor and target, the rule against its best, the table, the
    capped strategies' compute and regret at their end."""
    return [
        *grid_lines(grid),
        *statistics_lines(grid),
        *context_lines(grid),
        *table_lines(grid, budgets),
        *stop_lines(grid),
    ]


def format_summary(result: ReplayResult) -> list[str]:
    """Every strategy on every grid at the target budget, and whether it meets the target on all."""
    grids = result.grids
    lines = [
        f"== All grids at {grids[0].target.budget:g} of each grid's steps: median / p90 regret (target), "
        "grid best pruned",
        " | ".join(["strategy", *(g.label for g in grids), "target on all"]),
    ]
    for entry in result.summary:
        cells = [entry.strategy]
        for grid in grids:
            e = entry.grids[grid.label]
            cells.append(
                f"{e.median_regret:.2f}% / {e.p90_regret:.2f}% ({e.target:.2f}%), "
                f"{e.grid_best_pruned_seeds}/{e.seeds}"
            )
        cells.append("yes" if entry.target_met_on_all else "no")
        lines.append(" | ".join(cells))
    return lines


def format_table(result: ReplayResult, budgets: list[float]) -> list[str]:
    """The whole report: each grid, then the summary over all of them."""
    lines = []
    for grid in result.grids:
        lines += [*format_grid(grid, budgets), ""]
    return lines + format_summary(result)
