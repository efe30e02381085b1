"""The learning-rate prior of the `default` sweep: the LoRA learning rate a published rule gives for the
composed model, from which the preset derives its learning-rate range and its first trial when it is composed.

The rule is tinker-cookbook's `hyperparam_utils.get_lr` (Thinking Machines, 2025, before it became a table of
measured values):

    learning_rate = 5e-5 × 10 × (2000 / hidden_size) ** exponent

5e-5 is a full fine-tuning learning rate at width 2000, ×10 the LoRA factor of "LoRA Without Regret" (alpha
32), and the exponent 0.781 for Llama models, 0.0775 for Qwen. tinker picks the exponent by looking for
"llama" or "qwen" in the model's name; here the same test reads the model's `model_type`, so SmolLM2
(model_type llama) gets Llama's. Other families have no published exponent: they get Llama's, and the
sweep says so.

The preset uses it through the `${lr_prior:FACTOR}` resolver (the rule's value × FACTOR for the composed
model), registered by the sweeper's Hydra plugin (hydra_plugins/sft_optuna_sweeper) next to its config.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from omegaconf import OmegaConf

BASE_LEARNING_RATE = 5e-5  # full fine-tuning learning rate at hidden size 2000
LORA_FACTOR = 10.0  # LoRA wants ~10× the full fine-tuning learning rate at alpha 32
EXPONENTS = {"llama": 0.781, "qwen": 0.0775}  # the published families; any other gets Llama's
RESOLVER = "lr_prior"


@dataclass(frozen=True)
class LearningRatePrior:
    """The rule's learning rate for one model, and what it was computed from."""

    learning_rate: float
    hidden_size: int
    model_type: str | None
    family: str | None  # whose exponent was published for this model_type; None: none was (Llama's is used)
    source: str  # where hidden_size and model_type were read

    def describe(self) -> str:
        """e.g. '1.32e-3 from tinker-cookbook get_lr for llama, hidden 576 (conf/model architecture)'."""
        family = self.model_type or "a model without model_type"
        if self.family is None:
            family += f" (no published exponent: Llama's {EXPONENTS['llama']} used)"
        return (
            f"{short(self.learning_rate)} from tinker-cookbook get_lr for {family}, hidden {self.hidden_size} "
            f"({self.source})"
        )


def rule_learning_rate(hidden_size: int, family: str | None) -> float:
    """tinker-cookbook's get_lr for a LoRA run: 5e-5 × 10 × (2000 / hidden_size) ** exponent."""
    exponent = EXPONENTS[family or "llama"]
    return BASE_LEARNING_RATE * LORA_FACTOR * (2000 / hidden_size) ** exponent


def published_family(model_type: str | None) -> str | None:
    """The family whose exponent applies ("llama", "qwen"), or None when none was published."""
    return next((family for family in EXPONENTS if family in (model_type or "").lower()), None)


def model_prior(model: Any) -> LearningRatePrior:
    """The prior for a `model` config node: hidden_size and model_type from `model.architecture`
    (conf/model/*.yaml), else from the model's own config (a local folder or the Hub)."""
    architecture = model.get("architecture") or {}
    if architecture.get("hidden_size"):
        hidden_size, model_type = int(architecture["hidden_size"]), architecture.get("model_type")
        source = "conf/model architecture"
    else:
        hidden_size, model_type = _config_shape(
            str(model.name), model.get("revision"), bool(model.get("trust_remote_code"))
        )
        source = f"{model.name}'s config.json"
    family = published_family(model_type)
    return LearningRatePrior(rule_learning_rate(hidden_size, family), hidden_size, model_type, family, source)


@functools.lru_cache(maxsize=8)  # every resolver call of one compose asks for the same model
def _config_shape(name: str, revision: str | None, trust_remote_code: bool) -> tuple[int, str | None]:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"the default sweep's learning-rate prior needs {name}'s hidden size and model type, and its "
            f"config could not be read ({str(error).splitlines()[0]}); set model.architecture.hidden_size "
            "and model.architecture.model_type, or give the sweep's learning rates yourself "
            "(hydra.sweeper.params and hydra.sweeper.enqueue_trials)"
        ) from error
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return int(text.hidden_size), getattr(config, "model_type", None)


def resolve(factor: float | int, *, _root_: Any) -> float:
    """`${lr_prior:FACTOR}`: the rule's learning rate for the composed model (`_root_.model`) × FACTOR."""
    return model_prior(_root_.model).learning_rate * float(factor)


def register_resolver() -> None:
    """Make `${lr_prior:FACTOR}` resolvable in configs (once per process; harmless again)."""
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_resolver(RESOLVER, resolve)


def uses_prior(raw: Any) -> bool:
    """Whether an unresolved config value is derived from the prior (holds `${lr_prior:…}`)."""
    return "${" + RESOLVER + ":" in str(raw)


def sweep_line(
    prior: LearningRatePrior,
    searched: Any,
    first_trials: list[dict[str, Any]],
    range_from_prior: bool,
    first_from_prior: bool,
) -> str:
    """The line a sweep prints before its first trial: the prior, the learning-rate range `searched` (an
    Optuna distribution, None when the learning rate is not searched) and the first trial, each saying
    whether it came from the prior or was given explicitly."""
    parts = [f"learning-rate prior: {prior.describe()}"]
    given = "" if range_from_prior else ", as given"
    if searched is None:
        parts.append("learning rate not searched")
    elif hasattr(searched, "choices"):
        values = [float(v) for v in searched.choices]
        parts.append(
            f"choices {', '.join(short(v) for v in values)} "
            f"({', '.join(_relative(v, prior) for v in values)}{given})"
        )
    else:
        low, high = searched.low, searched.high
        parts.append(
            f"range {short(low)}…{short(high)} ({_relative(low, prior)}…{_relative(high, prior)}{given})"
        )
    if not first_trials:
        parts.append("no first trial (hydra.sweeper.enqueue_trials is empty)")
    else:
        given = "" if first_from_prior else " (as given)"
        parts.append(f"first trial{given} {describe_trial(first_trials[0])}")
    return "; ".join(parts)


def describe_trial(params: dict[str, Any]) -> str:
    """e.g. 'lr 1.32e-3 r16 3 epochs warmup 0.05' (other parameters as name=value)."""
    names = {
        "optim.learning_rate": lambda v: f"lr {short(v)}",
        "lora.r": lambda v: f"r{v}",
        "optim.num_train_epochs": lambda v: f"{v:g} epoch{'s' if v != 1 else ''}",
        "optim.warmup_ratio": lambda v: f"warmup {v:g}",
    }
    return " ".join(names[k](v) if k in names else f"{k}={v}" for k, v in params.items())


def _relative(value: float, prior: LearningRatePrior) -> str:
    ratio = value / prior.learning_rate
    return f"rule×{ratio:.3g}" if ratio >= 1 else f"rule/{1 / ratio:.3g}"


def short(value: float) -> str:
    """3 significant digits in the form the sweep prints: 1.32e-3."""
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
