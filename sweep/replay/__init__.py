"""Replay sweep strategies against recorded curves: what a sampler and pruner would have found, in seconds.

    python -m sweep.replay                                                  # conf/replay: both recorded grids
    python -m sweep.replay benchmarks/grid_gpu.csv benchmarks/grid_arithmetic.csv replay.seeds=20
    python -m sweep.replay benchmarks/grid_gpu.csv hparams_search=default,previous_default
    python -m sweep.replay outputs/sweeps/my_study                          # your own finished study
    python -m sweep.replay replay=pruners                                   # the pruners tried for the default
    python -m sweep.replay replay=stopping                                  # the stopping rule's patience tried

A strategy is an `hparams_search` preset (plus overrides): its real Optuna sampler, pruner, search space,
enqueued trials, early stopping and reporting unit. Each replayed trial's sampled configuration is snapped
to the nearest recorded one (log scale for numbers; a key the grid recorded at one value, such as the GPU
grid's warmup, snaps to that value), and that configuration's recorded evals are reported to the pruner one
by one, as the training job would, until it is pruned, stopped early or finished. A configuration recorded
with several seeds is one grid point: the mean of its seeds' curves (a lucky seed would otherwise become
the best configuration no sweep can be expected to find). Its cost is the optimizer
steps it ran; its value is its best eval loss so far, as a real trial's objective.

A strategy with `live: true` (conf/replay) is replayed as the live sweeper runs its preset: at most its
hydra.sweeper.n_trials trials, its `noise_repeats` re-runs of the first complete trial's configuration
right after it (a recorded seed's run where the grid has one, else that run moved by a labelled draw from
the grid's noise floor; never pruned), and its `stopping` rule (sweep/stopping.py) asked before every
trial. It gets two more rows: the sweep run to n_trials, and the same sweep stopped where the rule said
(compute, regret of the configuration it recommends, the share of seeds within the floor). `replay.curves=seed` replays the grid seed's own run of
a configuration instead of its seed mean.

Several grids replay in one run, each with every strategy. A preset is composed for each grid's own model
(its curves' model columns), so a model-derived learning-rate prior (sweep/lr_prior.py) is the one a sweep
on that grid's model would use. A curves CSV without model columns (written before they existed, as
benchmarks/grid_gpu.csv) is taken as recorded on SmolLM2-135M-Instruct (llama, hidden 576), the model
every grid of that time ran.

Regret of a sweep after a budget of optimizer steps = (best value among the trials finished within the
budget - the best recorded value) / (untrained baseline - the best recorded value), in percent: 0 means the
sweep found the best recorded configuration, 100 means it found nothing better than the untrained model
(also the value before any trial finished). Normalising by what training can gain keeps regret meaningful
when losses approach zero. Budgets are fractions of the recorded grid's total optimizer steps. The target
at `replay.target_budget` is a median regret of at most max(1%, the grid's noise floor), with the grid's
best configuration pruned in at most 1 of 20 seeds.

The modules, in the order a run uses them: `cli` (the command line), `loading` (curves CSVs and sweep
folders), `recording` (the grid of curves and regret), `grid_stats` (noise floor, separation, effects, the
learning-rate rule against the grid), `strategy` (presets composed through Hydra), `repeats` (what a trial or a
noise repeat replays), `simulate` (snapping and running a curve through a real sampler and pruner, the cap,
the repeats and the rule), `score` (a strategy's row), `stop_score` (a capped strategy's fixed and stopped
rows), `run` (every strategy on
every grid, and the results), `report` (the printed text) and `plots`.
"""
