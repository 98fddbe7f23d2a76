"""What one page of a Canvas list must look like before its records are taken: a JSON array of objects,
or one wrapped in an object under a key the caller names; anything else is an error, never an empty list
(docs/canvas-api.md §2)."""

from __future__ import annotations

from typing import Any

from canvas_assets.errors import CanvasAPIError

Record = dict[str, Any]
_ALL_OBJECTS = object()  # no item of the page is anything but an object


def records_of_page(data: Any, wrapped_in: str | None, *, url: str, status: int | None) -> list[Record]:
    """The records of one page: `data` itself (a JSON array), or `data[wrapped_in]` when the list comes
    wrapped in an object. Anything else, or an item that is not an object, raises `CanvasAPIError`."""
    items = data
    if wrapped_in is not None:
        if not isinstance(data, dict):
            raise CanvasAPIError(
                f"Canvas answered GET {url} with a {type(data).__name__}, expected an object holding the list "
                f"under {wrapped_in!r}",
                status=status,
                url=url,
                recoverable=False,
            )
        if not isinstance(data.get(wrapped_in), list):
            found = ", ".join(sorted(map(str, data))[:10]) or "no keys"
            raise CanvasAPIError(
                f"Canvas answered GET {url} with an object whose {wrapped_in!r} is not a list (keys: {found}): "
                "the page is malformed, so the list is not taken",
                status=status,
                url=url,
                recoverable=False,
            )
        items = data[wrapped_in]
    if not isinstance(items, list):
        raise CanvasAPIError(
            f"Canvas answered GET {url} with a {type(items).__name__}, expected a list",
            status=status,
            url=url,
        )
    malformed = next((r for r in items if not isinstance(r, dict)), _ALL_OBJECTS)
    if malformed is not _ALL_OBJECTS:
        # A list with a null, a number or a nested list in it is not Canvas's: never take it (or what is left
        # of it once filtered) as the complete list, which would soft-delete rows.
        raise CanvasAPIError(
            f"Canvas answered GET {url} with a list holding a {type(malformed).__name__} where records "
            "belong: the page is malformed, so the list is not taken",
            status=status,
            url=url,
            recoverable=False,
        )
    return items
