"""What a sweep worker reports when it has nothing left to start: optimization_results.yaml (the best
configuration by seed mean, its ties and the noise floor; or with several objectives the Pareto front), the
regret of each trial in TensorBoard (sweep/hparams_regret.py), and the last lines: the best trial, the
report command, and what the sweep cost with the noise it measured."""

from __future__ import annotations

import logging
from pathlib import Path

import optuna
from omegaconf import OmegaConf
from optuna.trial import TrialState

from src.atomic import write_text_atomic
from sweep.convergence import minimizes
from sweep.cost import sweep_cost
from sweep.hparams_regret import append_regrets
from sweep.places import finished_trials
from sweep.ties import floor_line, regrets, standing

log = logging.getLogger(__name__)


def write_results(study: optuna.Study, sweep_dir: Path, objectives: list[str]) -> None:
    """Write optimization_results.yaml into `sweep_dir` and log the sweep's last lines."""
    trials = study.get_trials(deepcopy=False)
    if not any(t.state == TrialState.COMPLETE for t in trials):
        log.warning("No trial finished; nothing to report.")
        return
    if len(objectives) == 1:
        results, last = single_objective_results(study, trials, objectives[0])
    else:
        front = sorted(study.best_trials, key=lambda t: t.number)
        results = {
            "name": "optuna",
            "objectives": {name: d.name.lower() for name, d in zip(objectives, study.directions)},
            "pareto_front": [
                {"trial": t.number, "params": t.params, "values": dict(zip(objectives, t.values))}
                for t in front
            ],
        }
        log.info("Pareto front of %s: trials %s", objectives, [t.number for t in front])
        last = sweep_cost(study).line()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(sweep_dir / "optimization_results.yaml", OmegaConf.to_yaml(OmegaConf.create(results)))
    log.info("Report: python -m sweep.report %s", sweep_dir)
    log.info(last)


def single_objective_results(study: optuna.Study, trials: list, objective: str) -> tuple[dict, str]:
    """The results of a single-objective study, and its last line (cost and noise floor); appends each
    trial's regret in noise floors to its TensorBoard run."""
    place = standing(trials, minimizes(study))
    best = place.best
    trial = next(t for t in trials if t.number == best.trials[0])
    results = {
        "name": "optuna",
        "objective": objective,
        "best_trial": trial.number,
        "best_params": trial.params,
        "best_value": trial.value,
        "best_seed_mean": best.mean,
        "best_seeds": len(best.values),
        "noise_floor": place.floor,
        "tied_trials": [m.trials[0] for m in place.tied] if len(place.tied) > 1 else [],
    }
    over = f" (seed mean {best.mean:.4f} over {len(best.values)} seeds)" if len(best.values) > 1 else ""
    log.info("Best trial %d: %s %.4f%s with %s", trial.number, objective, trial.value, over, trial.params)
    if len(place.tied) > 1:
        others = ", ".join(str(m.trials[0]) for m in place.tied[1:])
        log.info("Tied with it (seed means within the noise floor %.4g): trials %s", place.floor, others)
    append_regrets(trials, regrets(trials, place), step=finished_trials(study))
    return results, f"{sweep_cost(study).line()}; {floor_line(place)}"
