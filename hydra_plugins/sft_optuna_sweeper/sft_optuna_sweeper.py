"""`hydra/sweeper=sft_optuna`: the Optuna sweeper of sweep/optuna_sweeper.py, found by Hydra as a plugin.

Hydra imports every module under `hydra_plugins` when it starts, plain runs included, so this one stays
light (as hydra-optuna-sweeper's own): the sweep layer and Optuna are imported only when a sweep
instantiates the sweeper. It registers the sweeper's config and the `${lr_prior:…}` resolver the presets
that use this sweeper derive learning rates with (sweep/lr_prior.py, no heavy imports): a preset that
composes `hydra/sweeper=sft_optuna` has imported this module, so the resolver is there when it resolves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf

from sweep.lr_prior import register_resolver
from sweep.stopping import StoppingRule


class SFTOptunaSweeper(Sweeper):
    """Delegates to sweep.optuna_sweeper.SFTOptunaSweeper (resume, parallel workers, pruning, grids, noise
    repeats, stopping …)."""

    def __init__(self, **kwargs: Any) -> None:
        from sweep.optuna_sweeper import SFTOptunaSweeper as Implementation

        self.implementation = Implementation(**kwargs)

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.implementation.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        return self.implementation.sweep(arguments)


@dataclass
class StoppingConf:
    """hydra.sweeper.stopping: the rule that stops a sweep once further trials are unlikely to beat its best
    by more than its measured noise (sweep/stopping.py; its defaults are the rule's, set by replay in
    docs/sweeps.md). Off by itself for multi-objective studies and the grid sampler."""

    enabled: bool = True  # false: run n_trials whatever the rule says (also goes on with a stopped study)
    patience: int = StoppingRule.patience  # search trials in a row not beating the best by > the floor
    min_trials: int = StoppingRule.min_trials  # finished trials (repeats included) before it may stop


@dataclass
class SFTOptunaSweeperConf(OptunaSweeperConf):
    _target_: str = f"{SFTOptunaSweeper.__module__}.{SFTOptunaSweeper.__name__}"
    max_failures: int = 3  # failed trials (NaN, OOM, errors) tolerated per invocation before aborting
    enqueue_trials: list[Any] = field(default_factory=list)  # parameter sets to try first
    pruner: Any = None  # optuna pruner config (_target_: optuna.pruners.MedianPruner …); null = no pruning
    # seconds a worker with nothing left to start waits for other workers' running trials before it reports
    # (a dead worker's trial is failed after grace_period, so this only bounds waiting on live, slow ones)
    wait_timeout: float | None = 1800.0
    # seconds between a worker's "my trials are alive" records in the storage, and how long a RUNNING trial
    # may go without one before any worker fails it (its worker died, on any host); null = no heartbeats
    heartbeat_interval: float | None = 60.0
    grace_period: float | None = 300.0
    # data.* and model.* keys in the search space are refused unless true: inside -m an unquoted comma list
    # (data.path=a.jsonl,b.jsonl) silently becomes a categorical hyperparameter
    search_data_and_model: bool = False
    # what the pruner compares trials at: "schedule" (percent of each trial's own schedule, so 1- and
    # 3-epoch trials meet at the same phase) or "step" (the global optimizer step)
    report_at: str = "schedule"
    # what each trial is scored by, from its metrics.json: best_eval_loss (the default), task_metric (the
    # score data.task_metric names), task_metric.<score>, wall_seconds … or a list of them for a
    # multi-objective study (then `direction` is a list too, and pruning is off: Optuna prunes one objective)
    objective: Any = "best_eval_loss"
    # re-runs of the best configuration after the first complete trial, at seeds seed+1 … seed+N: they
    # measure the sweep's noise floor (the spread of that configuration's seeds), which ties and the
    # stopping rule need. 2 gives three seeds, as the recorded grids' floors have (docs/sweeps.md), for 2 of
    # the default's 20 trials; they count toward n_trials and are never pruned. 0 = no floor, so no stopping
    noise_repeats: int = 2
    stopping: StoppingConf = field(default_factory=StoppingConf)


ConfigStore.instance().store(
    group="hydra/sweeper", name="sft_optuna", node=SFTOptunaSweeperConf, provider="sft-sweep"
)
register_resolver()
