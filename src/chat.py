"""Talk to a trained model: `python -m src.chat <run folder>` (interactive) or
`python -m src.chat <run folder> --prompts prompts.jsonl [--out answers.jsonl]` (batch).

It loads the run's base model with its adapter (or, with --merged, the merged model the run saved), the
tokenizer saved next to the adapter (so the run's own chat template), and the run's generation settings:
greedy decoding, eval.max_new_tokens. A base model that is local (the default, converted from its GGUF
package into the cache) is never downloaded. Runs on CPU when there is no GPU.

Prompt files: JSON Lines, each line a string, {"prompt": "…"}, or {"messages": [...]} (a conversation to
continue, checked as training data is; with "tools": [...] for a tool-calling run). Answers: one
{"prompt", "answer"} line per prompt, in order (the prompt: the text of the conversation's last message).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger("src.chat")


def load_run_config(run_dir: Path):
    """The run's resolved config.yaml, typed (the schema fills what an older run did not record)."""
    from omegaconf import OmegaConf

    from src.config import TrainConfig

    path = run_dir / "config.yaml"
    if not path.is_file():
        raise SystemExit(f"chat: {run_dir} holds no config.yaml; give the folder of a finished training run.")
    merged = OmegaConf.merge(OmegaConf.structured(TrainConfig), OmegaConf.load(path))
    return OmegaConf.to_object(merged)


def load_model(run_dir: Path, merged: bool = False):
    """(model, tokenizer, config) for the trained run: base + adapter, or the merged model."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from src.base_model import resolve_base
    from src.model import torch_dtype
    from src.patches import cpu_has_native_bf16

    cfg = load_run_config(run_dir)
    dtype = torch_dtype(cfg.model.dtype)
    if dtype == torch.bfloat16 and not torch.cuda.is_available() and not cpu_has_native_bf16():
        dtype = torch.float32  # emulated bf16 is ~50× slower than fp32 on such CPUs
    if merged:
        folder = run_dir / "merged"
        if not (folder / "config.json").is_file():
            raise SystemExit(
                f"chat: {run_dir} has no merged model (train with save.merge=true), or drop --merged."
            )
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    else:
        folder = run_dir / ("adapter" if cfg.lora.enabled else "model")
        if not folder.is_dir():
            raise SystemExit(
                f"chat: {run_dir} has no {folder.name}/ folder; was the run finished with save.adapter=true?"
            )
        if cfg.lora.enabled:
            base = resolve_base(cfg.model, cfg.paths.cache_dir)
            model = AutoModelForCausalLM.from_pretrained(
                base, revision=cfg.model.revision, dtype=dtype, trust_remote_code=cfg.model.trust_remote_code
            )
            model = PeftModel.from_pretrained(model, str(folder))
        else:
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(folder)  # saved with the run: its own chat template
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    model.eval()
    return model, tokenizer, cfg


def read_prompts(path: Path) -> list[list[dict[str, Any]] | dict[str, Any]]:
    """Each line of a prompts file as a conversation to answer (with its tools, if the line declares any)."""
    from src.data.formats import BadExample, to_prompt

    prompts: list[list[dict[str, Any]] | dict[str, Any]] = []
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            item = line  # a bare line of text is a prompt too
        if isinstance(item, str):
            prompts.append([{"role": "user", "content": item}])
        elif isinstance(item, dict) and isinstance(item.get("prompt"), str):
            prompts.append([{"role": "user", "content": item["prompt"]}])
        elif isinstance(item, dict) and "messages" in item:
            try:
                prompts.append(to_prompt(item))
            except BadExample as bad:
                raise SystemExit(f"chat: {path}:{number}: {bad}") from None
        else:
            raise SystemExit(
                f'chat: {path}:{number}: expected a string, {{"prompt": …}} or {{"messages": […]}} '
                '(with "tools": […] if it calls tools).'
            )
    return prompts


def answer_file(model, tokenizer, prompts_path: Path, out: Path, max_new_tokens: int) -> int:
    from src.evaluate import generate_replies, prompt_text

    prompts = read_prompts(prompts_path)
    answers = generate_replies(model, tokenizer, prompts, max_new_tokens)
    lines = [json.dumps({"prompt": prompt_text(p), "answer": a}) for p, a in zip(prompts, answers)]
    out.write_text("".join(line + "\n" for line in lines))
    return len(lines)


def interactive(model, tokenizer, max_new_tokens: int) -> None:
    from src.evaluate import generate_replies

    print("Chat with the trained model. /reset starts over, /exit (or Ctrl-D) quits.")
    history: list[dict[str, str]] = []
    while True:
        try:
            text = input("you> ").strip()
        except EOFError:
            print()
            return
        if text in ("/exit", "/quit"):
            return
        if text == "/reset":
            history = []
            continue
        if not text:
            continue
        history.append({"role": "user", "content": text})
        reply = generate_replies(model, tokenizer, [history], max_new_tokens)[0]
        history.append({"role": "assistant", "content": reply})
        print(f"model> {reply}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m src.chat", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a finished training run's folder")
    parser.add_argument("--prompts", type=Path, help="JSON Lines of prompts to answer (batch mode)")
    parser.add_argument(
        "--out", type=Path, help="where to write the answers (default: <prompts>.answers.jsonl)"
    )
    parser.add_argument("--merged", action="store_true", help="use the merged model the run saved")
    parser.add_argument("--max-new-tokens", type=int, help="default: the run's eval.max_new_tokens")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.prompts is not None and not args.prompts.is_file():
        sys.exit(f"chat: no prompts file {args.prompts}.")
    model, tokenizer, cfg = load_model(args.run, merged=args.merged)
    max_new_tokens = args.max_new_tokens or cfg.eval.max_new_tokens
    if args.prompts is None:
        interactive(model, tokenizer, max_new_tokens)
        return
    out = args.out or args.prompts.with_suffix(".answers.jsonl")
    if out.exists():
        sys.exit(f"chat: {out} exists; give another --out (answers never replace an earlier file).")
    count = answer_file(model, tokenizer, args.prompts, out, max_new_tokens)
    print(f"wrote {count} answers to {out}")


if __name__ == "__main__":
    main()
