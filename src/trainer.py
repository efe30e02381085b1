"""Trainer stage: map our config keys onto TRL's SFTConfig (the one place that knows the library's current
names) and build the SFTTrainer with evaluation, early stopping and checkpointing."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from transformers import EarlyStoppingCallback
from trl import SFTConfig, SFTTrainer

from src import trackers
from src.compute import Compute
from src.config import TrainConfig
from src.console import use_console
from src.data.cache import PreparedData
from src.data.collator import PackedRowsCollator
from src.data.tokenization import IGNORE_INDEX
from src.model import resolve_attention
from src.patches import keep_adapter_dtype, use_collator
from src.run_info import hparams

# Our schedule names → transformers scheduler types. Cosine decays to eta_min × peak, after warmup.
SCHEDULERS = {"cosine": "cosine_with_min_lr", "linear": "linear", "constant": "constant_with_warmup"}


class RunTrainer(SFTTrainer):
    """TRL's SFTTrainer with evaluation that cannot change training and does not depend on batching.

    - **Token-weighted eval loss.** transformers 5.23 averages eval loss per batch (`evaluation_loop`: the mean
      of each batch's mean), so with answers of different lengths it changed with
      `per_device_eval_batch_size` (10.832 at batch 1 vs 10.809 at 2 on four answers of 3, 51, 51 and 3
      tokens). Here `eval_loss` is the sum of every labelled token's loss over the whole eval set divided by
      their number, summed over processes: the same at any batch size, process count or packing. Early
      stopping, the best checkpoint, the logs and the pruner all read this value.
    - **No training randomness consumed.** Every DataLoader iterator draws its base seed from the global RNG,
      so each eval (and anything run inside it: sample generation) shifted later dropout masks, and a run's
      result depended on `eval.steps`. Evaluation runs on a forked RNG state, restored afterwards.
    - **Counters that survive `resume=true`.** transformers 5.23 logs `train_loss` as the mean of this `train()`
      call's steps, and TRL 1.16's `num_tokens` counter (`_total_train_tokens`) restarts at zero, so a resumed
      run's TensorBoard, train.log and final log line disagreed with the uninterrupted run. The final
      `train_loss` is the whole run's (`whole_run_train_loss`), and `num_tokens` continues from the last
      value the checkpoint's log history holds.
    """

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        resumed_at = getattr(self, "_initial_global_step", 0)
        if resumed_at > 0 and self.model.training and not getattr(self, "_tokens_restored", False):
            self._tokens_restored = True  # at the first log after the resume, before TRL reads its counter
            self._total_train_tokens += tokens_before(self.state.log_history, resumed_at)
            if "num_tokens" in self._metrics["train"]:
                self._metrics["train"]["num_tokens"] = [self._total_train_tokens]
        if resumed_at > 0 and "train_loss" in logs:  # the last log, after the final eval (model in eval mode)
            logs["train_loss"] = whole_run_train_loss(
                self.state.log_history, resumed_at, self.state.global_step, logs["train_loss"]
            )
        super().log(logs, start_time)

    def evaluate(self, *args, **kwargs):
        devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
        with torch.random.fork_rng(devices=devices):
            return super().evaluate(*args, **kwargs)

    def evaluation_loop(
        self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"
    ):
        self._eval_totals = torch.zeros(2, dtype=torch.float64, device=self.args.device)  # loss sum, tokens
        output = super().evaluation_loop(
            dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix
        )
        loss_sum, tokens = self.accelerator.reduce(self._eval_totals, reduction="sum").tolist()
        if tokens > 0:
            output.metrics[f"{metric_key_prefix}_loss"] = loss_sum / tokens
        return output

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        loss, logits, labels = super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        if loss is not None and hasattr(self, "_eval_totals"):
            tokens = labelled_tokens(inputs)
            self._eval_totals += torch.stack([loss.detach().double() * tokens, tokens.double()]).to(
                self._eval_totals.device
            )
        return loss, logits, labels


def labelled_tokens(inputs: dict) -> torch.Tensor:
    """How many positions a batch's loss averages over: labels shifted by one, ignored ones not counted (as
    TRL's fused loss and transformers' causal-LM loss count them)."""
    if inputs.get("shift_labels") is not None:
        return (inputs["shift_labels"] != IGNORE_INDEX).sum()
    return (inputs["labels"][..., 1:] != IGNORE_INDEX).sum()


def tokens_before(log_history: list[dict], step: int) -> int:
    """TRL's `num_tokens` counter as last logged at or before `step` (0 when never logged)."""
    logged = [e["num_tokens"] for e in log_history if "num_tokens" in e and e.get("step", 0) <= step]
    return int(logged[-1]) if logged else 0


def whole_run_train_loss(
    log_history: list[dict], resumed_at: int, global_step: int, this_call: float
) -> float:
    """The mean training loss over every step of the run, also after `resume=true`.

    transformers 5.23 divides the loss summed in *this* `train()` call by the steps of this call, so a run
    resumed at checkpoint-20 of 30 reported the mean of steps 21-30. The steps before the resume come from the
    checkpoint's log history (each logged `loss` is the mean since the previous log), weighted by the steps
    each covers; `this_call` is transformers' mean over steps resumed_at+1 … global_step."""
    if resumed_at <= 0:
        return this_call
    covered, total, previous = 0, 0.0, 0
    for entry in log_history:
        if "loss" in entry and entry.get("step", 0) <= resumed_at:
            steps = entry["step"] - previous
            total, covered, previous = total + entry["loss"] * steps, covered + steps, entry["step"]
    after = global_step - resumed_at
    return (total + this_call * after) / max(covered + after, 1)


def training_arguments(cfg: TrainConfig, output_dir: Path, compute: Compute | None = None) -> SFTConfig:
    """SFTConfig from our config, for the run's `compute` (decided from `cfg` when not given). The older names
    evaluation_strategy, warmup_ratio and max_seq_length are eval_strategy, a fractional warmup_steps and
    max_length in transformers 5 / TRL 1.x."""
    optim, memory, data = cfg.optim, cfg.memory, cfg.data
    compute = compute or Compute.of(cfg)
    dtype = compute.dtype
    scheduler_kwargs = {"min_lr_rate": optim.eta_min} if optim.lr_scheduler_type == "cosine" else {}
    # below 1 a fraction of the total steps (transformers rounds it up to whole steps); else whole steps
    eval_steps = cfg.eval.steps if cfg.eval.steps < 1 else int(cfg.eval.steps)
    return SFTConfig(
        output_dir=str(output_dir),
        seed=cfg.seed,
        use_cpu=compute.on_cpu,  # transformers refuses bf16 on CPU unless told it is on CPU
        # optimisation
        learning_rate=optim.learning_rate,
        lr_scheduler_type=SCHEDULERS[optim.lr_scheduler_type],
        lr_scheduler_kwargs=scheduler_kwargs,
        warmup_steps=optim.warmup_ratio,  # a float in [0, 1) is a ratio of total steps
        weight_decay=optim.weight_decay,
        max_grad_norm=optim.max_grad_norm,
        optim=optim.optimizer,
        num_train_epochs=optim.num_train_epochs,
        max_steps=optim.max_steps,
        # memory
        per_device_train_batch_size=memory.per_device_train_batch_size,
        gradient_accumulation_steps=memory.gradient_accumulation_steps,
        per_device_eval_batch_size=memory.per_device_eval_batch_size,
        # transformers 5.23 renamed gradient_checkpointing to activation_checkpointing
        activation_checkpointing=memory.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False},
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        # data
        max_length=data.max_length,
        packing=data.packing,
        packing_strategy=data.packing_strategy,  # bfd | bfd_split: examples stay isolated; wrapped is refused
        eval_packing=data.eval_packing,
        dataset_num_proc=data.num_proc,  # TRL's own maps (packing); null: in-process
        # evaluation, early stopping and checkpoints
        eval_strategy="steps",
        eval_steps=eval_steps,
        save_strategy="steps",
        save_steps=eval_steps,  # must line up with eval steps for load_best_model_at_end
        save_total_limit=cfg.save.save_total_limit,
        load_best_model_at_end=cfg.eval.load_best_model_at_end,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        # logging: TensorBoard is wired explicitly (one writer per run, shared with our callbacks)
        logging_steps=cfg.monitor.logging_steps,
        logging_first_step=True,
        **trackers.configure(cfg, output_dir.parent),  # monitor.report_to: MLflow, W&B, Trackio (or "none")
        disable_tqdm=not cfg.monitor.progress_bar,
        # data-parallel (accelerate launch/torchrun): every trainable (LoRA) weight gets a gradient each step,
        # so DDP need not search the graph for unused ones
        ddp_find_unused_parameters=False,
        # pad positions are not counted (nor, where the pad id is the end-of-turn token, those: conservative)
        include_num_input_tokens_seen="non_padding",
    )


def build_trainer(
    cfg: TrainConfig,
    model,
    tokenizer,
    data: PreparedData,
    output_dir: Path,
    callbacks: list,
    compute: Compute | None = None,
) -> RunTrainer:
    """SFTTrainer over the pre-tokenized datasets (TRL packs them; labels already carry our loss mask)."""
    args = training_arguments(cfg, output_dir, compute)
    if cfg.eval.early_stopping_patience > 0:
        callbacks = [
            *callbacks,
            EarlyStoppingCallback(
                early_stopping_patience=cfg.eval.early_stopping_patience,
                early_stopping_threshold=cfg.eval.early_stopping_threshold,
            ),
        ]
    if cfg.monitor.report_to:
        callbacks = [*callbacks, trackers.TrackerParams(hparams(cfg), list(cfg.monitor.report_to))]
    with keep_adapter_dtype(model):  # src/patches.py: TRL casts QLoRA adapters to bf16, even for fp32 compute
        trainer = RunTrainer(
            model=model,
            args=args,
            train_dataset=data.train,
            eval_dataset=data.eval,
            processing_class=tokenizer,
            callbacks=callbacks,
        )
    use_console(trainer)  # src/console.py: one bar and one line per eval instead of a dict per step
    # On sdpa/eager, keep packed rows apart (see PackedRowsCollator). Flash attention keeps TRL's flattened
    # padding-free batches: its varlen kernels isolate examples via cu_seq_lens at no quadratic mask cost.
    if cfg.data.packing and not resolve_attention(cfg.model.attn_implementation).startswith("flash"):
        use_collator(trainer, PackedRowsCollator(tokenizer.pad_token_id))  # src/patches.py: why after init
    return trainer


def planned_steps(trainer: SFTTrainer) -> tuple[int, int]:
    """(total optimizer steps, warmup steps) the trainer will run, computed as transformers does."""
    args = trainer.args
    if args.max_steps > 0:
        total = args.max_steps
    else:
        batches = len(trainer.get_train_dataloader())
        per_epoch = max(math.ceil(batches / args.gradient_accumulation_steps), 1)
        total = math.ceil(args.num_train_epochs * per_epoch)
    return total, args.get_warmup_steps(total)
