"""Every secret the process knows (the API key in use, and environment variables named like secrets) is
replaced by REDACTED in whatever polyret writes or prints: error messages from servers (which may echo the
Authorization header), rejected-reply files, logs and the one-line job errors."""

from __future__ import annotations

import os
import re
from typing import Any

REDACTED = "[REDACTED]"
_SECRETS: set[str] = set()
_SECRET_ENV_NAME = re.compile(r"(^|_)(API_?KEY|KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?|AUTH)$", re.IGNORECASE)
_MIN_SECRET_CHARS = 6  # shorter values would redact ordinary words


def register_secret(value: str | None) -> None:
    if value and len(value) >= _MIN_SECRET_CHARS and value != "EMPTY":
        _SECRETS.add(value)


def register_env_secrets(environ: dict[str, str] | None = None) -> None:
    """Register the values of environment variables whose names look like secrets (…_API_KEY, …_TOKEN)."""
    for name, value in (os.environ if environ is None else environ).items():
        if _SECRET_ENV_NAME.search(name):
            register_secret(value)


def redact(text: Any) -> Any:
    """`text` with every known secret replaced (non-strings are returned as they are)."""
    if not isinstance(text, str) or not _SECRETS:
        return text
    for secret in sorted(_SECRETS, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text
