"""A hostile Canvas: answers that a broken or malicious Canvas front could send, for the client's bounds.

`CanvasSandbox.misbehave(...)` queues one of these for the next matching requests (by substring of the
path and query, like `inject`). Each changes what the sandbox would have answered:

- `status` / `body`: another status or body (e.g. a list page `[null, 1, "x"]`, records without `id`);
- `headers`: headers set over the sandbox's own (e.g. `X-Rate-Limit-Remaining: -1000000`);
- `endless_next`: a `Link rel="next"` to a URL never seen before, on every page: a list without end;
- `gzip_to`: the body replaced by a valid JSON list padded with whitespace to that many bytes and sent
  gzip-encoded (a few KB on the wire: a decompression bomb);
- `trickle_s`: the body sent one byte at a time, this many seconds apart;
- `hang`: no answer at all, the connection held open until the sandbox stops.

Nothing here is Canvas behaviour: it is what the client must survive (docs/failures.md).
"""

from __future__ import annotations

import threading
import zlib
from dataclasses import dataclass, field
from itertools import count
from urllib.parse import urlsplit


@dataclass
class Misbehaviour:
    path_contains: str | None = None
    remaining: int = 1  # how many matching requests it applies to; 0 or less: every one from now on
    status: int | None = None
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    endless_next: bool = False
    gzip_to: int = 0
    trickle_s: float = 0.0
    hang: bool = False
    forever: bool = False


class Hostility:
    """The queue of misbehaviours (thread-safe); `pick` takes the first that matches a request."""

    def __init__(self) -> None:
        self._queue: list[Misbehaviour] = []
        self._lock = threading.Lock()
        self._pages = count(1)

    def add(self, m: Misbehaviour) -> None:
        if m.remaining <= 0:
            m.forever = True
        with self._lock:
            self._queue.append(m)

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()

    def pick(self, target: str) -> Misbehaviour | None:
        with self._lock:
            for m in self._queue:
                if m.path_contains is None or m.path_contains in target:
                    if not m.forever:
                        m.remaining -= 1
                        if m.remaining <= 0:
                            self._queue.remove(m)
                    return m
        return None

    def endless_link(self, base_url: str, target: str) -> str:
        """A next link to this page's URL with a counter no URL had before (the client cannot see a loop)."""
        parts = urlsplit(target)
        query = "&".join(p for p in parts.query.split("&") if p and not p.startswith("hostile_page="))
        n = next(self._pages)
        sep = "&" if query else ""
        return f'<{base_url}{parts.path}?{query}{sep}hostile_page={n}>; rel="next"'


def padded_gzip(size: int) -> bytes:
    """A gzip body that decompresses to `size` bytes of a valid, empty JSON list (`[` spaces `]`), made a
    megabyte at a time (the sandbox never holds the decompressed body)."""
    size = max(2, size)
    gz = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: the gzip container
    chunk = b" " * (1 << 20)
    out = [gz.compress(b"[")]
    left = size - 2
    while left > 0:
        take = min(left, len(chunk))
        out.append(gz.compress(chunk[:take]))
        left -= take
    out.append(gz.compress(b"]"))
    out.append(gz.flush())
    return b"".join(out)
