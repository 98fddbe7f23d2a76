"""Sections, assignment groups, grading periods and per-period enrollment scores (issue 24, part A).

The pipeline syncs the small sandbox (over HTTP on loopback) into SQLite and PostgreSQL, and each new table
is compared value by value with what the sandbox serves now, after a first sync and after the mutations
analysts care about: a new section, a section cross-listed into another course (its enrollments move with
it), a changed group weight and a changed period score (a second history row). The client's reading of a
list wrapped in an object (grading periods) is checked against a sandbox answering malformed wrappers.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from canvas_assets.canvas import CanvasClient
from canvas_assets.errors import CanvasAPIError
from canvas_assets.profiles import Profile, parse_profile
from canvas_assets.sandbox import structure
from canvas_assets.warehouse.models import table
from canvas_assets_tests.harness import Harness, failure_text, pipeline_harness, utc

STUDENT_STATES = ("active", "invited", "creation_pending", "completed", "inactive", "rejected")


def profile() -> Profile:
    """ANALYTICS_FOCUSED (which carries the four entities) without submissions: quicker, same tables."""
    return parse_profile({"name": "ANALYTICS_FOCUSED", "entities": {"submissions": False}})


@pytest.fixture
def harness(make_sandbox, db_url, monkeypatch) -> Iterator[Harness]:
    with pipeline_harness(make_sandbox(scale="small", throttle="hosted"), db_url, monkeypatch) as h:
        assert h.discover().success
        yield h


def sync_all(h: Harness) -> None:
    result = h.sync(profile())
    assert result.success, failure_text(result)
    failed = h.rows(
        "SELECT course_id, entity, message FROM canvas_sync_log WHERE run_id = :r AND status <> 'success' "
        "AND entity IN ('courses', 'enrollments', 'sections', 'assignment_groups', 'grading_periods', "
        "'period_scores')",
        r=result.run_id,
    )
    assert failed == [], failed


def synced_courses(h: Harness) -> list[int]:
    return sorted(int(k) for k in h.course_keys())


# --- the sandbox's truth, as Canvas serves it --------------------------------------------------------------
def served_sections(h: Harness) -> dict[Any, dict]:
    d = h.sandbox.data
    return {
        s["id"]: structure.section_json(d, s, total_students=True, limited=False)
        for c in synced_courses(h)
        for s in d.sections_of(c)
    }


def served_groups(h: Harness) -> dict[Any, dict]:
    d = h.sandbox.data
    return {
        g["id"]: {**structure.group_json(g), "course_id": c}
        for c in synced_courses(h)
        for g in d.assignment_groups_of(c)
    }


def served_periods(h: Harness) -> dict[Any, dict]:
    d = h.sandbox.data
    return {
        (c, p["id"]): {**structure.period_json(d, p), "course_id": c}
        for c in synced_courses(h)
        for p in d.grading_periods_of(c)
    }


def served_period_scores(h: Harness) -> dict[Any, dict]:
    d = h.sandbox.data
    out = {}
    for c in synced_courses(h):
        for p in d.grading_periods_of(c):
            for e in d.enrollments_of(c, STUDENT_STATES, ["StudentEnrollment"]):
                out[(e["id"], p["id"])] = {
                    **e,
                    "grading_period_id": p["id"],
                    "grades": d.period_grades(e, p["id"]),
                }
    return out


def value_at(record: Mapping[str, Any], path: str) -> Any:
    value: Any = record
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def same(stored: Any, served: Any, column: Any) -> bool:
    if served is None:
        return stored is None
    if column.info.get("kind") == "json":
        import json

        return json.loads(stored) == served
    if column.name.endswith(("_at", "_date")):
        return utc(stored) == utc(served)
    if isinstance(served, float):
        return stored is not None and abs(float(stored) - served) < 1e-9
    return bool(stored == served)


def assert_mirrors(h: Harness, name: str, truth: dict[Any, dict], key: tuple[str, ...]) -> None:
    """The table's live rows are exactly the served records, every column read from Canvas (and the
    course the record was served for) equal."""
    t = table(name)
    rows = {
        tuple(r._mapping[k] for k in key): r._mapping
        for r in h.rows(f"SELECT * FROM {name} WHERE deleted_at IS NULL")
    }
    expected = {k if isinstance(k, tuple) else (k,): v for k, v in truth.items()}
    assert truth, f"the sandbox serves {name} to compare"
    assert set(rows) == set(expected), (name, set(rows) ^ set(expected))
    for k, served in expected.items():
        for column in t.c:
            path = column.info.get("path")
            if path is None and column.name != "course_id":
                continue
            want = served.get("course_id") if path is None else value_at(served, path)
            assert same(rows[k][column.name], want, column), (
                name,
                k,
                column.name,
                rows[k][column.name],
                want,
            )


def assert_all_mirrored(h: Harness) -> None:
    assert_mirrors(h, "canvas_sections", served_sections(h), ("id",))
    assert_mirrors(h, "canvas_assignment_groups", served_groups(h), ("id",))
    assert_mirrors(h, "canvas_grading_periods", served_periods(h), ("course_id", "id"))
    assert_mirrors(
        h, "canvas_enrollment_period_scores", served_period_scores(h), ("enrollment_id", "grading_period_id")
    )
    d = h.sandbox.data
    weights = dict(h.rows("SELECT id, apply_assignment_group_weights FROM canvas_courses"))
    assert weights == {c: d.courses[c]["apply_assignment_group_weights"] for c in synced_courses(h)}


# --- the tests ---------------------------------------------------------------------------------------------
def test_a_first_sync_mirrors_sections_groups_periods_and_period_scores(harness):
    h = harness
    sync_all(h)
    assert_all_mirrored(h)
    # The sandbox has what the tables are for: cross-listed sections, weights, courses with and without
    # periods, and every enrollment's section is a listed section.
    sections = h.table("canvas_sections")
    assert any(s["nonxlist_course_id"] is not None for s in sections.values())
    assert {r.course_id for r in h.rows("SELECT course_id FROM canvas_grading_periods")} < set(
        synced_courses(h)
    )
    orphans = h.rows(
        "SELECT e.id FROM canvas_enrollments e LEFT JOIN canvas_sections s ON s.id = e.course_section_id "
        "WHERE e.deleted_at IS NULL AND s.id IS NULL"
    )
    assert orphans == []
    ungrouped = h.rows(
        "SELECT a.id FROM canvas_assignments a LEFT JOIN canvas_assignment_groups g "
        "ON g.id = a.assignment_group_id AND g.course_id = a.course_id "
        "WHERE a.deleted_at IS NULL AND g.id IS NULL"
    )
    assert ungrouped == []
    # Each period score was first seen once: one history row per (enrollment, period) with a score.
    (history,) = h.rows("SELECT COUNT(*) FROM canvas_enrollment_period_score_history")[0]
    scored = [
        r
        for r in served_period_scores(h).values()
        if any(
            r["grades"][k] is not None
            for k in ("current_score", "final_score", "current_grade", "final_grade")
        )
    ]
    assert history == len(scored) > 0


def test_a_new_section_a_cross_listing_a_weight_and_a_period_score_are_mirrored(harness):
    h = harness
    d = h.sandbox.data
    sync_all(h)
    courses = synced_courses(h)
    with_students = [c for c in courses if d.enrollments_of(c, ("active",), ["StudentEnrollment"])]
    origin, target = with_students[0], with_students[1]
    new_section = d.add_section(origin, students=2)
    moved = [e["id"] for e in d.enrollments_of(origin) if e["course_section_id"] == new_section]
    assert moved
    d.crosslist_section(new_section, target)
    group = d.assignment_groups_of(target)[0]["id"]
    d.set_group_weight(group, 42.5)
    periodic = next(
        c
        for c in courses
        if d.grading_periods_of(c) and d.enrollments_of(c, ("active",), ["StudentEnrollment"])
    )
    period = d.grading_periods_of(periodic)[0]["id"]
    student = d.enrollments_of(periodic, ("active",), ["StudentEnrollment"])[0]["id"]
    d.change_period_score(student, period, 55.5)

    sync_all(h)
    assert_all_mirrored(h)
    section = h.table("canvas_sections")[new_section]
    assert (section["course_id"], section["nonxlist_course_id"], section["deleted_at"]) == (
        target,
        origin,
        None,
    )
    enrollments = h.table("canvas_enrollments")
    assert {enrollments[e]["course_id"] for e in moved} == {target}
    assert {enrollments[e]["course_section_id"] for e in moved} == {new_section}
    assert h.table("canvas_assignment_groups")[group]["group_weight"] == 42.5
    history = h.rows(
        "SELECT current_score FROM canvas_enrollment_period_score_history "
        "WHERE enrollment_id = :e AND grading_period_id = :p ORDER BY recorded_at, id",
        e=student,
        p=period,
    )
    assert [r.current_score for r in history][-1] == 55.5 and len(history) == 2


def test_grading_periods_are_read_under_their_key_and_a_malformed_wrapper_is_an_error(sandbox):
    d = sandbox.data
    course = next(c for c in d.course_ids() if d.grading_periods_of(c))
    path = f"/courses/{course}/grading_periods"
    with CanvasClient(sandbox.base_url, sandbox.token) as client:
        got = client.list_records(path, wrapped_in="grading_periods")
        assert [p["id"] for p in got] == [p["id"] for p in d.grading_periods_of(course)]
        # Canvas paginates the wrapped list with Link headers like any other: one record a page.
        assert client.list_records(path, [("per_page", "1")], wrapped_in="grading_periods") == got
        for body, words in (
            (b"[]", "expected an object holding the list under 'grading_periods'"),
            (b'{"meta": {}}', "whose 'grading_periods' is not a list"),
            (b'{"grading_periods": null, "meta": {}}', "whose 'grading_periods' is not a list"),
            (b'{"grading_periods": [null]}', "where records belong"),
        ):
            sandbox.misbehave(path, count=1, body=body)
            with pytest.raises(CanvasAPIError) as info:
                client.list_records(path, wrapped_in="grading_periods")
            assert words in str(info.value)
        # And a list that is not wrapped is not taken as one that is.
        with pytest.raises(CanvasAPIError):
            client.list_records(f"/courses/{course}/sections", wrapped_in="grading_periods")


def test_an_unknown_grading_period_is_refused_as_canvas_refuses_it(sandbox):
    d = sandbox.data
    course = next(c for c in d.course_ids() if not d.grading_periods_of(c) and d.enrollments_of(c))
    with CanvasClient(sandbox.base_url, sandbox.token) as client, pytest.raises(CanvasAPIError) as info:
        client.list_records(f"/courses/{course}/enrollments", [("grading_period_id", "999999")])
    assert info.value.status == 400
    assert "invalid grading_period_id" in str(info.value)


def test_deleted_sections_and_groups_are_not_listed_and_total_students_counts_active_and_invited(sandbox):
    d = sandbox.data
    course = next(c for c in d.course_ids() if d.enrollments_of(c, ("active",), ["StudentEnrollment"]))
    section = d.add_section(course, students=3)
    d.course_sections[d.sections[course]["id"]]["workflow_state"] = "deleted"  # as CourseSection#destroy
    group = d.assignment_groups_of(course)[0]
    group["workflow_state"] = "deleted"
    with CanvasClient(sandbox.base_url, sandbox.token) as client:
        sections = client.list_records(f"/courses/{course}/sections", [("include[]", "total_students")])
        groups = client.list_records(f"/courses/{course}/assignment_groups")
        bare = client.list_records(f"/courses/{course}/sections")
    assert d.sections[course]["id"] not in {s["id"] for s in sections}
    assert group["id"] not in {g["id"] for g in groups}
    counted = {s["id"]: s["total_students"] for s in sections}
    assert counted[section] == 3
    assert all("total_students" not in s for s in bare)
    # Sections come by name, then id; groups by position.
    assert [s["id"] for s in sections] == [s["id"] for s in d.sections_of(course)]
    assert [g["position"] for g in groups] == sorted(g["position"] for g in groups)
