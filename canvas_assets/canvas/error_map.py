"""Pure error mapping of the client: a Canvas response or a transport failure -> a typed CanvasAPIError
(docs/canvas-api.md §5). Every `url` given must already be token-free; Canvas's own error text is
redacted with the `secrets` given, once decoded."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import requests
import urllib3

from canvas_assets.canvas.budget import Deadline
from canvas_assets.canvas.redact import redact
from canvas_assets.canvas.retry import is_throttle
from canvas_assets.canvas.transport import BodyTooLarge, BodyTooSlow
from canvas_assets.canvas.urls import BASE_URL_ENV, TOKEN_ENV
from canvas_assets.errors import (
    CanvasAPIError,
    CanvasAuthError,
    CanvasBadRequest,
    CanvasConnectionError,
    CanvasNotFound,
    CanvasPermissionError,
    CanvasRequestRefused,
    CanvasServerError,
    CanvasThrottled,
    CanvasTimeout,
)


def canvas_error_text(body: str, *, limit: int = 300, secrets: Iterable[str] = ()) -> str:
    """Canvas's own error text, whatever its shape: `errors` as a list or a dict, `error`, `message`.

    The text is what is shown, so `secrets` are redacted from it once decoded (and before it is cut to
    `limit`, which could otherwise leave the first characters of a token standing).
    """
    secrets = tuple(secrets)
    text = body.strip()
    try:
        payload = json.loads(text) if text else None
    except ValueError:
        payload = None
    messages: list[str] = []

    def collect(value: Any, prefix: str = "") -> None:
        if isinstance(value, str):
            messages.append(f"{prefix}{value}")
        elif isinstance(value, dict):
            if "message" in value and isinstance(value["message"], str):
                messages.append(f"{prefix}{value['message']}")
            else:
                for key, sub in value.items():
                    if key in ("error_code", "attribute", "type"):
                        continue
                    collect(sub, f"{prefix}{key}: ")
        elif isinstance(value, list):
            for item in value:
                collect(item, prefix)

    if isinstance(payload, dict):
        for key in ("errors", "error", "message"):
            if key in payload:
                collect(payload[key])
                if messages:
                    break
    elif isinstance(payload, str):
        collect(payload)
    elif isinstance(payload, list):
        # Only what reads as an error: a list body may be records (a proxy answering 500 with a page of
        # submissions), and student data has no place in an error message, a log or the sync log.
        for item in payload:
            if isinstance(item, str):
                messages.append(item)
            elif isinstance(item, dict):
                for key in ("message", "error"):
                    if isinstance(item.get(key), str):
                        messages.append(item[key])
                        break
    is_error_object = isinstance(payload, dict) and any(k in payload for k in ("errors", "error", "message"))
    if not messages and (payload is None or is_error_object):
        # Plain text (the legacy throttle's "403 Forbidden (Rate Limit Exceeded)") or an error object whose
        # text is in no field we know, as it is; never an HTML page, never a body of records.
        messages = [" ".join(text.split())] if text and not text.startswith("<") else []
    joined = redact("; ".join(m.strip() for m in messages if m and m.strip()), secrets)
    return joined[:limit] + ("…" if len(joined) > limit else "")


_AUTH_CAUSES = (
    "invalid access token",
    "revoked",
    "expired",
    "user authorization required",
    "unauthenticated",
)


# What a 403 says when it *is* about permission (or says nothing): Canvas's `render_unauthorized_action`
# ("user not authorized to perform that action", status "unauthorized"), a bare "Forbidden", restricted
# access, a developer key's missing scopes.
_PERMISSION_WORDS = (
    "unauthorized",
    "not authorized",
    "forbidden",
    "permission",
    "not allowed",
    "access denied",
    "restricted",
    "scope",
)


def _is_refused_request(body: str, detail: str) -> bool:
    """A 403 whose JSON `error`/`errors` text is not about permission: Canvas refused the request itself
    (`{"error": "invalid assignment ids requested"}` from submissions/for_students). Plain-text and empty
    403s, and any that mention authorization, stay permission refusals."""
    try:
        payload = json.loads(body) if body.strip() else None
    except ValueError:
        return False
    if not isinstance(payload, dict) or not detail or not ({"error", "errors"} & payload.keys()):
        return False
    said = f"{detail} {payload.get('status', '')}".lower()
    return not any(word in said for word in _PERMISSION_WORDS)


def error_for_response(
    status: int,
    body: str,
    *,
    method: str,
    url: str,
    secrets: Iterable[str] = (),
) -> CanvasAPIError:
    """The typed error for a Canvas error response. `url` must already be token-free; Canvas's text
    from `body` is shown with `secrets` redacted after decoding."""
    detail = canvas_error_text(body, secrets=secrets)
    lowered = body.lower()
    where = f"{method} {url}"
    kwargs: dict[str, Any] = {"status": status, "method": method, "url": url}
    if is_throttle(status, body):
        return CanvasThrottled(
            f"Canvas throttled the request ({status} {detail or 'Rate Limit Exceeded'}): the token's "
            f"rate-limit bucket is full; {where}",
            **kwargs,
        )
    if status == 401:
        # Canvas answers 401 both for a bad token and for "authenticated but not allowed".
        if "unauthorized" in lowered and not any(c in lowered for c in _AUTH_CAUSES):
            return CanvasPermissionError(
                f"The Canvas token is not permitted to do this ({detail or 'unauthorized'}): {where}; the "
                "token's user needs the matching permission in Canvas",
                **kwargs,
            )
        if "user authorization required" in lowered or "unauthenticated" in lowered:
            return CanvasAuthError(
                f"Canvas did not recognise the request as authenticated "
                f"({detail or 'user authorization required'}): check {TOKEN_ENV}; {where}",
                **kwargs,
            )
        return CanvasAuthError(
            f"Canvas rejected the access token ({detail or 'Invalid access token.'}): check {TOKEN_ENV} "
            f"(it may be invalid, revoked or expired); {where}",
            **kwargs,
        )
    if status == 403 and _is_refused_request(body, detail):
        return CanvasRequestRefused(
            f"Canvas refused the request as invalid (403 {detail}): {where}; this is a request canvas-assets "
            "should not have made (not a missing permission): please report it",
            **kwargs,
        )
    if status == 403:
        return CanvasPermissionError(
            f"Canvas refused the request (403 {detail or 'Forbidden'}): {where}; the token's user lacks the "
            "permission",
            **kwargs,
        )
    if status == 404:
        return CanvasNotFound(f"Canvas has no such resource (404 {detail or 'Not Found'}): {where}", **kwargs)
    if status in (400, 422):
        return CanvasBadRequest(
            f"Canvas rejected the request ({status} {detail or 'Bad Request'}): {where}", **kwargs
        )
    if status == 408:
        return CanvasTimeout(f"Canvas timed out the request (408): {where}", **kwargs)
    if 500 <= status <= 599:
        return CanvasServerError(
            f"Canvas failed with {status} ({detail or 'server error'}): {where}", **kwargs
        )
    return CanvasAPIError(f"Canvas answered {status} ({detail or 'unexpected status'}): {where}", **kwargs)


def _is_read_timeout(exc: BaseException) -> bool:
    """requests raises ConnectionError (not ReadTimeout) when the timeout strikes while reading the body."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, requests.Timeout | urllib3.exceptions.TimeoutError):
            return True
        nested = [a for a in getattr(current, "args", ()) if isinstance(a, BaseException)]
        reason = getattr(current, "reason", None)
        current = (
            nested[0] if nested else (reason if isinstance(reason, BaseException) else current.__cause__)
        )
    return False


def error_for_transport(exc: Exception, *, method: str, url: str, read_timeout: float) -> CanvasAPIError:
    """The typed error for an exchange that produced no usable response (a urllib3 or requests error)."""
    if isinstance(exc, requests.ConnectTimeout | urllib3.exceptions.ConnectTimeoutError):
        return CanvasTimeout(f"Connecting to Canvas timed out: {method} {url}", method=method, url=url)
    if _is_read_timeout(exc):
        return CanvasTimeout(
            f"Canvas did not answer within {read_timeout:g} s: {method} {url}", method=method, url=url
        )
    kind = type(exc).__name__
    return CanvasConnectionError(
        f"The connection to Canvas failed or was dropped ({kind}): {method} {url}", method=method, url=url
    )


def error_for_redirect(status: int, location: str, *, method: str, url: str) -> CanvasAPIError:
    """A 3xx: the client never follows redirects (the token would go along). `location` token-free."""
    return CanvasAPIError(
        f"Canvas redirected {method} {url} to {location}: check {BASE_URL_ENV} "
        "(https, and the instance's own host name)",
        status=status,
        method=method,
        url=url,
    )


def error_for_unparsable(status: int, content_type: str, *, url: str) -> CanvasAPIError:
    """A 2xx whose body is not JSON: an HTML page (wrong base URL) or a cut-off body (retried)."""
    if "html" in content_type.lower():
        # A login or landing page: the base URL points at something that is not the Canvas API.
        return CanvasAPIError(
            f"Canvas answered GET {url} with an HTML page instead of JSON: check {BASE_URL_ENV}",
            status=status,
            url=url,
            recoverable=False,
        )
    return CanvasConnectionError(
        f"Canvas's response to GET {url} was cut off or is not valid JSON", status=status, url=url
    )


def error_for_exchange(
    exc: Exception, *, url: str, read_timeout: float, deadline: Deadline | None, secrets: Iterable[str] = ()
) -> CanvasAPIError:
    """The error of an exchange that failed before its body was read (`url` token-free): past the deadline
    (raised: no retry), a body over the size limit (final), or a transport failure (retried when
    recoverable)."""
    if isinstance(exc, BodyTooSlow) and deadline is not None:
        raise deadline.expired(f"reading the answer to GET {url} ({exc.received} bytes had arrived)", url=url)
    if isinstance(exc, BodyTooLarge):
        return CanvasAPIError(
            f"Canvas's answer to GET {url} is over {exc.limit // (1024 * 1024)} MB once decompressed, "
            "far more than any Canvas page: the request fails (a fault or a hostile server)",
            url=url,
            recoverable=False,
        )
    if isinstance(exc, urllib3.exceptions.HTTPError | requests.RequestException):
        return error_for_transport(exc, method="GET", url=url, read_timeout=read_timeout)
    # Anything else from the HTTP stack may quote headers: redact it.
    return CanvasConnectionError(
        f"{type(exc).__name__} while calling Canvas: {redact(str(exc), secrets)}",
        method="GET",
        url=url,
        recoverable=False,
    )
