"""`python -m src.chat`: answers with the trained adapter exactly as PEFT's own greedy generation does."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import CACHE, TINY, run_module


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("chat") / "run"
    result = run_module(
        "src.train",
        *TINY,
        "optim.max_steps=4",
        "optim.learning_rate=5e-3",
        "eval.steps=2",
        "eval.before_training=false",
        "data.task_metric=none",
        "monitor.num_samples=0",
        "save.merge=true",
        f"paths.cache_dir={CACHE}",
        f"hydra.run.dir={run}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return run


PROMPTS = ["Extract the person as JSON: Ana, 31, is a nurse in Porto.", "Say hello."]


def reference_answers(run, max_new_tokens: int) -> list[str]:
    """Base + adapter through PEFT, prompts rendered by the saved tokenizer, greedy: the answers to match."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from src.base_model import resolve_base
    from src.chat import load_run_config

    cfg = load_run_config(run)
    base = AutoModelForCausalLM.from_pretrained(
        resolve_base(cfg.model, cfg.paths.cache_dir), dtype=torch.float32
    )
    model = PeftModel.from_pretrained(base, str(run / "adapter")).eval()
    tokenizer = AutoTokenizer.from_pretrained(run / "adapter")
    answers = []
    for prompt in PROMPTS:
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        with torch.no_grad():
            out = model.generate(
                **ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
        answers.append(
            tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip()
        )
    return answers


@pytest.mark.parametrize("merged", [False, True])
def test_batch_answers_equal_peft_greedy_generation(trained_run, tmp_path, merged):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": PROMPTS[0]}) + "\n" + json.dumps(PROMPTS[1]) + "\n")
    out = tmp_path / "answers.jsonl"
    args = [str(trained_run), "--prompts", str(prompts), "--out", str(out), "--max-new-tokens", "12"]
    result = run_module("src.chat", *args, *(["--merged"] if merged else []))
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt"] for r in rows] == PROMPTS
    expected = reference_answers(trained_run, 12)
    assert [r["answer"] for r in rows] == expected
    assert any(expected)  # the model said something: an empty match would prove little
    again = run_module("src.chat", *args)  # an existing answers file is never replaced
    assert again.returncode != 0 and "exists; give another --out" in again.stderr
    assert [json.loads(line) for line in out.read_text().splitlines()] == rows


def test_interactive_chat_keeps_the_conversation(trained_run):
    result = run_module(
        "src.chat", str(trained_run), "--max-new-tokens", "6", input_text="Say hello.\n/reset\nHi\n/exit\n"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("model> ") == 2 and "Chat with the trained model" in result.stdout


def test_a_folder_that_is_not_a_run_is_refused(tmp_path):
    result = run_module("src.chat", str(tmp_path))
    assert (
        result.returncode != 0
        and "holds no config.yaml" in result.stderr
        and "Traceback" not in result.stderr
    )


def test_a_bad_conversation_in_the_prompts_file_is_refused_with_its_line(tmp_path):
    from src.chat import read_prompts

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('"Hi"\n' + json.dumps({"messages": [{"role": "robot", "content": "beep"}]}) + "\n")
    with pytest.raises(SystemExit, match=r"prompts\.jsonl:2: unknown role 'robot'; use system, user"):
        read_prompts(prompts)
