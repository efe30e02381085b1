"""The stages `src/train.py` calls in order, each a thin layer over the module that does the work."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase, set_seed

from src import distributed, stop_tokens
from src import model as model_stage
from src.base_model import resolve_base
from src.baseline import baseline_path, cached_or_measured
from src.callbacks import (
    NonFiniteLossCallback,
    SampleGenerationCallback,
    ThroughputCallback,
    build_callbacks,
    log_samples,
    write_hparams,
)
from src.compute import Compute
from src.config import TrainConfig
from src.data.cache import PreparedData, prepare_data
from src.data.report import eval_cost_lines, log_report_to_tensorboard, plot_lengths, summarize_report
from src.errors import TrainingDiverged
from src.evaluate import log_task_metric, prompt_and_reference, task_metric
from src.export import merge_adapter, save_adapter
from src.memory import peak_memory_gb
from src.patches import cpu_lm_head
from src.run_info import claim_run_dir, hparams, result_line, run_metrics, summary_lines, write_metrics
from src.tokenizer import TokenizerSource, load_tokenizer
from src.trainer import RunTrainer, build_trainer, planned_steps, whole_run_train_loss

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

    from sweep.pruning import PruningCallback

log = logging.getLogger("src.train")

__all__ = ["claim_run_dir", "build_tokenizer", "build_data", "build_model", "build_run", "save", "finish"]


def build_tokenizer(cfg: TrainConfig) -> tuple[str, PreTrainedTokenizerBase]:
    """Resolve the base weights (converting the embedded GGUF once) and load its tokenizer."""
    set_seed(cfg.seed)
    with distributed.main_process_first():  # one process converts/downloads, the others read its copy
        base = resolve_base(cfg.model, cfg.paths.cache_dir)
    tokenizer = load_tokenizer(cfg.model, base)
    if distributed.is_main():  # so that `python -m src.prepare` on a cache hit needs no tokenizer
        TokenizerSource(cfg.model, base, cfg.paths.cache_dir, tokenizer).remember()
    if (stops := stop_tokens.describe(tokenizer)) and distributed.is_main():
        log.info(stops)
    return base, tokenizer


def build_data(cfg: TrainConfig, tokenizer: PreTrainedTokenizerBase, run_dir: Path) -> PreparedData:
    """Tokenize (or read the cache), then print and save the data report and the token-length histogram
    (data_report.json, data_lengths.png) before any weights load."""
    with distributed.main_process_first():
        data = prepare_data(cfg.data, tokenizer, cfg.paths.cache_dir)
    if not distributed.is_main():
        return data
    for line in summarize_report(data.report, cfg.data.max_length):
        log.info(line)
    log.info("Tokenized data %s: %s", "read from cache" if data.from_cache else "written to", data.cache_path)
    (run_dir / "data_report.json").write_text(json.dumps(data.report))
    plot_lengths(data.report, run_dir / "data_lengths.png")
    return data


def build_model(cfg: TrainConfig, base: str) -> PreTrainedModel:
    """The (quantized) base with its LoRA adapter attached, initialised from `cfg.seed`."""
    set_seed(cfg.seed)
    return model_stage.build_model(cfg, base)


@dataclass
class TrainingRun:
    """One configured trainer plus what monitors it; `train()` trains and returns the run's metrics."""

    cfg: TrainConfig
    compute: Compute
    trainer: RunTrainer
    tokenizer: PreTrainedTokenizerBase
    data: PreparedData
    writer: SummaryWriter | None  # main process only
    sampler: SampleGenerationCallback
    throughput: ThroughputCallback
    guard: NonFiniteLossCallback
    run_dir: Path
    pruning: PruningCallback | None = None  # inside an Optuna sweep
    resume_from: Path | None = None  # checkpoint to continue from (resume=true)
    sharded_by: str | None = None  # FSDP / ZeRO-3 (src/distributed.py): no generation, no replica check
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def baseline_cache(self) -> Path:
        """Where the untouched model's baseline is cached (src/baseline.py)."""
        return baseline_path(self.cfg, self.data.cache_path, self.compute)

    def measure_task(self) -> tuple[dict[str, float], list[dict[str, str]]]:
        """Generate answers for held-out prompts and score them (main process only: they are logged)."""
        cfg = self.cfg
        if not distributed.is_main() or self.sharded_by:
            return {}, []
        return task_metric(
            self.trainer.model,
            self.tokenizer,
            self.data.eval_conversations,
            cfg.data.task_metric,
            cfg.eval.task_examples,
            cfg.eval.max_new_tokens,
            cfg.memory.per_device_eval_batch_size * 2,
        )

    def measure_baseline(self) -> dict[str, Any]:
        """The untouched model: eval loss and task metric (eval.before_training) and sample generations."""
        baseline: dict[str, Any] = {}
        if self.cfg.eval.before_training:
            baseline["eval_loss"] = self.trainer.evaluate()["eval_loss"]  # collective under DDP
            baseline["task"], baseline["task_samples"] = self.measure_task()
        if distributed.is_main() and not self.sharded_by:
            baseline["samples"] = self.sampler.generate(self.trainer.model)
        return baseline

    def baseline(self) -> dict[str, Any]:
        """The untouched model's baseline, measured or read back from its cache (src/baseline.py: every trial
        of a sweep after the first skips it), logged as if measured (TensorBoard included); on resume, what
        the interrupted attempt measured."""
        baseline_file = self.run_dir / "baseline.json"
        if self.resume_from is not None:
            log.info("Resuming from %s", self.resume_from)
            return json.loads(baseline_file.read_text()) if baseline_file.exists() else {}
        cache = self.baseline_cache
        may_write = distributed.is_main() and not self.sharded_by  # sharded: no task, no samples
        baseline, cached = cached_or_measured(
            cache, self.cfg.eval.reuse_baseline, self.measure_baseline, may_write
        )
        if "eval_loss" in baseline:
            log.info("eval loss before training: %.4f", baseline["eval_loss"])
            if cached and self.writer is not None:  # what the trainer's evaluate() would have logged
                self.writer.add_scalar("eval/loss", baseline["eval_loss"], 0)
            log_task_metric(
                self.writer, "before_training", 0, baseline.get("task", {}), baseline.get("task_samples", [])
            )
        log_samples(self.writer, baseline.get("samples", []), "before_training", 0)
        if distributed.is_main():
            kept = {k: baseline[k] for k in ("eval_loss", "task") if k in baseline}
            baseline_file.write_text(json.dumps(kept))
        return baseline

    def train(self) -> dict[str, Any]:
        """The baseline, training and the evals (with TRL's fused LM head scoring only labelled positions on
        CPU for their duration, src/patches.py); then the task metric and the final samples."""
        with cpu_lm_head():
            baseline = self.baseline()
            if self.resume_from is None:
                # Every DataLoader draws its base seed from the global RNG, so measuring the baseline (or
                # reading it from the cache instead) would shift the data order: reseed, same seed, same run.
                set_seed(self.cfg.seed)
            started = time.perf_counter()
            resume = str(self.resume_from) if self.resume_from else None
            result = self.trainer.train(resume_from_checkpoint=resume)
            train_seconds = time.perf_counter() - started
            state = self.trainer.state
            if self.guard.problem:
                self.metrics = {
                    "status": "diverged",
                    "error": self.guard.problem,
                    "global_step": state.global_step,
                }
                return self.metrics
            distributed.check_replicas_agree(self.trainer.model, self.sharded_by)
            task_after, samples_after = self.measure_task()
            log_task_metric(self.writer, "after_training", state.global_step, task_after, samples_after)
            if distributed.is_main() and not self.sharded_by:
                self.sampler.sample(self.trainer.model, "after_training", state.global_step)
            resumed_at = checkpoint_step(self.resume_from) if self.resume_from else 0
            train_loss = whole_run_train_loss(
                state.log_history, resumed_at, state.global_step, result.training_loss
            )
            self.metrics = run_metrics(
                state,
                train_loss=train_loss,
                baseline=baseline,
                task_metric=self.cfg.data.task_metric,
                task_after=task_after,
                pruned=bool(self.pruning and self.pruning.pruned_at),
                train_seconds=train_seconds,
                step_seconds=self.throughput.total_step_seconds or train_seconds,
                peak_memory_gb=peak_memory_gb(),
            )
            log.info(result_line(self.metrics))
            return self.metrics


def checkpoint_step(checkpoint: Path) -> int:
    """The global step a `checkpoint-N` folder was saved at."""
    return int(checkpoint.name.rsplit("-", 1)[1])


def build_run(
    cfg: TrainConfig,
    compute: Compute,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    data: PreparedData,
    run_dir: Path,
    resume_from: Path | None = None,
) -> TrainingRun:
    """Trainer with TensorBoard, throughput and sample-generation callbacks; prints the run summary."""
    from torch.utils.tensorboard import SummaryWriter

    # On resume, drop events logged after the checkpoint by the interrupted attempt: no duplicate steps.
    purge_step = checkpoint_step(resume_from) + 1 if resume_from else None
    writer = None  # only the main process writes TensorBoard events
    if distributed.is_main():
        writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=purge_step)
        log_report_to_tensorboard(writer, data.report)
    prompts = _sample_prompts(cfg, data)
    callbacks = build_callbacks(cfg, writer, tokenizer, prompts, _pruning_callback(cfg, run_dir))
    trainer = build_trainer(
        cfg, model, tokenizer, data, run_dir / "checkpoints", callbacks.as_list(), compute
    )
    total, warmup = planned_steps(trainer)
    for line in summary_lines(cfg, trainer.model, total, warmup, compute):
        log.info(line)
    args = trainer.args
    rows_per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    for line in eval_cost_lines(data.report, total, args.eval_steps, rows_per_step, cfg.data.packing):
        log.info(line)
    sharded_by = distributed.sharded(trainer)
    if sharded_by:
        # generate() on the main process alone would wait forever for the other processes' shards
        callbacks.sampler.every_evals = 0
        log.warning("sample generations and the task metric are skipped: %s", sharded_by)
    return TrainingRun(
        cfg,
        compute,
        trainer,
        tokenizer,
        data,
        writer,
        callbacks.sampler,
        callbacks.throughput,
        callbacks.guard,
        run_dir,
        pruning=callbacks.pruning,
        resume_from=resume_from,
        sharded_by=sharded_by,
    )


def _sweep_metrics(cfg: TrainConfig) -> tuple[str, ...]:
    """Inside a sweep: the HParams metrics the sweep appends after its last trial (sweep/hparams_regret.py)."""
    if cfg.trial is None:
        return ()
    from sweep.ties import REGRET_METRIC

    return (REGRET_METRIC,)


def _pruning_callback(cfg: TrainConfig, run_dir: Path) -> PruningCallback | None:
    """Inside an Optuna sweep: report eval losses to this job's trial so its pruner can stop it."""
    from sweep.pruning import PruningCallback, job_trial

    found = job_trial(cfg.trial)
    if found is None:
        return None
    trial, report_at = found
    trial.set_user_attr("run_dir", str(run_dir.resolve()))
    return PruningCallback(trial, report_at)


def _sample_prompts(cfg: TrainConfig, data: PreparedData) -> list[tuple[list | dict, str]]:
    """(prompt, reference) pairs to sample: monitor.sample_prompts, else the first eval conversations' prompts
    (a dict with its tools for tool-calling data) and replies."""
    if cfg.monitor.sample_prompts:
        return [([{"role": "user", "content": p}], "") for p in cfg.monitor.sample_prompts]
    pairs = [p for p in map(prompt_and_reference, data.eval_conversations) if p is not None]
    if not pairs and cfg.monitor.num_samples:
        log.info("no sample generations: no eval prompt has a reply (set monitor.sample_prompts)")
    return pairs[: cfg.monitor.num_samples]


def save(
    cfg: TrainConfig, run: TrainingRun, base: str, tokenizer: PreTrainedTokenizerBase, run_dir: Path
) -> None:
    """Adapter (best checkpoint, loaded at the end of training) and, if asked, the merged model."""
    if not cfg.save.adapter or run.guard.problem:
        return
    adapter_dir = save_adapter(run.trainer, tokenizer, run_dir, cfg.lora.enabled)
    if cfg.save.merge and cfg.lora.enabled and distributed.is_main():
        merge_adapter(cfg.model, base, adapter_dir, run_dir / "merged", tokenizer)


def finish(run: TrainingRun, metrics: dict[str, Any], run_dir: Path) -> None:
    """metrics.json (written last: its presence marks a finished run) and the HPARAMS summary.
    A diverged run still writes metrics.json (with the error), then raises. Main process only."""
    if not distributed.is_main():
        if run.guard.problem:
            raise TrainingDiverged(run.guard.problem)
        return
    task_after = (metrics.get("task_metric") or {}).get("after", {})
    objectives = {
        key: metrics[key] for key in ("best_eval_loss", "wall_seconds") if isinstance(metrics.get(key), float)
    }
    write_hparams(
        run.writer,
        hparams(run.cfg),
        {**objectives, **{f"task_{k}": v for k, v in task_after.items()}},
        metrics.get("status", "finished"),
        later=_sweep_metrics(run.cfg),
    )
    run.writer.close()
    if run.guard.problem:
        write_metrics(run_dir, metrics)
        raise TrainingDiverged(run.guard.problem)
    path = write_metrics(run_dir, metrics)
    log.info("Run folder: %s (metrics: %s)", run_dir, path.name)
