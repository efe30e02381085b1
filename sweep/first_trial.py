"""The length of a sweep's first trial, from the size of its training set.

The default sweep's first trial is its best guess, and on every recorded grid it lands within the noise of the
grid's best (docs/sweeps.md). Its learning rate follows the model (sweep/lr_prior.py); its number of epochs
follows the data, by this rule:

| training examples | first trial's epochs | evidence |
|---|---:|---|
| under 10,000 | 3 | both recorded grids (48 examples): 3 epochs beat 1 in 20 of 24 groups on grid 2 (median 8.0% of the improvement) and at the best learning rate on grid 1 by 0.013, five times its noise floor |
| 10,000 to 99,999 | 2 | the middle of the standard 1–3 range for SFT; neither grid nor the sources below measure this size |
| 100,000 and more | 1 | the common SFT rule of thumb "with larger datasets (100,000+ examples), you may need only a single epoch"; Zephyr-7B-β's SFT on UltraChat-200k ran 1 epoch (huggingface/alignment-handbook, recipes/zephyr-7b-beta/sft/config_full.yaml: `num_train_epochs: 1`); Tulu 3's 939k-example SFT mix, 2 (Lambert et al. 2024, arXiv 2411.15124) |

Why not 1 epoch everywhere ("start with 1 epoch" is the same rule of thumb's advice for a single run): a sweep
runs early stopping on eval loss, so a 3-epoch trial on small data that starts to overfit stops at its best
eval instead of paying for the rest, while a 1-epoch trial on 48 examples is 24 optimizer steps and
under-trains (grid 2's 1-epoch points sit 8% of the gain behind). On 200,000 examples a 3-epoch first trial
would be the most expensive trial in the space; one epoch there is already thousands of optimizer steps.

Warmup stays the preset's ratio (0.05): a ratio already follows the data (5% of 24 steps is 1, of 12,500 is
625), and the grids' warmup effects are within two noise floors (docs/sweeps.md).
"""

from __future__ import annotations

from dataclasses import dataclass

EPOCHS_BY_SIZE = ((100_000, 1), (10_000, 2), (0, 3))  # (at least this many training examples, epochs)
EPOCHS = "optim.num_train_epochs"


@dataclass(frozen=True)
class FirstTrialLength:
    """The first trial's epochs for `train_examples` examples, and the sentence the sweep prints."""

    train_examples: int
    epochs: int

    def describe(self) -> str:
        """e.g. 'first trial: 1 epoch for 200,000 training examples (3 under 10,000, 2 under 100,000)'."""
        unit = "epoch" if self.epochs == 1 else "epochs"
        return (
            f"first trial: {self.epochs} {unit} for {self.train_examples:,} training examples "
            "(3 under 10,000, 2 under 100,000, 1 from 100,000: sweep/first_trial.py)"
        )


def first_trial_epochs(train_examples: int) -> FirstTrialLength:
    """The rule above; raises ValueError for a negative size."""
    if train_examples < 0:
        raise ValueError(f"train_examples={train_examples} must be ≥ 0")
    epochs = next(e for at_least, e in EPOCHS_BY_SIZE if train_examples >= at_least)
    return FirstTrialLength(train_examples, epochs)


def with_data_length(first: dict, length: FirstTrialLength) -> dict:
    """The enqueued first trial's parameters with its epochs from the rule (a copy; other keys unchanged)."""
    return {**first, EPOCHS: length.epochs}


def training_examples(config) -> int:
    """How many examples the sweep's trials train on: the composed run config's data, tokenized and cached
    once here as `python -m src.prepare` does (so the first trial finds the cache), counted after the eval
    split and `data.max_train_examples`. Loads the tokenizer only, no model weights."""
    from omegaconf import OmegaConf

    from src.base_model import resolve_base
    from src.config import DataConfig, ModelConfig
    from src.data.cache import prepare_data
    from src.tokenizer import TokenizerSource

    model = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), config.model))
    data = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(DataConfig), config.data))
    tokenizer = TokenizerSource(model, resolve_base(model, config.paths.cache_dir), config.paths.cache_dir)
    return len(prepare_data(data, tokenizer, config.paths.cache_dir).train)


def data_sized(first: dict, config) -> tuple[dict, str]:
    """The preset's first trial with its epochs from the training set of the composed sweep `config`, and the
    sentence the sweep prints with its learning-rate prior. When the data cannot be prepared before the first
    trial (e.g. a Hub tokenizer without network), the first trial keeps the preset's epochs and the sentence
    says why; the trial itself then reports the error."""
    try:
        length = first_trial_epochs(training_examples(config))
    except Exception as error:  # noqa: BLE001 - any reason the data stage fails is the first trial's to report
        reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:300]
        return (
            first,
            f"first trial keeps {first.get(EPOCHS)} epochs: the data could not be counted ({reason})",
        )
    return with_data_length(first, length), length.describe()
