"""Keeping the Canvas token out of logs, exception messages and metrics (docs/canvas-api.md §6).

Everything user-visible goes through `redact` (which looks through JSON, %- and HTML escapes), and the
`RedactingFilter` scrubs the client's and the HTTP stack's log records as a last line of defence.
"""

from __future__ import annotations

import html
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

REDACTED = "[REDACTED]"

# Query parameters that carry credentials (Canvas accepts `access_token=` as well as the header).
_SECRET_PARAMS = {"access_token", "token", "api_key", "client_secret"}
_BEARER_RE = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9~._+/=-]+")


_JSON_ESCAPE_RE = re.compile(r"\\u([0-9a-fA-F]{4})|\\x([0-9a-fA-F]{2})|\\([/\\\"'])")


def _unescape_json(text: str) -> str:
    """`\\uXXXX`, `\\xXX`, `\\/`, `\\\\` and `\\"` decoded; surrogates stay escaped (they cannot be
    shown on their own, and no token contains one)."""

    def one(m: re.Match[str]) -> str:
        code = int(m.group(1) or m.group(2), 16) if (m.group(1) or m.group(2)) else None
        if code is None:
            return m.group(3)
        return m.group(0) if 0xD800 <= code <= 0xDFFF else chr(code)

    return _JSON_ESCAPE_RE.sub(one, text)


# The encodings a secret may hide in, each tried only when the text carries its escape character.
_DECODERS: tuple[tuple[str, Callable[[str], str]], ...] = (
    ("\\", _unescape_json),
    ("%", unquote),
    ("&", html.unescape),
)


def _replace(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every occurrence of each secret, and any `Bearer <token>` credential, replaced.

    A secret that appears only once the text is decoded (a JSON `\\u` escape, a %-escape, an HTML
    character reference, or several of them nested) is found too: the text is then shown decoded, as a
    reader would read it, with the secret replaced.
    """
    ordered = sorted({s for s in secrets if s}, key=len, reverse=True)
    text = _replace(text, ordered)
    if ordered:
        decoded = text
        for _ in range(3):  # nested encodings (a %-escaped JSON escape...), a few levels deep
            before = decoded
            for marker, decode in _DECODERS:
                if marker in decoded:
                    decoded = decode(decoded)
            if decoded == before:
                break
        if decoded != text and any(secret in decoded for secret in ordered):
            text = _replace(decoded, ordered)
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


_PLAIN_HOST_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]")
_PORT_RE = re.compile(r"[0-9]{1,5}")


def redact_base_url(value: str) -> str:
    """What a configuration error may show of a base URL: `scheme://host[:port]`, nothing else.

    `urlsplit` cuts a pasted `https://admin:hun#ter2@host` at the `#`, so `redact_url` could not tell the
    password from a port, fragment, query or path (issue 21). Here any `@` ends a userinfo; a non-numeric
    port, a path, a query and a fragment are never shown; without a plain host, nothing is ("").
    """
    text = value.strip()
    scheme, sep, rest = text.partition("://")
    if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
        # No scheme: a bare host name is shown (the usual mistake), anything else could be a password.
        host = text.rstrip("/")
        return host if "." in host and _PLAIN_HOST_RE.fullmatch(host) else ""
    authority = rest.rsplit("@", 1)[-1]
    authority = re.split(r"[/?#]", authority, maxsplit=1)[0]
    host, colon, port = authority.rpartition(":") if not authority.endswith("]") else (authority, "", "")
    if not colon:
        host, port = authority, ""
    if not _PLAIN_HOST_RE.fullmatch(host):
        return ""
    shown_port = f":{port}" if port and _PORT_RE.fullmatch(port) else ""
    return f"{scheme}://{host}{shown_port}"


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

# The HTTP stack's loggers, whose warnings quote URLs, headers and exceptions (docs/canvas-api.md §6). A
# logger's filters skip its children's records, so each urllib3 module's logger gets the filter (urllib3 2.x
# names them after its modules); `py.warnings` carries `warnings.warn` once `logging.captureWarnings` is on.
HTTP_STACK_LOGGERS = (
    "urllib3",
    "urllib3.connection",
    "urllib3.connectionpool",
    "urllib3.poolmanager",
    "urllib3.response",
    "urllib3.util.retry",
    "urllib3.http2.connection",
    "urllib3.contrib.pyopenssl",
    "requests",
    "py.warnings",
)


def install_redaction(logger_name: str = "canvas_assets.canvas") -> RedactingFilter:
    """Attach `TOKEN_FILTER` to the named logger and to the HTTP stack's loggers (idempotent); return it."""
    with _install_lock:
        for name in (logger_name, *HTTP_STACK_LOGGERS):
            if name not in _installed:
                logging.getLogger(name).addFilter(TOKEN_FILTER)
                _installed.add(name)
    return TOKEN_FILTER


def redact_known(text: str) -> str:
    """`text` with every token a client of this process has registered replaced: for free text from
    anywhere (errors of other libraries, run failure messages) before it is logged, stored or posted."""
    env_token = os.environ.get("CANVAS_API_TOKEN", "").strip()
    return redact(text, TOKEN_FILTER.secrets | ({env_token} if env_token else set()))
