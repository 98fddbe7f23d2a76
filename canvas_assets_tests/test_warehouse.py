"""Layer-1 loads on SQLite and PostgreSQL: upsert, soft delete, partial columns, score history, atomicity."""

from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from canvas_assets.transform import TRANSFORMERS, TransformOptions
from canvas_assets.warehouse import bulk, load
from canvas_assets.warehouse.models import table

COURSE = 101
OTHER = 102
BIG = 2**31 + 7
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
T1 = T0 + timedelta(hours=1)
T2 = T0 + timedelta(hours=2)


def enrollment(id, user_id=None, score=80.0, grade="B", course_id=COURSE):
    return {
        "id": id,
        "user_id": user_id or id + 1000,
        "course_id": course_id,
        "type": "StudentEnrollment",
        "enrollment_state": "active",
        "created_at": "2025-01-06T08:00:00+01:00",
        "grades": {
            "current_score": score,
            "final_score": score,
            "current_grade": grade,
            "final_grade": grade,
        },
    }


def course(id=COURSE, **overrides):
    record = {
        "id": id,
        "name": f"Course {id}",
        "workflow_state": "available",
        "syllabus_body": "<p>full syllabus</p>",
        "is_public": True,
        "public_description": "public",
        "term": {"name": "Spring", "start_at": "2025-01-01T00:00:00Z"},
    }
    record.update(overrides)
    return record


def run(wh, entity, records_by_course, synced_at, options=None, course_ids=None, full_refresh=True):
    result = TRANSFORMERS[entity](records_by_course, options or TransformOptions())
    return wh.load(
        result,
        course_ids=list(records_by_course) if course_ids is None else course_ids,
        run_id=f"run-{synced_at:%H%M}",
        synced_at=synced_at,
        full_refresh=full_refresh,
    )


def rows(wh, name, order_by="id"):
    t = table(name)
    with wh.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(t).order_by(t.c[order_by], *t.primary_key))]


def history(wh):
    return rows(wh, "canvas_score_history", "id")


def test_a_load_writes_typed_rows_with_utc_timestamps_and_64_bit_ids(wh):
    run(wh, "enrollments", {COURSE: [enrollment(BIG, user_id=BIG + 1)]}, T0)
    [row] = rows(wh, "canvas_enrollments")
    assert (row["id"], row["user_id"]) == (BIG, BIG + 1)
    assert row["created_at"] == datetime(2025, 1, 6, 7, 0, tzinfo=timezone.utc)
    assert "synced_at" not in row  # when Canvas confirmed the course lives in canvas_course_sync
    assert row["current_score"] == 80.0
    assert row["deleted_at"] is None


def test_a_second_identical_load_writes_nothing_and_confirms_the_course(wh):
    records = {COURSE: [enrollment(1), enrollment(2, score=55.5)]}
    run(wh, "enrollments", records, T0)
    before = rows(wh, "canvas_enrollments")
    stats = run(wh, "enrollments", records, T1)
    assert rows(wh, "canvas_enrollments") == before
    assert len(history(wh)) == 2
    s = stats.tables["canvas_enrollments"]
    assert (s.rows, s.upserted, s.inserted, s.updated, s.unchanged) == (2, 0, 0, 0, 2)
    assert (s.soft_deleted, s.restored, s.history_rows, s.written) == (0, 0, 0, 0)
    [confirmed] = wh.confirmations("enrollments")
    assert (confirmed["course_id"], confirmed["confirmed_at"], confirmed["changed_at"]) == (COURSE, T1, T0)
    assert confirmed["run_id"] == "run-1300"


def test_a_vanished_row_is_soft_deleted_and_restored_when_it_returns(wh):
    run(wh, "enrollments", {COURSE: [enrollment(1), enrollment(2)]}, T0)
    stats = run(wh, "enrollments", {COURSE: [enrollment(1)]}, T1)
    assert stats.tables["canvas_enrollments"].soft_deleted == 1
    assert [(r["id"], r["deleted_at"]) for r in rows(wh, "canvas_enrollments")] == [(1, None), (2, T1)]

    stats = run(wh, "enrollments", {COURSE: [enrollment(1), enrollment(2)]}, T2)
    assert stats.tables["canvas_enrollments"].restored == 1
    assert [r["deleted_at"] for r in rows(wh, "canvas_enrollments")] == [None, None]


def test_soft_delete_touches_only_the_courses_of_the_load(wh):
    run(wh, "enrollments", {COURSE: [enrollment(1)], OTHER: [enrollment(2, course_id=OTHER)]}, T0)
    run(wh, "enrollments", {COURSE: []}, T1)
    assert [(r["id"], r["deleted_at"]) for r in rows(wh, "canvas_enrollments")] == [(1, T1), (2, None)]


def test_a_load_without_full_refresh_soft_deletes_nothing(wh):
    run(wh, "enrollments", {COURSE: [enrollment(1), enrollment(2)]}, T0)
    stats = run(wh, "enrollments", {COURSE: [enrollment(1)]}, T1, full_refresh=False)
    assert stats.soft_deleted == 0
    assert all(r["deleted_at"] is None for r in rows(wh, "canvas_enrollments"))


def test_students_are_never_soft_deleted(wh):
    run(wh, "students", {COURSE: [{"id": 1, "name": "Ann"}, {"id": 2, "name": "Bob"}]}, T0)
    stats = run(wh, "students", {COURSE: [{"id": 1, "name": "Ann"}]}, T1)
    assert stats.soft_deleted == 0
    assert len(rows(wh, "canvas_students")) == 2


def test_a_quarantined_record_does_not_soft_delete_its_row(wh):
    run(wh, "enrollments", {COURSE: [enrollment(1), enrollment(2)]}, T0)
    broken = {**enrollment(2), "created_at": "not a date"}
    stats = run(wh, "enrollments", {COURSE: [enrollment(1), broken]}, T1)
    assert stats.soft_deleted == 0
    assert [r["deleted_at"] for r in rows(wh, "canvas_enrollments")] == [None, None]


def test_a_lighter_profile_keeps_the_columns_it_does_not_fetch(wh):
    run(wh, "courses", {COURSE: [course()]}, T0)
    light = TransformOptions(course_extended_info=False, course_public_info=False)
    run(
        wh,
        "courses",
        {COURSE: [course(name="Renamed", syllabus_body=None)], OTHER: [course(OTHER)]},
        T1,
        light,
    )
    by_id = {r["id"]: r for r in rows(wh, "canvas_courses")}
    assert by_id[COURSE]["name"] == "Renamed"
    assert by_id[COURSE]["syllabus_body"] == "<p>full syllabus</p>"
    assert by_id[COURSE]["public_description"] == "public"
    assert by_id[COURSE]["term_start_at"] == datetime(2025, 1, 1, tzinfo=timezone.utc)
    assert by_id[OTHER]["syllabus_body"] is None  # a new row gets NULL where the frame has no column
    assert {c["course_id"]: c["confirmed_at"] for c in wh.confirmations("courses")} == {COURSE: T1, OTHER: T1}


def test_score_history_records_new_scores_and_changes_only(wh):
    run(wh, "enrollments", {COURSE: [enrollment(1, score=80.0), enrollment(2, score=60.0)]}, T0)
    assert [(h["enrollment_id"], h["current_score"]) for h in history(wh)] == [(1, 80.0), (2, 60.0)]

    stats = run(
        wh, "enrollments", {COURSE: [enrollment(1, score=80.0), enrollment(2, score=65.0, grade="C")]}, T1
    )
    assert stats.history_rows == 1
    last = history(wh)[-1]
    assert (last["enrollment_id"], last["user_id"], last["course_id"]) == (2, 1002, COURSE)
    assert (last["current_score"], last["current_grade"], last["recorded_at"], last["run_id"]) == (
        65.0,
        "C",
        T1,
        "run-1300",
    )


def test_an_enrollment_first_seen_without_scores_gets_no_history_until_it_has_one(wh):
    teacher = {"id": 9, "user_id": 99, "course_id": COURSE, "type": "TeacherEnrollment"}
    run(wh, "enrollments", {COURSE: [teacher]}, T0)
    assert history(wh) == []
    run(wh, "enrollments", {COURSE: [enrollment(9, user_id=99, score=50.0)]}, T1)
    assert [h["current_score"] for h in history(wh)] == [50.0]


def test_no_score_history_and_untouched_scores_when_scores_are_switched_off(wh):
    run(wh, "enrollments", {COURSE: [enrollment(1, score=80.0)]}, T0)
    no_scores = TransformOptions(student_scores=False)
    run(wh, "enrollments", {COURSE: [enrollment(1, score=10.0)]}, T1, no_scores)
    assert len(history(wh)) == 1
    assert rows(wh, "canvas_enrollments")[0]["current_score"] == 80.0


def test_a_failure_mid_load_leaves_the_previous_state(wh, monkeypatch):
    run(wh, "enrollments", {COURSE: [enrollment(i) for i in range(1, 6)]}, T0)
    before_rows, before_history = rows(wh, "canvas_enrollments"), history(wh)

    monkeypatch.setattr(load, "BATCH_ROWS", 2)
    monkeypatch.setattr(load, "COPY_BATCH_ROWS", 2)
    batches = []

    def crash_after_first_batch(table, index, n):
        batches.append(index)
        if index >= 1:
            raise RuntimeError("simulated crash")

    monkeypatch.setattr(load, "_after_batch", crash_after_first_batch)
    changed = {COURSE: [enrollment(i, score=10.0 * i) for i in range(1, 4)] + [enrollment(7)]}
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(wh, "enrollments", changed, T1)
    assert batches == [0, 1]  # the first batch was written before the crash
    assert rows(wh, "canvas_enrollments") == before_rows
    assert history(wh) == before_history


def test_a_failure_in_the_second_table_rolls_back_the_first(wh, monkeypatch):
    modules = {COURSE: [{"id": 50, "name": "Week 1", "items": [{"id": 500, "title": "Intro"}]}]}

    def crash_on_items(table, index, n):
        if table == "canvas_module_items":
            raise RuntimeError("simulated crash")

    monkeypatch.setattr(load, "_after_batch", crash_on_items)
    with pytest.raises(RuntimeError):
        run(wh, "modules", modules, T0)
    assert rows(wh, "canvas_modules") == []


def test_modules_and_items_load_and_soft_delete_together(wh):
    module = {"id": 50, "name": "Week 1", "items": [{"id": 500, "title": "A"}, {"id": 501, "title": "B"}]}
    run(wh, "modules", {COURSE: [module]}, T0)
    module["items"] = module["items"][:1]
    stats = run(wh, "modules", {COURSE: [module]}, T1)
    assert stats.tables["canvas_module_items"].soft_deleted == 1
    assert [(r["id"], r["module_id"], r["deleted_at"]) for r in rows(wh, "canvas_module_items")] == [
        (500, 50, None),
        (501, 50, T1),
    ]


def test_student_summaries_upsert_on_course_and_user(wh):
    summary = {"id": 5, "page_views": 10, "tardiness_breakdown": {"on_time": 1}}
    run(wh, "student_summaries", {COURSE: [summary], OTHER: [summary]}, T0)
    stats = run(wh, "student_summaries", {COURSE: [{**summary, "page_views": 11}]}, T1)
    assert stats.tables["canvas_student_summaries"].inserted == 0
    got = [
        (r["course_id"], r["user_id"], r["page_views"])
        for r in rows(wh, "canvas_student_summaries", "course_id")
    ]
    assert got == [(COURSE, 5, 11), (OTHER, 5, 10)]


def test_text_with_tabs_newlines_backslashes_and_unicode_round_trips(wh):
    name = 'Zoë "Q" O\'Brien\t\\N\nline2 \\ 北京'
    run(wh, "students", {COURSE: [{"id": 1, "name": name, "short_name": "\\N", "sortable_name": ""}]}, T0)
    row = rows(wh, "canvas_students")[0]
    assert (row["name"], row["short_name"], row["sortable_name"], row["email"]) == (name, "\\N", "", None)


def test_load_stats_report_inserted_and_totals(wh):
    stats = run(wh, "enrollments", {COURSE: [enrollment(1), enrollment(2)]}, T0)
    assert (stats.upserted, stats.inserted, stats.history_rows) == (2, 2, 2)
    meta = stats.to_metadata()
    assert (meta["rows_upserted"], meta["rows_written"], meta["rows_unchanged"]) == (2, 2, 0)
    assert meta["canvas_enrollments.inserted"] == 2
    assert (meta["courses_confirmed"], meta["courses_changed"]) == (1, 1)
    meta = run(wh, "enrollments", {COURSE: [enrollment(1), enrollment(2, score=1.0)]}, T1).to_metadata()
    assert (meta["rows_written"], meta["rows_updated"], meta["rows_unchanged"]) == (1, 1, 1)
    assert (meta["canvas_enrollments.upserted"], meta["score_history_rows"]) == (1, 1)


def test_a_frame_with_an_unknown_column_is_refused(wh):
    result = TRANSFORMERS["students"]({COURSE: [{"id": 1}]}, TransformOptions())
    result.tables["canvas_students"]["shoe_size"] = 42
    with pytest.raises(ValueError, match="shoe_size"):
        wh.load(result, course_ids=[COURSE], run_id="r", synced_at=T0)


# --- what a re-sync writes (PostgreSQL's own accounting) ------------------------------------------------------
LAYER1 = ("canvas_courses", "canvas_students", "canvas_enrollments", "canvas_modules", "canvas_module_items")


def _row_versions(engine):
    """Every Layer-1 row's physical version: (table, key) -> (xmin, ctid). A written row gets a new one."""
    out = {}
    with engine.connect() as conn:
        for name in LAYER1:
            for key, xmin, ctid in conn.execute(sa.text(f"SELECT id, xmin::text, ctid::text FROM {name}")):
                out[(name, key)] = (xmin, ctid)
    return out


def _pg_writes(url):
    """n_tup_ins and n_tup_upd per Layer-1 table, once every backend that wrote has exited and reported."""
    from canvas_assets.warehouse.engine import dispose_engines

    dispose_engines()
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    last = None
    for _ in range(40):
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT pg_stat_clear_snapshot()")
            counts = {
                r.relname: (r.n_tup_ins, r.n_tup_upd)
                for r in conn.execute(
                    sa.text(
                        "SELECT relname, n_tup_ins, n_tup_upd FROM pg_stat_user_tables WHERE relname IN :t"
                    ).bindparams(sa.bindparam("t", expanding=True)),
                    {"t": list(LAYER1)},
                )
            }
        if counts == last:
            break
        last = counts
        import time

        time.sleep(0.25)
    engine.dispose()
    return counts


def _sync(wh, records, at):
    courses, students, enrollments, modules = records
    for entity, data in (
        ("courses", courses),
        ("students", students),
        ("enrollments", enrollments),
        ("modules", modules),
    ):
        run(wh, entity, data, at)


def _records():
    courses = {c: [course(c)] for c in (COURSE, OTHER)}
    students = {COURSE: [{"id": 1000 + i, "name": f"S{i}"} for i in range(1, 31)]}
    enrollments = {
        COURSE: [enrollment(i, score=50.0 + i) for i in range(1, 21)],
        OTHER: [enrollment(i, course_id=OTHER, score=None) for i in range(21, 31)],
    }
    modules = {
        COURSE: [{"id": 50, "name": "Week 1", "items": [{"id": 500 + i, "title": f"I{i}"} for i in range(5)]}]
    }
    return courses, students, enrollments, modules


def test_a_resync_writes_only_the_rows_canvas_changed(pg_url):
    from canvas_assets.warehouse import Warehouse

    wh = Warehouse(pg_url)
    wh.ensure_schema()
    records = _records()
    _sync(wh, records, T0)
    versions, writes, history_before = _row_versions(wh.engine), _pg_writes(pg_url), len(history(wh))
    wh = Warehouse(pg_url)

    _sync(wh, _records(), T1)  # identical data: nothing is written, nothing locked
    assert _row_versions(wh.engine) == versions
    assert _pg_writes(pg_url) == writes
    assert len(history(wh)) == history_before
    assert {c["confirmed_at"] for c in wh.confirmations()} == {T1}
    wh = Warehouse(pg_url)

    courses, students, enrollments, modules = _records()
    enrollments[COURSE][3]["grades"]["current_score"] = 1.0  # enrollment 4: a score
    enrollments[OTHER][0]["enrollment_state"] = "completed"  # enrollment 21: not a score
    students[COURSE][0]["name"] = "Renamed"  # student 1001
    modules[COURSE][0]["items"][2]["title"] = "Changed"  # item 502
    _sync(wh, (courses, students, enrollments, modules), T2)
    after = _row_versions(wh.engine)
    rewritten = sorted(k for k in after if after[k] != versions[k])
    assert rewritten == [
        ("canvas_enrollments", 4),
        ("canvas_enrollments", 21),
        ("canvas_module_items", 502),
        ("canvas_students", 1001),
    ]
    now = _pg_writes(pg_url)
    delta = {t: (now[t][0] - writes[t][0], now[t][1] - writes[t][1]) for t in LAYER1}
    assert delta == {
        "canvas_courses": (0, 0),
        "canvas_students": (0, 1),
        "canvas_enrollments": (0, 2),
        "canvas_modules": (0, 0),
        "canvas_module_items": (0, 1),
    }
    assert [
        (h["enrollment_id"], h["current_score"], h["recorded_at"]) for h in history(wh)[history_before:]
    ] == [(4, 1.0, T2)]
    sync = {(c["entity"], c["course_id"]): (c["confirmed_at"], c["changed_at"]) for c in wh.confirmations()}
    assert sync[("enrollments", COURSE)] == (T2, T2)
    assert sync[("enrollments", OTHER)] == (T2, T2)
    assert sync[("courses", COURSE)] == (T2, T0)  # confirmed, unchanged since the first load
    assert sync[("modules", COURSE)] == (T2, T2)


def test_soft_delete_and_restore_write_only_those_rows(pg_url):
    from canvas_assets.warehouse import Warehouse

    wh = Warehouse(pg_url)
    wh.ensure_schema()
    run(wh, "enrollments", {COURSE: [enrollment(i) for i in range(1, 11)]}, T0)
    versions = _row_versions(wh.engine)
    stats = run(wh, "enrollments", {COURSE: [enrollment(i) for i in range(1, 10)]}, T1)
    assert (stats.soft_deleted, stats.written) == (1, 1)
    after = _row_versions(wh.engine)
    assert sorted(k for k in after if after[k] != versions[k]) == [("canvas_enrollments", 10)]
    stats = run(wh, "enrollments", {COURSE: [enrollment(i) for i in range(1, 11)]}, T2)
    assert (stats.restored, stats.updated, stats.written, stats.history_rows) == (1, 1, 1, 0)
    assert [r["deleted_at"] for r in rows(wh, "canvas_enrollments")] == [None] * 10
    from canvas_assets.warehouse.engine import dispose_engines

    dispose_engines()


def test_binary_copy_places_long_and_short_text_in_groups(pg_url, monkeypatch):
    monkeypatch.setattr(bulk, "SCATTER_BYTES", 7)  # many groups, some of one long value
    values = ["", "abc", None, "x" * 20, "北京\tq\\N", "yy", None, "z" * 3]
    records = {COURSE: [{"id": i + 1, "name": v} for i, v in enumerate(values)]}
    from canvas_assets.warehouse import Warehouse

    wh = Warehouse(pg_url)
    wh.ensure_schema()
    run(wh, "students", records, T0)
    assert [r["name"] for r in rows(wh, "canvas_students")] == values
