"""Tokenization: render each conversation through the model's own chat template, label only the assistant
replies (every other position gets IGNORE_INDEX), and truncate at max_length, skipping or refusing an
example that truncation would leave with nothing to learn."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from datasets import Dataset
from jinja2 import TemplateError

from src.config import ConfigError, DataConfig
from src.data.formats import BadExample, conversation_messages, to_messages
from src.data.loading import ORIGIN, handle_bad_example
from src.data.report import length_stats, waste_figures

IGNORE_INDEX = -100


def render(tokenizer, conversation: list | dict, add_generation_prompt: bool = False) -> str:
    """The conversation (with its tools, if it declares any) as the model's chat template writes it."""
    tools = conversation.get("tools") if isinstance(conversation, dict) else None
    return tokenizer.apply_chat_template(
        conversation_messages(conversation),
        tools=tools or None,
        tokenize=False,
        add_generation_prompt=add_generation_prompt,
    )


def check_renders_tools(tokenizer, conversation: list | dict, text: str) -> None:
    """Refuse a chat template that silently drops tools or tool calls (SmolLM2's, for one): training on its
    text would teach answers without the calls. Every tool's and called function's name must appear."""
    tools = (conversation.get("tools") or []) if isinstance(conversation, dict) else []
    names = [t.get("function", t).get("name") for t in tools if isinstance(t, dict)]
    for message in conversation_messages(conversation):
        names += [call["function"]["name"] for call in message.get("tool_calls", [])]
    missing = [name for name in names if isinstance(name, str) and name not in text]
    if missing:
        template = Path(getattr(tokenizer, "name_or_path", "") or "the tokenizer").name
        raise ConfigError(
            f"data: the chat template of {template} does not render tools or tool calls ({missing[0]!r} is "
            "missing from its text); set model.chat_template to a template that renders them (the model's "
            "own tool-calling template, e.g. Qwen 2.5's or Llama 3.1's)."
        )


def assistant_spans(tokenizer, conversation: list | dict, text: str) -> list[tuple[int, int]]:
    """Character spans of each assistant reply (content plus its end-of-turn token) inside `text`.

    Works for any template that renders conversations prefix-consistently (SmolLM2, Llama 3, Qwen 2.5 …),
    so it needs no `{% generation %}` markers: the reply is what the template adds between the prompt
    with a generation header and the conversation including that reply."""
    spans = []
    messages = conversation_messages(conversation)
    tools = {"tools": conversation["tools"]} if isinstance(conversation, dict) else {}
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = {"messages": messages[:index], **tools}
        start = len(render(tokenizer, before, add_generation_prompt=True)) if index else 0
        upto = render(tokenizer, {"messages": messages[: index + 1], **tools})
        if not text.startswith(upto):
            raise ConfigError(
                "data: this chat template does not render conversations prefix-consistently, so assistant "
                "tokens cannot be located; set data.assistant_only_loss=false or model.chat_template."
            )
        end = len(upto.rstrip())  # keep the end-of-turn token, drop the newline after it
        spans.append((start, end))
    return spans


def tokenize_example(tokenizer, example: list | dict | str, assistant_only_loss: bool) -> dict:
    """input_ids and labels (-100 where no loss is taken) for one conversation or plain text."""
    if isinstance(example, str):
        text = example + (tokenizer.eos_token or "")
        spans = [(0, len(text))]
    else:
        text = render(tokenizer, example)
        check_renders_tools(tokenizer, example, text)
        spans = assistant_spans(tokenizer, example, text) if assistant_only_loss else [(0, len(text))]
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    cuts = {cut for span in spans for cut in span}
    if any(start < cut < end for start, end in encoding["offset_mapping"] for cut in cuts):
        pieces = tokenize_at_span_edges(tokenizer, text, spans, encoding["input_ids"])
        if pieces is not None:
            return pieces
    # Labelled: every token that overlaps an answer. Where a token straddles the answer's edge and the text
    # cannot be cut there, it is labelled too, so the answer stays whole (docs/background.md).
    input_ids = encoding["input_ids"]
    labels = [IGNORE_INDEX] * len(input_ids)
    for position, (token_start, token_end) in enumerate(encoding["offset_mapping"]):
        if any(token_start < end and token_end > start for start, end in spans) and token_end > token_start:
            labels[position] = input_ids[position]
    return {"input_ids": input_ids, "labels": labels}


def tokenize_at_span_edges(
    tokenizer, text: str, spans: list[tuple[int, int]], whole: list[int]
) -> dict | None:
    """The text tokenized piece by piece, cut at every answer's start and end, with the answer pieces
    labelled; None if the pieces do not decode to the same text as the whole (a tokenizer that adds a
    prefix space to every piece, for one).

    Needed where a token would straddle an answer's edge: SmolLM2's template ends the prompt with "\n" and
    an answer "\n\nSure." starts with "\n", which the tokenizer merges into one token of the prompt. Cut
    there, every character of the answer is labelled and the prompt's tokens are those of the inference
    prompt (rendered with add_generation_prompt=True) on their own."""
    edges = [0, *(edge for span in spans for edge in span), len(text)]
    pieces = [text[start:end] for start, end in zip(edges, edges[1:])]
    input_ids: list[int] = []
    labels: list[int] = []
    for index, ids in enumerate(tokenizer(pieces, add_special_tokens=False)["input_ids"]):
        input_ids += ids
        labels += ids if index % 2 else [IGNORE_INDEX] * len(ids)  # odd pieces are the answers
    if tokenizer.decode(input_ids) != tokenizer.decode(whole):
        return None
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
