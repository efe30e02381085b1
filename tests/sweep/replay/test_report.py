"""sweep/replay/report.py: the printed lines, to the character (the replay's rows are compared across
commits as text)."""

from __future__ import annotations

from sweep.replay.grid_stats import Separation
from sweep.replay.report import format_grid, format_table
from sweep.replay.run import GridVerdict, ReplayResult, SummaryEntry
from sweep.replay.score import Regret
from sweep.replay.stop_score import StopRow
from tests.sweep.replay.grids import grid_result

BUDGETS = [0.1, 0.5]


def test_a_grid_reads_what_it_is_what_it_tells_apart_and_each_strategys_row():
    assert format_grid(grid_result(), BUDGETS) == [
        "== g (benchmarks/g.csv): 2 configurations over optim.learning_rate (96 optimizer steps in all)",
        "Model: SmolLM2-135M-Instruct, llama, hidden 576 (no model columns: assumed); baseline eval loss 0.7123, "
        "best 0.0551 at {'optim.learning_rate': 0.001}",
        "Noise floor (median spread of best eval loss across seeds, 0 configurations): 0.40% regret for one run; "
        "0.23% for a grid point (mean of 3 seeds where seeded)",
        "Best vs 10th-best configuration: 0.0551 vs 0.0665, 1.73% regret = 7.5 x the noise floor "
        "(>= 3 needed to tell strategies apart)",
        "Effect of optim.learning_rate (others fixed): 0.0001: wins 0/2, median excess 0.0123 (1.9%), best 0.0701; "
        "0.001: wins 2/2, median excess 0.0000 (0.0%), best 0.0551",
        "Target at 0.15 of the steps: median regret <= 1.00%, grid best pruned in <= 1 of 20 seeds",
        "Learning-rate rule 1.32e-3 from a rule = 1.32 x the grid best's 1e-3, the grid's top edge; outside the "
        "grid's 1e-5…1e-3",
        "Fixed otherwise than the grid, whose curves are replayed anyway: lora.alpha 2r (grid 32) in b",
        "strategy | 0.1: median / p90 | 0.5: median / p90 | trials | pruned | best pruned | target",
        "a | 1.00% / 1.00% | 0.00% / 0.00% | 12.5 | 25% | 0/20 | met",
        "b | 3.77% / 6.54% | 0.00% / 2.77% | 12.5 | 25% | 3/20 | missed",
        "Sampled values outside the grid, snapped to its edge (share of trials, below / above):",
        "  a: learning_rate 0% / 59%",
        "  b: none",
    ]


def test_a_grid_without_seeds_rule_or_differences():
    gap = Separation(10, 0.0551, 0.0665, 0.0114, 1.734, None)
    differences = {"a": {"lora.dropout": [0.0, 0.05]}, "b": {"lora.dropout": [0.0, 0.05]}}
    lines = format_grid(
        grid_result(
            noise=None, separation=gap, effects={}, learning_rate_rule=None, differs_from_grid=differences
        ),
        BUDGETS,
    )
    assert lines[2:6] == [
        "Noise floor: unknown (no configuration recorded with several seeds)",
        "Best vs 10th-best configuration: 0.0551 vs 0.0665, 1.73% regret (>= 3 needed to tell strategies apart)",
        "Target at 0.15 of the steps: median regret <= 1.00%, grid best pruned in <= 1 of 20 seeds",
        "Fixed otherwise than the grid, whose curves are replayed anyway: lora.dropout 0.0 (grid 0.05) in every "
        "strategy",
    ]


def test_the_summary_has_every_strategy_on_every_grid():
    one, two = grid_result(), grid_result(label="h", source="h.csv")
    verdict = GridVerdict(0.8812, 4.8101, 1.2764, 2, 100, False)
    summary = [
        SummaryEntry("a", {"g": GridVerdict(0.0, 0.0, 1.0, 0, 100, True), "h": verdict}, False),
        SummaryEntry("b", {"g": GridVerdict(0.0, 0.0, 1.0, 0, 100, True), "h": verdict}, True),
    ]
    lines = format_table(ReplayResult(["g.csv", "h.csv"], [one, two], summary), BUDGETS)
    assert lines[14] == "" and lines[15].startswith("== h (h.csv)") and lines[29] == ""
    assert lines[30:] == [
        "== All grids at 0.15 of each grid's steps: median / p90 regret (target), grid best pruned",
        "strategy | g | h | target on all",
        "a | 0.00% / 0.00% (1.00%), 0/100 | 0.88% / 4.81% (1.28%), 2/100 | no",
        "b | 0.00% / 0.00% (1.00%), 0/100 | 0.88% / 4.81% (1.28%), 2/100 | yes",
    ]


def test_a_capped_strategy_reads_its_fixed_and_stopped_sweeps():
    rows = [
        StopRow("a", "fixed 20 trials", 100, 20, 1035, 14.375, 1.0, 1.0, Regret(0.0, 0.37), 0.98, 1, 0, 0.9),
        StopRow(
            "a", "stopping rule", 100, 7, 372, 5.1667, 0.3594, 0.3599, Regret(0.37, 1.5), 0.95, 0, 97, 0.9
        ),
    ]
    lines = format_grid(grid_result(stop_rows=rows), BUDGETS)
    assert lines[-5:] == [
        "Compute until the sweep ends (optimizer steps; runs of the grid's best configuration; median share of "
        "each seed's fixed sweep / median over median), regret of its recommendation (median / p90), seeds "
        "within max(1%, floor) = 1.00%:",
        "strategy | sweep | trials | steps | runs of best | of fixed | regret at end | within floor | "
        "best pruned | stopped | drawn repeats",
        "a | fixed 20 trials | 20 | 1035 | 14.38 | 100% / 100% | 0.00% / 0.37% | 98% | 1/100 | 0/100 | 90%",
        "a | stopping rule | 7 | 372 | 5.17 | 36% / 36% | 0.37% / 1.50% | 95% | 0/100 | 97/100 | 90%",
        "Drawn repeats: a noise repeat of a configuration without a recorded seed replays its first run moved "
        "by a normal draw from the grid's one-run floor (seeded per replay seed and trial), not a recorded run.",
    ]
    assert format_grid(grid_result(), BUDGETS)[-1] == "  b: none"  # no capped strategy: no such lines
