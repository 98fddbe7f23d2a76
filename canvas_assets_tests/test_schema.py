"""The schema is stated once: the models say where every column comes from, and the transformers, the catalog
and docs/tables.md are derived from them. These tests fail when the two could disagree."""

import importlib.util
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from canvas_assets.defs.assets.tables import column_doc, column_schema
from canvas_assets.profiles import PRESET_FILES, parse_profile, preset
from canvas_assets.transform import TRANSFORMERS, TransformOptions
from canvas_assets.transform.options import PROFILE_SWITCHES
from canvas_assets.transform.schema import Field, fields_of, kind_of
from canvas_assets.warehouse.columns import FALLBACKS, LOAD, SOURCES, STAGING_COURSE
from canvas_assets.warehouse.history import HISTORY
from canvas_assets.warehouse.models import ALL_TABLES, LAYER1_TABLES, metadata

# Tables whose every column must say where it comes from: Layer 1 and the score history the load writes.
SOURCED_TABLES = (*LAYER1_TABLES, *(h.table for h in HISTORY.values()))
INFO_KEYS = {"doc", "path", "kind", "group", "required", "fallback", "source"}
# The converter kinds each column type can hold.
KINDS_OF_TYPE: list[tuple[type, set[str]]] = [
    (sa.BigInteger, {"id", "int"}),
    (sa.Integer, {"int"}),
    (sa.Float, {"float"}),
    (sa.Boolean, {"bool"}),
    (sa.DateTime, {"ts"}),
    (sa.String, {"str", "json"}),
]
# The pandas dtype a transformer gives each kind of column (NOT NULL ids may become plain int64).
DTYPES = {
    "id": {"Int64", "int64"},
    "int": {"Int64", "int64"},
    "float": {"float64"},
    "str": {"string"},
    "json": {"string"},
    "bool": {"boolean"},
    "ts": {"datetime64[us, UTC]"},
}
# A valid raw value of each kind, to build records that fill every column read from Canvas.
SAMPLE = {
    "id": 7,
    "int": 3,
    "float": 1.5,
    "str": "x",
    "bool": True,
    "ts": "2025-01-06T08:00:00Z",
    "json": [1, 2],
}
ALL_OFF = TransformOptions(**{f.name: False for f in dataclass_fields(TransformOptions)})


def _columns(tables=ALL_TABLES):
    return [(name, c) for name in tables for c in metadata.tables[name].columns]


def _ids(pairs):
    return [f"{t}.{c.name}" for t, c in pairs]


def _type_kinds(column: sa.Column) -> set[str]:
    t = column.type
    t = getattr(t, "impl_instance", t)
    for cls, kinds in KINDS_OF_TYPE:
        if isinstance(t, cls):
            return kinds
    raise AssertionError(f"unexpected type {t!r}")


@pytest.mark.parametrize(("table", "column"), _columns(), ids=_ids(_columns()))
def test_every_column_has_a_one_line_doc(table, column):
    doc = column.info.get("doc")
    assert isinstance(doc, str) and doc.strip(), f"{table}.{column.name} has no info['doc']"
    assert "\n" not in doc and len(doc) <= 160
    assert set(column.info) <= INFO_KEYS, f"unknown info keys {set(column.info) - INFO_KEYS}"
    assert column_doc(column).startswith(doc)


@pytest.mark.parametrize(("table", "column"), _columns(SOURCED_TABLES), ids=_ids(_columns(SOURCED_TABLES)))
def test_every_layer1_column_says_where_it_comes_from(table, column):
    info = column.info
    assert ("path" in info) != ("source" in info), (
        f"{table}.{column.name}: give either info['path'] (read from the Canvas record) or info['source'] "
        f"(what fills it: one of {sorted(SOURCES)})"
    )
    if "source" in info:
        assert info["source"] in SOURCES
        assert not {"kind", "group", "required", "fallback"} & set(info), "only a Canvas column has these"
        return
    assert all(part.isidentifier() for part in info["path"].split("."))
    assert info.get("fallback") in (None, *FALLBACKS)
    assert kind_of(column) in _type_kinds(column), f"kind {kind_of(column)!r} cannot go in {column.type!r}"
    group = info.get("group")
    assert group is None or group in PROFILE_SWITCHES
    if info.get("required"):
        assert not column.nullable
    if not column.nullable:  # a NULL from the record is never let through into a NOT NULL column
        assert info.get("required") or info.get("fallback"), f"{table}.{column.name}: required or fallback"
    # The catalog says where it comes from.
    assert f"`{info['path']}`" in column_doc(column)


def test_only_operational_tables_leave_the_source_out():
    for name, column in _columns():
        if name not in SOURCED_TABLES:
            assert not {"path", "source", "kind", "group", "required", "fallback"} & set(column.info), (
                f"{name}.{column.name}"
            )
    for name in LAYER1_TABLES:
        assert metadata.tables[name].info.get("record"), (
            f"{name}: table info['record'] names the Canvas object"
        )


def test_the_transformers_fields_are_the_models_canvas_columns():
    by_table = {}
    for t in TRANSFORMERS.values():
        for name in t.tables:
            by_table[name] = fields_of(name)
    assert sorted(by_table) == sorted(LAYER1_TABLES)
    for name, fields in by_table.items():
        canvas_columns = [c.name for c in metadata.tables[name].columns if "path" in c.info]
        assert [f.column for f in fields] == canvas_columns
    assert fields_of("canvas_enrollments")[16] == Field(
        "current_score", "float", ("grades", "current_score"), group="student_scores"
    )
    assert fields_of("canvas_student_summaries")[0] == Field("user_id", "id", ("id",), required=True)
    assert fields_of("canvas_courses")[0] == Field("id", "id", required=True)  # path = the column's own name
    assert fields_of("canvas_enrollments")[15].kind == "int"  # total_activity_time: a count in a BIGINT


def test_kind_of_reads_the_column_type_unless_info_says():
    table = sa.Table(
        "t",
        sa.MetaData(),
        sa.Column("a", sa.BigInteger()),
        sa.Column("b", sa.Integer()),
        sa.Column("c", sa.Text(), info={"kind": "json"}),
        sa.Column("d", sa.LargeBinary()),
    )
    assert [kind_of(table.c[n]) for n in "abc"] == ["id", "int", "json"]
    with pytest.raises(TypeError, match="give info"):
        kind_of(table.c.d)


def _set(record: dict[str, Any], path: str, value: Any) -> None:
    *outer, last = path.split(".")
    for key in outer:
        record = record.setdefault(key, {})
    record[last] = value


def _full_record(table: str) -> dict[str, Any]:
    """A Canvas record that has a valid value at the path of every column of `table` read from Canvas."""
    record: dict[str, Any] = {}
    for column in metadata.tables[table].columns:
        if "path" in column.info:
            _set(record, column.info["path"], SAMPLE[kind_of(column)])
    return record


def _full_input(entity: str) -> dict[int, list[dict[str, Any]]]:
    if entity == "modules":
        module = _full_record("canvas_modules")
        module["items"] = [_full_record("canvas_module_items")]
        return {101: [module]}
    return {101: [_full_record(TRANSFORMERS[entity].tables[0])]}


@pytest.mark.parametrize("entity", sorted(TRANSFORMERS))
def test_a_transformer_fills_every_column_of_its_tables_but_the_loads_own(entity):
    """No model column is left NULL silently: a record with every Canvas field set fills every column but the
    ones the load writes, each with the dtype its kind gives (names and types agree)."""
    result = TRANSFORMERS[entity](_full_input(entity), TransformOptions())
    assert result.rejected == []
    for name in TRANSFORMERS[entity].tables:
        table = metadata.tables[name]
        frame = result.tables[name]
        expected = [c.name for c in table.columns if c.info.get("source") != LOAD]
        assert list(frame.columns) == expected
        assert len(frame) == 1 and not frame.iloc[0].isna().any(), frame.iloc[0][frame.iloc[0].isna()]
        for column in table.columns:
            if column.name in frame:
                kind = kind_of(column) if "path" in column.info else "id"
                assert str(frame[column.name].dtype) in DTYPES[kind], f"{name}.{column.name}"


@pytest.mark.parametrize("entity", sorted(TRANSFORMERS))
def test_a_field_group_that_is_off_leaves_exactly_its_columns_out(entity):
    result = TRANSFORMERS[entity](_full_input(entity), ALL_OFF)
    for name in TRANSFORMERS[entity].tables:
        expected = [
            c.name
            for c in metadata.tables[name].columns
            if c.info.get("source") != LOAD and not c.info.get("group")
        ]
        assert list(result.tables[name].columns) == expected


def test_a_staging_course_fills_the_course_where_the_record_has_none():
    for entity in ("enrollments", "assignments", "submissions"):
        record = _full_record(TRANSFORMERS[entity].tables[0])
        del record["course_id"]
        frame = TRANSFORMERS[entity]({101: [record]}).tables[TRANSFORMERS[entity].tables[0]]
        assert frame["course_id"].tolist() == [101]
    course_columns = [
        (t, c.name)
        for t, c in _columns(LAYER1_TABLES)
        if STAGING_COURSE in (c.info.get("source"), c.info.get("fallback"))
    ]
    # every Layer-1 `course_id` (enrollments, assignments, submissions, modules and their items, summaries...)
    assert course_columns == [(t, "course_id") for t in LAYER1_TABLES if "course_id" in metadata.tables[t].c]
    assert ("canvas_submissions", "course_id") in course_columns


def test_the_field_groups_are_the_profiles_switches():
    assert set(PROFILE_SWITCHES) == {f.name for f in dataclass_fields(TransformOptions)}
    for name in PRESET_FILES:
        profile = preset(name)
        assert TransformOptions.from_profile(profile) == profile.transform_options()
    for option, (entity, group) in PROFILE_SWITCHES.items():
        profile = parse_profile({"name": "FULL_PROCESSING", "fields": {entity: {group: False}}})
        options = TransformOptions.from_profile(profile)
        assert options == profile.transform_options()
        assert [f.name for f in dataclass_fields(options) if not getattr(options, f.name)] == [option]


@pytest.mark.parametrize("table", sorted({*LAYER1_TABLES, "canvas_staging"}))
def test_the_catalog_describes_every_column(table):
    schema = column_schema(table)
    model = metadata.tables[table]
    assert [c.name for c in schema.columns] == [c.name for c in model.columns]
    for catalog, column in zip(schema.columns, model.columns, strict=True):
        assert catalog.description == column_doc(column)
        assert catalog.description and "\n" not in catalog.description
        assert catalog.constraints.nullable == column.nullable


def test_the_catalog_says_where_a_column_comes_from():
    enrollments = metadata.tables["canvas_enrollments"].c
    assert column_doc(enrollments.current_score) == (
        "Percent over graded work only (NULL when hidden or not graded yet). From `grades.current_score` of the "
        "Canvas enrollment; field group `students.scores`."
    )
    assert column_doc(enrollments.course_id) == (
        "Course of the enrollment. From `course_id` of the Canvas enrollment, else the staging course."
    )
    assert column_doc(enrollments.deleted_at).endswith("Written by the load, not read from a Canvas record.")
    assert column_doc(metadata.tables["canvas_module_items"].c.module_id) == (
        "Module the item belongs to. Set from the module whose `items` list holds the item."
    )


def test_docs_tables_md_is_generated_from_the_models():
    path = Path(__file__).resolve().parent.parent / "docs" / "tables.py"
    spec = importlib.util.spec_from_file_location("docs_tables", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = module.TABLES_MD.read_text(encoding="utf-8")
    assert module.render(text) == text, "docs/tables.md is out of date: run `python docs/tables.py`"
    assert module.main(["--check"]) == 0


def test_no_frame_column_escapes_the_model():
    from canvas_assets.errors import TransformationError
    from canvas_assets.transform.schema import in_table_order

    frame = pd.DataFrame({"name": ["x"], "id": [1]})
    assert list(in_table_order(frame, "canvas_students").columns) == ["id", "name"]
    with pytest.raises(TransformationError, match="not in the model"):
        in_table_order(pd.DataFrame({"id": [1], "not_a_column": ["x"]}), "canvas_students")
