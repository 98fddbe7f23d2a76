"""What a Layer-1 load did, per table and in total (the load's return value and its Dagster metadata)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class TableLoadStats:
    table: str
    rows: int = 0  # rows in the load
    inserted: int = 0  # keys that were not in the table before
    updated: int = 0  # existing rows written because a value changed or they were restored
    unchanged: int = 0  # rows present and identical: not written
    soft_deleted: int = 0  # rows of the loaded courses that vanished
    restored: int = 0  # soft-deleted rows that came back (counted in `updated`)
    history_rows: int = 0  # canvas_score_history rows appended

    @property
    def upserted(self) -> int:
        """Rows written by the upsert (inserted + updated)."""
        return self.inserted + self.updated

    @property
    def written(self) -> int:
        """Every Layer-1 row this load wrote: inserted, updated and soft-deleted."""
        return self.inserted + self.updated + self.soft_deleted


class _Total:
    """A `LoadStats` figure: the sum of the `TableLoadStats` figure of the same name over its tables."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, stats: LoadStats, owner: type | None = None) -> int:
        return sum(getattr(s, self.name) for s in stats.tables.values())


@dataclass
class LoadStats:
    tables: dict[str, TableLoadStats] = field(default_factory=dict)
    courses_confirmed: int = 0  # (entity, course) confirmations written to canvas_course_sync
    courses_changed: int = 0  # of those, courses in which this load wrote a row
    analyzed: list[str] = field(default_factory=list)  # ANALYZEd after the commit (`refresh_statistics`)

    # Totals over the tables, figure by figure.
    rows = _Total()
    upserted = _Total()
    inserted = _Total()
    updated = _Total()
    unchanged = _Total()
    soft_deleted = _Total()
    restored = _Total()
    history_rows = _Total()
    written = _Total()

    def add(self, part: LoadStats) -> None:
        """Add the figures of a load of other courses (a chunk of the same run): each counts rows or courses
        of its own load, and the loads share neither, so each figure of the whole is the sum of the parts'."""
        for name, table_stats in part.tables.items():
            into = self.tables.setdefault(name, TableLoadStats(name))
            for f in fields(TableLoadStats):
                if f.name != "table":
                    setattr(into, f.name, getattr(into, f.name) + getattr(table_stats, f.name))
        for f in fields(LoadStats):
            if f.name not in ("tables", "analyzed"):
                setattr(self, f.name, getattr(self, f.name) + getattr(part, f.name))

    def to_metadata(self) -> dict[str, Any]:
        """Flat figures for Dagster metadata: totals plus `<table>.<figure>`."""
        rows = ("written", "upserted", "inserted", "updated", "unchanged", "soft_deleted", "restored")
        meta: dict[str, Any] = {
            "rows_loaded": self.rows,
            **{f"rows_{name}": getattr(self, name) for name in rows},
            "score_history_rows": self.history_rows,
            "courses_confirmed": self.courses_confirmed,
            "courses_changed": self.courses_changed,
        }
        for name, s in self.tables.items():
            for key, value in asdict(s).items():
                if key != "table":
                    meta[f"{name}.{key}"] = value
            meta[f"{name}.upserted"] = s.upserted
        return meta
