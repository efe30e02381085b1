"""The search space: a sweep's params (hydra.sweeper.params and sweep overrides such as `x=interval(0, 1)`)
as Optuna distributions, and a grid's choices per param, parsed exactly as hydra-optuna-sweeper parses them
for the sweeper, for curve restoring and for replay.
"""

from __future__ import annotations

import math
from typing import Any

from hydra_plugins.hydra_optuna_sweeper import _impl  # 1.4.0rc3 exposes no public equivalent of these
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution


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


def cannot_produce(params: dict[str, Any], space: dict[str, BaseDistribution]) -> str | None:
    """Why the search space cannot produce `params` (an enqueued trial): a key it does not search (Optuna
    would silently ignore it), or a value that is not one of a choice's values (Optuna raises mid-trial and
    the trial stayed RUNNING); None when it can. A number outside an interval is not refused: Optuna runs it
    as given (e.g. a known-bad configuration on purpose), see `outside_interval`."""
    for name, value in params.items():
        if name not in space:
            return f"{name} is not searched (searched: {', '.join(sorted(space))})"
        if isinstance(space[name], CategoricalDistribution) and not _within(value, space[name]):
            return f"{name}={value!r} is not one of its choices {list(space[name].choices)}"
    return None


def outside_interval(params: dict[str, Any], space: dict[str, BaseDistribution]) -> list[str]:
    """The enqueued numbers outside their interval (run as given, with a warning)."""
    return [
        f"{name}={value!r}"
        for name, value in params.items()
        if name in space
        and not isinstance(space[name], CategoricalDistribution)
        and not _within(value, space[name])
    ]


def _within(value: Any, distribution: BaseDistribution) -> bool:
    if isinstance(distribution, CategoricalDistribution):
        return any(
            value == c and isinstance(value, bool) == isinstance(c, bool) for c in distribution.choices
        )
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if not distribution.low <= value <= distribution.high:
        return False
    if isinstance(distribution, IntDistribution):
        return float(value).is_integer() and (value - distribution.low) % distribution.step == 0
    return distribution.step is None or math.isclose(
        (value - distribution.low) / distribution.step, round((value - distribution.low) / distribution.step)
    )
