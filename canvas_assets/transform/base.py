"""The transformers' driver: raw Canvas records per course -> typed frames per Layer-1 table, and quarantine.

A transformer turns the raw Canvas records of some courses (exactly what staging holds) into typed
DataFrames, one per Layer-1 table. The columns come from the warehouse model (`schema.fields_of`), each is
converted column-wise (`convert.convert_column`), and a record with a value that cannot be converted is
quarantined as a `Rejected` naming the field and the value (`quarantine`); the rest of its course loads.
A nested object (`grades`, `term`) that is present but not an object quarantines the record, naming it.
Rows are deduplicated on the table's key (first occurrence wins); a ranged run is transformed in course
chunks (`CHUNK_RECORDS`) so that only one chunk's decoded records are in memory.

A record quarantined without a usable key (no `id`, one that is not an id, a list item that is not an object)
makes its course's list incomplete, so the load soft-deletes nothing there (`incomplete_courses`; issue 21:
one keyless enrollment, `[{"foo": 1}]`, had soft-deleted every enrollment of the course).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from canvas_assets.errors import TransformationError
from canvas_assets.transform.convert import BAD, convert_column, reason_for, to_id
from canvas_assets.transform.options import TransformOptions
from canvas_assets.transform.quarantine import Rejected, not_object_rejections, short_repr, storable_payload
from canvas_assets.transform.schema import (
    NONE,
    Field,
    get_all,
    in_table_order,
    key_of,
    only_types,
    staging_course_column,
)


@dataclass
class TransformResult:
    entity: str
    tables: dict[str, pd.DataFrame]
    rejected: list[Rejected]
    records_in: int
    # table -> courses whose list of that table is known to be incomplete for a reason the rejections do not
    # show by themselves (a module quarantined with its items: its items never reached the items table).
    # `incomplete_courses` adds the courses of records quarantined without a usable key.
    incomplete: dict[str, set[int]] = field(default_factory=dict)


@dataclass
class Frame:
    """The outcome of converting records with a list of fields: typed frame plus per-row rejection reasons."""

    frame: pd.DataFrame
    reasons: dict[int, str] = field(default_factory=dict)  # row position -> reason


def build_frame(
    records: Sequence[Mapping[str, Any]],
    fields: Sequence[Field],
    options: TransformOptions,
    *,
    extra: Mapping[str, list[Any] | np.ndarray] | None = None,
) -> Frame:
    """Convert `records` column by column; rows with a bad (or missing required) value get a reason."""
    data: dict[str, Any] = {}
    bad_rows: dict[int, str] = {}
    cache: dict[str, list[Any]] = {}

    def add(pos: int, reason: str) -> None:
        bad_rows[pos] = f"{bad_rows[pos]}; {reason}" if pos in bad_rows else reason

    enabled = [f for f in fields if options.enabled(f.group)]
    for outer in dict.fromkeys(f.path[0] for f in enabled if len(f.path) > 1):
        for pos, reason in not_objects_under(records, outer).items():
            add(pos, reason)
    for f in enabled:
        raw = f.extract(records, cache)
        series, bad = convert_column(f, raw)
        if f.required and None in raw:
            bad = bad | np.array([v is None for v in raw], dtype=bool)
        if bad.any():
            for pos in np.flatnonzero(bad).tolist():
                add(pos, reason_for(f, raw[pos]))
        data[f.column] = series
    data.update(extra or {})
    frame = pd.DataFrame(data, index=pd.RangeIndex(len(records)))
    return Frame(frame, bad_rows)


def finish(frame: pd.DataFrame, drop_rows: Sequence[int], key: Sequence[str]) -> pd.DataFrame:
    """Drop rejected rows, deduplicate on the table key (first occurrence wins), reset the index."""
    return surviving(frame, drop_rows, key).reset_index(drop=True)


def surviving(frame: pd.DataFrame, drop_rows: Sequence[int], key: Sequence[str]) -> pd.DataFrame:
    """The rows that are kept, under their record positions: rejected rows dropped, the first of each key."""
    if len(drop_rows):
        frame = frame.drop(index=list(drop_rows))
    if len(frame):
        frame = frame.drop_duplicates(subset=list(key), keep="first")
    return frame


def incomplete_courses(result: TransformResult) -> dict[str, set[int]]:
    """Table -> the courses whose rows of that table the load must not soft-delete: a record of the course
    was quarantined without a usable key (the row it stands for cannot be known, so no row of the course can
    be taken as gone), or the transformer said so (`TransformResult.incomplete`)."""
    out = {name: set(courses) for name, courses in result.incomplete.items() if courses}
    single = next(iter(result.tables)) if len(result.tables) == 1 else None
    for r in result.rejected:
        name = r.table or single
        if r.canvas_id is None and r.course_id is not None and name is not None:
            out.setdefault(name, set()).add(int(r.course_id))
    return out


def canvas_id_of(record: Any, key: str = "id") -> int | None:
    if not isinstance(record, Mapping):
        return None
    value = to_id(record.get(key))
    return None if value is BAD else int(value)


def flatten(
    records_by_course: Mapping[int, list[dict[str, Any]]],
) -> tuple[list[dict[str, Any]], np.ndarray, list[tuple[int, Any]]]:
    """All records of all courses in one list, the staging course of each, and the non-object records."""
    records: list[dict[str, Any]] = []
    courses: list[int] = []
    not_objects: list[tuple[int, Any]] = []
    for course_id, course_records in records_by_course.items():
        cid = int(course_id)
        for record in course_records or ():
            if isinstance(record, dict):
                records.append(record)
                courses.append(cid)
            else:
                not_objects.append((cid, record))
    return records, np.asarray(courses, dtype="int64"), not_objects


def not_objects_under(records: Sequence[Mapping[str, Any]], outer: str) -> dict[int, str]:
    """Reasons for the records whose `outer` is present but not an object (the fields under it cannot be
    read, so reading them as NULL would hide that the record is malformed)."""
    values = get_all(records, outer, only_types(records, dict))
    if only_types(values, dict, NONE):
        return {}
    return {
        i: f"{outer}: not an object: {short_repr(v)}"
        for i, v in enumerate(values)
        if v is not None and v.__class__ is not dict
    }


class Transformer:
    """One staging entity's transformer: raw records per course in, typed frames per table out."""

    def __init__(
        self,
        entity: str,
        tables: tuple[str, ...],
        build: Callable[[Mapping[int, list[dict[str, Any]]], TransformOptions], TransformResult],
        description: str = "",
    ) -> None:
        self.entity = entity
        self.tables = tables
        self._build = build
        self.description = description

    def __call__(
        self, records_by_course: Mapping[int, Sequence[Any]], options: TransformOptions | None = None
    ) -> TransformResult:
        """Transform raw records per course (lists, or staging's `StagedCourse`s, read when iterated), in
        course chunks of at most CHUNK_RECORDS records so that only one chunk's decoded records are alive."""
        return self.batches(_course_chunks(records_by_course, CHUNK_RECORDS), options)

    def batches(
        self, batches: Iterable[Mapping[int, Any]], options: TransformOptions | None = None
    ) -> TransformResult:
        """Transform batches of courses' records one after another (`staging.staged_batches` reads them a
        batch at a time) into one result."""
        try:
            options = options or TransformOptions()
            return combine([self._build(batch, options) for batch in batches] or [self._build({}, options)])
        except TransformationError:
            raise
        except Exception as exc:  # a bug or an unforeseen shape: fail the step, not one record
            raise TransformationError(
                f"{self.entity} transformer failed: {type(exc).__name__}: {exc}", stage="transform"
            ) from exc

    def __repr__(self) -> str:
        return f"Transformer(entity={self.entity!r}, tables={self.tables!r})"


def transform_records(
    entity: str,
    table: str,
    fields: Sequence[Field],
    records_by_course: Mapping[int, list[dict[str, Any]]],
    options: TransformOptions,
    *,
    id_key: str = "id",
) -> tuple[pd.DataFrame, list[Rejected], int]:
    """The common path: records of all courses -> one frame for `table`, rejected records, records in.

    The table's model gives the key (rows are deduplicated on it), the column order and the column the staging
    course fills (`staging_course_column`): always, or, when a field of that name exists (the record carries
    its own `course_id`), only where the record has none.
    """
    t = transform_table(entity, table, fields, records_by_course, options, id_key=id_key)
    return t.frame, t.rejected, t.records_in


@dataclass
class TableTransform:
    """`transform_records` with what a parent table's transformer needs to find its children: the records
    (all courses, flattened), the staging course of each and the positions of those whose row was kept."""

    frame: pd.DataFrame
    rejected: list[Rejected]
    records_in: int
    records: list[dict[str, Any]]
    courses: np.ndarray
    kept: list[int]


def transform_table(
    entity: str,
    table: str,
    fields: Sequence[Field],
    records_by_course: Mapping[int, list[dict[str, Any]]],
    options: TransformOptions,
    *,
    id_key: str = "id",
) -> TableTransform:
    """See `transform_records`."""
    key = key_of(table)
    course_column = staging_course_column(table)
    records, courses, not_objects = flatten(records_by_course)
    rejected = not_object_rejections(entity, table, not_objects)
    has_course_field = any(f.column == course_column for f in fields)
    extra = {course_column: courses} if course_column and not has_course_field else None
    built = build_frame(records, fields, options, extra=extra)
    frame = built.frame
    if course_column and has_course_field:
        frame[course_column] = frame[course_column].fillna(pd.Series(courses, dtype="Int64"))
    frame = in_table_order(frame, table)
    for pos, reason in sorted(built.reasons.items()):
        record = records[pos]
        rejected.append(
            Rejected(
                entity=entity,
                course_id=int(courses[pos]),
                canvas_id=canvas_id_of(record, id_key),
                reason=reason,
                payload=storable_payload(record),
                table=table,
            )
        )
    frame = surviving(frame, list(built.reasons), key)
    kept = frame.index.tolist()
    frame = frame.reset_index(drop=True)
    non_null = [*key, *(f.column for f in fields if f.required)]
    if course_column:
        non_null.append(course_column)
    frame = as_int64(frame, non_null)
    return TableTransform(frame, rejected, len(records) + len(not_objects), records, courses, kept)


def as_int64(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Nullable `Int64` columns that cannot hold NULL any more become plain `int64`."""
    for column in columns:
        if column in frame and frame[column].dtype == "Int64" and not frame[column].isna().any():
            frame[column] = frame[column].astype("int64")
    return frame


# Records per transformation chunk. Staging hands records over lazily (read and decoded when iterated), so
# transforming a ranged run course chunk by course chunk keeps only one chunk's decoded records in memory at
# a time, not the whole range's.
CHUNK_RECORDS = 10_000


def _course_chunks(records_by_course: Mapping[int, Any], limit: int) -> list[dict[int, Any]]:
    chunks: list[dict[int, Any]] = []
    current: dict[int, Any] = {}
    size = 0
    for course_id, records in records_by_course.items():
        n = len(records) if records is not None else 0
        if current and size + n > limit:
            chunks.append(current)
            current, size = {}, 0
        current[course_id] = records
        size += n
    if current or not chunks:
        chunks.append(current)
    return chunks


def combine(parts: Sequence[TransformResult]) -> TransformResult:
    """One result of the results of course chunks (the first occurrence of a key winning, as within one)."""
    if len(parts) == 1:
        return parts[0]
    tables: dict[str, pd.DataFrame] = {}
    for name in parts[0].tables:
        frames = [p.tables[name] for p in parts if len(p.tables[name])] or [parts[0].tables[name]]
        frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        key = list(key_of(name))  # first occurrence wins across chunks, as within one
        if len(frames) > 1 and all(k in frame.columns for k in key):
            frame = frame.drop_duplicates(subset=key, keep="first").reset_index(drop=True)
        tables[name] = frame
    incomplete: dict[str, set[int]] = {}
    for p in parts:
        for name, courses in p.incomplete.items():
            incomplete.setdefault(name, set()).update(courses)
    return TransformResult(
        parts[0].entity,
        tables,
        [r for p in parts for r in p.rejected],
        sum(p.records_in for p in parts),
        incomplete,
    )
