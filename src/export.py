"""Save stage: the PEFT adapter (with tokenizer), and optionally a merged standalone model."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

from transformers import GenerationConfig

from src.stop_tokens import with_stop_tokens

log = logging.getLogger(__name__)


def save_adapter(trainer, tokenizer, run_dir: Path, lora_enabled: bool) -> Path:
    """Write the trained adapter (or, for full fine-tuning, the whole model) with its tokenizer."""
    target = run_dir / ("adapter" if lora_enabled else "model")
    trainer.save_model(str(target))  # every process calls it (collective under FSDP/DeepSpeed); main writes
    if not trainer.args.should_save:
        return target
    tokenizer.save_pretrained(str(target))
    generation = getattr(trainer.model, "generation_config", None) or GenerationConfig()
    with_stop_tokens(copy.deepcopy(generation), tokenizer).save_pretrained(str(target))
    log.info("Saved %s to %s", "adapter" if lora_enabled else "model", target)
    return target


def merge_adapter(model_cfg, base: str, adapter_dir: Path, target: Path, tokenizer) -> Path:
    """Merge the adapter into a full-precision copy of the base (never into 4-bit weights, which would
    bake quantization error into every layer) and save a model that loads with AutoModelForCausalLM."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from src.model import torch_dtype

    dtype = torch_dtype(model_cfg.dtype)
    base_model = AutoModelForCausalLM.from_pretrained(
        base, revision=model_cfg.revision, dtype=dtype, trust_remote_code=model_cfg.trust_remote_code
    )
    merged = PeftModel.from_pretrained(base_model, str(adapter_dir)).merge_and_unload()
    merged.config.use_cache = True
    with_stop_tokens(merged.generation_config, tokenizer)  # what vLLM and transformers.pipeline stop at
    merged.save_pretrained(str(target))
    tokenizer.save_pretrained(str(target))
    log.info("Saved merged %s model to %s", str(dtype).removeprefix("torch."), target)
    del base_model, merged
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return target
