"""Keep secrets out of everything a run writes: saved configs, logs, TensorBoard text and reports.

Secrets are: the password part of URLs (postgresql://user:PASSWORD@host/db), the whole values of keys whose
name says token/key/password/secret/pat (or is one of the usual database variables: PGPASSWORD, MYSQL_PWD,
DATABASE_URL), and the values of environment variables with such names (HF_TOKEN, GITHUB_PAT …)."""

from __future__ import annotations

import logging
import os
import re

MASK = "***"
# a name whose last component is token/key/password/secret: HF_TOKEN, api_key, db.password …
# (pwd and pat only after a separator: MYSQL_PWD, GITHUB_PAT are secrets; the shell's PWD is a folder)
SECRET_NAME = re.compile(
    r"(?:(?:^|[_.\-])(?:token|key|apikey|password|passwd|secret)|[_.\-](?:pwd|pat)|^(?:pgpassword|database_url))$",
    re.IGNORECASE,
)
# a mask that is a whole YAML value must be quoted: a bare *** would read as an alias
BARE_MASK_VALUE = re.compile(r"(?m)(^[ \t]*-[ \t]+|:[ \t]+)\*\*\*(?=[ \t]*$)")
NOT_SECRET = re.compile(r"(?:^|[_.\-])(?:pad|eos|bos|unk|sep|cls|mask)_token$", re.IGNORECASE)
URL_PASSWORD = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s'\"]+:)([^@\s'\"]+)(@)")
# key: value / key=value / "key": "value"; a quoted value is masked whole, spaces included
KEY_VALUE = re.compile(
    r"(?P<key>[\w.-]+)(?P<sep>[\"']?[ \t]*[:=][ \t]*)(?P<value>\"[^\"\n]*\"|'[^'\n]*'|[^\s'\",}\]]+)"
)
EMPTY = {"null", "None", "none", "~", "<HUB_TOKEN>", MASK}


def is_secret_name(name: str) -> bool:
    return bool(SECRET_NAME.search(name)) and not NOT_SECRET.search(name)


def _secret_env_values() -> list[str]:
    return [v for k, v in os.environ.items() if is_secret_name(k) and len(v) >= 6]


def _mask_value(match: re.Match) -> str:
    value = match["value"]
    if is_secret_name(match["key"]) and value.strip("\"'") not in EMPTY:
        quote = value[0] if value[0] in "\"'" else ""
        return f"{match['key']}{match['sep']}{quote}{MASK}{quote}"
    return match.group(0)


def redact(text: str) -> str:
    """The text with every recognisable secret replaced by ***."""
    text = URL_PASSWORD.sub(rf"\g<1>{MASK}\g<3>", text)
    text = KEY_VALUE.sub(_mask_value, text)
    for value in _secret_env_values():
        text = text.replace(value, MASK)
    return BARE_MASK_VALUE.sub(rf"\g<1>'{MASK}'", text)


def install_log_redaction() -> None:
    """Redact every log record at creation, whatever handlers Hydra configures later."""
    factory = logging.getLogRecordFactory()
    if getattr(factory, "redacting", False):
        return

    def make_record(*args, **kwargs):
        record = factory(*args, **kwargs)
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        return record

    make_record.redacting = True
    logging.setLogRecordFactory(make_record)
