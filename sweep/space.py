"""The search space: a sweep's params (hydra.sweeper.params and sweep overrides such as `x=interval(0, 1)`)
as Optuna distributions, and a grid's choices per param, parsed exactly as hydra-optuna-sweeper parses them
for the sweeper, for curve restoring and for replay.
"""

from __future__ import annotations

from typing import Any

from hydra_plugins.hydra_optuna_sweeper import _impl  # 1.4.0rc3 exposes no public equivalent of these
from optuna.distributions import BaseDistribution


def search_space(params: list[str]) -> tuple[dict[str, BaseDistribution], dict[str, Any], list[str]]:
    """(distributions of the searched params, fixed params, fixed overrides such as deletions) from
    `name=value` overrides; a param given a fixed value is not searched."""
    space, fixed_params, fixed_overrides = _impl.create_params_from_overrides(params)
    for name in fixed_params:
        space.pop(name, None)
    return space, fixed_params, fixed_overrides


def grid_choices(space: dict[str, BaseDistribution]) -> dict[str, list]:
    """GridSampler's search space: every value of each (discrete) distribution."""
    return {name: _impl.OptunaSweeperImpl._to_grid_sampler_choices(d) for name, d in space.items()}
