"""The columns a transformer produces, from the warehouse model, and how a `Field` reads them from records.

Each column is declared once, in the warehouse model (`warehouse/models.py`): its `info` says where it comes
from in the Canvas record (`path`, dotted for nested objects), which converter reads it (`kind`, else the
column type decides) and which profile option switches it on (`group`). `fields_of` turns a table's columns
into the transformer's `Field`s; `key_of`, `columns_of` and `staging_course_column` give the rest of what a
transformer needs to know of the table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from itertools import repeat
from typing import Any, Literal

import pandas as pd
import sqlalchemy as sa

from canvas_assets.errors import TransformationError

Kind = Literal["id", "int", "float", "str", "bool", "ts", "json"]
INT_BITS_DEFAULT = 64


@dataclass(frozen=True)
class Field:
    """One output column: `path` into the raw record, the kind of value, the option group that enables it."""

    column: str
    kind: Kind
    path: tuple[str, ...] = ()
    group: str | None = None
    required: bool = False
    bits: int = INT_BITS_DEFAULT  # width of an integer column: a value must fit it

    @property
    def source(self) -> str:
        return ".".join(self.path) if self.path else self.column

    def extract(
        self, records: Sequence[Mapping[str, Any]], cache: dict[str, list[Any]] | None = None
    ) -> list[Any]:
        """The raw values of this field, one per record (None when absent). `cache` shares the nested
        objects (e.g. an enrollment's `grades`) between the fields that read from them."""
        path = self.path or (self.column,)
        plain = cache.get(_PLAIN) if cache is not None else None
        if plain is None:
            plain = [only_types(records, dict)]
            if cache is not None:
                cache[_PLAIN] = plain
        if len(path) == 1:
            return get_all(records, path[0], plain[0])
        objects = nested_objects(records, path[0], cache, plain[0])
        values = list(map(dict.get, objects, repeat(path[1])))
        for key in path[2:]:
            values = [v.get(key) if v.__class__ is dict else None for v in values]
        return values


# --- the columns of a table, from the warehouse model ----------------------------------------------------
def _table(table_name: str) -> sa.Table:
    # Imported here: the warehouse package imports the transform package (Rejected, TransformResult).
    from canvas_assets.warehouse.models import table

    return table(table_name)


def kind_of(column: sa.Column[Any]) -> Kind:
    """The converter of a column read from Canvas: `info["kind"]`, else what its type says (a BIGINT is an id)."""
    kind = column.info.get("kind")
    if kind is not None:
        return kind  # type: ignore[no-any-return]
    t = column.type
    if isinstance(t, sa.BigInteger):
        return "id"
    if isinstance(t, sa.Integer):
        return "int"
    if isinstance(t, sa.Float):
        return "float"
    if isinstance(t, sa.Boolean):
        return "bool"
    if isinstance(t, sa.DateTime) or isinstance(getattr(t, "impl", None), sa.DateTime):
        return "ts"
    if isinstance(t, sa.String):
        return "str"
    raise TypeError(f"{column.table.name}.{column.name}: no converter for type {t!r}; give info['kind']")


@cache
def fields_of(table_name: str) -> tuple[Field, ...]:
    """The `Field`s of a Layer-1 table: its model's columns that are read from the Canvas record (`info["path"]`),
    in table order."""
    fields = []
    for column in _table(table_name).columns:
        info = column.info
        if "path" not in info:
            continue
        path = tuple(info["path"].split("."))
        fields.append(
            Field(
                column.name,
                kind_of(column),
                () if path == (column.name,) else path,
                info.get("group"),
                bool(info.get("required", False)),
                _bits(column.type),
            )
        )
    return tuple(fields)


def _bits(column_type: Any) -> int:
    """The width of an integer column (what a value must fit); 64 for the others."""
    if isinstance(column_type, sa.SmallInteger):
        return 16
    if isinstance(column_type, sa.Integer) and not isinstance(column_type, sa.BigInteger):
        return 32
    return INT_BITS_DEFAULT


@cache
def key_of(table_name: str) -> tuple[str, ...]:
    """The primary key of a table: rows are deduplicated on it (first occurrence wins)."""
    return tuple(c.name for c in _table(table_name).primary_key.columns)


@cache
def columns_of(table_name: str) -> tuple[str, ...]:
    return tuple(c.name for c in _table(table_name).columns)


@cache
def staging_course_column(table_name: str) -> str | None:
    """The column the staging course fills: always (`info["source"]`) or where the record has none
    (`info["fallback"]`). None when the table has no such column."""
    from canvas_assets.warehouse.columns import STAGING_COURSE

    for column in _table(table_name).columns:
        if STAGING_COURSE in (column.info.get("source"), column.info.get("fallback")):
            return column.name
    return None


def in_table_order(frame: pd.DataFrame, table_name: str) -> pd.DataFrame:
    """The frame's columns in the order of the table's."""
    order = [c for c in columns_of(table_name) if c in frame.columns]
    if len(order) != len(frame.columns):
        raise TransformationError(
            f"{table_name}: columns not in the model: {sorted(set(frame.columns) - set(order))}",
            stage="transform",
        )
    return frame if order == list(frame.columns) else frame[order]


_PLAIN = "\x00plain"  # cache entry: are the records all plain dicts


def get_all(records: Sequence[Mapping[str, Any]], key: str, plain: bool) -> list[Any]:
    """`record.get(key)` for every record, the loop in C when the records are plain dicts."""
    if plain:
        return list(map(dict.get, records, repeat(key)))  # type: ignore[arg-type]
    return [r.get(key) for r in records]


def only_types(values: Sequence[Any], *types: type) -> bool:
    """Whether every value is exactly one of `types` (None allowed when NoneType is given). One C-level pass."""
    return set(map(type, values)) <= set(types)


_EMPTY: dict[str, Any] = {}
NONE = type(None)


def nested_objects(
    records: Sequence[Mapping[str, Any]], outer: str, cache: dict[str, list[Any]] | None, plain: bool
) -> list[dict[str, Any]]:
    """The object under `outer` of every record, an empty one where it is absent or not an object (that
    record is quarantined by `not_objects_under`)."""
    objects = cache.get(outer) if cache is not None else None
    if objects is None:
        objects = get_all(records, outer, plain)
        if not only_types(objects, dict):
            objects = [v if v.__class__ is dict else _EMPTY for v in objects]
        if cache is not None:
            cache[outer] = objects
    return objects
