"""Every place this project works around a library, each with the version it was checked on.

tests/test_patches.py fails when an installed version differs from CHECKED_ON or when the library behaviour
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
def compact_lm_head_on_cpu() -> Iterator[None]:
    """While active, TRL's fused LM head scores only the positions that carry a label on CPU too.

    TRL 1.16.0 (`trl.trainer.utils.add_fused_lm_head`) scores only labelled positions on Triton devices and
    every position elsewhere, to keep tile shapes fixed for compilers such as Neuron. On CPU nothing is
    compiled, so scoring every position only wastes work: with assistant-only loss most positions carry no
    label. The numbers are the same (tests/test_packing.py). The module global `_use_triton` is read at every
    forward, so the patch must cover the training and evaluation calls; it is restored on exit, so other
    trainers in the same process (the benchmark's comparison recipes) run TRL unchanged."""
    import trl.trainer.utils as trl_utils

    original = trl_utils._use_triton

    def compact(device) -> bool:
        return device.type == "cpu" or original(device)

    trl_utils._use_triton = compact
    try:
        yield
    finally:
        trl_utils._use_triton = original


def use_collator(trainer: Any, collator: Any) -> None:
    """Give an SFTTrainer our collator after it is built. TRL 1.16.0's SFTTrainer refuses a custom collator
    at init when bfd packing (padding-free) is on, but its dataloaders use whatever `data_collator` holds
    afterwards; our collator keeps packed rows apart on sdpa/eager attention (src/data/collator.py)."""
    trainer.data_collator = collator


BNB_CPU_LOGGER = "bitsandbytes.backends.cpu.ops"
BNB_KERNELS_WARNING = "Failed to load CPU gemm_4bit_forward from kernels-community"


def _not_the_kernels_warning(record) -> bool:
    return BNB_KERNELS_WARNING not in record.getMessage()


PEFT_DEPRECATED_READ = "`is_gradient_checkpointing` is deprecated"


def silence_library_warnings() -> None:
    """bitsandbytes 0.50.2 warns, when imported on a CPU with AVX512-BF16, that it could not fetch an optional
    kernel from the Hugging Face Hub (`pip install kernels`). The fallback it then uses is the one our
    measurements were made with, and installing `kernels` would still need the Hub: the user can do nothing
    about the warning, so it is dropped. A logging filter, installed before bitsandbytes is imported; process
    wide (bitsandbytes logs it once, at import)."""
    import logging
    import warnings

    logger = logging.getLogger(BNB_CPU_LOGGER)
    if _not_the_kernels_warning not in logger.filters:
        logger.addFilter(_not_the_kernels_warning)
    # peft 0.21.2 (PeftModel.__init__) reads transformers 5.23's deprecated `is_gradient_checkpointing`, which
    # warns once per process: the user's code does not read it, so the warning only adds noise
    warnings.filterwarnings("ignore", message=PEFT_DEPRECATED_READ, category=FutureWarning)
