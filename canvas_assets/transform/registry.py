"""The one registry of transformers, shared by the Dagster ops and the tests, derived from the entities.

Most entities map one Canvas record to one row of one table, every column declared in the model
(`warehouse/models.py`): `one_table` builds their transformer from the table alone. An entity whose records
need more (modules' items) names a transformer of its own in its declaration (`entities.Entity.transform`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

from canvas_assets.transform.base import Transformer, TransformResult, transform_records
from canvas_assets.transform.options import TransformOptions
from canvas_assets.transform.schema import fields_of

if TYPE_CHECKING:
    from canvas_assets.entities import Entity


def one_table(entity: str, table: str, description: str) -> Transformer:
    """The transformer of an entity whose records become rows of `table`, column by column as the model says."""
    fields = fields_of(table)

    def build(
        records_by_course: Mapping[int, list[dict[str, Any]]], options: TransformOptions
    ) -> TransformResult:
        frame, rejected, n = transform_records(entity, table, fields, records_by_course, options)
        return TransformResult(entity, {table: frame}, rejected, n)

    return Transformer(entity, (table,), build, description)


def transformer_of(entity: Entity) -> Transformer:
    """An entity's transformer, as its declaration says: its own, else `one_table` onto its one table."""
    description = f"{entity.name} records -> {', '.join(entity.tables)}"
    if entity.transform is None:
        return one_table(entity.name, entity.tables[0], description)
    return Transformer(entity.name, entity.tables, entity.transform, description)


class _Transformers(MutableMapping[str, Transformer]):
    """Every entity's transformer, by entity name, in the entities' order.

    Built on first use, not on import: `canvas_assets.entities` imports this package (its converters, the
    modules transformer), so the entities are not declared yet while this module is first imported. Items
    can be replaced (tests put a failing transformer in an entity's place with `monkeypatch.setitem`)."""

    def __init__(self) -> None:
        self._built: dict[str, Transformer] | None = None
        self._lock = threading.Lock()

    def _all(self) -> dict[str, Transformer]:
        if self._built is None:
            with self._lock:
                if self._built is None:
                    from canvas_assets.entities import ENTITIES

                    self._built = {name: transformer_of(e) for name, e in ENTITIES.items()}
        return self._built

    def __getitem__(self, entity: str) -> Transformer:
        return self._all()[entity]

    def __setitem__(self, entity: str, transformer: Transformer) -> None:
        self._all()[entity] = transformer

    def __delitem__(self, entity: str) -> None:
        del self._all()[entity]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())

    def __repr__(self) -> str:
        return f"TRANSFORMERS({', '.join(self)})"


TRANSFORMERS: MutableMapping[str, Transformer] = _Transformers()
