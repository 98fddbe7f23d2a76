"""What the Dagster catalog says about the warehouse tables, built from the SQLAlchemy models.

Every staging and Layer-1 asset carries its table name and column schema (name, type, nullability and
the column's one-line description: the model's `info["doc"]` followed by where the value comes from, the
key path in the Canvas record and its profile field group, or what fills it), so the UI's catalog is the
table reference. docs/tables.py writes the same descriptions into docs/tables.md.
"""

from datetime import timedelta
from typing import Any

import dagster as dg
import sqlalchemy as sa

from canvas_assets.transform.options import PROFILE_SWITCHES
from canvas_assets.warehouse.columns import FALLBACKS, SOURCES
from canvas_assets.warehouse.models import table

# A Layer-1 table not refreshed for this long missed its nightly sync (the nightly schedule runs every
# 24 hours; two hours of slack for a long sync).
FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=26), warn_window=timedelta(hours=25))


def field_group(column: sa.Column) -> str:
    """The profile switch that produces the column (`students.scores`), "" when it is always produced."""
    group = column.info.get("group")
    return ".".join(PROFILE_SWITCHES[group]) if group else ""


def column_source(column: sa.Column) -> str:
    """Where the column's value comes from, in words ("" for an operational column)."""
    info = column.info
    if "path" not in info:
        return SOURCES.get(info.get("source", ""), "")
    where = f"From `{info['path']}` of the Canvas {column.table.info.get('record', 'record')}"
    if info.get("fallback"):
        where += f", else {FALLBACKS[info['fallback']]}"
    group = field_group(column)
    return f"{where}; field group `{group}`" if group else where


def sentence(text: str) -> str:
    """`text` ending with a full stop ("" stays "")."""
    return text if not text or text.endswith(".") else f"{text}."


def column_doc(column: sa.Column) -> str:
    """The column's one-line description: what it is (`info["doc"]`) and where it comes from ("" when the
    model says nothing)."""
    parts = [sentence(str(column.info.get("doc") or "")), sentence(column_source(column))]
    return " ".join(p for p in parts if p)


def _type_name(column: sa.Column) -> str:
    try:
        return str(column.type.compile(dialect=sa.dialects.postgresql.dialect())).lower()
    except Exception:  # a type with no PostgreSQL rendering: its class name
        return type(column.type).__name__.lower()


def column_schema(table_name: str) -> dg.TableSchema:
    t = table(table_name)
    single_key = len(t.primary_key.columns) == 1
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=c.name,
                type=_type_name(c),
                description=column_doc(c) or None,
                constraints=dg.TableColumnConstraints(
                    nullable=bool(c.nullable), unique=bool(c.primary_key and single_key)
                ),
            )
            for c in t.columns
        ]
    )


def table_metadata(primary: str, *others: str) -> dict[str, Any]:
    """Static asset metadata: the table the asset writes, its columns, and the other tables it fills."""
    meta: dict[str, Any] = {
        "dagster/table_name": primary,
        "dagster/column_schema": column_schema(primary),
    }
    if others:
        meta["also_writes"] = ", ".join(others)
    return meta
