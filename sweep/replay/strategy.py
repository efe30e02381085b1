"""Strategies: `hparams_search` presets composed through Hydra as `python -m src.train -m …` would, for each
grid's own model, with their real Optuna sampler and pruner."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

import optuna

from sweep.convergence import stopping_rule
from sweep.replay.recording import RUN_KEYS
from sweep.space import grid_choices
from sweep.stopping import StoppingRule
from sweep.study import OPTUNA_TARGETS


@dataclass
class StrategySpec:
    """A strategy as conf/replay names it: the overrides of `python -m src.train -m` that make it, and
    optionally a sampler or pruner config that replaces the composed preset's."""

    overrides: list[str]
    sampler: dict[str, Any] | None = None  # None: the preset's
    pruner: dict[str, Any] | None = None  # None: the preset's, unless no_pruner
    no_pruner: bool = False  # `pruner: null`: every trial runs to the end
    # `live: true`: the sweep as the live sweeper runs the preset: at most its hydra.sweeper.n_trials trials,
    # its noise_repeats and its stopping rule (set them with overrides, e.g.
    # hydra.sweeper.stopping.patience=3). false: no cap, no repeats, no rule; the sweep runs on until the
    # replay's largest budget of steps
    live: bool = False

    @classmethod
    def from_config(cls, node: dict[str, Any]) -> StrategySpec:
        """From a conf/replay `strategies` entry (`overrides`, and optional `sampler`, `pruner`, `live`)."""
        unknown = set(node) - {"overrides", "sampler", "pruner", "live"}
        if unknown:
            raise SystemExit(
                f"A replayed strategy has no key {sorted(unknown)}; use overrides, sampler, pruner, live "
                f"(n_trials, noise_repeats and stopping come from the preset's hydra.sweeper): {node}"
            )
        given_pruner = node.get("pruner")
        return cls(
            overrides=list(node["overrides"]),
            sampler=dict(node["sampler"]) if node.get("sampler") else None,
            pruner=dict(given_pruner) if given_pruner else None,
            no_pruner="pruner" in node and not given_pruner,
            live=bool(node.get("live", False)),
        )


@dataclass
class Strategy:
    """What a sweep preset decides: sampler, pruner, search space, enqueued trials, and the job settings
    that change what a trial reports (early stopping, the reporting unit)."""

    name: str
    overrides: tuple[str, ...]  # the composed words, the grid's model included
    sampler_config: Any
    pruner_config: Any
    params: dict[str, str]
    fixed: dict[str, Any]  # the composed run's values of the recording's keys
    enqueue_trials: list[dict[str, Any]]
    report_at: str
    eval_fraction: float | None  # eval.steps below 1: evals every this fraction of a trial's steps
    warmup_ratio: float
    early_stopping_patience: int
    early_stopping_threshold: float
    n_trials: int | None = None  # the most trials, noise repeats included; None: no cap
    # re-runs of the first complete trial's configuration at other seeds, right after it
    noise_repeats: int = 0
    stopping: StoppingRule | None = None  # the rule that may stop the sweep before n_trials; None: none

    def make_sampler(self, seed: int, space: dict[str, Any]) -> optuna.samplers.BaseSampler:
        """The preset's sampler, seeded with `seed` where it takes a seed."""
        from hydra.utils import instantiate

        config = dict(self.sampler_config)
        if "seed" in config:
            config["seed"] = seed
        sampler = instantiate(config, _execution_whitelist_=OPTUNA_TARGETS)
        if config.get("_target_") == "optuna.samplers.GridSampler":
            sampler = sampler(grid_choices(space))
        return sampler

    def make_pruner(self) -> optuna.pruners.BasePruner:
        """The preset's pruner; NopPruner for none."""
        from hydra.utils import instantiate

        if self.pruner_config is None:
            return optuna.pruners.NopPruner()
        return instantiate(self.pruner_config, _execution_whitelist_=OPTUNA_TARGETS)


def _run_values(run: dict[str, Any]) -> dict[str, Any]:
    """The composed run's value of every RUN_KEYS key (None where it has none); alpha null is 2 × r."""
    fixed = {}
    for key in RUN_KEYS:
        node: Any = run
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        fixed[key] = node
    if fixed.get("lora.alpha") is None and fixed.get("lora.r") is not None:
        fixed["lora.alpha"] = "2r"  # alpha: null means 2 × r, whatever r is sampled
    return fixed


def compose_strategy(name: str, overrides: list[str]) -> Strategy:
    """Compose `train.yaml` with the preset's overrides, as `python -m src.train -m …` would."""
    from omegaconf import OmegaConf

    from src.config import compose

    cfg = compose(overrides, with_hydra=True)
    sweeper = cfg.hydra.sweeper
    if "params" not in sweeper:
        raise SystemExit(f"Strategy {name!r} ({' '.join(overrides)}) is not an Optuna sweep preset.")
    return Strategy(
        name=name,
        overrides=tuple(overrides),
        sampler_config=OmegaConf.to_container(sweeper.sampler, resolve=True),
        pruner_config=OmegaConf.to_container(sweeper.pruner, resolve=True) if sweeper.get("pruner") else None,
        params={str(k): str(v) for k, v in sweeper.params.items()},
        fixed=_run_values(OmegaConf.to_container(cfg, resolve=False)),
        enqueue_trials=[dict(t) for t in OmegaConf.to_container(sweeper.enqueue_trials)]
        if sweeper.get("enqueue_trials")
        else [],
        report_at=sweeper.get("report_at", "schedule"),
        eval_fraction=float(cfg.eval.steps) if cfg.eval.steps < 1 else None,
        warmup_ratio=float(cfg.optim.warmup_ratio),
        early_stopping_patience=int(cfg.eval.early_stopping_patience),
        early_stopping_threshold=float(cfg.eval.early_stopping_threshold),
        n_trials=int(sweeper.n_trials),
        noise_repeats=int(sweeper.get("noise_repeats", 0)),
        stopping=stopping_rule(OmegaConf.to_container(sweeper.stopping)) if "stopping" in sweeper else None,
    )


def touches_model(overrides: list[str]) -> bool:
    """Whether overrides choose the model themselves (then the grid's model is not imposed)."""
    return any(word.lstrip("+~").split("=")[0].split(".")[0] == "model" for word in overrides)


def model_overrides(model: dict[str, Any]) -> list[str]:
    """The overrides that compose a run on the grid's model, for its learning-rate prior: the conf/model
    option of that name if there is one, and the recorded hidden size and family; a model known only by
    name has its prior read from its own config.json (sweep/lr_prior.py)."""
    from omegaconf import OmegaConf

    from src.config import CONF_DIR

    name = model.get("model.name")
    option = next(
        (
            p.stem
            for p in sorted((CONF_DIR / "model").glob("*.yaml"))
            if OmegaConf.load(p).get("name") == name
        ),
        None,
    )
    words = [f"model={option}"] if option else [f"model.name={json.dumps(str(name))}"]
    hidden_size, model_type = (
        model.get("model.architecture.hidden_size"),
        model.get("model.architecture.model_type"),
    )
    if hidden_size is not None:
        words.append(f"model.architecture.hidden_size={int(hidden_size)}")
        words.append(f"model.architecture.model_type={json.dumps(model_type)}")  # None: null
    elif option is None:
        words.append("model.architecture=null")
    return words


def compose_for_grid(
    name: str, spec: StrategySpec, grid_model_words: list[str], composed: dict[tuple, Strategy]
) -> Strategy:
    """The strategy composed on the grid's model (unless its overrides choose a model), with the spec's
    sampler and pruner in place of the preset's, and its cap, noise repeats and stopping rule only for a
    `live` spec. `composed` keeps every composition by its words, so a preset composed once serves every
    strategy and grid that asks for the same words."""
    words = [*spec.overrides]
    if not touches_model(words):
        words = [*words, *grid_model_words]
    key = tuple(words)
    if key not in composed:
        composed[key] = compose_strategy(name, words)
    strategy = composed[key]
    return dataclasses.replace(
        strategy,
        name=name,
        sampler_config=spec.sampler or strategy.sampler_config,
        pruner_config=None if spec.no_pruner else spec.pruner or strategy.pruner_config,
        n_trials=strategy.n_trials if spec.live else None,
        noise_repeats=strategy.noise_repeats if spec.live else 0,
        stopping=strategy.stopping if spec.live else None,
    )


def grid_prior(model_words: list[str]) -> Any:
    """The learning-rate prior (sweep/lr_prior.py) of the run these model overrides compose."""
    from src.config import compose
    from sweep.lr_prior import model_prior

    return model_prior(compose(model_words).model)


def rule_for_grid(first: Strategy | None, grid_model_words: list[str], model_assumed: bool) -> Any:
    """The learning-rate prior the grid's rows are read against: that of the model the first strategy ran
    on (the grid's own, unless its overrides chose one), its source named after the curves when the prior
    came from the grid's recorded architecture."""
    words = [word for word in first.overrides if touches_model([word])] if first else []
    prior = grid_prior(words)
    if words == grid_model_words and prior.source == "conf/model architecture":
        assumed = "assumed: the curves have no model columns"
        prior = dataclasses.replace(prior, source=assumed if model_assumed else "the curves' model")
    return prior
