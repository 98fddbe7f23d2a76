"""How a warehouse column is declared: the declarative base, UTC timestamps, and the helpers that write each
column's documentation (`info`) beside it. `models` (Layer-1 tables) and `operational` (catalog, staging,
sync log, confirmations, quarantine) declare their tables with these; docs/maintaining.md explains them."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timestamp stored as UTC and always read back as an aware UTC datetime.

    PostgreSQL stores `timestamptz` as an instant already; SQLite has no time zone support, so the value
    is converted to UTC and stored naive. Naive inputs are taken to be UTC.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        elif value.utcoffset():
            value = value.astimezone(timezone.utc)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def bind_processor(self, dialect: Dialect) -> Any:
        inner = self.impl_instance.dialect_impl(dialect).bind_processor(dialect)
        if dialect.name == "postgresql":
            # The warehouse engine pins the session time zone to UTC (see warehouse.engine), so naive values
            # are read as UTC and aware ones carry their offset: nothing to do per value, which keeps bulk
            # loads fast. Values go to the driver unchanged.
            return inner
        return super().bind_processor(dialect)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)  # type: ignore[no-any-return]
        return value.astimezone(timezone.utc)  # type: ignore[no-any-return]


# Surrogate keys: BIGINT on PostgreSQL, but SQLite only auto-increments an `INTEGER PRIMARY KEY`.
SurrogateKey = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        int: sa.BigInteger(),
        float: sa.Float(),
        str: sa.Text(),
        bool: sa.Boolean(),
        datetime: UTCDateTime(),
    }


# --- column documentation ---------------------------------------------------------------------------------
# Every column carries, in `info` (kept by SQLAlchemy beside the column, never seen by the database, so it
# needs no migration), what it holds and where it comes from. The Dagster catalog (`assets.tables`), the
# transformers (`transform.schema.fields_of`) and docs/tables.md all read it:
#   doc       one line: what the value is
#   path      for a column read from a Canvas record: the key path in the record (`grades.current_score`)
#   kind      the converter (`transform.convert`), only where the column type does not say it: `json` for JSON
#             text, `int` for a count in a BIGINT (a BIGINT is otherwise a Canvas `id`)
#   group     the profile field group (a `TransformOptions` switch) without which the column is not produced
#   required  a record without this value is quarantined (ids)
#   fallback  what fills the column when the record has no value (`STAGING_COURSE`)
#   source    for a Layer-1 column that is not read from a record: what fills it (one of `SOURCES`)
# A Layer-1 table's own `info["record"]` names the Canvas object its rows mirror ("enrollment").
STAGING_COURSE = "staging_course"
PARENT_MODULE = "module"
LOAD = "load"
SOURCES: dict[str, str] = {  # what the catalog says of each
    STAGING_COURSE: "Set from the staging course (the course whose records these are)",
    PARENT_MODULE: "Set from the module whose `items` list holds the item",
    LOAD: "Written by the load, not read from a Canvas record",
}
FALLBACKS: dict[str, str] = {STAGING_COURSE: "the staging course"}

# Profile field groups: the `TransformOptions` switch of each optional column.
COURSE_PUBLIC = "course_public_info"
COURSE_EXTENDED = "course_extended_info"
COURSE_SETTINGS = "course_settings"
STUDENT_BASIC = "student_basic_info"
SCORES = "student_scores"
DETAILS = "student_enrollment_details"


def canvas(
    doc: str,
    path: str,
    *,
    kind: str | None = None,
    group: str | None = None,
    required: bool = False,
    fallback: str | None = None,
    type_: sa.types.TypeEngine[Any] | None = None,
    **kw: Any,
) -> Any:
    """A column read from the Canvas record at `path` (dotted for nested objects: `term.name`)."""
    optional = {"kind": kind, "group": group, "required": required, "fallback": fallback}
    info = {"doc": doc, "path": path, **{k: v for k, v in optional.items() if v}}
    return mapped_column(*(() if type_ is None else (type_,)), info=info, **kw)


def column(
    doc: str, *, source: str | None = None, type_: sa.types.TypeEngine[Any] | None = None, **kw: Any
) -> Any:
    """A column that is not read from a Canvas record. Layer-1 columns say what fills it (`source`)."""
    info: dict[str, Any] = {"doc": doc}
    if source:
        info["source"] = source
    return mapped_column(*(() if type_ is None else (type_,)), info=info, **kw)


def canvas_id(doc: str, path: str | None = None, *, source: str | None = None) -> Any:
    """A BIGINT primary key column: a Canvas id read from `path`, or (no path) one filled from `source`."""
    kw: dict[str, Any] = {"type_": sa.BigInteger(), "primary_key": True, "autoincrement": False}
    if path:
        return canvas(doc, path, required=True, **kw)
    return column(doc, source=source, **kw)


def canvas_int(doc: str, path: str, **kw: Any) -> Any:
    """A 32-bit INTEGER read from the record (positions, counts, levels)."""
    return canvas(doc, path, type_=sa.Integer(), **kw)


def soft_delete_column(
    doc: str = "When a load found the row missing from Canvas (soft delete); NULL while present, cleared when "
    "it comes back",
) -> Any:
    return column(doc, source=LOAD)


def row_hash_column() -> Any:
    return column(
        "Fingerprint of the row's values: a load skips rows whose fingerprint matches; NULL makes the next "
        "load compare and rewrite the row",
        source=LOAD,
        type_=sa.BigInteger(),
    )
