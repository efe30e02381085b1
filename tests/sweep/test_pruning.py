"""sweep/pruning.py: schedule-phase reporting (report_step) and the job's PruningCallback, whose reports
the replay's simulator mimics (sweep/replay/simulate.py::run_curve)."""

from __future__ import annotations

from types import SimpleNamespace

import optuna

from sweep.pruning import PruningCallback, report_step


def test_schedule_reporting_puts_one_and_three_epoch_trials_at_the_same_phase():
    one_epoch = [report_step(step, 24, "schedule") for step in range(3, 25, 3)]
    three_epochs = [report_step(step, 72, "schedule") for step in range(9, 73, 9)]
    assert one_epoch == three_epochs == [12, 25, 38, 50, 62, 75, 88, 100]
    assert [report_step(step, 72, "step") for step in (9, 18)] == [9, 18]
    # lengths that 8 does not divide: transformers evaluates every ceil(0.125 x max_steps) steps
    snapped = {
        max_steps: [
            report_step(step, max_steps, "schedule", 0.125) for step in range(every, max_steps, every)
        ]
        for max_steps, every in ((37, 5), (74, 10), (111, 14))
    }
    assert snapped[37] == snapped[74] == [12, 25, 38, 50, 62, 75, 100]  # the 7th at 95% of the schedule
    assert snapped[111] == [12, 25, 38, 50, 62, 75, 88]
    assert [report_step(step, 37, "schedule") for step in range(5, 37, 5)][:3] == [14, 27, 41]  # unsnapped


def evaluate_through_callback(
    trial, steps: list[int], max_steps: int, warmup_ratio: float
) -> PruningCallback:
    from transformers import TrainingArguments

    args = TrainingArguments(output_dir="unused", warmup_steps=warmup_ratio, report_to="none", use_cpu=True)
    callback = PruningCallback(trial, "schedule")
    for step in steps:
        state = SimpleNamespace(global_step=step, max_steps=max_steps)
        control = SimpleNamespace(should_training_stop=False)
        callback.on_evaluate(args, state, control, metrics={"eval_loss": 1.0})
        if control.should_training_stop:
            break
    return callback


def test_trials_of_different_length_report_the_same_phases():
    study = optuna.create_study(pruner=optuna.pruners.NopPruner())
    short, long = study.ask(), study.ask()
    evaluate_through_callback(short, list(range(3, 25, 3)), 24, 0.0)
    evaluate_through_callback(long, list(range(9, 73, 9)), 72, 0.0)
    values = {t.number: sorted(t.intermediate_values) for t in study.get_trials()}
    assert values[0] == values[1] == [12, 25, 38, 50, 62, 75, 88, 100]


def test_a_percentile_pruner_compares_trials_whose_lengths_8_does_not_divide():
    """eval.steps 0.125 on 37- and 111-step trials: evals land at different exact phases, but both report
    at the same snapped steps, so a percentile pruner finds the finished trial to compare with."""
    from transformers import TrainingArguments

    pruner = optuna.pruners.PercentilePruner(75.0, n_startup_trials=1, n_warmup_steps=50)
    study = optuna.create_study(pruner=pruner)
    args = TrainingArguments(output_dir="unused", eval_steps=0.125, report_to="none", use_cpu=True)
    first = study.ask()
    for step in range(14, 111, 14):
        first.report(0.1, report_step(step, 111, "schedule", 0.125))
    study.tell(first, 0.1)
    callback = PruningCallback(study.ask(), "schedule")
    for step in range(5, 37, 5):
        state = SimpleNamespace(global_step=step, max_steps=37)
        control = SimpleNamespace(should_training_stop=False)
        callback.on_evaluate(args, state, control, metrics={"eval_loss": 0.5})
        if control.should_training_stop:
            break
    assert callback.pruned_at == 20  # 54% of its schedule, reported at 50: the first step past warmup


def test_no_trial_is_pruned_inside_warmup():
    always = optuna.pruners.ThresholdPruner(upper=0.0)  # would prune at any reported loss above 0
    study = optuna.create_study(pruner=always)
    trial = study.ask()
    # 100 steps, 20% warmup: evals at steps 5, 10, 15, 20 are inside warmup; step 25 is the first after it
    callback = evaluate_through_callback(trial, [5, 10, 15, 20, 25, 30], 100, 0.2)
    assert callback.pruned_at == 25
    assert sorted(study.get_trials()[0].intermediate_values) == [25]


def test_a_noise_repeat_is_never_pruned_and_reports_nothing():
    always = optuna.pruners.ThresholdPruner(upper=0.0)  # would prune any trial at its first report
    study = optuna.create_study(pruner=always)
    study.enqueue_trial({}, user_attrs={"noise_repeat_of": 0, "seed": 43})
    repeat, searched = study.ask(), study.ask()
    assert evaluate_through_callback(repeat, [10, 20, 30], 30, 0.0).pruned_at is None
    assert evaluate_through_callback(searched, [10, 20, 30], 30, 0.0).pruned_at == 10
    values = {t.number: t.intermediate_values for t in study.get_trials()}
    assert values == {repeat.number: {}, searched.number: {33: 1.0}}  # the pruner never saw the repeat
