"""TensorBoard extras the libraries do not write (tokens/s and memory, sample generations, HPARAMS), the
divergence guard, and `build_callbacks`: the set a training run adds to its trainer."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from transformers import TrainerCallback
from transformers.integrations import TensorBoardCallback

from src.data.formats import conversation_messages
from src.evaluate import generate_replies
from src.memory import peak_memory_gb
from src.run_record import METRICS_LOGGER

log = logging.getLogger(__name__)


class ThroughputCallback(TrainerCallback):
    """Logs training tokens per second (time inside optimizer steps only, evals excluded) and peak memory."""

    def __init__(self, writer):
        self.writer = writer
        self.step_seconds = 0.0
        self.total_step_seconds = 0.0
        self.tokens_at_last_log = 0
        self._started = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        elapsed = time.perf_counter() - self._started
        self.step_seconds += elapsed
        self.total_step_seconds += elapsed

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or "loss" not in logs or self.step_seconds == 0:
            return
        tokens = state.num_input_tokens_seen - self.tokens_at_last_log
        if self.writer is not None:
            self.writer.add_scalar("train/tokens_per_second", tokens / self.step_seconds, state.global_step)
            self.writer.add_scalar("train/peak_memory_gb", peak_memory_gb(), state.global_step)
        self.tokens_at_last_log = state.num_input_tokens_seen
        self.step_seconds = 0.0


def log_samples(writer, samples: list[dict[str, str]], tag: str, step: int) -> None:
    """Log generated samples and write them to TensorBoard as one markdown text entry. Those before and after
    training go to the console too; those during training only to train.log (the console keeps one line per
    eval, src/console.py)."""
    logger = logging.getLogger(METRICS_LOGGER) if tag == "during_training" else log
    blocks = []
    for i, sample in enumerate(samples):
        logger.info("[%s] prompt %d: %r\n    -> %r", tag, i, sample["prompt"][-200:], sample["prediction"])
        reference = f"\n\n**reference:** `{sample['reference']}`" if sample.get("reference") else ""
        blocks.append(f"**prompt:** {sample['prompt']}\n\n**output:** `{sample['prediction']}`{reference}")
    if writer is not None and blocks:
        writer.add_text(f"samples/{tag}", "\n\n---\n\n".join(blocks), step)


class SampleGenerationCallback(TrainerCallback):
    """Generates replies to a few fixed prompts at evaluations, so a person can read them improve."""

    def __init__(self, writer, tokenizer, prompts, max_new_tokens: int, every_evals: int):
        self.writer = writer
        self.tokenizer = tokenizer
        self.prompts = prompts  # list of (messages, reference or "")
        self.max_new_tokens = max_new_tokens
        self.every_evals = every_evals
        self.evals = 0

    def generate(self, model) -> list[dict[str, str]]:
        replies = generate_replies(model, self.tokenizer, [p for p, _ in self.prompts], self.max_new_tokens)
        return [
            {"prompt": conversation_messages(p)[-1]["content"], "reference": r, "prediction": y}
            for (p, r), y in zip(self.prompts, replies)
        ]

    def sample(self, model, tag: str, step: int) -> list[dict[str, str]]:
        samples = self.generate(model)
        log_samples(self.writer, samples, tag, step)
        return samples

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        self.evals += 1
        if not state.is_world_process_zero:  # the main process generates and logs; the others go on
            return
        if self.every_evals and self.evals % self.every_evals == 0 and model is not None:
            self.sample(model, "during_training", state.global_step)


# how a run ended (metrics.json "status") -> the trial state shown in the HPARAMS table, and TensorBoard's
# session status: only finished runs show as successful; a pruned run did not fail, but did not finish either
RUN_STATES = {"finished": ("COMPLETE", "STATUS_SUCCESS"), "pruned": ("PRUNED", "STATUS_UNKNOWN")}
FAILED = ("FAIL", "STATUS_FAILURE")


def write_hparams(
    writer,
    hparams: dict[str, Any],
    metrics: dict[str, float],
    status: str = "finished",
    later: tuple[str, ...] = (),
) -> None:
    """Write the HPARAMS-tab summary into the run's own log dir (transformers no longer does this), with
    the run's state as a column and as TensorBoard's session status (torch's add_hparams always says
    success, so the session-end record is written here). `later`: metrics declared now, whose values
    another writer appends to the run afterwards (a sweep's regret_in_noise_floors, sweep/hparams_regret.py);
    TensorBoard takes a run's summary from its first record, so a metric must be declared here to show."""
    if writer is None:
        return
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams.api_pb2 import Status
    from tensorboard.plugins.hparams.metadata import PLUGIN_DATA_VERSION, PLUGIN_NAME, SESSION_END_INFO_TAG
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData, SessionEndInfo
    from torch.utils.tensorboard.summary import hparams as hparams_summaries

    state, session_status = RUN_STATES.get(status, FAILED)
    clean = {k: (v if isinstance(v, int | float | str | bool) else str(v)) for k, v in hparams.items()}
    clean["state"] = state
    scalars = {f"hparam/{k}": float(v) for k, v in metrics.items()}
    declared = {**scalars, **{f"hparam/{name}": 0.0 for name in later if f"hparam/{name}" not in scalars}}
    experiment, session_start, _always_success = hparams_summaries(clean, declared)
    end = SessionEndInfo(status=Status.Value(session_status))
    content = HParamsPluginData(session_end_info=end, version=PLUGIN_DATA_VERSION)
    metadata = SummaryMetadata(
        plugin_data=SummaryMetadata.PluginData(plugin_name=PLUGIN_NAME, content=content.SerializeToString())
    )
    session_end = Summary(value=[Summary.Value(tag=SESSION_END_INFO_TAG, metadata=metadata)])
    file_writer = writer._get_file_writer()
    for summary in (experiment, session_start, session_end):
        file_writer.add_summary(summary)
    for name, value in scalars.items():
        writer.add_scalar(name, value)
    writer.flush()


class NonFiniteLossCallback(TrainerCallback):
    """Stops training at the first NaN/inf train loss, grad norm or eval loss, and remembers where."""

    WATCHED = ("loss", "grad_norm", "eval_loss")

    def __init__(self):
        self.problem: str | None = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key in self.WATCHED:
            value = (logs or {}).get(key)
            if value is not None and not math.isfinite(value) and self.problem is None:
                self.problem = (
                    f"{key} became {value} at step {state.global_step}. Likely causes: a learning rate too "
                    f"high (now {args.learning_rate:g}; lower it or raise optim.warmup_ratio), or fp16 "
                    "overflow (use bf16 or fp32)."
                )
                log.error("Stopping: %s", self.problem)
                control.should_training_stop = True


@dataclass
class RunCallbacks:
    """The callbacks a training run adds to its trainer, by role; `as_list()` in the trainer's order."""

    throughput: ThroughputCallback
    sampler: SampleGenerationCallback
    guard: NonFiniteLossCallback
    tensorboard: TensorBoardCallback | None = None  # only where a writer exists (the main process)
    pruning: TrainerCallback | None = None  # sweep.pruning.PruningCallback inside an Optuna sweep

    def as_list(self) -> list[TrainerCallback]:
        wired = [self.tensorboard, self.throughput, self.sampler, self.guard, self.pruning]
        return [callback for callback in wired if callback is not None]


def build_callbacks(
    cfg, writer, tokenizer, prompts: list, pruning: TrainerCallback | None = None
) -> RunCallbacks:
    """TensorBoard (when `writer` is not None), throughput, sample generations of `prompts` ((messages,
    reference) pairs; none: no samples) every `monitor.samples_every_evals` evals, the divergence guard, and
    `pruning` when given: what `src.train` and the bench's `ours_callbacks` add around the trainer."""
    return RunCallbacks(
        throughput=ThroughputCallback(writer),
        sampler=SampleGenerationCallback(
            writer, tokenizer, prompts, cfg.eval.max_new_tokens, cfg.monitor.samples_every_evals
        ),
        guard=NonFiniteLossCallback(),
        tensorboard=TensorBoardCallback(tb_writer=writer) if writer is not None else None,
        pruning=pruning,
    )
