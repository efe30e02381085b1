"""The stages `src/train.py` calls in order, each a thin layer over the module that does the work."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import set_seed
from transformers.integrations import TensorBoardCallback

from src import distributed
from src import model as model_stage
from src.baseline import baseline_path, read_baseline, write_baseline
from src.callbacks import (
    NonFiniteLossCallback,
    SampleGenerationCallback,
    ThroughputCallback,
    log_samples,
    write_hparams,
)
from src.config import trains_on_cpu
from src.data.cache import PreparedData, prepare_data
from src.data.report import eval_cost_lines, log_report_to_tensorboard, plot_lengths, summarize_report
from src.errors import TrainingDiverged
from src.evaluate import prompt_and_reference, task_metric
from src.export import merge_adapter, save_adapter
from src.memory import peak_memory_gb
from src.patches import cpu_lm_head
from src.run_info import claim_run_dir, hparams, summary_lines, write_metrics
from src.trainer import build_trainer, compute_dtype, planned_steps, whole_run_train_loss

log = logging.getLogger("src.train")

__all__ = ["claim_run_dir", "build_tokenizer", "build_data", "build_model", "build_run", "save", "finish"]


def build_tokenizer(cfg):
    """Resolve the base weights (converting the embedded GGUF once) and load its tokenizer."""
    set_seed(cfg.seed)
    with distributed.main_process_first():  # one process converts/downloads, the others read its copy
        base = model_stage.resolve_base(cfg.model, cfg.paths.cache_dir)
    return base, model_stage.load_tokenizer(cfg.model, base)


def build_data(cfg, tokenizer, run_dir: Path) -> PreparedData:
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


def build_model(cfg, base: str):
    set_seed(cfg.seed)
    return model_stage.build_model(cfg, base)


@dataclass
class TrainingRun:
    """One configured trainer plus what monitors it; `train()` returns the run's metrics."""

    cfg: Any
    trainer: Any
    tokenizer: Any
    data: PreparedData
    writer: Any
    sampler: SampleGenerationCallback
    throughput: ThroughputCallback
    guard: NonFiniteLossCallback
    baseline_cache: Path | None = None  # where the untouched model's baseline is cached (src/baseline.py)
    pruning: Any = None  # sweep.pruning.PruningCallback inside an Optuna sweep
    resume_from: Path | None = None  # checkpoint to continue from (resume=true)
    run_dir: Path | None = None
    sharded_by: str | None = None  # FSDP / ZeRO-3 (src/distributed.py): no generation, no replica check
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def resumed_at_step(self) -> int:
        """The global step of the checkpoint this attempt resumed from (0 for a fresh run)."""
        return checkpoint_step(self.resume_from) if self.resume_from else 0

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

    def log_task(self, tag: str, step: int, scores: dict[str, float], samples: list[dict[str, str]]) -> None:
        for name, value in scores.items():
            log.info("task metric %s %s: %.3f", tag, name, value)
            if self.writer is not None:
                self.writer.add_scalar(f"task/{name}", value, step)
        if samples and self.writer is not None:
            self.writer.add_text(
                f"task/{tag}",
                "\n\n".join(f"`{s['prediction']}` (reference `{s['reference']}`)" for s in samples[:8]),
                step,
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
        """Measured once per base model, eval set and generation settings (src/baseline.py), else read back:
        every trial of a sweep after the first skips it. Logged as if measured (TensorBoard included)."""
        started = time.perf_counter()
        cached = (
            distributed.main_decides(lambda: read_baseline(self.baseline_cache))
            if self.cfg.eval.reuse_baseline
            else None
        )
        baseline = cached or self.measure_baseline()
        if cached is None and distributed.is_main() and not self.sharded_by:  # sharded: no task, no samples
            write_baseline(self.baseline_cache, baseline)
        how = f"read from {self.baseline_cache}" if cached else "measured"
        log.info("untouched model's baseline %s in %.1f s", how, time.perf_counter() - started)
        if "eval_loss" in baseline:
            log.info("eval loss before training: %.4f", baseline["eval_loss"])
            if cached and self.writer is not None:  # what the trainer's evaluate() would have logged
                self.writer.add_scalar("eval/loss", baseline["eval_loss"], 0)
            self.log_task("before_training", 0, baseline.get("task", {}), baseline.get("task_samples", []))
        log_samples(self.writer, baseline.get("samples", []), "before_training", 0)
        return baseline

    def train(self) -> dict[str, Any]:
        """The baseline, training and the evals, with TRL's fused LM head scoring only labelled positions on
        CPU for their duration (src/patches.py)."""
        with cpu_lm_head():
            return self._train()

    def _train(self) -> dict[str, Any]:
        cfg, trainer = self.cfg, self.trainer
        baseline_file = self.run_dir / "baseline.json"
        baseline: dict[str, Any] = {}
        if self.resume_from is not None:  # the baseline was measured by the interrupted attempt
            baseline = json.loads(baseline_file.read_text()) if baseline_file.exists() else {}
            log.info("Resuming from %s", self.resume_from)
        else:
            baseline = self.baseline()
            if distributed.is_main():
                baseline_file.write_text(
                    json.dumps({k: baseline[k] for k in ("eval_loss", "task") if k in baseline})
                )
        if self.resume_from is None:
            # Every DataLoader draws its base seed from the global RNG, so measuring the baseline (or reading
            # it from the cache instead) would shift the training data order: reseed, same seed, same run.
            set_seed(cfg.seed)
        started = time.perf_counter()
        result = trainer.train(resume_from_checkpoint=str(self.resume_from) if self.resume_from else None)
        train_seconds = time.perf_counter() - started
        state = trainer.state
        if self.guard.problem:
            self.metrics = {
                "status": "diverged",
                "error": self.guard.problem,
                "global_step": state.global_step,
            }
            return self.metrics
        history = [e for e in state.log_history if "eval_loss" in e]
        evals = [(e["step"], e["eval_loss"]) for e in history]
        best_step, best_loss = min(evals, key=lambda e: e[1]) if evals else (0, math.nan)
        if state.best_metric is not None:
            best_loss = state.best_metric
        distributed.check_replicas_agree(trainer.model, self.sharded_by)
        after_task, after_samples = self.measure_task()
        self.log_task("after_training", state.global_step, after_task, after_samples)
        if distributed.is_main() and not self.sharded_by:
            self.sampler.sample(trainer.model, "after_training", state.global_step)
        tokens = state.num_input_tokens_seen
        step_seconds = self.throughput.total_step_seconds or train_seconds
        self.metrics = {
            "status": "pruned" if self.pruning and self.pruning.pruned_at else "finished",
            "best_eval_loss": float(best_loss),
            "best_step": best_step,
            "final_eval_loss": float(evals[-1][1]) if evals else math.nan,
            "baseline_eval_loss": baseline.get("eval_loss"),
            "global_step": state.global_step,
            "planned_steps": state.max_steps,
            "stopped_early": state.global_step < state.max_steps,
            "train_loss": whole_run_train_loss(
                state.log_history, self.resumed_at_step, state.global_step, result.training_loss
            ),
            "train_tokens": tokens,
            "train_tokens_per_second": tokens / step_seconds if step_seconds else 0.0,
            "train_seconds": train_seconds,
            "peak_memory_gb": peak_memory_gb(),
            "task_metric": {
                "name": cfg.data.task_metric,
                "before": baseline.get("task", {}),
                "after": after_task,
            },
            # each eval with its phase of the schedule and the tokens trained on: the curve the sweep replays
            "eval_history": [
                {
                    "step": e["step"],
                    "schedule_fraction": e["step"] / state.max_steps,
                    "tokens_seen": e.get("num_input_tokens_seen"),
                    "eval_loss": e["eval_loss"],
                }
                for e in history
            ],
        }
        log.info(
            "best eval loss %.4f at step %d (baseline %s) | %d steps%s | %.0f tokens/s | peak memory %.2f GB",
            best_loss,
            best_step,
            f"{baseline['eval_loss']:.4f}" if "eval_loss" in baseline else "not measured",
            state.global_step,
            " (stopped early)" if self.metrics["stopped_early"] else "",
            self.metrics["train_tokens_per_second"],
            self.metrics["peak_memory_gb"],
        )
        return self.metrics


def checkpoint_step(checkpoint: Path) -> int:
    """The global step a `checkpoint-N` folder was saved at."""
    return int(checkpoint.name.rsplit("-", 1)[1])


def build_run(cfg, model, tokenizer, data, run_dir: Path, resume_from: Path | None = None) -> TrainingRun:
    """Trainer with TensorBoard, throughput and sample-generation callbacks; prints the run summary."""
    from torch.utils.tensorboard import SummaryWriter

    # On resume, drop events logged after the checkpoint by the interrupted attempt: no duplicate steps.
    purge_step = checkpoint_step(resume_from) + 1 if resume_from else None
    writer = None  # only the main process writes TensorBoard events
    if distributed.is_main():
        writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=purge_step)
        log_report_to_tensorboard(writer, data.report)
    prompts = _sample_prompts(cfg, data)
    sampler = SampleGenerationCallback(
        writer, tokenizer, prompts, cfg.eval.max_new_tokens, cfg.monitor.samples_every_evals
    )
    throughput, guard = ThroughputCallback(writer), NonFiniteLossCallback()
    callbacks = [throughput, sampler, guard]
    if writer is not None:
        callbacks.insert(0, TensorBoardCallback(tb_writer=writer))
    pruning = _pruning_callback(cfg, run_dir)
    if pruning is not None:
        callbacks.append(pruning)
    trainer = build_trainer(cfg, model, tokenizer, data, run_dir / "checkpoints", callbacks)
    total, warmup = planned_steps(trainer)
    for line in summary_lines(cfg, trainer.model, total, warmup, compute_dtype(cfg)):
        log.info(line)
    args = trainer.args
    rows_per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    for line in eval_cost_lines(data.report, total, args.eval_steps, rows_per_step, cfg.data.packing):
        log.info(line)
    sharded_by = distributed.sharded(trainer)
    if sharded_by:
        # generate() on the main process alone would wait forever for the other processes' shards
        sampler.every_evals = 0
        log.warning("sample generations and the task metric are skipped: %s", sharded_by)
    return TrainingRun(
        cfg,
        trainer,
        tokenizer,
        data,
        writer,
        sampler,
        throughput,
        guard,
        baseline_cache=baseline_path(cfg, data.cache_path, trains_on_cpu(cfg)),
        pruning=pruning,
        resume_from=resume_from,
        run_dir=run_dir,
        sharded_by=sharded_by,
    )


def _pruning_callback(cfg, run_dir: Path):
    """Inside an Optuna sweep: report eval losses to this job's trial so its pruner can stop it."""
    from sweep.pruning import PruningCallback, job_trial

    found = job_trial(cfg.trial)
    if found is None:
        return None
    trial, report_at = found
    trial.set_user_attr("run_dir", str(run_dir.resolve()))
    return PruningCallback(trial, report_at)


def _sample_prompts(cfg, data) -> list[tuple[list | dict, str]]:
    """(prompt, reference) pairs to sample: monitor.sample_prompts, else the first eval conversations' prompts
    (a dict with its tools for tool-calling data) and replies."""
    if cfg.monitor.sample_prompts:
        return [([{"role": "user", "content": p}], "") for p in cfg.monitor.sample_prompts]
    pairs = [p for p in map(prompt_and_reference, data.eval_conversations) if p is not None]
    if not pairs and cfg.monitor.num_samples:
        log.info("no sample generations: no eval prompt has a reply (set monitor.sample_prompts)")
    return pairs[: cfg.monitor.num_samples]


def save(cfg, run: TrainingRun, base: str, tokenizer, run_dir: Path) -> None:
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
    )
    run.writer.close()
    if run.guard.problem:
        write_metrics(run_dir, metrics)
        raise TrainingDiverged(run.guard.problem)
    path = write_metrics(run_dir, metrics)
    log.info("Run folder: %s (metrics: %s)", run_dir, path.name)
