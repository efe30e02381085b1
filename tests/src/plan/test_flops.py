"""src.plan.flops: a training step's model FLOPs per token, pinned for the tiny model."""

from __future__ import annotations

from src.plan.flops import training_flops_per_token
from tests.conftest import TINY, compose_config


def test_training_flops_per_token_of_the_tiny_model():
    cfg = compose_config(TINY)  # hidden 64, intermediate 128, 2 layers, 4 heads of 16, vocab 49152, r16 on 7
    linear = 2 * (64 * 64 + 2 * 64 * 32 + 64 * 64 + 3 * 64 * 128)  # q, k, v, o, gate, up, down: 73,728
    lora = 6 * 2 * 16 * (128 + 2 * 96 + 128 + 3 * 192)  # r × (in + out) per projection and layer
    head = 2 * 2 * 64 * 49152
    attention = 2 * 2 * 2 * 2 * 128 / 2 * 4 * 16  # layers × fwd+bwd × QK and AV × 2 × mean context × width
    assert training_flops_per_token(cfg, checkpointing=False) == 2 * 2 * linear + lora + head + attention
    assert training_flops_per_token(cfg, checkpointing=False) == 13_139_968
    # recomputation adds one more forward over the frozen linear layers
    assert training_flops_per_token(cfg, checkpointing=True) - 13_139_968 == 2 * linear
