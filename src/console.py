"""What a run shows on the console while it trains: one progress bar with the loss and learning rate in its
postfix (tqdm adds the ETA), and one readable line per evaluation. transformers' ProgressCallback prints the
whole metrics dict at every logging step instead (and PrinterCallback, used without a bar, prints it too).
Every metric still reaches TensorBoard, and each step's line reaches train.log through METRICS."""

from __future__ import annotations

import json
import logging
import time

from transformers.trainer_callback import PrinterCallback, ProgressCallback, TrainerCallback

from src.run_record import METRICS_LOGGER

log = logging.getLogger(__name__)
# each logging step's metrics, for train.log only (src/run_record.py attaches the file to it)
METRICS = logging.getLogger(METRICS_LOGGER)
METRICS.propagate = False
METRICS.setLevel(logging.INFO)


class EvalLines:
    """`step 30/120 (25%) | eval loss 0.5321 (best 0.5210 at step 15) | 2m 10s`, the best including this
    eval (the Trainer updates its own best only after logging) and any best a resumed run starts from."""

    def __init__(self):
        self.started, self.best = time.monotonic(), None

    def start(self, state) -> None:
        self.started = time.monotonic()
        self.best = (state.best_metric, state.best_global_step) if state.best_metric is not None else None

    def line(self, state, loss: float) -> str:
        previous = self.best
        if previous is None or loss < previous[0]:
            self.best = (loss, state.global_step)
        best = f" (best {previous[0]:.4f} at step {previous[1]})" if previous and previous[0] <= loss else ""
        minutes, seconds = divmod(int(time.monotonic() - self.started), 60)
        share = state.global_step / state.max_steps if state.max_steps else 0
        return (
            f"step {state.global_step}/{state.max_steps} ({share:.0%}) | eval loss {loss:.4f}{best} | "
            f"{minutes}m {seconds:02d}s"
        )


class QuietPrinter(TrainerCallback):
    """Without a bar (monitor.progress_bar=false): every logging step's metrics to train.log, and one line per
    evaluation during training through logging. ConsoleProgress shows the same on a bar."""

    def __init__(self):
        super().__init__()
        self.lines, self.training = EvalLines(), False

    def on_train_begin(self, args, state, control, **kwargs):
        self.lines.start(state)
        self.training = True
        super().on_train_begin(args, state, control, **kwargs)

    def on_train_end(self, args, state, control, **kwargs):
        self.training = False
        super().on_train_end(args, state, control, **kwargs)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or not self.training:
            return  # the baseline's evaluate() before training is reported by the run itself
        METRICS.info("step %d %s", state.global_step, json.dumps(logs, default=str))
        if "eval_loss" in logs:
            self.show(self.lines.line(state, logs["eval_loss"]))
        elif "loss" in logs:
            self.progress(logs)

    def show(self, line: str) -> None:
        log.info(line)

    def progress(self, logs: dict) -> None:
        """Nothing without a bar: the step's metrics are in train.log."""


class ConsoleProgress(QuietPrinter, ProgressCallback):
    """One bar per run: loss and learning rate in its postfix, one line per evaluation above it."""

    def on_train_begin(self, args, state, control, **kwargs):
        super().on_train_begin(args, state, control, **kwargs)
        if self.training_bar is not None:
            self.training_bar.set_description("training")

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        """No second bar for evaluations: their result is the line written when they end."""

    def show(self, line: str) -> None:
        self.training_bar.write(line)

    def progress(self, logs: dict) -> None:
        postfix = {"loss": f"{logs['loss']:.4f}"}
        if "learning_rate" in logs:
            postfix["lr"] = f"{logs['learning_rate']:.2e}"
        self.training_bar.set_postfix(postfix, refresh=False)


def use_console(trainer) -> None:
    """Swap transformers' printing callbacks for ours (whichever of the two the trainer installed)."""
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(ConsoleProgress())
    elif trainer.pop_callback(PrinterCallback) is not None:
        trainer.add_callback(QuietPrinter())


def quiet_library_bars() -> None:
    """No "Loading weights" / "Writing model shards" bars (transformers' own tqdm, two per run with a merge):
    the run's one bar is training's. huggingface_hub's download bars stay as they were (a first Hub download
    of an 8B model is worth watching). Process wide; transformers 5.23."""
    import huggingface_hub.utils as hub
    from transformers.utils import logging as transformers_logging

    downloads_shown = not hub.are_progress_bars_disabled()
    transformers_logging.disable_progress_bar()  # also turns the Hub's off: turned back on below
    if downloads_shown:
        hub.enable_progress_bars()
