"""src.callbacks.build_callbacks: which callbacks a run gets, in the trainer's order, set from its config."""

from __future__ import annotations

from torch.utils.tensorboard import SummaryWriter
from transformers import TrainerCallback
from transformers.integrations import TensorBoardCallback

from src.callbacks import NonFiniteLossCallback, SampleGenerationCallback, ThroughputCallback, build_callbacks
from tests.conftest import TINY, compose_config


def test_without_a_writer_a_run_gets_throughput_samples_and_the_guard():
    cfg = compose_config([*TINY, "eval.max_new_tokens=5", "monitor.samples_every_evals=3"])
    prompts = [([{"role": "user", "content": "hi"}], "hello")]
    callbacks = build_callbacks(cfg, None, tokenizer=None, prompts=prompts)
    assert [type(c) for c in callbacks.as_list()] == [
        ThroughputCallback,
        SampleGenerationCallback,
        NonFiniteLossCallback,
    ]
    assert callbacks.tensorboard is None and callbacks.pruning is None
    assert callbacks.sampler.prompts == prompts
    assert (callbacks.sampler.max_new_tokens, callbacks.sampler.every_evals) == (5, 3)
    assert callbacks.throughput.writer is None and callbacks.sampler.writer is None


def test_a_writer_adds_tensorboard_first_and_pruning_comes_last(tmp_path):
    cfg = compose_config(TINY)
    writer = SummaryWriter(log_dir=str(tmp_path))
    pruning = TrainerCallback()
    callbacks = build_callbacks(cfg, writer, tokenizer=None, prompts=[], pruning=pruning)
    wired = callbacks.as_list()
    writer.close()
    assert [type(c) for c in wired] == [
        TensorBoardCallback,
        ThroughputCallback,
        SampleGenerationCallback,
        NonFiniteLossCallback,
        TrainerCallback,
    ]
    assert wired[0].tb_writer is writer and wired[-1] is pruning
    assert callbacks.throughput.writer is writer and callbacks.sampler.writer is writer
    assert callbacks.sampler.every_evals == cfg.monitor.samples_every_evals
