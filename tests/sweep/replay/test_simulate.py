"""sweep/replay/simulate.py: snapping sampled values to the grid, reporting a curve to the real pruner,
and one replayed sweep."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import optuna

from sweep.replay.loading import load_recording
from sweep.replay.recording import ASSUMED_MODEL, Curve, build_recording
from sweep.replay.simulate import SweepTrace, differs_from_grid, outside_grid, replay_sweep, run_curve, snap
from sweep.replay.strategy import StrategySpec, compose_for_grid, model_overrides
from tests.sweep.replay.grids import write_sweep_folder


def reporting(**settings) -> SimpleNamespace:
    """What run_curve reads of a strategy: report at global steps, no early stopping unless given."""
    base = dict(warmup_ratio=0.0, report_at="step", eval_fraction=None, early_stopping_patience=0)
    return SimpleNamespace(**{**base, "early_stopping_threshold": 0.0, **settings})


def test_snapping_uses_log_distance(grid_csv):
    recording = load_recording(grid_csv)
    strategy = SimpleNamespace(fixed={"optim.num_train_epochs": 1, "lora.r": 16, "lora.alpha": 32})
    assert snap(recording, {"optim.learning_rate": 3e-4, "lora.r": 20}, strategy) == (4e-4, 16, 1)
    assert snap(recording, {"optim.learning_rate": 2.6e-4, "optim.num_train_epochs": 2}, strategy) == (
        4e-4,
        16,
        3,
    )
    # 1.6e-4 and 4e-4 lie 0.4 decades apart: 2.5e-4 is nearer 1.6e-4 on a log axis, 3e-4 nearer 4e-4
    assert snap(recording, {"optim.learning_rate": 2.5e-4}, strategy)[0] == 1.6e-4


def test_alpha_2r_follows_the_sampled_rank():
    curves = [
        Curve({"lora.r": r, "lora.alpha": a, "seed": 42}, 24, [(24, 1.0, 0.1 * i)])
        for i, (r, a) in enumerate(((8, 16), (16, 32), (16, 16)), start=1)
    ]
    recording = build_recording(curves, [0.7])
    strategy = SimpleNamespace(fixed={"lora.r": 8, "lora.alpha": "2r"})
    assert snap(recording, {"lora.r": 16}, strategy) == (16, 32)
    assert snap(recording, {}, strategy) == (8, 16)


def test_values_outside_the_grid_snap_to_its_edge_and_are_counted(grid_csv, second_grid_csv):
    """A grid that recorded warmup at one value (0.05) snaps every sampled warmup to it, and counts every
    other value as outside; a learning rate above the grid's top snaps to the top."""
    one = load_recording(grid_csv)
    strategy = SimpleNamespace(fixed={"lora.alpha": 32})
    params = {"optim.learning_rate": 2e-3, "lora.r": 16, "optim.num_train_epochs": 3}
    for warmup in (0.0, 0.05, 0.15):
        assert snap(one, {**params, "optim.warmup_ratio": warmup}, strategy) == (1e-3, 16, 3)
    assert outside_grid(one, {**params, "optim.warmup_ratio": 0.0}) == {
        "optim.learning_rate": "above",
        "optim.warmup_ratio": "below",
    }
    assert outside_grid(one, {"optim.learning_rate": 5e-6, "lora.r": 64, "optim.warmup_ratio": 0.05}) == {
        "optim.learning_rate": "below"
    }
    assert outside_grid(one, {"optim.learning_rate": 1e-3 * (1 + 1e-12)}) == {}  # the edge itself, rounded
    two = load_recording(second_grid_csv)  # warmup {0, 0.05, 0.15}: snapped to the nearest, never outside
    for warmup, snapped in ((0.02, 0.0), (0.04, 0.05), (0.12, 0.15)):
        chosen = snap(
            two,
            {"optim.learning_rate": 4e-4, "optim.num_train_epochs": 3, "optim.warmup_ratio": warmup},
            strategy,
        )
        assert chosen == (4e-4, 3, snapped)
    assert outside_grid(two, {"optim.warmup_ratio": 0.12, "lora.r": 32}) == {"lora.r": "above"}


def test_settings_fixed_otherwise_than_the_grid_are_named():
    recording = SimpleNamespace(fixed={"lora.alpha": 32, "lora.dropout": 0.05, "optim.warmup_ratio": None})
    strategy = SimpleNamespace(
        fixed={"lora.alpha": "2r", "lora.dropout": 0.05 + 1e-12, "optim.warmup_ratio": 0.1}, params={}
    )
    assert differs_from_grid(recording, strategy) == {"lora.alpha": ["2r", 32]}
    strategy.fixed["lora.dropout"] = 0.0
    assert differs_from_grid(recording, strategy) == {"lora.alpha": ["2r", 32], "lora.dropout": [0.0, 0.05]}
    strategy.params = {"lora.alpha": "choice(16, 32)"}  # searched: not fixed otherwise
    assert differs_from_grid(recording, strategy) == {"lora.dropout": [0.0, 0.05]}


def test_a_replayed_trial_reports_nothing_inside_its_curves_own_warmup():
    """The replayed trial is the recorded run: its own warmup (15% here) gates pruning, not the preset's."""
    evals = [(step, step / 40, 1.0) for step in range(4, 41, 4)]
    curve = Curve({"optim.warmup_ratio": 0.15}, 40, evals)
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=0.0))
    _, steps, pruned = run_curve(study.ask(), curve, reporting())
    assert pruned and steps == 8  # 15% of 40 = 6 warmup steps: the eval at step 4 is not reported
    # without a warmup of its own the preset's counts: 25% of 40 = 10 steps, the first report at step 12
    curve = Curve({}, 40, evals)
    _, steps, pruned = run_curve(
        optuna.create_study(pruner=study.pruner).ask(), curve, reporting(warmup_ratio=0.25)
    )
    assert pruned and steps == 12


def test_a_replayed_trial_stops_early_as_transformers_would():
    """Patience 2: two evals in a row not better than the best by the threshold stop the trial; its value
    is the best so far, its cost the steps run."""
    losses = (0.5, 0.4, 0.39, 0.395, 0.3)
    curve = Curve({}, 50, [(10 * (i + 1), (i + 1) / 5, loss) for i, loss in enumerate(losses)])
    nop = optuna.create_study(pruner=optuna.pruners.NopPruner())
    value, steps, pruned = run_curve(
        nop.ask(), curve, reporting(early_stopping_patience=2, early_stopping_threshold=0.02)
    )
    assert (value, steps, pruned) == (0.39, 40, False)
    assert run_curve(nop.ask(), curve, reporting()) == (0.3, 50, False)  # no patience: to the end
    trial = nop.ask()
    run_curve(trial, curve, reporting(report_at="schedule"))
    assert sorted(nop.trials[-1].intermediate_values) == [20, 40, 60, 80, 100]  # phases of its schedule


def test_a_sweep_uses_its_budget_and_starts_with_the_presets_first_trial(grid_csv):
    recording = load_recording(grid_csv)
    strategy = compose_for_grid(
        "default", StrategySpec(["hparams_search=default"]), model_overrides(ASSUMED_MODEL), {}
    )
    trace = replay_sweep(recording, strategy, seed=0, max_steps=300)
    assert trace.configs[0] == (1e-3, 16, 3) and trace.ends[0] == 72  # the rule's 1.32e-3, snapped
    assert trace.ends[-2] < 300 <= trace.ends[-1]  # trials until the budget is used
    assert all(b > a for a, b in zip(trace.ends, trace.ends[1:]))
    assert [v is None for v in trace.values] == trace.pruned
    assert trace == replay_sweep(recording, strategy, seed=0, max_steps=300)  # the same seed, the same sweep
    assert trace.best_within(71) is None and trace.best_within(72) == recording.curves[(1e-3, 16, 3)].best


def test_the_best_within_a_budget_counts_finished_trials_only():
    trace = SweepTrace(
        ends=[10, 30, 60], values=[0.5, None, 0.2], configs=[(), (), ()], pruned=[False, True, False]
    )
    assert [trace.best_within(b) for b in (9, 10, 59, 60)] == [None, 0.5, 0.5, 0.2]


def test_a_curve_that_was_itself_pruned_replays_as_a_pruned_trial(tmp_path):
    """A user's study holds a trial its pruner stopped after 3 of 8 evals: replayed, it ends where the
    recording does, unpruned by the replay's pruner, and counts as pruned, without a value."""
    write_sweep_folder(tmp_path / "my_study")
    recording = load_recording(tmp_path / "my_study")
    strategy = compose_for_grid("one", StrategySpec(["hparams_search=default"], no_pruner=True), [], {})
    only = {"optim.learning_rate": "choice(1e-05)", "optim.num_train_epochs": "choice(1)"}
    strategy = dataclasses.replace(strategy, params=only, enqueue_trials=[])
    trace = replay_sweep(recording, strategy, seed=0, max_steps=18)
    assert trace.configs == [(1e-5, 1), (1e-5, 1)] and trace.pruned == [True, True]
    assert trace.values == [None, None] and trace.ends == [9, 18]  # 3 of its 8 evals: 9 of 24 steps
