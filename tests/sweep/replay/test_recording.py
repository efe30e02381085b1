"""sweep/replay/recording.py: curves, seed means, the grid and regret."""

from __future__ import annotations

import pytest

from sweep.replay.recording import Curve, build_recording, mean_curve, regret_percent


def curve(learning_rate: float, seed: int, loss: float, **config) -> Curve:
    """Two evals, the last one `loss`."""
    return Curve(
        {"optim.learning_rate": learning_rate, "seed": seed, **config},
        24,
        [(12, 0.5, loss + 0.1), (24, 1.0, loss)],
    )


def test_regret_is_the_share_of_the_possible_improvement_not_achieved():
    assert regret_percent(0.2, best=0.2, baseline=0.7) == 0
    assert regret_percent(0.7, best=0.2, baseline=0.7) == 100
    assert regret_percent(None, best=0.2, baseline=0.7) == 100  # no trial finished yet
    assert regret_percent(0.3, best=0.2, baseline=0.7) == pytest.approx(20.0)
    assert regret_percent(0.8, best=0.2, baseline=0.7) == pytest.approx(120.0)  # worse than untrained

    recording = build_recording([curve(1e-3, 42, 0.2), curve(1e-4, 42, 0.3)], [0.7])
    assert recording.best == 0.2 and recording.best_config == (1e-3,)
    assert recording.regret(0.3) == pytest.approx(20.0) and recording.in_regret(0.05) == pytest.approx(10.0)
    assert recording.total_steps == 48 and recording.named((1e-4,)) == {"optim.learning_rate": 1e-4}


def test_the_keys_that_vary_define_a_configuration_and_the_rest_are_fixed():
    curves = [
        curve(1e-3, 42, 0.2, **{"lora.r": 16, "lora.dropout": 0.05}),
        curve(1e-4, 42, 0.3, **{"lora.r": 32, "lora.dropout": 0.05}),
        curve(1e-4, 42, 0.25, **{"lora.r": 16, "lora.dropout": 0.05}),
    ]
    recording = build_recording(curves, [0.8, 0.7, 0.6])
    assert recording.keys == ("optim.learning_rate", "lora.r")
    assert recording.fixed["lora.dropout"] == 0.05 and recording.fixed["lora.alpha"] is None
    assert "seed" not in recording.fixed and recording.baseline == 0.7  # the median baseline
    assert recording.value_range("lora.r") == (16, 32)
    assert recording.value_range("lora.dropout") == (0.05, 0.05)  # a fixed key: its one value
    assert recording.value_range("lora.alpha") is None  # not recorded
    with pytest.raises(SystemExit, match="no untrained baseline"):
        build_recording(curves, [])
    with pytest.raises(SystemExit, match="No finished trial"):
        build_recording([], [0.7])


def test_a_rerun_of_the_same_seed_is_not_another_seed_of_the_noise_floor():
    """A grid study that ran a point twice with seed 42 (after a failed trial) holds identical numbers:
    only other seeds count as repeats."""
    curves = [curve(1e-3, 42, 0.10), curve(1e-4, 42, 0.20), curve(1e-4, 42, 0.20), curve(1e-3, 43, 0.12)]
    recording = build_recording(curves, [0.7])
    assert recording.repeats == {(1e-3,): [0.10, 0.12], (1e-4,): [0.20]}
    assert recording.curves[(1e-3,)].seeds == 2 and recording.curves[(1e-4,)].seeds == 1


def test_a_grid_point_averages_only_the_seeds_with_the_same_evals():
    """A seed pruned early, or evaluated at other steps, cannot be averaged eval by eval: the grid point
    averages the rest; a configuration whose own (grid-seed) run was pruned stays that run."""

    def run(seed: int, losses: tuple[float, ...], steps: tuple[int, ...] = (12, 24), complete=True) -> Curve:
        evals = [(step, step / 24, loss) for step, loss in zip(steps, losses)]
        return Curve({"optim.learning_rate": 1e-3, "seed": seed}, 24, evals, complete)

    grid_run, other, pruned, shifted = (
        run(42, (0.3, 0.10)),
        run(43, (0.5, 0.14)),
        run(44, (0.4,), (12,), complete=False),
        run(45, (0.2, 0.0), (8, 24)),
    )
    point = mean_curve([grid_run, other, pruned, shifted])
    assert point.seeds == 2 and point.complete and point.config["seed"] == 42
    assert [(s, loss) for s, _, loss in point.evals] == [(12, pytest.approx(0.4)), (24, pytest.approx(0.12))]
    assert point.best == pytest.approx(0.12)
    assert mean_curve([pruned, grid_run]) is pruned
    # seeds whose minima fall at different evals: the objective is the mean of their bests (0.1), not the
    # minimum of the mean curve (0.15)
    early, late = run(42, (0.1, 0.2)), run(43, (0.3, 0.1))
    point = mean_curve([early, late])
    assert [loss for _, _, loss in point.evals] == pytest.approx([0.2, 0.15])
    assert point.best_so_far == pytest.approx([0.2, 0.1]) and point.best == pytest.approx(0.1)
    assert point.best_until(0) == pytest.approx(0.2) and early.best_until(1) == 0.1
    assert mean_curve([grid_run]) is grid_run

    single = Curve({"optim.learning_rate": 1e-4, "seed": 42}, 24, [(12, 0.5, 0.3), (24, 1.0, 0.11)])
    recording = build_recording([other, grid_run, single], [0.7])
    assert recording.best_config == (1e-4,) and recording.best == 0.11  # 0.10 was seed 42's luck: mean 0.12
    assert recording.curves[(1e-3,)].config["seed"] == 42  # the grid's own seed leads, whatever the order
    assert recording.repeats[(1e-3,)] == [0.10, 0.14]  # each seed's best, the grid's seed first
