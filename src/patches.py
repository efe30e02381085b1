"""Every place this project works around a library, each with the version it was checked on.

tests/src/test_patches.py fails when an installed version differs from CHECKED_ON or when the library behaviour
a workaround relies on changes, so an upgrade is a conscious re-check, not a silent change of results.
Patches are scoped (undone on exit) wherever the library allows.

(The sweep layer's uses of Optuna's and hydra-optuna-sweeper's private APIs live in sweep/, each commented.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

CHECKED_ON = {
    "torch": "2.13.0",
    "trl": "1.16.0",
    "bitsandbytes": "0.50.2",
    "peft": "0.21.2",
    "transformers": "5.23.0",
    "optuna": "5.0.0",
}


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX). Without it torch emulates bf16
    matmuls: measured 1.2 GFLOP/s against 78 GFLOP/s in fp32 on a 2-core AVX2 EPYC (torch 2.13), so a QLoRA
    step with bf16 compute took 38 s instead of 9 s. torch has no public query; this private op (torch
    2.13.0) is what its own tests use."""
    import torch  # imported here: the entrypoint installs the logging filter below before torch loads

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@contextlib.contextmanager
def cpu_lm_head() -> Iterator[None]:
    """While active, TRL's fused LM head on CPU scores only the positions that carry a label, with torch's own
    log-softmax (`CpuLogProbs`) instead of TRL's tiled fallback. Exact numbers stay the same
    (tests/src/data/test_collator.py); GPUs keep TRL's Triton kernel untouched.

    TRL 1.16.0 (`trl.trainer.utils.add_fused_lm_head`):
    - scores only labelled positions on Triton devices and every position elsewhere, to keep tile shapes fixed
      for compilers such as Neuron. On CPU nothing is compiled, and with assistant-only loss most positions
      carry no label, so scoring them all only wastes work;
    - on devices without Triton folds each 4096 × 32768 logits tile with about ten full passes in float32
      (online log-sum-exp, entropy, an arange mask for top-1) and recomputes every tile in backward. One
      thread of an AVX512-BF16 Xeon, 2048 positions, SmolLM2's 49152-entry vocabulary, forward + backward:
      2.35 s with 30% of positions labelled, where the model's own full-logits loss takes 1.84 s and
      `CpuLogProbs` 0.92 s (docs/benchmarks.md).
    Both are module globals read at every forward, so the patch must cover the training and evaluation
    calls; it is restored on exit, so other trainers in the same process (the benchmark's comparison
    recipes) run TRL unchanged."""
    import trl.trainer.utils as trl_utils

    use_triton, function = trl_utils._use_triton, trl_utils._ChunkedLogProbFunction

    def compact(device) -> bool:
        return device.type == "cpu" or use_triton(device)

    trl_utils._use_triton = compact
    trl_utils._ChunkedLogProbFunction = CpuLogProbs(function)
    try:
        yield
    finally:
        trl_utils._use_triton, trl_utils._ChunkedLogProbFunction = use_triton, function


class CpuLogProbs:
    """Stands in for TRL's `ChunkedLogProbFunction` (same `apply` arguments and outputs): on CPU, per-token
    log-probabilities of `hidden @ weight.T` (+ bias, logit scale, softcap, temperature as TRL applies them)
    through `torch.log_softmax`, `ROWS` positions at a time; elsewhere TRL's own function.

    hidden (N, H), weight (V, H), targets (N,) → log-probabilities (N,) with gradients to hidden and weight;
    entropy, log Σp², mean logit and top-1 (N,) are computed without gradients (TRL's SFT loss uses only the
    log-probabilities; its entropy and token accuracy are logged). Backward keeps the (N, V) float32
    log-softmax of the labelled positions instead of recomputing tiles: on CPU memory is cheaper than the
    second LM-head matmul (src/plan/estimate.py counts it)."""

    ROWS = 256  # positions per log-softmax: bounds its temporaries (about 18 bytes × ROWS × V, the planner's)

    def __init__(self, library_function):
        self.library_function = library_function

    def apply(
        self, hidden, weight, bias, targets, temperature, chunk_size, softcap=None, scale=1.0, outputs=()
    ):
        if hidden.device.type != "cpu":
            return self.library_function.apply(
                hidden, weight, bias, targets, temperature, chunk_size, softcap, scale, outputs
            )
        import torch

        pieces = []
        for start in range(0, max(hidden.shape[0], 1), self.ROWS):  # one empty piece when nothing is labelled
            logits = torch.nn.functional.linear(hidden[start : start + self.ROWS], weight, bias).float()
            logits = logits * scale if scale != 1.0 else logits
            if softcap is not None:
                logits = softcap * torch.tanh(logits / softcap)
            logits = logits / temperature if temperature != 1.0 else logits
            log_p = torch.log_softmax(logits, dim=-1)
            rows_targets = targets[start : start + self.ROWS]
            log_probs = log_p.gather(-1, rows_targets.unsqueeze(-1)).squeeze(-1)
            with torch.no_grad():
                p = log_p.exp() if {"entropy", "log_sum_sq_probs"} & set(outputs) else None
                extra = (
                    -(p * log_p).sum(-1) if "entropy" in outputs else None,
                    torch.log((p * p).sum(-1)) if "log_sum_sq_probs" in outputs else None,
                    logits.mean(-1) if "mean_logits" in outputs else None,
                    log_p.argmax(-1) == rows_targets if "is_top1" in outputs else None,
                )
            del logits, p
            pieces.append((log_probs, *extra))
        return tuple(None if column[0] is None else torch.cat(column) for column in zip(*pieces, strict=True))


@contextlib.contextmanager
def keep_adapter_dtype(model: Any) -> Iterator[None]:
    """While an SFTTrainer is built around `model`, keep its trainable (LoRA) weights in the dtype PEFT gave
    them (float32: PEFT's `autocast_adapter_dtype`), as a plain PEFT loop has them.

    TRL 1.16.0's `SFTTrainer.__init__` casts every trainable parameter of a quantized model to bfloat16 (the
    QLoRA paper's recommendation), whatever the compute dtype. With float32 compute (AVX2-only CPUs, where
    bf16 is emulated) every LoRA matmul then ran in emulated bf16 behind extra casts, and on every CPU the
    first step's LoRA gradients differed from a plain PEFT step by ~0.3% (tests/src/test_trainer.py)
    and small AdamW updates round away in bf16 weights. The optimizer is created later (in `train()`), so
    putting the original tensors back right after init is all it takes; DoRA's magnitude vector TRL already
    leaves alone."""
    originals = {name: p.data for name, p in model.named_parameters() if p.requires_grad}
    yield
    # the original tensors back: a cast back to float32 would keep bf16's rounding
    for name, parameter in model.named_parameters():
        if name in originals and parameter.data_ptr() != originals[name].data_ptr():
            parameter.data = originals[name]


def use_collator(trainer: Any, collator: Any) -> None:
    """Give an SFTTrainer our collator after it is built. TRL 1.16.0's SFTTrainer refuses a custom collator
    at init when bfd packing (padding-free) is on, but its dataloaders use whatever `data_collator` holds
    afterwards; our collator keeps packed rows apart on sdpa/eager attention (src/data/collator.py)."""
    trainer.data_collator = collator


def takes_cpu_inference_layout(layer: Any, x: Any) -> bool:
    """Whether bitsandbytes 0.50.2's `Linear4bit.forward` would repack this layer's 4-bit weight into its CPU
    inference layout for input `x`: the condition it checks, copied here (tests/src/test_patches.py fails if it
    changes). `layer.support_avx512bf16_for_cpu` is set at init from the CPU; tests set it to force the path."""
    return (
        x.device.type == "cpu"
        and bool(getattr(layer, "support_avx512bf16_for_cpu", False))
        and not layer.training
        and not x.requires_grad
    )


def keep_4bit_training_layout() -> None:
    """Make every bitsandbytes `Linear4bit` keep its weight in the training layout; evaluation and generation
    on an AVX512-BF16 CPU use a packed copy. Process wide and idempotent (installed before 4-bit weights load).

    bitsandbytes 0.50.2, on CPUs with AVX512-BF16: the first eval-mode forward without grad repacks the
    layer's weight *in place* into a CPU inference layout (`_convert_weight_packed_for_cpu`: bf16 block scales,
    double quantization dropped) and sets `quant_state.packing_format_for_cpu`. Nothing packs it back when
    training resumes (only `_save_to_state_dict` does, lossily), and in training `matmul_4bit` then calls the
    fused `gemv_4bit` kernel, which has no autograd kernel: every gradient through the frozen 4-bit weights is
    dropped until the next checkpoint save (docs/cpu-paths.md has the reproduction). Here the layer's own
    weight and quant state are never touched: the first inference forward packs a *copy* (kept on the layer,
    outside its state dict), and each inference forward runs bitsandbytes' own forward with the copy swapped
    in, then swaps the original back. Training, gradient checkpointing, DoRA's dequantization and saving all
    see the original; inference keeps the fast packed kernel (the default model's baseline generations took
    ~10 s packed against ~350 s unpacked). Costs one packed copy of the 4-bit weights in memory."""
    import bitsandbytes as bnb

    layer_class = bnb.nn.Linear4bit
    if getattr(layer_class.forward, "keeps_training_layout", False):
        return
    original_forward = layer_class.forward

    def forward(self, x):
        if not takes_cpu_inference_layout(self, x):
            return original_forward(self, x)
        weight = self.weight
        bnb.nn.modules.fix_4bit_weight_quant_state_from_module(self)
        original = (weight.data, weight.quant_state)
        weight.data, weight.quant_state = _inference_copy(self)
        try:
            return original_forward(self, x)  # sees packing_format_for_cpu set: packs nothing, uses the copy
        finally:
            weight.data, weight.quant_state = original

    forward.keeps_training_layout = True
    forward.original = original_forward  # bitsandbytes' own, for tests/src/test_patches.py
    forward.__doc__ = original_forward.__doc__
    layer_class.forward = forward


def _inference_copy(layer: Any) -> tuple[Any, Any]:
    """The layer's weight and quant state packed for bitsandbytes' CPU inference kernel, made once per
    weight tensor (the frozen base weights never change in training) and kept on the layer."""
    import copy

    from bitsandbytes.functional import _convert_weight_packed_for_cpu  # private in 0.50.2

    weight = layer.weight
    key = (weight.data.data_ptr(), tuple(weight.data.shape))
    cached = layer.__dict__.get("_cpu_inference_copy")
    if cached is None or cached[0] != key:
        # the conversion rewrites the quant state it is given (absmax, nesting, dtype): give it a copy
        packed = _convert_weight_packed_for_cpu(weight.data.clone(), copy.deepcopy(weight.quant_state))
        cached = (key, packed)
        layer.__dict__["_cpu_inference_copy"] = cached
    return cached[1]


BNB_CPU_LOGGER = "bitsandbytes.backends.cpu.ops"
BNB_KERNELS_WARNING = "Failed to load CPU gemm_4bit_forward from kernels-community"


TRANSFORMERS_CHECKPOINTS_LOGGER = "transformers.trainer_utils"
TRANSFORMERS_MTIME_WARNING = "mtime may not be reliable on this filesystem"
# logger → the line dropped from it (each explained in silence_library_warnings)
DROPPED_LOG_LINES = {
    BNB_CPU_LOGGER: BNB_KERNELS_WARNING,
    TRANSFORMERS_CHECKPOINTS_LOGGER: TRANSFORMERS_MTIME_WARNING,
}


class _DropLine:
    """A logging filter dropping the records that contain one message."""

    def __init__(self, message: str):
        self.message = message

    def filter(self, record) -> bool:
        return self.message not in record.getMessage()


PEFT_DEPRECATED_READ = "`is_gradient_checkpointing` is deprecated"
OPTUNA_METRIC_NAMES = r".*Study\.set_metric_names is experimental"  # a regex matched from the start


@contextlib.contextmanager
def optuna_metric_names_quietly() -> Iterator[None]:
    """Optuna 5.0.0 warns that `Study.set_metric_names` is experimental (ExperimentalWarning) every time a sweep
    names its objectives: the user can do nothing about it. Dropped for the one call (sweep/study.py)."""
    import warnings

    from optuna.exceptions import ExperimentalWarning

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=OPTUNA_METRIC_NAMES, category=ExperimentalWarning)
        yield


def silence_library_warnings() -> None:
    """Log lines the user can do nothing about, dropped by logging filters installed before the libraries
    are imported (process wide):

    - bitsandbytes 0.50.2 warns, when imported on a CPU with AVX512-BF16, that it could not fetch an optional
      kernel from the Hugging Face Hub (`pip install kernels`). The fallback it then uses is the one our
      measurements were made with, and installing `kernels` would still need the Hub.
    - transformers 5.23 orders checkpoints by mtime when it rotates them (save_total_limit) and, when they
      were written less than a second apart (short runs, sweeps of a tiny model), says mtime "may not be
      reliable" and orders them by step number, which is right for our `checkpoint-<step>` folders."""
    import logging
    import warnings

    for name, message in DROPPED_LOG_LINES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropLine) and f.message == message for f in logger.filters):
            logger.addFilter(_DropLine(message))
    # peft 0.21.2 (PeftModel.__init__) reads transformers 5.23's deprecated `is_gradient_checkpointing`, which
    # warns once per process: the user's code does not read it, so the warning only adds noise
    warnings.filterwarnings("ignore", message=PEFT_DEPRECATED_READ, category=FutureWarning)
