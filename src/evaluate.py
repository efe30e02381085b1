"""Generation on held-out prompts and the task metric that scores it (exact match, JSON exact match)."""

from __future__ import annotations

import json
import logging
from typing import Any

import torch

from src.data.formats import conversation_messages
from src.data.tokenization import render
from src.stop_tokens import stop_token_ids

log = logging.getLogger(__name__)


def split_reply(conversation: list | dict | str) -> tuple[list | dict, dict[str, Any]] | None:
    """The prompt (every message before the last assistant turn, with the tools the conversation declares)
    and that turn; None for plain text or a conversation that does not end with an assistant turn."""
    if isinstance(conversation, str):
        return None
    messages = conversation_messages(conversation)
    if messages[-1]["role"] != "assistant":
        return None
    if isinstance(conversation, dict):
        return {**conversation, "messages": messages[:-1]}, messages[-1]
    return messages[:-1], messages[-1]


def prompt_and_reference(conversation: list | dict | str) -> tuple[list | dict, str] | None:
    """The prompt and the text of the last assistant turn (see split_reply)."""
    split = split_reply(conversation)
    return None if split is None else (split[0], split[1]["content"])


def prompt_text(prompt: list | dict) -> str:
    """What a person reads as the prompt: its last message (the question, or a tool's result)."""
    return conversation_messages(prompt)[-1]["content"]


def rendered_reply(tokenizer, prompt: list | dict, reply: dict[str, Any]) -> str:
    """The reply as the chat template writes it after the prompt (tool calls included), decoded as generated
    replies are: what a model that learned the data answers. The reply's text for a template that
    renders the prompt differently once a reply follows."""
    messages = [*conversation_messages(prompt), reply]
    before = render(tokenizer, prompt, add_generation_prompt=True)
    text = render(tokenizer, {**prompt, "messages": messages} if isinstance(prompt, dict) else messages)
    if not text.startswith(before):
        return reply["content"]
    ids = tokenizer(text[len(before) :], add_special_tokens=False)["input_ids"]
    return tokenizer.decode(ids, skip_special_tokens=True).strip()


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
                eos_token_id=stop_token_ids(tokenizer),  # the template's end of turn too
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
    """Generate replies for up to `limit` held-out conversations and score them against the replies the data
    teaches (rendered_reply). Returns (scores, samples); nothing for data without replies (plain text)."""
    replies = [r for r in map(split_reply, conversations) if r is not None][:limit]
    if metric == "none":
        return {}, []
    if not replies:
        log.info("data.task_metric=%s skipped: no eval example ends with an assistant reply", metric)
        return {}, []
    prompts = [prompt for prompt, _ in replies]
    references = [rendered_reply(tokenizer, prompt, reply) for prompt, reply in replies]
    predictions = generate_replies(model, tokenizer, prompts, max_new_tokens, batch_size)
    samples = [
        {"prompt": prompt_text(p), "reference": r, "prediction": y}
        for p, r, y in zip(prompts, references, predictions)
    ]
    return score(metric, predictions, references), samples


def log_task_metric(writer, tag: str, step: int, scores: dict[str, float], samples: list[dict[str, str]]):
    """Print each score and write it (task/<name>) and the first 8 samples (task/<tag>) to TensorBoard."""
    for name, value in scores.items():
        log.info("task metric %s %s: %.3f", tag, name, value)
        if writer is not None:
            writer.add_scalar(f"task/{name}", value, step)
    if samples and writer is not None:
        writer.add_text(
            f"task/{tag}",
            "\n\n".join(f"`{s['prediction']}` (reference `{s['reference']}`)" for s in samples[:8]),
            step,
        )
