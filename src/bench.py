"""Training-step benchmark: `python -m src.bench [bench.measure_steps=5 …] [train overrides …]`.

Runs, in one process on identical data, model and settings: (a) this project's trainer, (b) the usual
one-file TRL script (SFTTrainer, packing=True, gradient checkpointing, default metrics), (c) the same
without packing (padding), (d) a bare PEFT loop with no framework, and variants of the bare loop that each
add one thing ours has (conf/bench/default.yaml lists them), so the cost of each cause is measured. Every
variant computes in the same dtype: the resolved `memory.bnb_4bit_compute_dtype` (`auto` = bf16 where the
hardware has it, else fp32).

Before any step is timed, each variant's first step is checked: its LoRA gradients (dropout off for that
one step) must equal a plain forward/backward of a freshly built identical model on the very batch the
variant trained on (its own tokenization and masks), summed cross-entropy over its labelled tokens; a
variant that fails the check is reported as failed, not timed. Reports real (non-pad) tokens/s, optimizer
steps/s, positions per real token, peak RSS (CPU) or CUDA memory, the ratio of each to (a) and to the bare
loop, the gradient check's relative error, and the step's utilisation against the machine's measured matmul
throughput (MFU). Writes JSON next to it."""

from __future__ import annotations

import copy
import functools
import json
import logging
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import OmegaConf
from transformers import TrainerCallback

from src.config import ConfigError, validate
from src.memory import peak_memory_gb, release_and_reset_peak
from src.patches import cpu_lm_head

log = logging.getLogger("src.bench")
BENCH_DEFAULTS = Path(__file__).resolve().parents[1] / "conf" / "bench" / "default.yaml"


class Rounds:
    """Runs the variants' steps in rounds, one step of each in turn (A B C … A B C …): each variant lives in
    its own thread and only the thread holding the turn runs, so work never overlaps, but drift of a shared
    machine (other jobs, frequency changes) falls on every variant alike instead of on whichever ran while it
    lasted (measured 2026-11-30: one variant moved 3× between two sequential runs). `scoped[name]` makes a
    context manager that is entered whenever that variant holds the turn and exited when it passes it on,
    so a process-wide library patch stays its variant's alone."""

    def __init__(self, names: list[str], scoped: dict[str, Callable] | None = None):
        if len(set(names)) != len(names):
            raise ValueError(f"bench.variants: each variant once, got {names}")
        self.order, self.scoped = list(names), scoped or {}
        self._turn, self._finished = 0, set()
        self._cond = threading.Condition()
        self._entered = None

    def take(self, name: str) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self.order[self._turn] == name)
        if name in self.scoped:
            self._entered = self.scoped[name]()
            self._entered.__enter__()

    def give(self, name: str, finished: bool = False) -> None:
        if self._entered is not None:
            self._entered.__exit__(None, None, None)
            self._entered = None
        with self._cond:
            if finished:
                self._finished.add(name)
            for k in range(1, len(self.order) + 1):
                following = (self._turn + k) % len(self.order)
                if self.order[following] not in self._finished:
                    self._turn = following
                    break
            self._cond.notify_all()

    def step_done(self, name: str) -> None:
        """Between two steps of `name`: let every other variant run one step."""
        self.give(name)
        self.take(name)

    def run(self, jobs: dict[str, Callable[[], dict]]) -> list[dict]:
        """Run every job (setup, steps calling `step_done`, gradient check) in its own thread; results in order."""
        results, errors = {}, {}

        def work(name: str) -> None:
            self.take(name)
            try:
                results[name] = jobs[name]()
            except BaseException as error:  # reported after every thread ended, so none waits forever
                errors[name] = error
            finally:
                self.give(name, finished=True)

        threads = [threading.Thread(target=work, args=(name,), name=f"bench-{name}") for name in self.order]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for name, error in errors.items():
            raise RuntimeError(f"bench variant {name} failed: {error}") from error
        return [results[name] for name in self.order]


def one_malloc_arena(argv: list[str]) -> None:
    """Run this command with glibc's malloc limited to one arena (MALLOC_ARENA_MAX=1), re-executing it once
    if need be: glibc reads the limit when a thread first needs an arena, which torch and tokenizers threads
    may already have done, so setting it later (mallopt) did not hold (18.6 GB peak RSS). By default every
    thread gets its own arena and keeps what it frees there, so the variants' threads held several steps of
    activations at once: 21.5 GB peak RSS for 9 variants; 4 variants 8.5 GB by default, 5.2 GB with one
    arena (measured 2026-11-30). One thread runs at a time, so the shared arena's lock costs nothing."""
    import os

    if os.environ.get("MALLOC_ARENA_MAX") != "1" and sys.platform == "linux":
        os.environ["MALLOC_ARENA_MAX"] = "1"
        os.execv(sys.executable, [sys.executable, "-m", "src.bench", *argv])


class StepMemory:
    """One variant's own memory while variants interleave (GiB): what its setup added to the process (model,
    optimizer, data) plus the largest rise of the process's memory within one of its steps (activations).
    `peak_gb` is the process's memory before the variant was set up plus that: its peak had it run alone."""

    def __init__(self):
        self.before = release_and_reset_peak()
        self.setup, self.step_rise, self._step_start = 0.0, 0.0, 0.0

    def setup_done(self) -> None:
        self.setup = release_and_reset_peak() - self.before

    def step_begin(self) -> None:
        self._step_start = release_and_reset_peak()

    def step_end(self) -> None:
        self.step_rise = max(self.step_rise, peak_memory_gb() - self._step_start)

    @property
    def training_gb(self) -> float:
        return self.setup + self.step_rise

    @property
    def peak_gb(self) -> float:
        return self.before + self.training_gb


class CountingCollator:
    """Wraps a collator to record real tokens and processed positions of every batch."""

    def __init__(self, inner):
        self.inner, self.batches, self.first = inner, [], None

    def __call__(self, features):
        batch = self.inner(features)
        if self.first is None:  # the batch the gradient check replays
            self.first = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        real = sum(len(f["input_ids"]) for f in features)
        self.batches.append((real, batch["input_ids"].numel()))
        return batch


class StepTimer(TrainerCallback):
    """Times every optimizer step and lets the other variants run one step after each; on the first (a
    warm-up step, never counted) switches LoRA dropout off and copies the gradients just before the
    optimizer step, for the gradient check."""

    def __init__(self, name: str, turns: Rounds, memory: StepMemory):
        self.name, self.turns, self.memory = name, turns, memory
        self.seconds, self._start = [], 0.0
        self.gradients: dict[str, torch.Tensor] | None = None
        self._dropout: list = []

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step == 0 and model is not None:
            self._dropout = dropout_off(model)
        self.memory.step_begin()
        self._start = time.perf_counter()

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if self.gradients is None and model is not None:
            self.gradients = trainable_gradients(model)
            restore_dropout(self._dropout)

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds.append(time.perf_counter() - self._start)
        self.memory.step_end()
        self.turns.step_done(self.name)


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
    from src.model import build_model
    from src.trainer import compute_dtype

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
    """Relative error of the whole gradient vector: ||ours - reference|| / ||reference||."""
    if ours.keys() != reference.keys():
        return float("inf")
    diff = sum(float((ours[n] - reference[n]).norm() ** 2) for n in reference) ** 0.5
    norm = sum(float(reference[n].norm() ** 2) for n in reference) ** 0.5
    return diff / norm if norm > 0 else float("inf")


def planned_gb(cfg, checkpointing: bool) -> float:
    """The memory planner's estimate for this variant's settings (src/plan/estimate.py), to compare with its peak."""
    from src.config import trains_on_cpu
    from src.plan.estimate import GIB, plan

    planned = copy.deepcopy(cfg)
    planned.memory.gradient_checkpointing = checkpointing
    return plan(planned, on_cpu=trains_on_cpu(cfg))["peak"] / GIB


def summarize(
    name: str, seconds: list[float], batches: list[tuple[int, int]], warmup: int, memory: StepMemory
):
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
        # the whole process (Python, torch, tokenizer, data included) as if this variant had run alone
        "peak_memory_gb": memory.peak_gb,
        "steps_measured": len(steps),
    }


def add_memory(result: dict, memory: StepMemory, planned: float | None, checkpointing: bool) -> dict:
    """What the variant itself used (its setup plus its largest step, StepMemory) and, for this project's
    step, the planner's estimate with its error relative to the measurement. (The planner models this
    project's trainer, whose fused LM head never builds full logits; the other variants do.)"""
    before_gb, used = memory.before, memory.training_gb
    result.update(
        gradient_checkpointing=checkpointing,
        memory_before_gb=before_gb,
        training_memory_gb=used,
        planned_memory_gb=planned,
        plan_error=(planned - used) / used if planned is not None and used > 0 else None,
    )
    return result


GRADIENT_TOLERANCE = 5e-2  # relative; a dropped gradient or a wrong mask is ~1, bf16 rounding ~1e-2


def check_gradients(
    result: dict, cfg, base: str, captured: dict | None, batch: dict | None, **reference
) -> dict:
    """The variant's first-step gradients against its own plain reference (see the module docstring)."""
    if captured is None or batch is None:
        error = float("inf")
    else:
        error = gradient_error(captured, reference_gradients(cfg, base, batch, **reference))
    result.update(gradient_error=error, gradient_check="passed" if error <= GRADIENT_TOLERANCE else "FAILED")
    return result


TRAINER_VARIANTS = ("ours", "ours_callbacks", "trainer", "trl_script", "padding")


def run_trainer_variant(
    name, cfg, base, tokenizer, data, raw_train, bench, workdir: Path, turns: Rounds
) -> dict:
    """ours (build_trainer; ours_callbacks: with the callbacks src.train adds), trainer (transformers'
    Trainer over our packed rows, the model's own loss), trl_script / padding (a plain TRL script)."""
    from transformers import Trainer
    from trl import SFTConfig, SFTTrainer, pack_dataset

    from src.data.collator import PackedRowsCollator
    from src.model import build_model
    from src.trainer import build_trainer, compute_dtype, training_arguments

    memory = StepMemory()
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, base)
    timer = StepTimer(name, turns, memory)
    steps = bench.warmup_steps + bench.measure_steps
    cfg.optim.max_steps = steps
    adapter_dtype = None
    if name in ("ours", "ours_callbacks"):
        callbacks = [
            timer,
            *(run_callbacks(cfg, tokenizer, workdir / name) if name == "ours_callbacks" else []),
        ]
        trainer = build_trainer(cfg, model, tokenizer, data, workdir / name, callbacks)
        trainer.args.eval_strategy = trainer.args.save_strategy = "no"
        trainer.args.load_best_model_at_end = False
        trainer.callback_handler.callbacks = [
            c for c in trainer.callback_handler.callbacks if type(c).__name__ != "EarlyStoppingCallback"
        ]
    elif name == "trainer":
        args = training_arguments(cfg, workdir / name)
        args.eval_strategy = args.save_strategy = "no"
        args.load_best_model_at_end = False
        args.report_to = []
        rows = pack_dataset(data.train, seq_length=cfg.data.max_length, strategy="bfd")
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=rows,
            data_collator=PackedRowsCollator(tokenizer.pad_token_id),
            callbacks=[timer],
        )
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
        if cfg.memory.load_in_4bit:
            adapter_dtype = torch.bfloat16  # TRL 1.16 casts a quantized model's adapters (src/patches.py)
    trainer.data_collator = CountingCollator(trainer.data_collator)
    memory.setup_done()
    # our trainer runs with its TRL workaround (src/patches.py, entered whenever ours holds the turn:
    # Rounds.scoped); the plain-TRL recipes run TRL unchanged
    trainer.train()
    result = summarize(name, timer.seconds, trainer.data_collator.batches, bench.warmup_steps, memory)
    checkpointing = bool(trainer.args.activation_checkpointing)
    max_grad_norm, first = trainer.args.max_grad_norm, trainer.data_collator.first
    del trainer, model
    planned = planned_gb(cfg, checkpointing) if name == "ours" else None
    result = add_memory(result, memory, planned, checkpointing)
    return check_gradients(
        result, cfg, base, timer.gradients, first, max_grad_norm=max_grad_norm, adapter_dtype=adapter_dtype
    )


def run_callbacks(cfg, tokenizer, workdir: Path) -> list:
    """The callbacks src.train adds around the trainer (TensorBoard, throughput, samples, divergence guard),
    with a real TensorBoard writer; no evaluation runs in the bench, so no samples are generated."""
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    from src.callbacks import NonFiniteLossCallback, SampleGenerationCallback, ThroughputCallback

    writer = SummaryWriter(log_dir=str(workdir / "tensorboard"))
    return [
        TensorBoardCallback(tb_writer=writer),
        ThroughputCallback(writer),
        SampleGenerationCallback(
            writer, tokenizer, [], cfg.eval.max_new_tokens, cfg.monitor.samples_every_evals
        ),
        NonFiniteLossCallback(),
    ]


def run_bare_loop(name, cfg, base, tokenizer, data, bench, turns: Rounds, adapter_dtype=None) -> dict:
    """PEFT + a hand-written loop over the same packed rows: no Trainer, no metrics. `adapter_dtype` casts
    the LoRA weights first (bare_bf16_adapters: what TRL does to a quantized model's adapters)."""
    from trl import pack_dataset

    from src.data.collator import PackedRowsCollator
    from src.model import build_model
    from src.trainer import compute_dtype

    memory = StepMemory()
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, base)
    model.train()
    cast_adapters(model, adapter_dtype)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=cfg.optim.learning_rate
    )
    rows = pack_dataset(data.train, seq_length=cfg.data.max_length, strategy="bfd")
    collate = CountingCollator(PackedRowsCollator(tokenizer.pad_token_id))
    b = cfg.memory.per_device_train_batch_size
    seconds = []
    gradients = None
    dtype = compute_dtype(cfg)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    memory.setup_done()
    for step in range(bench.warmup_steps + bench.measure_steps):
        start = (step * b) % max(len(rows) - b, 1)
        batch = {
            k: v.to(model.device) for k, v in collate([rows[i] for i in range(start, start + b)]).items()
        }
        dropout = dropout_off(model) if step == 0 else []
        memory.step_begin()
        began = time.perf_counter()
        with torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32):
            loss = model(**batch, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.max_grad_norm)
        if step == 0:
            gradients = trainable_gradients(model)
            restore_dropout(dropout)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds.append(time.perf_counter() - began)
        memory.step_end()
        turns.step_done(name)
    result = summarize(name, seconds, collate.batches, bench.warmup_steps, memory)
    del model, optimizer
    result = add_memory(result, memory, None, bool(cfg.memory.gradient_checkpointing))
    return check_gradients(
        result,
        cfg,
        base,
        gradients,
        collate.first,
        max_grad_norm=cfg.optim.max_grad_norm,
        adapter_dtype=adapter_dtype,
    )


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


def cpu_description() -> str:
    """The CPU model and whether it has AVX512-BF16 (the figures differ between CPU kinds)."""
    import platform

    from src.patches import cpu_has_native_bf16

    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    kind = "AVX512-BF16/AMX (bf16 in hardware)" if cpu_has_native_bf16() else "no bf16 instructions (AVX2)"
    return f"{name}, {kind}, {torch.get_num_threads()} threads"


def _optional(value: float | None, spec: str) -> str:
    return format(value, spec) if value is not None else format("-", ">" + spec.split(".")[0])


def main(argv: list[str] | None = None) -> None:
    import tempfile

    if argv is None:  # as a command (not called from Python): before any thread exists
        one_malloc_arena(sys.argv[1:])

    from transformers.utils import logging as transformers_logging

    from src.config import compose
    from src.data.cache import prepare_data
    from src.model import load_tokenizer, resolve_base
    from src.plan.checkpointing import resolve_checkpointing
    from src.trainer import compute_dtype

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    transformers_logging.disable_progress_bar()  # "Loading weights" bars, once per variant and reference
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
    # the bare loop and its one-difference variants run with ours' checkpointing decision ("same setting")
    bare_cfg = copy.deepcopy(cfg)
    bare_cfg.memory.gradient_checkpointing = checkpointing
    bare_ckpt = copy.deepcopy(cfg)
    bare_ckpt.memory.gradient_checkpointing = True
    with_dropout = copy.deepcopy(bare_cfg)
    with_dropout.lora.dropout = 0.05
    bare_runs = {
        "bare": (bare_cfg, None),
        "bare_ckpt": (bare_ckpt, None),
        "bare_bf16_adapters": (bare_cfg, torch.bfloat16),
        "bare_dropout": (with_dropout, None),
    }
    unknown = [name for name in bench.variants if name not in {*bare_runs, *TRAINER_VARIANTS}]
    if unknown:
        sys.exit(f"bench.variants: unknown {unknown}; known: {sorted({*bare_runs, *TRAINER_VARIANTS})}")
    # every variant's steps interleave in rounds (Rounds): drift of the machine falls on all of them alike
    turns = Rounds(
        list(bench.variants),
        scoped={"ours": cpu_lm_head, "ours_callbacks": cpu_lm_head},
    )
    with tempfile.TemporaryDirectory() as workdir:
        jobs = {}
        for name in bench.variants:
            if name in bare_runs:
                variant_cfg, adapter_dtype = bare_runs[name]
                jobs[name] = functools.partial(
                    run_bare_loop, name, variant_cfg, base, tokenizer, data, bench, turns, adapter_dtype
                )
            else:
                variant_cfg = copy.deepcopy(
                    ours_cfg if name in ("ours", "ours_callbacks", "trainer") else cfg
                )
                jobs[name] = functools.partial(
                    run_trainer_variant,
                    name,
                    variant_cfg,
                    base,
                    tokenizer,
                    data,
                    raw_train,
                    bench,
                    Path(workdir),
                    turns,
                )
        log.info("variants in rounds of one step each: %s", " → ".join(bench.variants))
        results = turns.run(jobs)
    reference = next((r for r in results if r["variant"] == "ours"), results[0])
    bare = next((r for r in results if r["variant"] == "bare"), None)
    for r in results:
        r["tokens_per_second_vs_ours"] = r["tokens_per_second"] / reference["tokens_per_second"]
        r["tokens_per_second_vs_bare"] = r["tokens_per_second"] / bare["tokens_per_second"] if bare else None
        r["peak_memory_vs_ours"] = r["peak_memory_gb"] / reference["peak_memory_gb"]
    shapes = cfg.model.architecture
    dtype = compute_dtype(cfg)
    peak = matmul_flops_per_second(shapes["hidden_size"], shapes["intermediate_size"], 2048, dtype)
    for r in results:
        flops = training_flops_per_token(cfg, r["gradient_checkpointing"])
        r["mfu_vs_measured_matmul"] = r["tokens_per_second"] * flops / peak
    print(
        f"\nCPU: {cpu_description()}"
        if not torch.cuda.is_available()
        else f"\nGPU: {torch.cuda.get_device_name()}"
    )
    print(f"compute dtype {dtype}; measured matmul throughput: {peak / 1e9:.1f} GFLOP/s")
    header = (
        f"{'variant':18} {'ckpt':>4} {'tokens/s':>9} {'× ours':>7} {'× bare':>7} {'steps/s':>8} "
        f"{'pos/token':>9} {'peak GB':>8} {'train GB':>8} {'plan GB':>8} {'plan err':>8} {'MFU':>6} "
        f"{'grad err':>9} {'grad check':>10}"
    )
    print(header)
    for r in results:
        print(
            f"{r['variant']:18} {'on' if r['gradient_checkpointing'] else 'off':>4} "
            f"{r['tokens_per_second']:9.1f} {r['tokens_per_second_vs_ours']:7.2f} "
            f"{_optional(r['tokens_per_second_vs_bare'], '7.2f')} "
            f"{r['steps_per_second']:8.3f} {r['positions_per_real_token']:9.2f} {r['peak_memory_gb']:8.2f} "
            f"{r['training_memory_gb']:8.2f} {_optional(r['planned_memory_gb'], '8.2f')} "
            f"{_optional(r['plan_error'], '8.1%')} "
            f"{r['mfu_vs_measured_matmul']:6.1%} {r['gradient_error']:9.1e} {r['gradient_check']:>10}"
        )
    failed = [r["variant"] for r in results if r["gradient_check"] != "passed"]
    out = Path(bench.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "compute_dtype": str(dtype),
                "cpu": cpu_description(),
                "matmul_flops_per_second": peak,
                "settings": train_overrides,
                "results": results,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")
    if failed:  # a fast but wrong step must not count: its figures above are not comparable
        sys.exit(f"gradient check FAILED for {', '.join(failed)} (relative error > {GRADIENT_TOLERANCE:g})")


if __name__ == "__main__":
    main()
