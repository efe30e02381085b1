"""The optim presets map to transformers schedules that do what their names promise."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from transformers import get_scheduler

from src.trainer import training_arguments
from tests.conftest import compose_config

TOTAL = 200


def learning_rates(overrides, tmp_path):
    cfg = OmegaConf.to_object(compose_config(["model=tiny", "memory=bf16", *overrides]))
    args = training_arguments(cfg, tmp_path)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=args.learning_rate)
    warmup = args.get_warmup_steps(TOTAL)
    scheduler = get_scheduler(
        args.lr_scheduler_type,
        optimizer,
        num_warmup_steps=warmup,
        num_training_steps=TOTAL,
        scheduler_specific_kwargs=args.lr_scheduler_kwargs,
    )
    rates = []
    for _ in range(TOTAL + 1):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return cfg, warmup, rates


def test_cosine_peaks_after_warmup_and_ends_at_eta_min(tmp_path):
    cfg, warmup, rates = learning_rates(
        ["optim=cosine", "optim.warmup_ratio=0.05", "optim.eta_min=0.1"], tmp_path
    )
    peak = cfg.optim.learning_rate
    assert warmup == 10
    assert rates[0] == 0.0
    assert rates[warmup] == pytest.approx(peak)
    assert max(rates) == pytest.approx(peak)
    assert rates[TOTAL] == pytest.approx(0.1 * peak)
    # halfway through the decay the cosine is at the midpoint between peak and floor
    assert rates[warmup + (TOTAL - warmup) // 2] == pytest.approx(0.55 * peak, rel=1e-3)


def test_linear_decays_to_zero(tmp_path):
    cfg, warmup, rates = learning_rates(["optim=linear"], tmp_path)
    assert rates[warmup] == pytest.approx(cfg.optim.learning_rate)
    assert rates[TOTAL] == pytest.approx(0.0)


def test_constant_holds_after_warmup(tmp_path):
    cfg, warmup, rates = learning_rates(["optim=constant"], tmp_path)
    assert rates[warmup] == rates[TOTAL] == pytest.approx(cfg.optim.learning_rate)
    assert rates[warmup // 2] < cfg.optim.learning_rate


def test_training_arguments_use_current_names(tmp_path):
    cfg = OmegaConf.to_object(compose_config(["model=tiny", "memory=qlora", "eval.steps=7"]))
    args = training_arguments(cfg, tmp_path)
    assert args.eval_strategy == "steps" and args.eval_steps == args.save_steps == 7
    assert args.load_best_model_at_end and args.metric_for_best_model == "eval_loss"
    assert args.warmup_steps == cfg.optim.warmup_ratio
    assert args.max_length == cfg.data.max_length and args.packing and args.packing_strategy == "bfd"
    assert args.gradient_accumulation_steps == 4 and args.per_device_train_batch_size == 4
    assert args.bf16  # 4-bit compute dtype
