"""Tokenization: render each conversation through the model's own chat template, label only the assistant
replies (every other position gets IGNORE_INDEX), and truncate at max_length, skipping or refusing an
example that truncation would leave with nothing to learn."""

from __future__ import annotations

from collections import Counter

from datasets import Dataset
from jinja2 import TemplateError

from src.config import ConfigError, DataConfig
from src.data.formats import BadExample, to_messages
from src.data.loading import ORIGIN, handle_bad_example
from src.data.report import length_stats, waste_figures

IGNORE_INDEX = -100


def render(tokenizer, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
    """The conversation as the model's chat template writes it (text, not tokens)."""
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )


def assistant_spans(tokenizer, messages: list[dict[str, str]], text: str) -> list[tuple[int, int]]:
    """Character spans of each assistant reply (content plus its end-of-turn token) inside `text`.

    Works for any template that renders conversations prefix-consistently (SmolLM2, Llama 3, Qwen 2.5 …),
    so it needs no `{% generation %}` markers: the reply is what the template adds between the prompt
    with a generation header and the conversation including that reply."""
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(render(tokenizer, messages[:index], add_generation_prompt=True)) if index else 0
        upto = render(tokenizer, messages[: index + 1])
        if not text.startswith(upto):
            raise ConfigError(
                "data: this chat template does not render conversations prefix-consistently, so assistant "
                "tokens cannot be located; set data.assistant_only_loss=false or model.chat_template."
            )
        end = len(upto.rstrip())  # keep the end-of-turn token, drop the newline after it
        spans.append((start, end))
    return spans


def tokenize_example(tokenizer, example: list[dict[str, str]] | str, assistant_only_loss: bool) -> dict:
    """input_ids and labels (-100 where no loss is taken) for one conversation or plain text."""
    if isinstance(example, str):
        text = example + (tokenizer.eos_token or "")
        spans = [(0, len(text))]
    else:
        text = render(tokenizer, example)
        spans = assistant_spans(tokenizer, example, text) if assistant_only_loss else [(0, len(text))]
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids = encoding["input_ids"]
    labels = [IGNORE_INDEX] * len(input_ids)
    for position, (token_start, token_end) in enumerate(encoding["offset_mapping"]):
        if any(start <= token_start < end for start, end in spans) and token_end > token_start:
            labels[position] = input_ids[position]
    return {"input_ids": input_ids, "labels": labels}


def truncates(cfg: DataConfig, split: str) -> bool:
    """Whether the data stage cuts this split at max_length. A split TRL packs with bfd_split stays whole:
    TRL splits its long examples into pieces instead of dropping their overflow."""
    packed = cfg.packing if split == "train" else cfg.eval_packing
    return not (packed and cfg.packing_strategy == "bfd_split")


def tokenize_split(
    split: Dataset, name: str, tokenizer, cfg: DataConfig, fmt: str, skipped: Counter
) -> tuple[Dataset, list, dict]:
    """Tokenized rows, the conversations they came from, and the split's length statistics."""
    rows_out: list[dict] = []
    conversations: list = []
    lengths: list[int] = []
    answer_cut: list[tuple[str, int]] = []  # (where, length) of examples truncation leaves without answer
    truncated_targets = 0
    cut = truncates(cfg, name)
    for row in split:
        try:
            example = to_messages(row, fmt)
            try:
                tokens = tokenize_example(tokenizer, example, cfg.assistant_only_loss)
            except TemplateError as error:
                message = f"the chat template rejects this conversation ({error})"
                raise BadExample("template_error", message) from error
        except BadExample as bad:
            handle_bad_example(cfg.on_bad_example, row[ORIGIN], bad, skipped)
            continue
        length = len(tokens["input_ids"])
        lengths.append(length)
        if cut and length > cfg.max_length:
            if any(label != IGNORE_INDEX for label in tokens["labels"][cfg.max_length :]):
                truncated_targets += 1
            tokens = {key: values[: cfg.max_length] for key, values in tokens.items()}
            if all(label == IGNORE_INDEX for label in tokens["labels"]):
                answer_cut.append((row[ORIGIN], length))
                continue
        rows_out.append(tokens)
        conversations.append(example)
    if cut and lengths and min(lengths) > cfg.max_length:
        raise ConfigError(
            f"data.max_length={cfg.max_length} is shorter than every example (shortest: {min(lengths)} "
            f"tokens); raise it to at least {length_stats(lengths)['p95']}."
        )
    if answer_cut:
        if cfg.on_bad_example == "fail":
            raise ConfigError(
                f"data: {len(answer_cut)} {name} example(s) lose every answer token to truncation at "
                f"max_length={cfg.max_length} (first: {answer_cut[0][0]}); raise data.max_length to "
                f"{max(length for _, length in answer_cut)} or set data.on_bad_example=skip."
            )
        skipped["answer_truncated"] += len(answer_cut)
    if not rows_out:
        raise ConfigError(
            f"data: no usable {name} examples left (skipped: {dict(skipped) or 'none'}, "
            f"max_length={cfg.max_length}); fix the data or raise data.max_length."
        )
    stats = length_stats(lengths)
    stats["truncated_targets"] = truncated_targets
    tokenized = Dataset.from_list(rows_out)
    stats.update(waste_figures(tokenized, cfg.max_length, cfg.packing_strategy))
    return tokenized, conversations, stats
