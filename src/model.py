"""Model stage: load the base weights (found by src/base_model.py), quantize, attach LoRA."""

from __future__ import annotations

import importlib.util
import logging
import os

import torch
from transformers import AutoModelForCausalLM

from src.config import ConfigError, LoraConfigSchema, MemoryConfig, ModelConfig, sharded_launch
from src.patches import cpu_has_native_bf16, keep_4bit_training_layout

log = logging.getLogger(__name__)

DTYPES = {
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float32": torch.float32,
    "uint8": torch.uint8,
}


def torch_dtype(name: str) -> torch.dtype:
    """Map a config dtype name to torch; "auto" picks bf16 where the hardware computes in it (else fp16 on
    older GPUs, fp32 on CPUs without bf16 instructions)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    return DTYPES[name]


def resolve_attention(name: str) -> str:
    """flash_attention_2 when it is installed and a CUDA device is there, else PyTorch's sdpa."""
    if name != "auto":
        return name
    if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def quantization_config(memory: MemoryConfig):
    """bitsandbytes 4-bit NF4 config, or None when the memory preset loads full-precision weights."""
    if not memory.load_in_4bit:
        return None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=memory.bnb_4bit_quant_type,
        bnb_4bit_use_double_quant=memory.bnb_4bit_use_double_quant,
        bnb_4bit_compute_dtype=torch_dtype(memory.bnb_4bit_compute_dtype),
        bnb_4bit_quant_storage=torch_dtype(memory.bnb_4bit_quant_storage),
    )


def load_base_model(cfg: ModelConfig, memory: MemoryConfig, base: str, quantize: bool = True):
    """Load the causal LM, 4-bit quantized when the memory preset asks for it and `quantize` is true."""
    quant = quantization_config(memory) if quantize else None
    if quant is not None:
        keep_4bit_training_layout()  # src/patches.py: evaluating must never change how 4-bit weights train
    model = AutoModelForCausalLM.from_pretrained(
        base,
        revision=cfg.revision,
        dtype=torch_dtype(cfg.dtype),
        attn_implementation=resolve_attention(cfg.attn_implementation),
        trust_remote_code=cfg.trust_remote_code,
        quantization_config=quant,
        # FSDP/DeepSpeed place (and shard) the weights themselves; otherwise each process loads to its device
        device_map={"": _device()} if quant is not None and not sharded_launch() else None,
    )
    return model


def _device() -> str | int:
    if torch.cuda.is_available():
        return int(os.environ.get("LOCAL_RANK", 0))
    return "cpu"


def alpha_for(lora: LoraConfigSchema) -> int:
    """LoRA alpha; null in the config means 2 × r (r=16 → alpha=32, scale 2, the common pairing)."""
    return lora.alpha if lora.alpha is not None else 2 * lora.r


def attach_lora(model, lora: LoraConfigSchema, memory: MemoryConfig):
    """Prepare a (possibly 4-bit) model for training and wrap it with a LoRA adapter.

    With lora=none every weight trains (full fine-tuning), which is refused for 4-bit weights at validation."""
    if memory.load_in_4bit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=memory.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    if not lora.enabled:
        return model
    from peft import LoftQConfig, LoraConfig, get_peft_model

    targets = lora.target_modules
    peft_config = LoraConfig(
        r=lora.r,
        lora_alpha=alpha_for(lora),
        lora_dropout=lora.dropout,
        bias=lora.bias,
        target_modules=targets if isinstance(targets, str) else list(targets),
        use_dora=lora.use_dora,
        use_rslora=lora.use_rslora,
        init_lora_weights=True if lora.init == "default" else lora.init,
        loftq_config=LoftQConfig(loftq_bits=4) if lora.init == "loftq" else {},
        modules_to_save=list(lora.modules_to_save) or None,
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(model, peft_config)
    except ValueError as error:  # PEFT: target modules not found (a model the config could not check ahead)
        if "not found in the base model" not in str(error):
            raise
        raise ConfigError(f"lora.target_modules={targets!r}: {error}") from None


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameters, counting 4-bit packed weights at their real size (as PEFT does)."""
    if hasattr(model, "get_nb_trainable_parameters"):
        return model.get_nb_trainable_parameters()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def build_model(cfg, base: str):
    """Model stage: load the base model, quantize per the memory preset and attach LoRA."""
    model = load_base_model(cfg.model, cfg.memory, base)
    model.config.use_cache = False  # the KV cache would break packed-example isolation during training
    return attach_lora(model, cfg.lora, cfg.memory)
