"""Row fingerprints (`row_hash`): how a load finds the rows that may have changed without comparing every
column, and why it never writes a row whose values did not change."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from canvas_assets.transform import TransformOptions
from canvas_assets.warehouse import bulk
from canvas_assets.warehouse.bulk import row_hashes
from canvas_assets.warehouse.models import table
from canvas_assets_tests.test_warehouse import COURSE, T0, T1, T2, enrollment, history, rows, run

ENROLLMENTS = table("canvas_enrollments")


def _frame(**columns):
    return pd.DataFrame({"id": [1, 2, 3], **columns})


def _hashes(frame, name="canvas_enrollments"):
    return list(row_hashes(frame, table(name), ["id"]))


def test_a_value_hashes_alike_whatever_the_frames_dtype():
    as_int = _frame(role_id=[3, 4, 3], total_activity_time=[10, 20, 30])
    as_float = _frame(role_id=[3.0, 4.0, 3.0], total_activity_time=[10.0, 20.0, 30.0])
    as_object = _frame(role_id=np.array([3, 4, 3], dtype=object), total_activity_time=[10, 20, 30])
    assert _hashes(as_int) == _hashes(as_float) == _hashes(as_object)
    text = _frame(role=["a", None, "c"])
    assert _hashes(text) == _hashes(text.astype({"role": "string"}))
    assert _hashes(_frame(current_score=[0.0, 1.5, 2.0])) == _hashes(_frame(current_score=[-0.0, 1.5, 2.0]))


def test_every_value_and_every_null_counts():
    base = _frame(role=["a", "b", "c"], current_score=[1.0, 2.0, 3.0], role_id=[1, 2, 3])
    before = _hashes(base)
    for column, value in (("role", "B"), ("role", None), ("current_score", 2.5), ("role_id", None)):
        changed = base.copy()
        changed.loc[1, column] = value
        after = _hashes(changed)
        assert after[0] == before[0] and after[2] == before[2]
        assert after[1] != before[1], (column, value)
    # NULL is not the text "None", nor an empty string, nor zero
    assert len(set(_hashes(_frame(role=[None, "None", ""])))) == 3
    assert len(set(_hashes(_frame(role_id=[None, 0, 1])))) == 3
    # the same values in swapped columns are another row
    assert _hashes(_frame(role=["x"] * 3, type=["y"] * 3)) != _hashes(_frame(role=["y"] * 3, type=["x"] * 3))


def test_a_fingerprint_names_its_column_set_and_its_table():
    assert _hashes(_frame(role=["a"] * 3)) != _hashes(_frame(role=["a"] * 3, current_score=[None] * 3))
    courses = table("canvas_courses")
    frame = pd.DataFrame({"id": [1], "name": ["x"]})
    assert row_hashes(frame, courses, ["id"])[0] != row_hashes(frame, table("canvas_students"), ["id"])[0]


def test_fingerprints_are_the_same_in_another_process():
    """Stored fingerprints are compared with ones computed by later processes: nothing may depend on the
    interpreter's per-process string hashing."""
    code = (
        "import pandas as pd\n"
        "from canvas_assets.warehouse.bulk import row_hashes\n"
        "from canvas_assets.warehouse.models import table\n"
        "f = pd.DataFrame({'id': [1, 2], 'role': ['a', None], 'current_score': [1.5, None]})\n"
        "print(list(row_hashes(f, table('canvas_enrollments'), ['id'])))\n"
    )
    frame = pd.DataFrame({"id": [1, 2], "role": ["a", None], "current_score": [1.5, None]})
    here = str(_hashes(frame))
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={"PYTHONHASHSEED": seed, "PATH": ""},
            capture_output=True,
            text=True,
            check=True,
        )
        assert out.stdout.strip() == here


def _null_fingerprints(wh, name="canvas_enrollments"):
    with wh.engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {name} SET row_hash = NULL"))


def test_rows_without_a_fingerprint_are_compared_and_get_one_once(wh):
    """Rows stored before migration 0004 have no fingerprint: the next load writes each once to store one
    (no history: no value changed), and the load after that writes nothing."""
    records = {COURSE: [enrollment(i, score=50.0 + i) for i in range(1, 6)]}
    run(wh, "enrollments", records, T0)
    _null_fingerprints(wh)
    stats = run(wh, "enrollments", records, T1).tables["canvas_enrollments"]
    assert (stats.updated, stats.unchanged, stats.history_rows) == (5, 0, 0)
    assert all(r["row_hash"] is not None for r in rows(wh, "canvas_enrollments"))
    stats = run(wh, "enrollments", records, T2).tables["canvas_enrollments"]
    assert (stats.inserted, stats.updated, stats.unchanged) == (0, 0, 5)
    assert len(history(wh)) == 5


def test_a_row_edited_by_hand_is_repaired_once_its_fingerprint_is_cleared(wh):
    records = {COURSE: [enrollment(1, score=70.0)]}
    run(wh, "enrollments", records, T0)
    with wh.engine.begin() as conn:
        conn.execute(sa.text("UPDATE canvas_enrollments SET current_score = 1.0"))
    run(wh, "enrollments", records, T1)
    assert rows(wh, "canvas_enrollments")[0]["current_score"] == 1.0  # the fingerprint still matches
    _null_fingerprints(wh)
    run(wh, "enrollments", records, T2)
    assert rows(wh, "canvas_enrollments")[0]["current_score"] == 70.0


def test_alternating_column_sets_write_nothing_when_nothing_changed(wh):
    """A profile without scores fingerprints other columns than one with them: its fingerprints never match,
    the rows are compared column by column, and identical ones are not written, in either direction."""
    no_scores = TransformOptions(student_scores=False)
    records = {COURSE: [enrollment(i, score=60.0 + i) for i in range(1, 5)]}
    run(wh, "enrollments", records, T0)
    stored = rows(wh, "canvas_enrollments")
    for at, options in ((T1, no_scores), (T2, None), (T2, no_scores)):
        stats = run(wh, "enrollments", records, at, options).tables["canvas_enrollments"]
        assert (stats.inserted, stats.updated, stats.unchanged) == (0, 0, 4)
        assert rows(wh, "canvas_enrollments") == stored
    # a change under the narrower profile is written, and leaves the scores it does not carry as they were
    records[COURSE][0]["enrollment_state"] = "completed"
    stats = run(wh, "enrollments", records, T2, no_scores).tables["canvas_enrollments"]
    assert (stats.updated, stats.unchanged) == (1, 3)
    after = rows(wh, "canvas_enrollments")
    assert after[0]["enrollment_state"] == "completed" and after[0]["current_score"] == 61.0


def test_a_copy_streamed_in_many_chunks_loads_every_value(pg_url, monkeypatch):
    """PostgreSQL: the COPY stream is encoded a few rows at a time while the server reads it."""
    from canvas_assets.warehouse import Warehouse

    monkeypatch.setattr(bulk, "COPY_CHUNK_ROWS", 3)
    wh = Warehouse(pg_url)
    wh.ensure_schema()
    names = ["", "ab", None, "北京\tq\\N", "x" * 300, None, "z", "y" * 7, "end"]
    students = {COURSE: [{"id": i + 1, "name": n} for i, n in enumerate(names)]}
    run(wh, "students", students, T0)
    assert [r["name"] for r in rows(wh, "canvas_students")] == names
    records = {COURSE: [enrollment(i, score=float(i)) for i in range(1, 11)]}
    run(wh, "enrollments", records, T0)
    assert [r["current_score"] for r in rows(wh, "canvas_enrollments")] == [float(i) for i in range(1, 11)]
    assert len(history(wh)) == 10


@pytest.mark.parametrize("changed", [0, 1, 3])
def test_a_resync_writes_exactly_the_changed_rows_and_their_history(wh, changed):
    records = {COURSE: [enrollment(i, score=40.0 + i) for i in range(1, 8)]}
    run(wh, "enrollments", records, T0)
    for record in records[COURSE][:changed]:
        record["grades"]["current_score"] += 0.5
    stats = run(wh, "enrollments", records, T1).tables["canvas_enrollments"]
    assert (stats.updated, stats.unchanged, stats.history_rows) == (changed, 7 - changed, changed)
    assert [r["current_score"] for r in rows(wh, "canvas_enrollments")] == [
        r["grades"]["current_score"] for r in records[COURSE]
    ]


def test_a_timestamp_hashes_as_its_instant():
    utc = pd.Series(pd.to_datetime(["2025-01-06T07:00:00Z", None, "2025-02-01T00:00:00Z"], utc=True))
    offset = pd.Series(["2025-01-06T08:00:00+01:00", None, "2025-01-31T19:00:00-05:00"], dtype=object)
    assert _hashes(_frame(created_at=utc)) == _hashes(_frame(created_at=offset))
    later = utc.copy()
    later[0] += pd.Timedelta(microseconds=1)
    assert _hashes(_frame(created_at=later))[0] != _hashes(_frame(created_at=utc))[0]


def test_a_first_load_of_a_course_goes_straight_in_and_falls_back_when_a_key_lives_elsewhere(wh):
    from canvas_assets_tests.test_warehouse import OTHER

    first = run(wh, "enrollments", {OTHER: [enrollment(1, course_id=OTHER, score=10.0)]}, T0)
    assert first.tables["canvas_enrollments"].inserted == 1
    # COURSE has no rows yet, but enrollment 1 lives in OTHER: the straight insert fails on its key, under a
    # savepoint, and the load compares instead: 1 moves, 2 is new, nothing is lost or doubled.
    moved = {COURSE: [enrollment(1, score=10.0), enrollment(2, score=20.0)]}
    stats = run(wh, "enrollments", moved, T1).tables["canvas_enrollments"]
    assert (stats.inserted, stats.updated, stats.history_rows) == (1, 1, 1)
    assert [(r["id"], r["course_id"], r["deleted_at"]) for r in rows(wh, "canvas_enrollments")] == [
        (1, COURSE, None),
        (2, COURSE, None),
    ]
    assert [(h["enrollment_id"], h["current_score"]) for h in history(wh)] == [(1, 10.0), (2, 20.0)]
