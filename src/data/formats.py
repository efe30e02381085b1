"""Dataset formats: tell messages / prompt_completion / alpaca / text apart by their columns and turn one row
of any of them into chat messages (or plain text), refusing a row that cannot be trained on."""

from __future__ import annotations

import json
from typing import Any

from src.config import ConfigError

ROLES = {"system", "user", "assistant"}

FORMAT_COLUMNS = {
    "messages": {"messages"},
    "prompt_completion": {"prompt", "completion"},
    "alpaca": {"instruction", "output"},
    "text": {"text"},
}
# Rows read from local files carry the row itself as JSON in this column (see src/data/loading.py), so rows
# whose value types differ never meet Arrow's one-type columns; `to_messages` decodes it.
ROW_JSON = "_row_json"


class BadExample(ConfigError):
    """One example the data stage cannot train on; `reason` is the count it adds to when skipped."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def detect_format(columns: list[str], configured: str) -> str:
    """The dataset format named in the config, or the first one whose columns are all present."""
    if configured != "auto":
        missing = FORMAT_COLUMNS[configured] - set(columns)
        if missing:
            raise ConfigError(
                f"data.format={configured} needs columns {sorted(FORMAT_COLUMNS[configured])}; "
                f"missing {sorted(missing)} (found {sorted(columns)})."
            )
        return configured
    for name, needed in FORMAT_COLUMNS.items():
        if needed <= set(columns):
            return name
    expected = ", ".join("/".join(sorted(c)) for c in FORMAT_COLUMNS.values())
    raise ConfigError(
        f"data: cannot tell the format from columns {sorted(columns)}; expected one of: {expected}."
    )


def _as_messages(value: Any, role: str, column: str) -> list:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, list):
        return value
    raise BadExample(
        "non_string_content", f"`{column}` must be a string or a list of messages, got {value!r:.80}"
    )


def to_messages(row: dict[str, Any], fmt: str) -> list[dict[str, str]] | str:
    """One row as chat messages (or, for plain `text`, the text itself); raises BadExample if unusable."""
    if ROW_JSON in row:
        row = json.loads(row[ROW_JSON])
    if fmt == "text":
        text = row.get("text")
        if not isinstance(text, str):
            raise BadExample("non_string_content", f"`text` must be a string, got {text!r:.80}")
        if not text.strip():
            raise BadExample("empty_text", "`text` is empty")
        return text
    if fmt == "messages":
        messages = row.get("messages") or []
        if not isinstance(messages, list):
            raise BadExample(
                "non_string_content", f"`messages` must be a list of messages, got {messages!r:.80}"
            )
    elif fmt == "prompt_completion":
        messages = _as_messages(row.get("prompt"), "user", "prompt") + _as_messages(
            row.get("completion"), "assistant", "completion"
        )
    else:
        prompt, extra = row.get("instruction"), row.get("input")
        if extra:  # an empty or missing input means the instruction alone
            if not (isinstance(prompt, str) and isinstance(extra, str)):
                raise BadExample(
                    "non_string_content",
                    f"`instruction` and `input` must be strings, got {prompt!r:.40} and {extra!r:.40}",
                )
            prompt = f"{prompt}\n\n{extra}"
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": row.get("output")}]
    if not messages:
        raise BadExample("empty_conversation", "empty conversation")
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise BadExample("non_string_content", f"message content must be a string, got {message!r:.120}")
        if message.get("role") not in ROLES:
            raise BadExample(
                "unknown_role", f"unknown role {message.get('role')!r}; use system, user or assistant"
            )
    if not any(m["role"] == "assistant" for m in messages):
        raise BadExample("no_assistant_turn", "the conversation has no assistant turn to learn from")
    return [{"role": m["role"], "content": m["content"]} for m in messages]
