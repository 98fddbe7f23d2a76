"""Where "last synced" lives now that unchanged Layer-1 rows are not rewritten: canvas_course_sync and status."""

import json
from datetime import datetime, timedelta, timezone

from canvas_assets.cli.status import pipeline_status
from canvas_assets.transform import TRANSFORMERS, TransformOptions

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
T1 = T0 + timedelta(days=1)


def load(wh, entity, records, at, course_ids=None):
    result = TRANSFORMERS[entity](records, TransformOptions())
    return wh.load(result, course_ids=course_ids or list(records), run_id=f"run-{at:%d}", synced_at=at)


def test_each_load_confirms_its_courses_and_status_reports_it(wh):
    wh.upsert_catalog([{"id": 1, "name": "One"}, {"id": 2, "name": "Two"}], seen_at=T0)
    wh.replace_staging("enrollments", 1, [{"id": 10, "user_id": 5}], run_id="x", fetched_at=T0)
    load(wh, "courses", {1: [{"id": 1, "name": "One"}], 2: [{"id": 2, "name": "Two"}]}, T0)
    load(wh, "enrollments", {1: [{"id": 10, "user_id": 5, "course_id": 1}], 2: []}, T0)
    # The next night nothing changed in course 1; course 2's course object did.
    load(wh, "courses", {1: [{"id": 1, "name": "One"}], 2: [{"id": 2, "name": "Two, renamed"}]}, T1)
    load(wh, "enrollments", {1: [{"id": 10, "user_id": 5, "course_id": 1}]}, T1)

    rows = {(r["entity"], r["course_id"]): r for r in wh.confirmations()}
    assert {k: (r["confirmed_at"], r["changed_at"]) for k, r in rows.items()} == {
        ("courses", 1): (T1, T0),
        ("courses", 2): (T1, T1),
        ("enrollments", 1): (T1, T0),
        ("enrollments", 2): (T0, None),  # nothing ever loaded there; confirmed empty at T0
    }
    assert rows[("enrollments", 1)]["fetched_at"] == T0  # when staging fetched what was loaded
    assert rows[("enrollments", 1)]["run_id"] == f"run-{T1:%d}"
    assert [r["course_id"] for r in wh.confirmations("courses", [2])] == [2]

    st = pipeline_status(wh.engine)
    by_id = {c.course_id: c for c in st.courses}
    assert by_id[1].confirmed == {"courses": T1, "enrollments": T1}
    assert by_id[2].last_confirmed == T0  # its enrollments were last confirmed at T0
    assert by_id[2].changed == {"courses": T1}
    assert st.confirmed["courses"] == {"courses": 2, "oldest": T1, "newest": T1}
    payload = json.loads(json.dumps(st.to_dict()))
    [course2] = [c for c in payload["courses"] if c["course_id"] == 2]
    assert course2["confirmed"] == {"courses": T1.isoformat(), "enrollments": T0.isoformat()}
    assert course2["last_confirmed"] == T0.isoformat()
    assert payload["confirmed"]["enrollments"]["oldest"] == T0.isoformat()
