"""What the Dagster catalog says about the warehouse tables, built from the SQLAlchemy models.

Every staging and Layer-1 asset carries its table name and column schema (name, type, nullability and
the column's one-line description from the model's `info["doc"]`, which says where the value comes
from in Canvas), so the UI's catalog is the table reference.
"""

from datetime import timedelta
from typing import Any

import dagster as dg
import sqlalchemy as sa

from canvas_assets.warehouse.models import table

# A Layer-1 table not refreshed for this long missed its nightly sync (the nightly schedule runs every
# 24 hours; two hours of slack for a long sync).
FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=26), warn_window=timedelta(hours=25))


def column_doc(column: sa.Column) -> str:
    """The column's one-line description ("" when the model gives none)."""
    return str(column.info.get("doc") or "")


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
