"""Model FLOPs of one training step per token, from the architecture (conf/model) alone: the numerator of
the bench's MFU."""

from __future__ import annotations

from src.plan.estimate import Shapes, count_parameters, lora_parameters


def training_flops_per_token(cfg, checkpointing: bool) -> float:
    """Forward 2·N over the frozen linear layers, backward 2·N (input gradients only: frozen weights get
    none), 2·N more when activations are recomputed, plus LoRA (6 per parameter), the LM head and attention
    (causal: half of `data.max_length` positions attended on average)."""
    shapes = Shapes.from_architecture(dict(cfg.model.architecture))
    linear = count_parameters(shapes)["linear"]
    passes = 3 if checkpointing else 2
    lora = 6 * lora_parameters(shapes, cfg.lora)  # the planner's count
    head = 2 * 2 * shapes.hidden * shapes.vocab
    attention = shapes.layers * 2 * 2 * 2 * cfg.data.max_length / 2 * shapes.heads * shapes.head_dim
    return passes * 2 * linear + lora + head + attention
