"""Training-step benchmark: `python -m src.bench [bench.measure_steps=5 …] [train overrides …]`.

Runs, in one process on identical data, model and settings: (a) this project's trainer, (b) the usual
one-file TRL script (SFTTrainer, packing=True, gradient checkpointing, default metrics), (c) the same
without packing (padding), (d) a bare PEFT loop with no framework. Every variant computes in the same
dtype: the resolved `memory.bnb_4bit_compute_dtype` (`auto` = bf16 where the hardware has it, else fp32). Reports real (non-pad) tokens/s,
optimizer steps/s, positions per real token, peak RSS (CPU) or CUDA memory, the ratio of each to (a), and
the step's utilisation against the machine's measured matmul throughput (MFU). Writes JSON next to it."""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import statistics
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf
from transformers import TrainerCallback

from src.config import ConfigError, validate
from src.memory import peak_memory_gb, release_and_reset_peak
from src.patches import compact_lm_head_on_cpu

log = logging.getLogger("src.bench")
BENCH_DEFAULTS = Path(__file__).resolve().parents[1] / "conf" / "bench" / "default.yaml"


class CountingCollator:
    """Wraps a collator to record real tokens and processed positions of every batch."""

    def __init__(self, inner):
        self.inner, self.batches = inner, []

    def __call__(self, features):
        batch = self.inner(features)
        real = sum(len(f["input_ids"]) for f in features)
        self.batches.append((real, batch["input_ids"].numel()))
        return batch


class StepTimer(TrainerCallback):
    def __init__(self):
        self.seconds, self._start = [], 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds.append(time.perf_counter() - self._start)


def planned_gb(cfg, checkpointing: bool) -> float:
    """The memory planner's estimate for this variant's settings (src/plan/estimate.py), to compare with its peak."""
    from src.config import trains_on_cpu
    from src.plan.estimate import GIB, plan

    planned = copy.deepcopy(cfg)
    planned.memory.gradient_checkpointing = checkpointing
    return plan(planned, on_cpu=trains_on_cpu(cfg))["peak"] / GIB


def summarize(name: str, seconds: list[float], batches: list[tuple[int, int]], warmup: int, memory: float):
    steps = seconds[warmup:]
    counted = batches[warmup : warmup + len(steps)]
    median = statistics.median(steps)
    real = statistics.median(b[0] for b in counted)
    positions = sum(b[1] for b in counted) / max(sum(b[0] for b in counted), 1)
    return {
        "variant": name,
        "median_step_seconds": median,
        "real_tokens_per_step": real,
        "tokens_per_second": real / median,
        "steps_per_second": 1 / median,
        "positions_per_real_token": positions,
        "peak_memory_gb": memory,  # the whole process (Python, torch, tokenizer, data included)
        "steps_measured": len(steps),
    }


def add_memory(result: dict, before_gb: float, planned: float | None, checkpointing: bool) -> dict:
    """What the variant itself used (peak minus the memory in use before its model loaded) and, for this
    project's step, the planner's estimate with its error relative to the measurement. (The planner models
    this project's trainer, whose fused LM head never builds full logits; the other variants do.)"""
    used = result["peak_memory_gb"] - before_gb
    result.update(
        gradient_checkpointing=checkpointing,
        memory_before_gb=before_gb,
        training_memory_gb=used,
        planned_memory_gb=planned,
        plan_error=(planned - used) / used if planned is not None and used > 0 else None,
    )
    return result


def run_trainer_variant(name, cfg, base, tokenizer, data, raw_train, bench, workdir: Path) -> dict:
    """(a) ours through build_trainer; (b)/(c) a plain TRL script's SFTTrainer with packing on/off."""
    from trl import SFTConfig, SFTTrainer

    from src.model import build_model
    from src.trainer import build_trainer, compute_dtype

    before = release_and_reset_peak()
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, base)
    timer = StepTimer()
    steps = bench.warmup_steps + bench.measure_steps
    if name == "ours":
        cfg.optim.max_steps = steps
        trainer = build_trainer(cfg, model, tokenizer, data, workdir / name, [timer])
        trainer.args.eval_strategy = trainer.args.save_strategy = "no"
        trainer.args.load_best_model_at_end = False
        trainer.callback_handler.callbacks = [
            c for c in trainer.callback_handler.callbacks if type(c).__name__ != "EarlyStoppingCallback"
        ]
    else:
        args = SFTConfig(
            output_dir=str(workdir / name),
            max_steps=steps,
            per_device_train_batch_size=cfg.memory.per_device_train_batch_size,
            gradient_accumulation_steps=1,
            gradient_checkpointing=True,
            learning_rate=cfg.optim.learning_rate,
            lr_scheduler_type="cosine",
            warmup_steps=0.05,
            bf16=compute_dtype(cfg) == torch.bfloat16,  # what `bf16=True` in such a script means, where the
            fp16=compute_dtype(cfg) == torch.float16,  # hardware has it; fp32 where it would be emulated
            use_cpu=not torch.cuda.is_available(),
            max_length=cfg.data.max_length,
            packing=name == "trl_script",
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            seed=cfg.seed,
            disable_tqdm=True,
        )
        trainer = SFTTrainer(
            model=model, args=args, train_dataset=raw_train, processing_class=tokenizer, callbacks=[timer]
        )
    trainer.data_collator = CountingCollator(trainer.data_collator)
    # our trainer runs with its TRL workaround (src/patches.py); the plain-TRL recipes run TRL unchanged
    with compact_lm_head_on_cpu() if name == "ours" else contextlib.nullcontext():
        trainer.train()
    result = summarize(
        name, timer.seconds, trainer.data_collator.batches, bench.warmup_steps, peak_memory_gb()
    )
    checkpointing = bool(trainer.args.activation_checkpointing)
    del trainer, model
    planned = planned_gb(cfg, checkpointing) if name == "ours" else None
    return add_memory(result, before, planned, checkpointing)


def run_bare_loop(name, cfg, base, tokenizer, data, bench) -> dict:
    """(d) PEFT + a hand-written loop over the same packed rows: no Trainer, no metrics."""
    from trl import pack_dataset

    from src.data.collator import PackedRowsCollator
    from src.model import build_model
    from src.trainer import compute_dtype

    before = release_and_reset_peak()
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, base)
    model.train()
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=cfg.optim.learning_rate
    )
    rows = pack_dataset(data.train, seq_length=cfg.data.max_length, strategy="bfd")
    collate = CountingCollator(PackedRowsCollator(tokenizer.pad_token_id))
    b = cfg.memory.per_device_train_batch_size
    seconds = []
    dtype = compute_dtype(cfg)
    for step in range(bench.warmup_steps + bench.measure_steps):
        start = (step * b) % max(len(rows) - b, 1)
        batch = collate([rows[i] for i in range(start, start + b)])
        began = time.perf_counter()
        device = "cuda" if torch.cuda.is_available() else "cpu"
        with torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32):
            loss = model(**batch, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds.append(time.perf_counter() - began)
    result = summarize(name, seconds, collate.batches, bench.warmup_steps, peak_memory_gb())
    del model, optimizer
    return add_memory(result, before, None, bool(cfg.memory.gradient_checkpointing))


def matmul_flops_per_second(hidden: int, intermediate: int, tokens: int, dtype: torch.dtype) -> float:
    """Achieved GEMM throughput for the model's own MLP shape (tokens × hidden @ hidden × intermediate)."""
    a = torch.randn(tokens, hidden, dtype=dtype)
    w = torch.randn(hidden, intermediate, dtype=dtype)
    for _ in range(2):
        a @ w
    times = []
    for _ in range(5):
        began = time.perf_counter()
        a @ w
        times.append(time.perf_counter() - began)
    return 2 * tokens * hidden * intermediate / statistics.median(times)


def training_flops_per_token(cfg, checkpointing: bool) -> float:
    """Forward 2·N over the frozen linear layers, backward 2·N (input gradients only: frozen weights get
    none), 2·N more when activations are recomputed, plus LoRA (6 per parameter), the LM head and attention."""
    from src.plan.estimate import Shapes, count_parameters, lora_parameters

    shapes = Shapes.from_architecture(dict(cfg.model.architecture))
    linear = count_parameters(shapes)["linear"]
    passes = 3 if checkpointing else 2
    lora = 6 * lora_parameters(shapes, cfg.lora)  # the planner's count
    head = 2 * 2 * shapes.hidden * shapes.vocab
    attention = shapes.layers * 2 * 2 * 2 * cfg.data.max_length / 2 * shapes.heads * shapes.head_dim
    return passes * 2 * linear + lora + head + attention


def _optional(value: float | None, spec: str) -> str:
    return format(value, spec) if value is not None else format("-", ">" + spec.split(".")[0])


def main(argv: list[str] | None = None) -> None:
    import tempfile

    from src.config import compose
    from src.data.cache import prepare_data
    from src.model import load_tokenizer, resolve_base
    from src.plan.checkpointing import resolve_checkpointing
    from src.trainer import compute_dtype

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = list(sys.argv[1:] if argv is None else argv)
    bench = OmegaConf.load(BENCH_DEFAULTS)
    bench_overrides = [a.removeprefix("bench.") for a in args if a.startswith("bench.")]
    bench = OmegaConf.merge(bench, OmegaConf.from_dotlist(bench_overrides))
    train_overrides = [*bench.train_overrides, *[a for a in args if not a.startswith("bench.")]]
    paths = ["paths.output_dir=.", f"paths.cache_dir={bench.cache_dir}"]
    # This project's step differs from the others only where the project decides differently by default,
    # bench.ours_overrides: gradient checkpointing chosen by the memory planner.
    ours_overrides = [*train_overrides, *bench.ours_overrides]
    cfg = OmegaConf.to_object(compose([*train_overrides, *paths]))
    ours_cfg = OmegaConf.to_object(compose([*ours_overrides, *paths]))
    try:
        validate(cfg)
        validate(ours_cfg)
    except ConfigError as error:
        sys.exit(f"Config error: {error}")
    base = resolve_base(cfg.model, cfg.paths.cache_dir)
    tokenizer = load_tokenizer(cfg.model, base)
    data = prepare_data(cfg.data, tokenizer, cfg.paths.cache_dir)
    # the plain TRL script tokenizes conversations itself: give it the same generated conversations
    from datasets import Dataset

    from src.builtin_data import BUILTIN

    if cfg.data.source != "builtin":
        sys.exit("src.bench uses the built-in dataset so every variant sees identical conversations.")
    raw_train = Dataset.from_list(BUILTIN[cfg.data.name](cfg.data.builtin_examples, seed=cfg.data.split_seed))
    checkpointing, why = resolve_checkpointing(ours_cfg)
    ours_cfg.memory.gradient_checkpointing = checkpointing
    log.info("ours: gradient checkpointing %s (%s)", "on" if checkpointing else "off", why)
    bare_no_ckpt = copy.deepcopy(cfg)
    bare_no_ckpt.memory.gradient_checkpointing = False
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for name in bench.variants:
            log.info("== %s", name)
            if name == "bare":
                results.append(run_bare_loop(name, cfg, base, tokenizer, data, bench))
            elif name == "bare_no_ckpt":
                results.append(run_bare_loop(name, bare_no_ckpt, base, tokenizer, data, bench))
            else:
                variant_cfg = ours_cfg if name == "ours" else cfg
                results.append(
                    run_trainer_variant(
                        name, variant_cfg, base, tokenizer, data, raw_train, bench, Path(workdir)
                    )
                )
    reference = next((r for r in results if r["variant"] == "ours"), results[0])
    for r in results:
        r["tokens_per_second_vs_ours"] = r["tokens_per_second"] / reference["tokens_per_second"]
        r["peak_memory_vs_ours"] = r["peak_memory_gb"] / reference["peak_memory_gb"]
    shapes = cfg.model.architecture
    dtype = compute_dtype(cfg)
    peak = matmul_flops_per_second(shapes["hidden_size"], shapes["intermediate_size"], 2048, dtype)
    for r in results:
        flops = training_flops_per_token(cfg, r["gradient_checkpointing"])
        r["mfu_vs_measured_matmul"] = r["tokens_per_second"] * flops / peak
    print(f"\ncompute dtype {dtype}; measured matmul throughput: {peak / 1e9:.1f} GFLOP/s")
    header = (
        f"{'variant':12} {'ckpt':>4} {'tokens/s':>9} {'× ours':>7} {'steps/s':>8} {'pos/token':>9} "
        f"{'peak GB':>8} {'train GB':>8} {'plan GB':>8} {'plan err':>8} {'MFU':>6}"
    )
    print(header)
    for r in results:
        print(
            f"{r['variant']:12} {'on' if r['gradient_checkpointing'] else 'off':>4} "
            f"{r['tokens_per_second']:9.1f} {r['tokens_per_second_vs_ours']:7.2f} "
            f"{r['steps_per_second']:8.3f} {r['positions_per_real_token']:9.2f} {r['peak_memory_gb']:8.2f} "
            f"{r['training_memory_gb']:8.2f} {_optional(r['planned_memory_gb'], '8.2f')} "
            f"{_optional(r['plan_error'], '8.1%')} "
            f"{r['mfu_vs_measured_matmul']:6.1%}"
        )
    out = Path(bench.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "compute_dtype": str(dtype),
                "matmul_flops_per_second": peak,
                "settings": train_overrides,
                "results": results,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
