"""The memory planner, one module per idea:

- `estimate`: parameter counts (LoRA included) and the memory a run needs (weights, adapter, gradients,
  optimizer states, activations with and without gradient checkpointing), from the architecture shipped in
  conf/model (no download);
- `budget`: what this machine offers (90% of the GPU, or 80% of the RAM available now);
- `checkpointing`: the run-time decision behind memory.gradient_checkpointing=auto;
- `flops`: a training step's model FLOPs per token (the bench's MFU);
- `__main__`: `python -m src.plan <same overrides as train> [plan.gpu_gb=24]`, whether a run fits a GPU and
  the largest micro-batch that does.
"""
