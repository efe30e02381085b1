"""Dataset formats: tell messages / sharegpt / prompt_completion / alpaca / text apart by their columns and turn
one row of any of them into chat messages (or plain text), refusing a row that cannot be trained on.

A conversation is a list of messages; one that declares tools (OpenAI-style tool calling: a `tools` column,
assistant `tool_calls`, `tool` messages) is `{"messages": [...], "tools": [...]}`, so the chat template gets
the tools too (src/data/tokenization.py)."""

from __future__ import annotations

import json
from typing import Any

from src.config import ConfigError

ROLES = {"system", "user", "assistant", "tool"}
# ShareGPT speakers (as FastChat, axolotl and LLaMA-Factory write them) -> chat roles; LLaMA-Factory's
# function_call is an assistant turn whose value is the call as JSON ({"name": …, "arguments": …})
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
    "tool": "tool",
    "function": "tool",
    "observation": "tool",
    "function_call": "assistant",
}

FORMAT_COLUMNS = {
    "messages": {"messages"},
    "sharegpt": {"conversations"},
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


def _json_value(value: Any, column: str) -> Any:
    """A column that some tools store as a JSON string (ShareGPT `tools`, OpenAI `arguments`)."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        raise BadExample("malformed_json", f"`{column}` is a string but not JSON: {value!r:.80}") from None


def _sharegpt_messages(row: dict[str, Any]) -> list:
    turns = row.get("conversations")
    if not isinstance(turns, list):
        raise BadExample("non_string_content", f"`conversations` must be a list of turns, got {turns!r:.80}")
    messages = [{"role": "system", "content": row["system"]}] if isinstance(row.get("system"), str) else []
    for turn in turns:
        if not isinstance(turn, dict) or "from" not in turn:
            raise BadExample("missing_from", f"a ShareGPT turn needs `from` and `value`, got {turn!r:.120}")
        speaker = turn["from"]
        if speaker not in SHAREGPT_ROLES:
            raise BadExample(
                "unknown_role", f"unknown ShareGPT speaker {speaker!r}; use {', '.join(SHAREGPT_ROLES)}"
            )
        if speaker == "function_call":
            call = _json_value(turn.get("value"), "value")
            messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        else:
            messages.append({"role": SHAREGPT_ROLES[speaker], "content": turn.get("value")})
    return messages


def _tool_call(call: Any) -> dict[str, Any]:
    """One call as chat templates read it: {"type": "function", "function": {"name", "arguments": dict}}."""
    function = call.get("function", call) if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise BadExample("bad_tool_call", f"a tool call needs a function name, got {call!r:.120}")
    arguments = _json_value(function.get("arguments", {}), "arguments")
    if not isinstance(arguments, dict):
        raise BadExample("bad_tool_call", f"tool call arguments must be an object, got {arguments!r:.80}")
    normalised = {"type": "function", "function": {"name": function["name"], "arguments": arguments}}
    if isinstance(call, dict) and isinstance(call.get("id"), str):
        normalised["id"] = call["id"]
    return normalised


def _checked(messages: list) -> list[dict[str, Any]]:
    """Each message's role, content and tool fields checked; tool results only after a tool call."""
    checked, calls = [], 0
    for message in messages:
        if not isinstance(message, dict):
            raise BadExample("non_string_content", f"message must be an object, got {message!r:.120}")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise BadExample("unknown_role", f"unknown role {role!r}; use system, user, assistant or tool")
        tool_calls = message.get("tool_calls") if role == "assistant" else None
        if tool_calls and content is None:
            content = ""  # an assistant turn that only calls tools
        if not isinstance(content, str):
            raise BadExample("non_string_content", f"message content must be a string, got {message!r:.120}")
        out: dict[str, Any] = {"role": role, "content": content}
        if tool_calls:
            if not isinstance(tool_calls, list):
                raise BadExample("bad_tool_call", f"`tool_calls` must be a list, got {tool_calls!r:.80}")
            out["tool_calls"] = [_tool_call(call) for call in tool_calls]
            calls += len(tool_calls)
        if role == "tool":
            if not calls:
                raise BadExample("tool_before_call", "a tool message comes before any assistant tool call")
            out.update({k: message[k] for k in ("name", "tool_call_id") if isinstance(message.get(k), str)})
        checked.append(out)
    return checked


def to_messages(row: dict[str, Any], fmt: str) -> list[dict[str, Any]] | dict[str, Any] | str:
    """One row as chat messages (with its tools: {"messages", "tools"}), or for plain `text` the text itself;
    raises BadExample if unusable."""
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
    elif fmt == "sharegpt":
        messages = _sharegpt_messages(row)
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
    messages = _checked(messages)
    if not any(m["role"] == "assistant" for m in messages):
        raise BadExample("no_assistant_turn", "the conversation has no assistant turn to learn from")
    return _with_tools(messages, row.get("tools")) if fmt in ("messages", "sharegpt") else messages


def _with_tools(messages: list[dict[str, Any]], tools: Any) -> list[dict[str, Any]] | dict[str, Any]:
    tools = _json_value(tools, "tools")
    if not tools:
        return messages
    if not isinstance(tools, list):
        raise BadExample("bad_tool_call", f"`tools` must be a list of tool schemas, got {tools!r:.80}")
    return {"messages": messages, "tools": tools}


def to_prompt(row: dict[str, Any]) -> list[dict[str, Any]] | dict[str, Any]:
    """A conversation to continue ({"messages", "tools"?}, as src.chat's prompts file holds it), checked and
    normalised as a training row is, with its tools; raises BadExample if unusable."""
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadExample("empty_conversation", f"`messages` must be a non-empty list, got {messages!r:.80}")
    return _with_tools(_checked(messages), row.get("tools"))


def conversation_messages(conversation: list | dict) -> list[dict[str, Any]]:
    """The messages of a conversation, with or without tools."""
    return conversation["messages"] if isinstance(conversation, dict) else conversation
