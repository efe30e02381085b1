"""The real default: SmolLM2-135M-Instruct from the embedded GGUF, trained for a few QLoRA steps."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import CACHE, run_module

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("smollm") / "run"
    overrides = [
        "optim.max_steps=12",
        "optim.learning_rate=1e-3",  # the published LoRA rule for this model's width (docs/sweeps.md)
        "eval.steps=6",
        "data.builtin_examples=40",
        "eval.task_examples=4",
        "eval.max_new_tokens=24",
        "monitor.num_samples=0",  # no sample generations: the task metric already generates
        "monitor.progress_bar=false",
        "save.merge=true",
        f"hydra.run.dir={run_dir}",
    ]
    result = run_module("src.train", *overrides, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, result.stdout + result.stderr


def test_default_model_trains_with_qlora(smollm_run):
    run_dir, output = smollm_run
    assert "quantization: nf4 4-bit" in output
    assert (
        "trainable params: 4,884,480 || all params: 139,399,488" in output
    )  # r=16 on 7 projections × 30 layers
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["global_step"] == 12
    assert 0.2 < metrics["baseline_eval_loss"] < 2.0  # a pretrained model, not random (random: ~10.8)
    assert metrics["best_eval_loss"] < metrics["baseline_eval_loss"] / 2  # it really learnt the task


def test_merged_default_model_still_knows_paris(smollm_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir, _ = smollm_run
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "merged")
    model = AutoModelForCausalLM.from_pretrained(run_dir / "merged", dtype=torch.float32).eval()
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    output = model.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert "Paris" in tokenizer.decode(output[0, ids.shape[1] :], skip_special_tokens=True)


def test_converted_base_is_a_plain_safetensors_folder():
    folders = list((CACHE / "models").glob("SmolLM2-135M-Instruct.Q4_1-*"))
    assert folders, "the GGUF conversion should have been cached by the run above"
    assert (folders[0] / "model.safetensors").is_file() and (folders[0] / "tokenizer.json").is_file()
    config = json.loads((folders[0] / "config.json").read_text())
    assert (
        config["num_hidden_layers"] == 30 and config["hidden_size"] == 576 and config["vocab_size"] == 49152
    )
    assert "quantization_config" not in config
