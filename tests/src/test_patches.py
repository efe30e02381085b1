"""src/patches.py: each workaround is checked against the library version it was written for, and the
library behaviour it relies on is still there. A failure here after an upgrade means: re-check the patch."""

from __future__ import annotations

import inspect
from importlib.metadata import version

import pytest
import torch

from src.patches import CHECKED_ON, CpuLogProbs, cpu_has_native_bf16, cpu_lm_head


def test_installed_versions_are_the_ones_the_patches_were_checked_on():
    installed = {name: version(name).split("+")[0] for name in CHECKED_ON}  # 2.13.0+cpu is 2.13.0
    assert installed == CHECKED_ON


def test_trl_fused_lm_head_still_reads_the_module_global_it_patches():
    import trl.trainer.utils as trl_utils

    source = inspect.getsource(trl_utils.add_fused_lm_head)
    assert "compact = _use_triton(hidden_states.device)" in source  # read at every forward
    original = trl_utils._use_triton
    assert original(torch.device("cpu")) is False  # what the patch changes on CPU
    assert "per_token = _ChunkedLogProbFunction.apply(" in source  # the function CpuLogProbs stands in for
    function = trl_utils._ChunkedLogProbFunction
    with cpu_lm_head():
        assert trl_utils._use_triton(torch.device("cpu")) is True
        assert isinstance(trl_utils._ChunkedLogProbFunction, CpuLogProbs)
    assert trl_utils._use_triton is original  # scoped: undone on exit
    assert trl_utils._ChunkedLogProbFunction is function


@pytest.mark.parametrize(
    "settings",
    [
        {"bias": False, "softcap": None, "scale": 1.0, "temperature": 1.0},
        {"bias": True, "softcap": 3.0, "scale": 0.5, "temperature": 0.7},
    ],
    ids=["plain", "bias-softcap-scale-temperature"],
)
def test_cpu_log_probs_match_trl_function_in_values_and_gradients(settings):
    """CpuLogProbs gives TRL's ChunkedLogProbFunction's outputs and gradients (float32; 70 rows over the
    1024-row pieces' edge is exercised with ROWS patched down to 32)."""
    from trl.kernels import ChunkedLogProbFunction

    torch.manual_seed(0)
    hidden = torch.randn(70, 16, dtype=torch.float64).float()
    weight = torch.randn(300, 16) * 0.5
    bias = torch.randn(300) if settings["bias"] else None
    targets = torch.randint(0, 300, (70,))
    targets[5] = int((hidden[5] @ weight.T + (bias if bias is not None else 0)).argmax())  # one sure top-1
    outputs = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")
    args = (settings["temperature"], 128, settings["softcap"], settings["scale"], outputs)
    results = {}
    for name, function in (("trl", ChunkedLogProbFunction), ("ours", CpuLogProbs(ChunkedLogProbFunction))):
        h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        if name == "ours":
            function.ROWS = 32
        values = function.apply(h, w, bias, targets, *args)
        (values[0] * torch.linspace(-1, 1, 70)).sum().backward()  # an uneven upstream gradient
        results[name] = (values, h.grad, w.grad)
    (trl_values, trl_h, trl_w), (our_values, our_h, our_w) = results["trl"], results["ours"]
    for trl_value, our_value in zip(trl_values, our_values, strict=True):
        if trl_value.dtype == torch.bool:
            assert torch.equal(trl_value, our_value) and our_value[5]
        else:
            torch.testing.assert_close(our_value, trl_value, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(our_h, trl_h, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(our_w, trl_w, rtol=1e-5, atol=1e-6)
    # nothing labelled: a differentiable empty result, as TRL's
    empty = CpuLogProbs(ChunkedLogProbFunction).apply(
        hidden[:0].requires_grad_(), weight, None, targets[:0], *args
    )
    assert empty[0].shape == (0,) and empty[0].requires_grad and empty[4].dtype == torch.bool


def test_sft_trainer_still_refuses_a_collator_at_init_with_padding_free_packing():
    """Why use_collator sets it after init (if TRL accepts one at init again, pass it there instead)."""
    import transformers
    from trl import SFTTrainer

    source = inspect.getsource(SFTTrainer.__init__)
    assert "Passing a custom data collator is not supported when using padding-free." in source
    # …and its dataloaders (transformers.Trainer's, not overridden) read the attribute when they are built
    assert "get_train_dataloader" not in SFTTrainer.__dict__
    assert "self.data_collator" in inspect.getsource(transformers.Trainer._get_dataloader)


def test_the_private_bf16_query_still_exists():
    assert hasattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported")
    assert isinstance(cpu_has_native_bf16(), bool)


def test_bitsandbytes_still_logs_the_kernels_warning_we_silence():
    """The warning and its logger are where the filter looks (bitsandbytes 0.50.2); a change fails here."""
    import importlib.util
    from pathlib import Path

    from src.patches import BNB_CPU_LOGGER, BNB_KERNELS_WARNING

    spec = importlib.util.find_spec(BNB_CPU_LOGGER)
    source = Path(spec.origin).read_text()
    assert BNB_KERNELS_WARNING in source and "logger = logging.getLogger(__name__)" in source


def test_the_kernels_warning_is_dropped_and_other_warnings_kept(caplog):
    import logging

    from src.patches import BNB_CPU_LOGGER, BNB_KERNELS_WARNING, silence_library_warnings

    silence_library_warnings()
    silence_library_warnings()  # idempotent: one filter
    logger = logging.getLogger(BNB_CPU_LOGGER)
    assert len(logger.filters) == 1
    with caplog.at_level(logging.WARNING, logger=BNB_CPU_LOGGER):
        logger.warning("%s: %s. Please make sure you already `pip install kernels`", BNB_KERNELS_WARNING, "x")
        logger.warning("something else")
    assert [r.getMessage() for r in caplog.records] == ["something else"]


def test_transformers_still_warns_about_mtime_when_rotating_checkpoints_and_we_drop_only_that():
    """transformers 5.23's sort_checkpoints logs it from its module logger; checkpoints a second apart
    are still ordered by step, which is what the line announces."""
    import inspect
    import logging

    from transformers import trainer_utils

    from src.patches import (
        TRANSFORMERS_CHECKPOINTS_LOGGER,
        TRANSFORMERS_MTIME_WARNING,
        silence_library_warnings,
    )

    assert trainer_utils.logger.name == TRANSFORMERS_CHECKPOINTS_LOGGER
    assert TRANSFORMERS_MTIME_WARNING in inspect.getsource(trainer_utils.sort_checkpoints)
    silence_library_warnings()
    logger = logging.getLogger(TRANSFORMERS_CHECKPOINTS_LOGGER)
    messages = [f"{TRANSFORMERS_MTIME_WARNING}, falling back to numerical ordering", "something else"]
    records = [logger.makeRecord(logger.name, logging.WARNING, __file__, 0, m, (), None) for m in messages]
    # the logger's own filters decide (transformers configures its loggers' handlers and propagation itself)
    assert [r.getMessage() for r in records if logger.filter(r)] == ["something else"]


def test_peft_still_reads_the_deprecated_property_whose_warning_we_drop():
    import inspect

    import peft.peft_model
    import transformers.modeling_utils

    from src.patches import PEFT_DEPRECATED_READ

    assert 'getattr(model, "is_gradient_checkpointing"' in inspect.getsource(peft.peft_model)
    assert PEFT_DEPRECATED_READ in inspect.getsource(transformers.modeling_utils)


def forced_packed_layer():
    """One 4-bit NF4 layer that takes bitsandbytes' CPU inference path whatever the CPU (flag forced)."""
    import bitsandbytes as bnb

    torch.manual_seed(0)
    layer = bnb.nn.Linear4bit(256, 256, bias=False, compute_dtype=torch.float32, quant_type="nf4")
    layer.load_state_dict({"weight": torch.randn(256, 256) / 16})
    layer = layer.to("cpu")  # quantizes
    layer.support_avx512bf16_for_cpu = True
    return layer


def test_bitsandbytes_still_repacks_4bit_weights_in_place_and_drops_their_gradient():
    """What keep_4bit_training_layout works around (bitsandbytes 0.50.2): its own forward packs the layer's
    weight in place at the first inference forward, after which training gets no right gradient through it:
    on an AVX512-BF16 CPU the fused gemv_4bit kernel has no autograd and the gradient is gone; where the CPU
    lacks AVX512-BF16 (the packed path forced, as here) the training forward multiplies by the packed bytes
    and the gradient is wrong (seen on an AVX2 AMD EPYC: off by up to 4.4 where it is ~1). If a bitsandbytes
    upgrade fixes this, the patch can go."""
    import bitsandbytes as bnb

    from src.patches import keep_4bit_training_layout, takes_cpu_inference_layout

    keep_4bit_training_layout()
    original_forward = bnb.nn.Linear4bit.forward.original  # bitsandbytes' own, unpatched
    layer = forced_packed_layer()
    x = torch.randn(4, 256, requires_grad=True)
    original_forward(layer, x).sum().backward()
    right = x.grad.clone()
    layer.eval()
    probe = torch.randn(4, 256)
    assert takes_cpu_inference_layout(layer, probe)  # our copy of its condition agrees …
    with torch.no_grad():
        original_forward(layer, probe)
    assert layer.weight.quant_state.packing_format_for_cpu  # … and it packed the layer's own weight
    assert not layer.weight.quant_state.nested  # dropping double quantization (lossy)
    layer.train()
    x.grad = None
    original_forward(layer, x).sum().backward()
    # gone (AVX512-BF16: gemv_4bit has no autograd) or wrong (no AVX512-BF16: the packed bytes multiplied)
    assert x.grad is None or (x.grad - right).abs().max() > 0.1


def test_the_patched_forward_packs_a_copy_and_trains_on_the_original():
    from src.patches import keep_4bit_training_layout

    keep_4bit_training_layout()
    keep_4bit_training_layout()  # idempotent
    layer = forced_packed_layer()
    weight, absmax = layer.weight.data.clone(), layer.weight.quant_state.absmax.clone()
    x = torch.randn(4, 256, requires_grad=True)
    layer(x).sum().backward()
    before = x.grad.clone()
    layer.eval()
    with torch.no_grad():
        layer(torch.randn(4, 256))
    assert "_cpu_inference_copy" in layer.__dict__
    assert not getattr(layer.weight.quant_state, "packing_format_for_cpu", False)
    assert torch.equal(layer.weight.data, weight) and torch.equal(layer.weight.quant_state.absmax, absmax)
    layer.train()
    x.grad = None
    layer(x).sum().backward()
    torch.testing.assert_close(x.grad, before, rtol=0, atol=0)
    assert set(layer.state_dict()) == {
        "weight",
        *(f"weight.{k}" for k in layer.weight.quant_state.as_dict(packed=True)),
    }


def test_trl_still_casts_qlora_adapters_to_bf16_and_we_keep_them_as_peft_made_them():
    import trl.trainer.sft_trainer as sft

    from src.patches import keep_adapter_dtype

    source = inspect.getsource(sft.SFTTrainer.__init__)
    assert "param.data = param.data.to(torch.bfloat16)" in source  # what keep_adapter_dtype undoes
    model = torch.nn.Linear(4, 4)
    model.bias.requires_grad_(False)
    weight = model.weight.data.clone()
    with keep_adapter_dtype(model):
        model.weight.data = model.weight.data.to(torch.bfloat16)  # what TRL does inside
    assert model.weight.dtype == torch.float32
    assert torch.equal(model.weight.data, weight)  # the original values, not a cast back from bf16


def test_optuna_still_calls_set_metric_names_experimental_and_the_sweep_says_nothing(recwarn):
    import re
    import warnings

    import optuna
    from optuna.exceptions import ExperimentalWarning

    from src.patches import OPTUNA_METRIC_NAMES
    from sweep.study import open_sweep_study

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        optuna.create_study().set_metric_names(["best_eval_loss"])
    experimental = [str(w.message) for w in seen if w.category is ExperimentalWarning]
    assert re.match(OPTUNA_METRIC_NAMES, experimental[0])
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        study = open_sweep_study(
            None, "quiet", optuna.samplers.RandomSampler(), ["minimize"], ["best_eval_loss"]
        )
    assert study.metric_names == ["best_eval_loss"]
    assert not [w for w in seen if w.category is ExperimentalWarning]


def test_a_run_shows_no_weight_loading_bars_but_keeps_the_hubs_download_bars(monkeypatch):
    import huggingface_hub.utils as hub
    from transformers.utils import logging as transformers_logging

    from src.console import quiet_library_bars

    monkeypatch.setattr(transformers_logging, "_tqdm_active", True)
    hub.enable_progress_bars()
    quiet_library_bars()
    assert not transformers_logging.is_progress_bar_enabled() and not hub.are_progress_bars_disabled()
    transformers_logging.enable_progress_bar()
