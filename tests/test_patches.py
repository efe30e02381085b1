"""src/patches.py: each workaround is checked against the library version it was written for, and the
library behaviour it relies on is still there. A failure here after an upgrade means: re-check the patch."""

from __future__ import annotations

import inspect
from importlib.metadata import version

import torch

from src.patches import CHECKED_ON, compact_lm_head_on_cpu, cpu_has_native_bf16


def test_installed_versions_are_the_ones_the_patches_were_checked_on():
    installed = {name: version(name).split("+")[0] for name in CHECKED_ON}  # 2.13.0+cpu is 2.13.0
    assert installed == CHECKED_ON


def test_trl_fused_lm_head_still_reads_the_module_global_it_patches():
    import trl.trainer.utils as trl_utils

    source = inspect.getsource(trl_utils.add_fused_lm_head)
    assert "compact = _use_triton(hidden_states.device)" in source  # read at every forward
    original = trl_utils._use_triton
    assert original(torch.device("cpu")) is False  # what the patch changes on CPU
    with compact_lm_head_on_cpu():
        assert trl_utils._use_triton(torch.device("cpu")) is True
    assert trl_utils._use_triton is original  # scoped: undone on exit


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


def test_peft_still_reads_the_deprecated_property_whose_warning_we_drop():
    import inspect

    import peft.peft_model
    import transformers.modeling_utils

    from src.patches import PEFT_DEPRECATED_READ

    assert 'getattr(model, "is_gradient_checkpointing"' in inspect.getsource(peft.peft_model)
    assert PEFT_DEPRECATED_READ in inspect.getsource(transformers.modeling_utils)
