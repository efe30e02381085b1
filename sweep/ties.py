"""Where a study's configurations stand against its noise: ranked by seed mean, which of them are tied with
the best (seed mean within the noise floor of the best one's, sweep/noise.py), and each trial's regret in
noise floors, what `python -m sweep.report`, best_overrides.txt, optimization_results.yaml and TensorBoard's
HParams view show."""

from __future__ import annotations

from dataclasses import dataclass

from optuna.trial import FrozenTrial

from sweep.noise import Config, SeedMean, config_key, noise_floor, ranked, seed_means, tied_with_best
from sweep.repeats import complete_values

REGRET_METRIC = "regret_in_noise_floors"  # (seed mean - best seed mean) / noise floor, 0 for the best


@dataclass(frozen=True)
class Standing:
    """The configurations best first by seed mean, the study's floor (None before two seeds of one
    configuration) and the ones tied with the best (the best first; only the best without a floor)."""

    order: list[SeedMean]
    floor: float | None
    tied: list[SeedMean]
    minimize: bool

    @property
    def best(self) -> SeedMean | None:
        return self.order[0] if self.order else None

    def is_tied(self, config: Config) -> bool:
        return len(self.tied) > 1 and any(m.config == config for m in self.tied)

    def regret(self, mean: SeedMean) -> float | None:
        """How far a configuration's seed mean is behind the best one's, in noise floors (0 for the best;
        at most 1 for a tied one); None without a positive floor."""
        if not self.floor or self.best is None:
            return None
        behind = mean.mean - self.best.mean if self.minimize else self.best.mean - mean.mean
        return behind / self.floor

    def of(self, trial: FrozenTrial) -> SeedMean | None:
        key = config_key(trial.params)
        return next((m for m in self.order if m.config == key), None)


def standing(trials: list[FrozenTrial], minimize: bool = True) -> Standing:
    """The standing of a single-objective study's COMPLETE trials."""
    means = seed_means(complete_values(trials))
    floor = noise_floor(means)
    return Standing(ranked(means, minimize), floor, tied_with_best(means, floor, minimize), minimize)


def regrets(trials: list[FrozenTrial], place: Standing) -> dict[int, float]:
    """Each complete trial's regret in noise floors (its configuration's, so a repeat has its original's);
    empty without a floor."""
    found = {}
    for trial in trials:
        mean = place.of(trial)
        regret = place.regret(mean) if mean is not None else None
        if regret is not None:
            found[trial.number] = regret
    return found


def floor_line(place: Standing) -> str:
    """`noise floor 0.0139 (median seed spread; trial 0's configuration over 3 seeds)`, or why it is
    unknown."""
    if place.floor is None:
        return "noise floor not measured (no configuration has run at two seeds; see hydra.sweeper.noise_repeats)"
    measured = [m for m in place.order if len(m.values) >= 2]
    over = ", ".join(f"trial {m.trials[0]}'s configuration over {len(m.values)} seeds" for m in measured)
    return f"noise floor {place.floor:.4g} (median seed spread; {over})"


def tie_lines(place: Standing) -> list[str]:
    """Comment lines for best_overrides.txt naming the configurations tied with the best; empty when the
    best stands alone."""
    if len(place.tied) < 2:
        return []
    named = ", ".join(f"trial {m.trials[0]} ({m.mean:.4g} over {len(m.values)} seeds)" for m in place.tied)
    return [
        f"# tied: {len(place.tied)} configurations have seed means within the noise floor {place.floor:.4g} of "
        f"the best: {named}.",
        "# The sweep cannot tell them apart: the line below re-runs the first of them; any of the others is as "
        "good (re-run them at more seeds to separate them).",
    ]
