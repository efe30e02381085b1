"""The default sweep's learning-rate prior (sweep/lr_prior.py): the published rule's values for the shipped
models, the range and first trial the real preset composes to, what wins over them, and what the sweep
prints before its first trial."""

from __future__ import annotations

import optuna
import pytest
from omegaconf import OmegaConf
from omegaconf.errors import InterpolationResolutionError
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from src.config import compose
from sweep.lr_prior import model_prior, rule_learning_rate, sweep_line
from sweep.space import search_space
from tests.conftest import run_module

# tinker-cookbook hyperparam_utils.get_lr: 5e-5 × 10 × (2000 / hidden_size) ** e, e = 0.781 (Llama), 0.0775 (Qwen)
PUBLISHED = {
    "smollm2_135m": (576, 0.781, 1.3219e-3),
    "qwen2_5_1_5b": (1536, 0.0775, 5.1033e-4),
    "llama3_1_8b": (4096, 0.781, 2.8564e-4),
    "tiny": (64, 0.781, 7.3527e-3),
}


def sweeper_of(*overrides: str):
    """The default preset's hydra.sweeper node, composed as `python -m src.train -m` composes it."""
    return compose(["hparams_search=default", *overrides], with_hydra=True).hydra.sweeper


def learning_rate_distribution(sweeper) -> FloatDistribution:
    space, _, _ = search_space([f"{k}={v}" for k, v in sweeper.params.items()])
    return space["optim.learning_rate"]


@pytest.mark.parametrize("model", list(PUBLISHED))
def test_the_preset_derives_range_and_first_trial_from_the_published_rule(model):
    hidden_size, exponent, value = PUBLISHED[model]
    rule = 5e-5 * 10 * (2000 / hidden_size) ** exponent
    assert rule == pytest.approx(value, rel=1e-4)
    sweeper = sweeper_of(f"model={model}")
    distribution = learning_rate_distribution(sweeper)
    assert distribution.log
    assert (distribution.low, distribution.high) == pytest.approx((rule / 32, rule * 4), rel=1e-12)
    # read unresolved, as sweep.replay reads it: the first trial is numbers, not an interpolation
    assert OmegaConf.to_container(sweeper.enqueue_trials) == [
        {
            "optim.learning_rate": pytest.approx(rule, rel=1e-12),
            "lora.r": 16,
            "optim.num_train_epochs": 3,
            "optim.warmup_ratio": 0.05,
        }
    ]


def test_explicit_settings_win_over_the_prior():
    sweeper = sweeper_of(
        'hydra.sweeper.params={optim.learning_rate:"tag(log, interval(1e-5, 1e-3))"}',
        "hydra.sweeper.enqueue_trials=[{optim.learning_rate:1e-4,lora.r:8}]",
    )
    distribution = learning_rate_distribution(sweeper)
    assert (distribution.low, distribution.high) == (1e-5, 1e-3)
    assert OmegaConf.to_container(sweeper.enqueue_trials) == [{"optim.learning_rate": 1e-4, "lora.r": 8}]
    assert set(sweeper.params) == {
        "optim.learning_rate",
        "lora.r",
        "optim.num_train_epochs",
        "optim.warmup_ratio",
    }
    assert OmegaConf.to_container(sweeper_of("hydra.sweeper.enqueue_trials=[]").enqueue_trials) == []


def test_a_family_without_a_published_exponent_gets_llamas_and_says_so():
    model = compose(["model=qwen2_5_1_5b", "model.architecture.model_type=mistral"]).model
    prior = model_prior(model)
    assert prior.family is None and prior.learning_rate == pytest.approx(rule_learning_rate(1536, "llama"))
    assert "mistral (no published exponent: Llama's 0.781 used), hidden 1536" in prior.describe()
    assert model_prior(compose(["model=qwen2_5_1_5b"]).model).family == "qwen"


def test_without_an_architecture_the_models_own_config_is_read(tmp_path):
    from transformers import Qwen2Config

    Qwen2Config(hidden_size=896, num_attention_heads=14, num_key_value_heads=2).save_pretrained(tmp_path)
    sweeper = sweeper_of("model=qwen2_5_1_5b", "model.architecture=null", f"model.name={tmp_path}")
    rule = 5e-5 * 10 * (2000 / 896) ** 0.0775
    assert OmegaConf.to_container(sweeper.enqueue_trials)[0]["optim.learning_rate"] == pytest.approx(rule)
    missing = sweeper_of("model=qwen2_5_1_5b", "model.architecture=null", f"model.name={tmp_path / 'none'}")
    with pytest.raises(
        InterpolationResolutionError,
        match="set model.architecture.hidden_size and model.architecture.model_type",
    ):
        missing.params.items()


@pytest.mark.parametrize(
    ("model", "line"),
    [
        (
            "smollm2_135m",
            "learning-rate prior: 1.32e-3 from tinker-cookbook get_lr for llama, hidden 576 (conf/model "
            "architecture); range 4.13e-5…5.29e-3 (rule/32…rule×4); first trial lr 1.32e-3 r16 3 epochs "
            "warmup 0.05",
        ),
        (
            "qwen2_5_1_5b",
            "learning-rate prior: 5.1e-4 from tinker-cookbook get_lr for qwen2, hidden 1536 (conf/model "
            "architecture); range 1.59e-5…2.04e-3 (rule/32…rule×4); first trial lr 5.1e-4 r16 3 epochs "
            "warmup 0.05",
        ),
        (
            "tiny",
            "learning-rate prior: 7.35e-3 from tinker-cookbook get_lr for llama, hidden 64 (conf/model "
            "architecture); range 2.3e-4…2.94e-2 (rule/32…rule×4); first trial lr 7.35e-3 r16 3 epochs "
            "warmup 0.05",
        ),
    ],
)
def test_the_printed_line_names_the_prior_the_range_and_the_first_trial(model, line):
    cfg = compose(["hparams_search=default", f"model={model}"], with_hydra=True)
    first = OmegaConf.to_container(cfg.hydra.sweeper.enqueue_trials)
    printed = sweep_line(
        model_prior(cfg.model), learning_rate_distribution(cfg.hydra.sweeper), first, True, True
    )
    assert printed == line


def test_a_sweep_prints_its_prior_before_a_first_trial_that_fails(tmp_path):
    """llama3_1_8b cannot load without the Hub: the prior is printed before its first trial fails."""
    result = run_module(
        "src.train",
        "-m",
        "hparams_search=default",
        "model=llama3_1_8b",
        f"hydra.sweep.dir={tmp_path}",
        "hydra.sweeper.n_trials=1",
        "hydra.sweeper.max_failures=0",
        env={"HF_HUB_OFFLINE": "1"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    line = (
        "learning-rate prior: 2.86e-4 from tinker-cookbook get_lr for llama, hidden 4096 (conf/model "
        "architecture); range 8.93e-6…1.14e-3 (rule/32…rule×4); first trial lr 2.86e-4 r16 3 epochs warmup 0.05"
    )
    assert line in output
    # the 8B tokenizer is not here without the Hub: the data cannot be counted, the preset's epochs stay
    assert f"{line}; first trial keeps 3 epochs: the data could not be counted (OSError: " in output
    assert output.index(line) < output.index("Launching 1 jobs") < output.index("Trial 0 failed")
    study = optuna.load_study(study_name="default", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert study.trials[0].state == TrialState.FAIL
    assert study.trials[0].params["optim.learning_rate"] == pytest.approx(2.8564e-4, rel=1e-4)


@pytest.mark.parametrize(
    ("given", "printed"),
    [
        (
            "optim.learning_rate=tag(log, interval(1e-4, 1e-2))",  # a sweep override replaces the range
            "range 1e-4…1e-2 (rule/73.5…rule×1.36, as given); first trial lr 7.35e-3 r16 3 epochs warmup 0.05",
        ),
        (
            "hydra.sweeper.enqueue_trials=[{optim.learning_rate:1e-3,lora.r:8}]",
            "range 2.3e-4…2.94e-2 (rule/32…rule×4); first trial (as given) lr 1e-3 r8",
        ),
    ],
    ids=["range", "first-trial"],
)
def test_a_sweep_says_which_settings_were_given_explicitly(tmp_path, given, printed):
    result = run_module(
        "src.train",
        "-m",
        "hparams_search=default",
        "model=tiny",
        f"hydra.sweep.dir={tmp_path}",
        "hydra.sweeper.n_trials=0",
        given,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    prior = "learning-rate prior: 7.35e-3 from tinker-cookbook get_lr for llama, hidden 64 (conf/model architecture)"
    assert f"{prior}; {printed}" in output


def test_the_default_preset_searches_warmup_and_the_report_shows_it(tmp_path):
    """Warmup is in the default space, in the report's importances and re-run line, and in HPARAMS."""
    from src.run_info import hparams
    from sweep.report import report

    space, _, _ = search_space([f"{k}={v}" for k, v in sweeper_of().params.items()])
    assert space["optim.warmup_ratio"] == FloatDistribution(0.0, 0.15)
    cfg = OmegaConf.to_object(
        compose(["hparams_search=default", "optim.warmup_ratio=0.1", "paths.output_dir=."])
    )
    assert hparams(cfg)["warmup_ratio"] == 0.1
    study = optuna.create_study(study_name="default", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    for n, warmup in enumerate([0.0, 0.03, 0.06, 0.09, 0.12, 0.15]):
        params = {"optim.learning_rate": 1e-3, "lora.r": 16 if n % 2 else 8, "optim.warmup_ratio": warmup}
        distributions = {k: space[k] for k in params}
        study.add_trial(
            optuna.trial.create_trial(params=params, distributions=distributions, value=0.1 + warmup)
        )
    result = report(tmp_path)
    assert "optim.warmup_ratio" in result["importances"]
    assert "optim.warmup_ratio=0.0" in result["command"].split()
    assert study.best_trial.params["optim.warmup_ratio"] == 0.0
