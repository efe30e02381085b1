"""The training-step benchmark, `python -m src.bench` (docs/benchmarks.md), one module per idea.

Runs, in one process on identical data, model and settings, this project's trainer, the usual one-file TRL
script, the same without packing, a bare PEFT loop, and variants that each add one thing ours has, so the
cost of each cause is measured. Every variant computes in the same dtype: the resolved
`memory.bnb_4bit_compute_dtype` (`auto` = bf16 where the hardware has it, else fp32). Before any step is
timed, each variant's first step passes a gradient check; a variant that fails it is reported as failed.
Reports real (non-pad) tokens/s, optimizer steps/s, positions per real token, peak RSS (CPU) or CUDA memory,
the ratio of each to ours and to the bare loop, the gradient check's relative error, and the step's
utilisation against the machine's measured matmul throughput (MFU).

- `harness`: the rounds the variants' steps run in, one thread at a time, and the one-arena re-exec;
- `measure`: the instruments (memory, step timer, counting collator, matmul throughput) and the fields
  they give;
- `gradient_check`: each variant's first-step gradients against a plain forward/backward;
- `variants`: the name -> variant table and how each trains;
- `report`: ratios, MFU (src.plan.flops), the printed table and the JSON file;
- `__main__`: the command.
"""
