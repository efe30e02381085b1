"""The bench's variants, a name -> `Variant` table: which shared settings each starts from and how it trains.

(a) ours, (b) the usual one-file TRL script (SFTTrainer, packing=True, gradient checkpointing, default
metrics), (c) the same without packing (padding), (d) a bare PEFT loop with no framework, and variants that
each add one thing ours has to the bare loop or to ours (conf/bench/default.yaml lists them)."""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from src.bench.gradient_check import (
    cast_adapters,
    check_gradients,
    dropout_off,
    restore_dropout,
    trainable_gradients,
)
from src.bench.harness import Rounds
from src.bench.measure import CountingCollator, StepMemory, StepTimer, add_memory, planned_gb, summarize
from src.config import TrainConfig
from src.patches import cpu_lm_head


@dataclass(frozen=True)
class Shared:
    """What every variant shares: identical model, data and settings, and the rounds they run in."""

    preset: TrainConfig  # bench.train_overrides and the command's overrides (the plain TRL script's)
    ours: TrainConfig  # the same plus bench.ours_overrides, gradient checkpointing resolved to a bool
    base: str  # the model's local path (src.base_model.resolve_base)
    tokenizer: Any
    data: Any  # src.data.cache.PreparedData
    raw_train: Any  # the built-in conversations as a datasets.Dataset, for the plain TRL script
    warmup_steps: int
    measure_steps: int
    workdir: Path  # a temporary folder for the trainers' outputs
    turns: Rounds


@dataclass
class Measured:
    """What one variant's training leaves for its result: step times (s), its batches, its memory, the
    first step's gradients and how to replay it for the gradient check."""

    seconds: list[float]
    collator: CountingCollator
    memory: StepMemory
    gradients: dict[str, torch.Tensor] | None
    checkpointing: bool
    max_grad_norm: float
    adapter_dtype: torch.dtype | None = None


@dataclass(frozen=True)
class Variant:
    settings: Callable[[Shared], TrainConfig]  # what it trains with (copied before use)
    train: Callable[[str, TrainConfig, Shared], Measured]
    patch: Callable | None = None  # a process-wide library patch, active only while this variant computes


def run_variant(name: str, shared: Shared) -> dict:
    """Train variant `name` in its rounds, then its result: speed and memory fields (src.bench.measure),
    the planner's estimate for ours, and its gradient check."""
    cfg = copy.deepcopy(VARIANTS[name].settings(shared))
    measured = VARIANTS[name].train(name, cfg, shared)
    result = summarize(
        name, measured.seconds, measured.collator.batches, shared.warmup_steps, measured.memory
    )
    planned = planned_gb(cfg, measured.checkpointing) if name == "ours" else None
    result = add_memory(result, measured.memory, planned, measured.checkpointing)
    return check_gradients(
        result,
        cfg,
        shared.base,
        measured.gradients,
        measured.collator.first,
        max_grad_norm=measured.max_grad_norm,
        adapter_dtype=measured.adapter_dtype,
    )


# a trainer builder: (name, cfg, model, shared, timer) -> (trainer, the adapters' dtype if it casts them)
TrainerBuilder = Callable[[str, TrainConfig, Any, Shared, StepTimer], tuple[Any, torch.dtype | None]]


def train_with_trainer(name: str, cfg: TrainConfig, shared: Shared, build: TrainerBuilder) -> Measured:
    """Build the model and `build`'s trainer, count its batches, and train it for the bench's steps."""
    from src.model import build_model

    memory = StepMemory()
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, shared.base)
    timer = StepTimer(name, shared.turns, memory)
    cfg.optim.max_steps = shared.warmup_steps + shared.measure_steps
    trainer, adapter_dtype = build(name, cfg, model, shared, timer)
    trainer.data_collator = CountingCollator(trainer.data_collator)
    memory.setup_done()
    # our trainer runs with its TRL workaround (src/patches.py, entered whenever ours holds the turn:
    # Rounds.scoped); the plain-TRL recipes run TRL unchanged
    trainer.train()
    args, collator = trainer.args, trainer.data_collator
    del trainer, model
    return Measured(
        timer.seconds,
        collator,
        memory,
        timer.gradients,
        bool(args.activation_checkpointing),
        args.max_grad_norm,
        adapter_dtype,
    )


def build_ours(name, cfg, model, shared: Shared, timer, with_callbacks: bool = False):
    """This project's trainer (src.trainer.build_trainer), without evaluation, saving or early stopping;
    `with_callbacks`: plus the callbacks src.train adds, with a real TensorBoard writer (no evaluation runs,
    so no samples are generated)."""
    from src.callbacks import build_callbacks
    from src.trainer import build_trainer

    callbacks = [timer]
    if with_callbacks:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(shared.workdir / name / "tensorboard"))
        callbacks += build_callbacks(cfg, writer, shared.tokenizer, prompts=[]).as_list()
    trainer = build_trainer(cfg, model, shared.tokenizer, shared.data, shared.workdir / name, callbacks)
    trainer.args.eval_strategy = trainer.args.save_strategy = "no"
    trainer.args.load_best_model_at_end = False
    trainer.callback_handler.callbacks = [
        c for c in trainer.callback_handler.callbacks if type(c).__name__ != "EarlyStoppingCallback"
    ]
    return trainer, None


def build_plain_trainer(name, cfg, model, shared: Shared, timer):
    """transformers' Trainer over our packed rows and collator, the model's own loss."""
    from transformers import Trainer
    from trl import pack_dataset

    from src.data.collator import PackedRowsCollator
    from src.trainer import training_arguments

    args = training_arguments(cfg, shared.workdir / name)
    args.eval_strategy = args.save_strategy = "no"
    args.load_best_model_at_end = False
    args.report_to = []
    rows = pack_dataset(shared.data.train, seq_length=cfg.data.max_length, strategy="bfd")
    collator = PackedRowsCollator(shared.tokenizer.pad_token_id)
    trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=collator, callbacks=[timer])
    return trainer, None


def build_trl_script(name, cfg, model, shared: Shared, timer, packing: bool):
    """The usual one-file TRL script: SFTTrainer on the raw conversations, gradient checkpointing, default
    metrics; `packing` as TRL packs (one flattened padding-free row), else padding."""
    from trl import SFTConfig, SFTTrainer

    from src.compute import compute_dtype

    args = SFTConfig(
        output_dir=str(shared.workdir / name),
        max_steps=cfg.optim.max_steps,
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
        packing=packing,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=cfg.seed,
        disable_tqdm=True,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=shared.raw_train,
        processing_class=shared.tokenizer,
        callbacks=[timer],
    )
    # TRL 1.16 casts a quantized model's adapters to bf16 (src/patches.py)
    return trainer, torch.bfloat16 if cfg.memory.load_in_4bit else None


def train_bare_loop(name: str, cfg: TrainConfig, shared: Shared, adapter_dtype=None) -> Measured:
    """PEFT + a hand-written loop over the same packed rows: no Trainer, no metrics. `adapter_dtype` casts
    the LoRA weights first (bare_bf16_adapters: what TRL does to a quantized model's adapters)."""
    from trl import pack_dataset

    from src.compute import compute_dtype
    from src.data.collator import PackedRowsCollator
    from src.model import build_model

    memory = StepMemory()
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, shared.base)
    model.train()
    cast_adapters(model, adapter_dtype)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=cfg.optim.learning_rate
    )
    rows = pack_dataset(shared.data.train, seq_length=cfg.data.max_length, strategy="bfd")
    collate = CountingCollator(PackedRowsCollator(shared.tokenizer.pad_token_id))
    b = cfg.memory.per_device_train_batch_size
    seconds, gradients = [], None
    dtype = compute_dtype(cfg)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    memory.setup_done()
    for step in range(shared.warmup_steps + shared.measure_steps):
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
        shared.turns.step_done(name)
    del model, optimizer
    checkpointing = bool(cfg.memory.gradient_checkpointing)
    return Measured(
        seconds, collate, memory, gradients, checkpointing, cfg.optim.max_grad_norm, adapter_dtype
    )


def _ours(shared: Shared) -> TrainConfig:
    return shared.ours


def _preset(shared: Shared) -> TrainConfig:
    return shared.preset


def _bare(shared: Shared, checkpointing: bool | None = None, dropout: float | None = None) -> TrainConfig:
    """The preset with ours' checkpointing decision ("same setting") unless `checkpointing` is given, and
    `dropout` as LoRA dropout when given."""
    cfg = copy.deepcopy(shared.preset)
    cfg.memory.gradient_checkpointing = (
        shared.ours.memory.gradient_checkpointing if checkpointing is None else checkpointing
    )
    if dropout is not None:
        cfg.lora.dropout = dropout
    return cfg


def _trainer(build: TrainerBuilder) -> Callable[[str, TrainConfig, Shared], Measured]:
    return functools.partial(train_with_trainer, build=build)


VARIANTS: dict[str, Variant] = {
    "ours": Variant(_ours, _trainer(build_ours), patch=cpu_lm_head),
    "ours_callbacks": Variant(
        _ours, _trainer(functools.partial(build_ours, with_callbacks=True)), cpu_lm_head
    ),
    "trainer": Variant(_ours, _trainer(build_plain_trainer)),
    "trl_script": Variant(_preset, _trainer(functools.partial(build_trl_script, packing=True))),
    "padding": Variant(_preset, _trainer(functools.partial(build_trl_script, packing=False))),
    "bare": Variant(_bare, train_bare_loop),
    "bare_ckpt": Variant(functools.partial(_bare, checkpointing=True), train_bare_loop),
    "bare_bf16_adapters": Variant(_bare, functools.partial(train_bare_loop, adapter_dtype=torch.bfloat16)),
    "bare_dropout": Variant(functools.partial(_bare, dropout=0.05), train_bare_loop),
}
