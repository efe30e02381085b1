"""Where and how a run computes (src/compute.py): decided once, fp16 refused on the CPU and trained with loss
scaling on a GPU without bf16 (a T4 or V100, mocked here: no GPU is needed)."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest
import torch

from src.compute import Compute, check_compute
from src.errors import ConfigError
from tests.conftest import TINY, run_module, typed_config


def test_fp16_on_the_cpu_is_refused_naming_the_key_that_chose_it():
    for overrides, key in (
        (["memory=bf16", "model.dtype=float16"], "model.dtype"),
        (["memory=qlora_cpu", "memory.bnb_4bit_compute_dtype=float16"], "memory.bnb_4bit_compute_dtype"),
    ):
        cfg = typed_config([*TINY, *overrides, "use_cpu=true"])
        with pytest.raises(ConfigError, match=rf"^{key}=float16 on the CPU trains without loss scaling"):
            check_compute(cfg, Compute.of(cfg))
    check_compute(cfg, Compute(on_cpu=False, dtype=torch.float16))  # a GPU scales the loss


def test_the_command_refuses_cpu_fp16_in_one_sentence_and_creates_no_folder(tmp_path):
    result = run_module(
        "src.train", *TINY, "model.dtype=float16", "use_cpu=true", f"hydra.run.dir={tmp_path / 'run'}"
    )
    assert result.returncode == 2
    assert "model.dtype=float16 on the CPU trains without loss scaling" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    assert not list((tmp_path / "run").glob("**/*"))  # refused before the run wrote anything


def test_a_gpu_without_bf16_trains_auto_in_fp16_with_amps_loss_scaling(tmp_path):
    from src.trainer import training_arguments

    cfg = typed_config(["model=smollm2_135m", "memory=qlora", "memory.bnb_4bit_compute_dtype=auto"])
    with (
        mock.patch("torch.cuda.is_available", return_value=True),
        mock.patch("torch.cuda.is_bf16_supported", return_value=False),
        mock.patch("torch.cuda.device_count", return_value=1),
        mock.patch("torch.cuda.set_device"),
    ):
        compute = Compute.of(cfg)
        args = training_arguments(cfg, Path(tmp_path), compute)
    assert compute == Compute(on_cpu=False, dtype=torch.float16)
    assert compute.precision == "float16 with loss scaling" and compute.device == "cuda"
    # fp16 mixed precision: accelerate wraps the step in autocast and a GradScaler on CUDA
    assert (args.fp16, args.bf16, args.use_cpu, args.mixed_precision) == (True, False, False, "fp16")


def test_bf16_and_fp32_are_named_as_they_are():
    assert Compute(on_cpu=True, dtype=torch.bfloat16).precision == "bfloat16"
    assert Compute(on_cpu=False, dtype=torch.float32).precision == "float32"
