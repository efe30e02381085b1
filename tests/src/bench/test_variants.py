"""src.bench.variants: the table covers the default variants, and each starts from the settings it names."""

from __future__ import annotations

from omegaconf import OmegaConf

from src.bench.__main__ import BENCH_DEFAULTS
from src.bench.variants import VARIANTS, Shared
from src.patches import cpu_lm_head
from tests.conftest import TINY, compose_config


def shared_settings(ours_checkpointing: bool) -> Shared:
    preset = OmegaConf.to_object(compose_config([*TINY, "memory.gradient_checkpointing=true"]))
    ours = OmegaConf.to_object(compose_config(TINY))
    ours.memory.gradient_checkpointing = ours_checkpointing
    return Shared(preset, ours, "", None, None, None, 1, 2, None, None)


def test_the_default_variants_are_the_whole_table():
    assert list(OmegaConf.load(BENCH_DEFAULTS).variants) == list(VARIANTS)
    # the LM-head workaround is ours' alone; the plain-TRL variants run TRL unchanged
    assert {name for name, v in VARIANTS.items() if v.patch is cpu_lm_head} == {"ours", "ours_callbacks"}
    assert all(v.patch is None for name, v in VARIANTS.items() if not name.startswith("ours"))


def test_bare_variants_take_ours_checkpointing_decision_and_one_difference_each():
    shared = shared_settings(ours_checkpointing=False)
    settings = {name: VARIANTS[name].settings(shared) for name in VARIANTS}
    # ours decided off: only the plain TRL script (the preset's setting) and bare_ckpt recompute
    checkpointed = {name for name, cfg in settings.items() if cfg.memory.gradient_checkpointing}
    assert checkpointed == {"trl_script", "padding", "bare_ckpt"}
    assert {name for name, cfg in settings.items() if cfg.lora.dropout == 0.05} == {"bare_dropout"}
    assert shared.preset.memory.gradient_checkpointing is True and shared.preset.lora.dropout == 0
    assert settings["trl_script"] is shared.preset and settings["bare"] is not shared.preset
    # ours decided on, the preset says off: the bare loop follows ours
    shared = shared_settings(ours_checkpointing=True)
    shared.preset.memory.gradient_checkpointing = False
    assert VARIANTS["bare"].settings(shared).memory.gradient_checkpointing is True
    assert VARIANTS["bare_dropout"].settings(shared).memory.gradient_checkpointing is True
