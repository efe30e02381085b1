"""The gradient check every variant passes before it is timed: its first step's LoRA gradients (dropout off
for that one step) against a plain forward/backward of a freshly built identical model on the very batch the
variant trained on (its own tokenization and masks), summed cross-entropy over its labelled tokens."""

from __future__ import annotations

import torch

GRADIENT_TOLERANCE = 5e-2  # relative; a dropped gradient or a wrong mask is ~1, bf16 rounding ~1e-2


def cast_adapters(model, dtype: torch.dtype | None) -> None:
    """Cast the trainable (LoRA) weights to `dtype`, as TRL 1.16 does to a quantized model's; None: no-op."""
    if dtype is not None:
        for p in model.parameters():
            if p.requires_grad:
                p.data = p.data.to(dtype)


def dropout_off(model) -> list:
    """Set every dropout module (LoRA's among them) to p=0; returns what to restore."""
    changed = [(m, m.p) for name, m in model.named_modules() if isinstance(m, torch.nn.Dropout) and m.p > 0]
    for module, _ in changed:
        module.p = 0.0
    return changed


def restore_dropout(changed: list) -> None:
    for module, p in changed:
        module.p = p


def trainable_gradients(model) -> dict[str, torch.Tensor]:
    """Every trainable parameter's gradient, by the name PEFT gives it (float32 copies)."""
    return {
        name.replace("._checkpoint_wrapped_module", ""): p.grad.detach().float().clone()
        for name, p in model.named_parameters()
        if p.requires_grad and p.grad is not None
    }


def reference_gradients(cfg, base: str, batch: dict, max_grad_norm: float, adapter_dtype=None) -> dict:
    """A plain forward/backward of a freshly built identical model (same seed, same LoRA init) on `batch`:
    summed cross-entropy over the labelled (shifted) tokens divided by their number, clipped like the
    variant. `adapter_dtype` casts the LoRA weights first (the plain TRL script's SFTTrainer keeps them in
    bf16 for quantized models)."""
    from src.compute import compute_dtype
    from src.model import build_model

    torch.manual_seed(cfg.seed)
    model = build_model(cfg, base)
    model.train()
    dropout_off(model)
    cast_adapters(model, adapter_dtype)
    batch = {k: v.to(model.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "position_ids")}
    dtype = compute_dtype(cfg)  # the variants autocast to it (the Trainer through accelerate), so does this
    with torch.autocast(model.device.type, dtype=dtype, enabled=dtype != torch.float32):
        logits = model(**inputs, use_cache=False).logits
    logits = logits.float()
    labels = batch.get("shift_labels")
    if labels is None:
        labels = torch.nn.functional.pad(batch["labels"][..., 1:], (0, 1), value=-100)
    loss = (
        torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="sum"
        )
        / (labels != -100).sum()
    )
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], max_grad_norm)
    gradients = trainable_gradients(model)
    del model
    return gradients


def gradient_error(ours: dict, reference: dict) -> float:
    """Relative error of the whole gradient vector: ||ours - reference|| / ||reference||; inf when the two
    name different parameters or the reference is all zero."""
    if ours.keys() != reference.keys():
        return float("inf")
    diff = sum(float((ours[n] - reference[n]).norm() ** 2) for n in reference) ** 0.5
    norm = sum(float(reference[n].norm() ** 2) for n in reference) ** 0.5
    return diff / norm if norm > 0 else float("inf")


def verdict(error: float) -> str:
    """ "passed" within GRADIENT_TOLERANCE, else "FAILED" (the figure a report prints)."""
    return "passed" if error <= GRADIENT_TOLERANCE else "FAILED"


def check_gradients(
    result: dict, cfg, base: str, captured: dict | None, batch: dict | None, **reference
) -> dict:
    """Add `gradient_error` and `gradient_check` to `result`: the variant's captured first-step gradients
    against `reference_gradients(cfg, base, batch, **reference)`; inf and FAILED when none were captured."""
    if captured is None or batch is None:
        error = float("inf")
    else:
        error = gradient_error(captured, reference_gradients(cfg, base, batch, **reference))
    result.update(gradient_error=error, gradient_check=verdict(error))
    return result
