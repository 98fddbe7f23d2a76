"""Keeping the Canvas token out of logs, exception messages and metrics.

The client never puts the token in a URL (it travels only in the `Authorization` header), but a
token pasted into CANVAS_BASE_URL, an `access_token=` query parameter or an echo in an error body
would otherwise end up in a log line: everything user-visible goes through `redact` first, and the
`RedactingFilter` scrubs every record of the `canvas_assets.canvas` logger as a last line of defence.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED = "[REDACTED]"

# Query parameters that carry credentials (Canvas accepts `access_token=` as well as the header).
_SECRET_PARAMS = {"access_token", "token", "api_key", "client_secret"}
_BEARER_RE = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9~._+/=-]+")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every occurrence of each secret, and any `Bearer <token>` credential, replaced."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return _BEARER_RE.sub(lambda m: m.group(1) + REDACTED, text)


def redact_url(url: str, secrets: Iterable[str] = ()) -> str:
    """A URL safe to show: no userinfo password, no credential query parameters, no known secret."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact(url, secrets)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rsplit('@', 1)[1]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k.lower() in _SECRET_PARAMS for k, _ in pairs):
            query = urlencode(
                [(k, REDACTED if k.lower() in _SECRET_PARAMS else v) for k, v in pairs], safe="[]:"
            )
    return redact(urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment)), secrets)


class RedactingFilter(logging.Filter):
    """A logging filter that rewrites each record's message (and traceback) with the secrets redacted.

    Attach it to a logger or a handler; `add_secret` registers a token (clients do that themselves).
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._secrets: set[str] = {s for s in secrets if s}

    def add_secret(self, secret: str) -> None:
        if secret:
            with self._lock:
                self._secrets.add(secret)

    @property
    def secrets(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self.secrets
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: keep the raw template rather than drop the record
            message = str(record.msg)
        record.msg = redact(message, secrets)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, secrets)
        return True


# The filter every client registers its token with; `install_redaction` puts it on the package logger.
TOKEN_FILTER = RedactingFilter()
_installed: set[str] = set()
_install_lock = threading.Lock()


def install_redaction(logger_name: str = "canvas_assets.canvas") -> RedactingFilter:
    """Attach `TOKEN_FILTER` to the named logger (idempotent) and return it."""
    with _install_lock:
        if logger_name not in _installed:
            logging.getLogger(logger_name).addFilter(TOKEN_FILTER)
            _installed.add(logger_name)
    return TOKEN_FILTER


def redact_known(text: str) -> str:
    """`text` with every token a client of this process has registered replaced: for free text from
    anywhere (errors of other libraries, run failure messages) before it is logged, stored or posted."""
    env_token = os.environ.get("CANVAS_API_TOKEN", "").strip()
    return redact(text, TOKEN_FILTER.secrets | ({env_token} if env_token else set()))
