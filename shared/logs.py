"""Logging set-up: one line per event, key facts first; JSON lines with SONGPOP_LOG_FORMAT=json.

Every line goes through a redaction filter: the configured secrets (Spotify client secret, the passwords
in the database and broker URLs, in any form a library might print them) are replaced by stars, so a
third-party exception message quoting a URL or an auth header cannot leak them.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import os
import sys
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from pydantic import BaseModel, SecretStr

QUIET = ("httpx", "httpcore", "aiosqlite", "asyncio", "amqtt", "transitions", "uvicorn.access", "alembic")
MASK = "****"
MIN_SECRET_LENGTH = 4  # shorter values would mask ordinary words
# Attributes every LogRecord has; anything else was passed with `extra=` and goes into the JSON line.
STANDARD_ATTRIBUTES = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's copy of the message with terminal colour codes
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, `extra=` fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in STANDARD_ATTRIBUTES and not key.startswith("_"):
                entry[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False, default=str)


class RedactSecrets(logging.Filter):
    """Replaces every known secret in a record's message, arguments and exception text."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        clean = self.redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        return True


def secret_values(settings: BaseModel) -> list[str]:
    """Every secret in `settings` in the forms it may be printed: as is, URL-encoded, in basic auth."""
    found: list[str] = []
    for name, value in settings:
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
        elif isinstance(value, str) and name.endswith("_url") and urlsplit(value).password:
            found.append(urlsplit(value).password or "")
    client_id = getattr(settings, "spotify_client_id", None)
    secret = getattr(settings, "spotify_client_secret", None)
    if client_id and isinstance(secret, SecretStr):
        found.append(base64.b64encode(f"{client_id}:{secret.get_secret_value()}".encode()).decode())
    return [form for value in found for form in {value, unquote(value), quote(value, safe="")}]


def setup(level: str = "INFO", *, secrets: Iterable[str] = ()) -> None:
    """Configure the root logger once per process (idempotent); `secrets` are masked in every line."""
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("SONGPOP_LOG_FORMAT") == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    handler.addFilter(RedactSecrets(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in QUIET:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
