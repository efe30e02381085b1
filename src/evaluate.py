"""Generation on held-out prompts and the task metric that scores it (exact match, JSON exact match)."""

from __future__ import annotations

import json
from typing import Any

import torch

from src.data.formats import conversation_messages
from src.data.tokenization import render


def prompt_and_reference(conversation: list | dict | str) -> tuple[list | dict, str] | None:
    """Split a conversation into the prompt (everything before the last assistant turn, with the tools it
    declares) and that turn's text."""
    if isinstance(conversation, str):
        return None
    messages = conversation_messages(conversation)
    if messages[-1]["role"] != "assistant":
        return None
    if isinstance(conversation, dict):
        return {**conversation, "messages": messages[:-1]}, messages[-1]["content"]
    return messages[:-1], messages[-1]["content"]


@torch.no_grad()
def generate_replies(
    model, tokenizer, prompts: list[list | dict], max_new_tokens: int, batch_size: int = 16
) -> list[str]:
    """Greedy replies to chat prompts, rendered with the same chat template the training text used."""
    was_training = model.training
    model.eval()
    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # decoder-only generation continues from the right edge
    replies: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            texts = [
                render(tokenizer, p, add_generation_prompt=True) for p in prompts[start : start + batch_size]
            ]
            batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            batch = {k: v.to(model.device) for k, v in batch.items()}
            output = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                use_cache=True,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            new_tokens = output[:, batch["input_ids"].shape[1] :]
            replies.extend(t.strip() for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = padding_side
        if was_training:
            model.train()
    return replies


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return None


def score(metric: str, predictions: list[str], references: list[str]) -> dict[str, float]:
    """Task metric over generated replies: exact_match (whitespace-normalised) or json_exact_match
    (same parsed JSON value), plus json_valid for the JSON metric (format compliance)."""
    n = max(len(references), 1)
    if metric == "exact_match":
        hits = sum(" ".join(p.split()) == " ".join(r.split()) for p, r in zip(predictions, references))
        return {"exact_match": hits / n}
    if metric == "json_exact_match":
        parsed = [_json_or_none(p) for p in predictions]
        hits = sum(p is not None and p == _json_or_none(r) for p, r in zip(parsed, references))
        valid = sum(isinstance(p, dict) for p in parsed)
        return {"json_exact_match": hits / n, "json_valid": valid / n}
    return {}


def task_metric(
    model, tokenizer, conversations, metric: str, limit: int, max_new_tokens: int, batch_size: int
):
    """Generate replies for up to `limit` held-out conversations and score them. Returns (scores, samples)."""
    pairs = [p for p in map(prompt_and_reference, conversations) if p is not None][:limit]
    if metric == "none" or not pairs:
        return {}, []
    prompts, references = [p for p, _ in pairs], [r for _, r in pairs]
    predictions = generate_replies(model, tokenizer, prompts, max_new_tokens, batch_size)
    samples = [
        {"prompt": p[-1]["content"], "reference": r, "prediction": y}
        for p, r, y in zip(prompts, references, predictions)
    ]
    return score(metric, predictions, references), samples
