"""Pure URL rules of the client: the base URL it accepts, what "same origin" means, `Link` headers.

No I/O and no state: table-driven tests cover them (canvas_assets_tests/test_canvas_urls.py).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from urllib.parse import quote, urljoin, urlsplit

from canvas_assets.canvas.redact import redact_base_url, redact_url
from canvas_assets.errors import CanvasAPIError, ConfigurationError

BASE_URL_ENV = "CANVAS_BASE_URL"
TOKEN_ENV = "CANVAS_API_TOKEN"

Params = list[tuple[str, str]]
Origin = tuple[str, str, int | None]


def is_loopback(host: str) -> bool:
    """`localhost` (and `*.localhost`) or a loopback IP address, bracketed IPv6 included."""
    if host.lower() in ("localhost", "localhost.localdomain") or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def normalize_base_url(base_url: str | None) -> str:
    """The instance root without a trailing slash or `/api/v1` (`https://school.instructure.com`).

    Accepts both `https://host` and `https://host/api/v1/`. Refuses `http://` except on loopback, and
    credentials however they are pasted; errors show the value only as `redact_base_url` allows
    (docs/canvas-api.md §6).
    """
    if base_url is None or not str(base_url).strip():
        raise ConfigurationError(
            f"The Canvas base URL is not set: set {BASE_URL_ENV} (e.g. https://school.instructure.com)",
            stage="configuration",
        )
    url = str(base_url).strip().rstrip("/")
    shown = redact_base_url(url)
    value = (
        f"{shown} (the rest not shown)"
        if shown
        else f"the value of {BASE_URL_ENV} (not shown: it may contain credentials)"
    )
    if "@" in url:
        raise ConfigurationError(
            f"{BASE_URL_ENV} must not contain credentials (got {value}): set it to the instance's address "
            f"only and put the token in {TOKEN_ENV}",
            stage="configuration",
        )
    if url.lower().endswith("/api/v1"):
        url = url[: -len("/api/v1")].rstrip("/")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        # The ValueError's own text quotes the "port", which may well be a password: never shown.
        raise ConfigurationError(
            f"{BASE_URL_ENV} is not a valid URL (got {value}): its port is not a number from 0 to 65535 or "
            "its host is malformed. Set it to https://your-instance (with :port only if Canvas listens on "
            f"one); a password or token belongs nowhere in it ({TOKEN_ENV} holds the token)",
            stage="configuration",
        ) from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"{BASE_URL_ENV} must be an https:// URL such as https://school.instructure.com, got "
            f"{repr(shown) if shown and shown == url else value}",
            stage="configuration",
        )
    if parts.username or parts.password:
        raise ConfigurationError(
            f"{BASE_URL_ENV} must not contain credentials; put the token in {TOKEN_ENV}",
            stage="configuration",
        )
    if parts.query or parts.fragment:
        raise ConfigurationError(
            f"{BASE_URL_ENV} must not contain a query or fragment (a '?...' or '#...' part): set it to "
            f"{shown or 'the instance address'} (the rest is not shown)",
            stage="configuration",
        )
    if scheme == "http" and not is_loopback(parts.hostname):
        raise ConfigurationError(
            f"{BASE_URL_ENV} uses http:// for {parts.hostname}: use https:// (the token would travel in "
            "clear text; plain http is only accepted for loopback test servers)",
            stage="configuration",
        )
    return url


def origin_of(url: str) -> Origin:
    """(scheme, host, port), lower-cased, default port filled in: what "same origin" compares."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


def same_origin_link(link: str, current: str, origin: Origin, base_url: str, secrets: Iterable[str]) -> str:
    """`link` made absolute against `current`, refused unless it is on `origin` (the base URL's).

    The token must never be sent anywhere else; the error shows the link without any secret.
    """
    absolute = urljoin(current, link)
    if origin_of(absolute) != origin:
        shown = redact_url(absolute, secrets)
        raise CanvasAPIError(
            f"Canvas sent a pagination link to another origin ({shown}) than {base_url}; refusing "
            "to follow it with the token attached. Check that CANVAS_BASE_URL is the instance's "
            "canonical URL.",
            method="GET",
            url=shown,
        )
    return absolute


_LINK_RE = re.compile(r"<([^>]*)>\s*((?:;\s*[^;,]*)*)")
_PARAM_RE = re.compile(r";\s*([A-Za-z0-9_*-]+)\s*=\s*(\"[^\"]*\"|[^;,\s]*)")


def parse_link_header(value: str | None) -> dict[str, str]:
    """Map each (lower-cased) rel of an RFC 8288 `Link` header to its URL; the first link per rel wins.

    Canvas sends `<url>; rel="next"`; rel values are compared case-insensitively and a link may carry
    several space-separated rels.
    """
    links: dict[str, str] = {}
    if not value:
        return links
    for match in _LINK_RE.finditer(value):
        url, params = match.group(1).strip(), match.group(2)
        for name, raw in _PARAM_RE.findall(params):
            if name.lower() != "rel":
                continue
            for rel in raw.strip('"').split():
                links.setdefault(rel.lower(), url)
    return links


def array_params(key: str, values: Iterable[object]) -> Params:
    """Canvas array parameters are repeated `key[]=value` pairs."""
    return [(key, str(v)) for v in values]


def path_segment(value: int | str) -> str:
    """One URL path segment (ids may be `sis_course_id:ABC` strings)."""
    return quote(str(value), safe=":")
