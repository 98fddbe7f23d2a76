"""The sandbox's submissions over real HTTP: fields, bookmark pages, since filters, mutations, clock."""

from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

import pytest
import requests

from canvas_assets.sandbox import CanvasSandbox, SandboxConfig, SandboxData

FIELDS = {
    "id", "user_id", "assignment_id", "score", "grade", "entered_score", "entered_grade", "submitted_at",
    "graded_at", "posted_at", "workflow_state", "late", "missing", "excused", "late_policy_status",
    "seconds_late", "attempt", "submission_type", "points_deducted",
}  # fmt: skip
STAMPS = ("submitted_at", "graded_at", "posted_at")


def at(stamp: str | None) -> datetime | None:
    return None if stamp is None else datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def iso(moment: datetime, offset_hours: int = 0) -> str:
    return moment.astimezone(timezone(timedelta(hours=offset_hours))).isoformat()


def get(sb: CanvasSandbox, path: str, **params: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {sb.token}"}
    return requests.get(sb.api_url + path, headers=headers, params=params or None, timeout=30)


def fetch(sb: CanvasSandbox, cid: int, query: str = "student_ids[]=all&per_page=100") -> list[dict]:
    """Every page of the course's submissions, following rel=next; checks the bookmark links."""
    url: str | None = f"{sb.api_url}/courses/{cid}/students/submissions?{query}"
    out: list[dict] = []
    with requests.Session() as s:
        s.headers["Authorization"] = f"Bearer {sb.token}"
        while url:
            r = s.get(url, timeout=30)
            assert r.status_code == 200, r.text
            assert "last" not in r.links
            out.extend(r.json())
            url = r.links.get("next", {}).get("url")
            assert url is None or "page=bookmark:" in url
    return out


def since(sb: CanvasSandbox, cid: int, **bounds: str) -> list[int]:
    query = "&".join(f"{k}={quote(v)}" for k, v in bounds.items())
    return [s["id"] for s in fetch(sb, cid, f"student_ids[]=all&per_page=50&{query}")]


def big_course(sb: CanvasSandbox) -> int:
    return max(sb.data.course_ids(), key=lambda c: len(sb.data.submissions_of(c)))


def changed(before: list[dict], after: list[dict]) -> dict[int, set[str]]:
    """Submission id -> the fields whose value changed (timestamps compared as instants)."""
    assert [s["id"] for s in before] == [s["id"] for s in after]
    out: dict[int, set[str]] = {}
    for b, a in zip(before, after, strict=True):
        diff = {k for k in b if (at(b[k]) != at(a[k]) if k in STAMPS else b[k] != a[k])}
        if diff:
            out[b["id"]] = diff
    return out


def high_water(rows: list[dict], field: str) -> datetime:
    return max(at(s[field]) for s in rows if s[field] is not None)  # type: ignore[type-var]


# ---------------------------------------------------------------------------- fields and consistency
def test_every_submission_has_the_canvas_fields_and_consistent_values(sandbox):
    d = sandbox.data
    rows = [s for c in d.course_ids(["all"]) for s in d.submissions_of(c)]
    now = at(d.now())
    assert len(rows) > 1000
    for s in rows:
        a = d.assignments[s["assignment_id"]]
        assert set(s) >= FIELDS, s
        assert s["workflow_state"] in ("submitted", "unsubmitted", "graded", "pending_review")
        assert s["late_policy_status"] in (None, "late", "missing", "none")
        assert all(s[k] is None or at(s[k]) <= now for k in STAMPS)  # type: ignore[operator]
        if s["workflow_state"] == "graded":
            assert s["graded_at"] is not None
        if s["workflow_state"] == "unsubmitted":
            assert s["submitted_at"] is None and s["attempt"] is None
        if s["submitted_at"] is None:
            assert s["submission_type"] is None and s["attempt"] is None and not s["late"]
        else:
            assert s["submission_type"] in a["submission_types"] and s["attempt"] >= 1
        if s["excused"]:
            assert (s["score"], s["grade"], s["entered_score"], s["workflow_state"]) == (
                None,
                None,
                None,
                "graded",
            )
            assert not s["late"] and not s["missing"]
        if s["points_deducted"]:
            assert s["score"] == pytest.approx(s["entered_score"] - s["points_deducted"])
        else:
            assert (s["score"], s["grade"]) == (s["entered_score"], s["entered_grade"])
        assert (s["score"] is None) == (s["grade"] is None)
        assert s["late"] == (s["seconds_late"] > 0)
        if s["late"] and s["late_policy_status"] is None:
            assert at(s["submitted_at"]) >= at(a["due_at"])  # type: ignore[operator]
            assert s["seconds_late"] == (at(s["submitted_at"]) - at(a["due_at"])).total_seconds()  # type: ignore[operator]
        if s["missing"] and s["late_policy_status"] is None:
            assert s["workflow_state"] == "unsubmitted" and at(a["due_at"]) <= now  # type: ignore[operator]
        if s["posted_at"] is not None:
            assert s["graded_at"] is not None
    assert {s["workflow_state"] for s in rows} == {"submitted", "unsubmitted", "graded", "pending_review"}
    assert {s["late_policy_status"] for s in rows} == {None, "late", "missing", "none"}
    for flag in ("late", "missing", "excused", "points_deducted"):
        assert any(s[flag] for s in rows) and not all(s[flag] for s in rows), flag
    assert any(s["workflow_state"] == "submitted" and s["score"] is not None for s in rows)  # resubmitted
    assert any(s["graded_at"] and s["posted_at"] is None for s in rows)  # graded, not posted
    stamps = [s["submitted_at"] for s in rows if s["submitted_at"]]
    assert any(t.endswith("Z") for t in stamps) and any(t.endswith("+02:00") for t in stamps)
    assert len({s["id"] for s in rows}) == len(rows)


def test_the_http_list_is_the_ground_truth_in_bookmark_pages_without_last(sandbox):
    cid = big_course(sandbox)
    truth = sandbox.data.submissions_of(cid)
    assert [s["id"] for s in truth] == sorted(s["id"] for s in truth)
    assert fetch(sandbox, cid, "student_ids[]=all&per_page=7") == truth
    first = get(sandbox, f"/courses/{cid}/students/submissions?student_ids[]=all")
    assert len(first.json()) == 10 and set(first.links) == {"current", "next", "first"}
    assert first.json() == truth[:10]


def test_submissions_cover_published_assignments_and_every_student_neither_deleted_nor_rejected(sandbox):
    d = sandbox.data
    cid = big_course(sandbox)
    kept = ("active", "invited", "creation_pending", "completed", "inactive")
    students = {
        e["user_id"] for e in d.enrollments_of(cid, kept, ["StudentEnrollment", "StudentViewEnrollment"])
    }
    published = {a["id"] for a in d.assignments_of(cid) if a["published"]}
    rows = d.submissions_of(cid)
    assert {(s["assignment_id"], s["user_id"]) for s in rows} == {(a, u) for a in published for u in students}
    assert len(rows) == len(published) * len(students)


def test_a_numbered_page_or_a_forged_bookmark_is_the_first_page(sandbox):
    cid = big_course(sandbox)
    first = get(sandbox, f"/courses/{cid}/students/submissions?student_ids[]=all").json()
    for page in ("2", "bookmark:bm90LWpzb24", "bookmark:WyJ4Il0"):  # not JSON; ["x"]
        r = get(sandbox, f"/courses/{cid}/students/submissions?student_ids[]=all&page={page}")
        assert r.status_code == 200 and r.json() == first  # BookmarkedCollection: undecodable is the first


def test_student_ids_are_required_and_filter(sandbox):
    cid = big_course(sandbox)
    assert get(sandbox, f"/courses/{cid}/students/submissions").status_code == 401  # the admin's own
    truth = sandbox.data.submissions_of(cid)
    u1, u2 = sorted({s["user_id"] for s in truth})[:2]
    rows = fetch(sandbox, cid, f"student_ids[]={u1}&student_ids[]={u2}&per_page=100")
    assert rows == [s for s in truth if s["user_id"] in (u1, u2)] and rows
    r = get(sandbox, f"/courses/{cid}/students/submissions?student_ids[]=me")
    assert r.status_code == 401  # map_user_ids drops "me": the caller's own id, not a student


def test_workflow_state_and_assignment_filters(sandbox):
    cid = big_course(sandbox)
    truth = sandbox.data.submissions_of(cid)
    aid = truth[-1]["assignment_id"]
    rows = fetch(sandbox, cid, f"student_ids[]=all&assignment_ids[]={aid}&workflow_state=graded")
    assert rows == [s for s in truth if s["assignment_id"] == aid and s["workflow_state"] == "graded"]
    assert rows


# ---------------------------------------------------------------------------- since filters
def test_since_filters_are_strictly_after_accept_offsets_and_combine(sandbox):
    cid = big_course(sandbox)
    truth = sandbox.data.submissions_of(cid)
    subs = sorted({at(s["submitted_at"]) for s in truth if s["submitted_at"]})
    grads = sorted({at(s["graded_at"]) for s in truth if s["graded_at"]})
    t_sub, t_grd = subs[len(subs) // 2], grads[len(grads) // 3]  # existing instants: the edge case

    def after(field: str, t: datetime) -> set[int]:
        return {s["id"] for s in truth if s[field] is not None and at(s[field]) > t}  # type: ignore[operator]

    got_sub = since(sandbox, cid, submitted_since=iso(t_sub).replace("+00:00", "Z"))
    assert set(got_sub) == after("submitted_at", t_sub) and got_sub == sorted(got_sub)
    assert set(since(sandbox, cid, submitted_since=iso(t_sub, 2))) == set(got_sub)  # +02:00
    assert set(since(sandbox, cid, submitted_since=iso(t_sub - timedelta(seconds=1)))) > set(got_sub)
    got_grd = set(since(sandbox, cid, graded_since=iso(t_grd, -5)))
    assert got_grd == after("graded_at", t_grd)
    both = set(since(sandbox, cid, submitted_since=iso(t_sub), graded_since=iso(t_grd)))
    assert both == set(got_sub) & got_grd
    assert both != set(got_sub) and both != got_grd  # AND, not either filter alone nor OR


@pytest.mark.parametrize("bad", ["yesterday", "2025-13-01T00:00:00Z", "2025-11-03T12:00:00 02:00"])
def test_an_unparseable_since_is_a_400_with_a_canvas_error_body(sandbox, bad):
    cid = big_course(sandbox)
    for name in ("submitted_since", "graded_since"):
        r = get(sandbox, f"/courses/{cid}/students/submissions", **{"student_ids[]": "all", name: bad})
        assert r.status_code == 400
        assert r.json() == {"errors": {name: f"Invalid datetime for {name}"}}  # for_students' own body


# ---------------------------------------------------------------------------- mutations and the clock
def test_the_clock_starts_after_every_generated_timestamp_and_each_mutation_moves_it(sandbox):
    d = sandbox.data
    generated = [
        at(s[k]) for c in d.course_ids(["all"]) for s in d.submissions_of(c) for k in STAMPS if s[k]
    ] + [at(e["updated_at"]) for e in d.enrollments.values()]
    start = at(d.now())
    assert max(generated) <= start  # type: ignore[type-var]
    cid = big_course(sandbox)
    stamps = []
    for mutate in (sandbox.submit_work, sandbox.grade_submission, sandbox.excuse_submission):
        sid = mutate(cid)
        stamps.append(at(d.now()))
        row = next(s for s in d.submissions_of(cid) if s["id"] == sid)
        assert stamps[-1] in (at(row["submitted_at"]), at(row["graded_at"]))
    assert start < stamps[0] < stamps[1] < stamps[2]
    date = datetime.strptime(get(sandbox, "/courses").headers["Date"], "%a, %d %b %Y %H:%M:%S GMT")
    assert date.replace(tzinfo=timezone.utc) == stamps[-1]  # the Date header is the sandbox's clock


def test_submit_work_submits_one_unsubmitted_submission_now(sandbox):
    cid = big_course(sandbox)
    before = sandbox.data.submissions_of(cid)
    mark = high_water(before, "submitted_at")
    sid = sandbox.submit_work(cid)
    after = sandbox.data.submissions_of(cid)
    old = next(s for s in before if s["id"] == sid)
    new = next(s for s in after if s["id"] == sid)
    assert old["workflow_state"] == "unsubmitted" and old["submitted_at"] is None
    assert set(changed(before, after)) == {sid}
    assert changed(before, after)[sid] <= {"submitted_at", "workflow_state", "attempt", "submission_type",
                                           "missing", "late", "seconds_late", "late_policy_status"}  # fmt: skip
    assert at(new["submitted_at"]) == at(sandbox.data.now()) > mark
    assert (new["workflow_state"], new["attempt"], new["missing"]) == ("submitted", 1, False)
    assert new["submission_type"] in sandbox.data.assignments[new["assignment_id"]]["submission_types"]
    assert new["graded_at"] == old["graded_at"]
    assert since(sandbox, cid, submitted_since=iso(mark)) == [sid]  # what an incremental fetch sees
    assert fetch(sandbox, cid) == after


def test_submit_work_again_resubmits_with_the_next_attempt(sandbox):
    cid = big_course(sandbox)
    sid = sandbox.submit_work(cid)
    first = next(s for s in sandbox.data.submissions_of(cid) if s["id"] == sid)
    assert sandbox.submit_work(cid, first["assignment_id"], first["user_id"]) == sid
    second = next(s for s in sandbox.data.submissions_of(cid) if s["id"] == sid)
    assert second["attempt"] == first["attempt"] + 1
    assert at(second["submitted_at"]) > at(first["submitted_at"])  # type: ignore[operator]


def test_grade_submission_regrades_a_graded_submission_now(sandbox):
    cid = big_course(sandbox)
    before = sandbox.data.submissions_of(cid)
    mark = high_water(before, "graded_at")
    sid = sandbox.grade_submission(cid)
    after = sandbox.data.submissions_of(cid)
    old = next(s for s in before if s["id"] == sid)
    new = next(s for s in after if s["id"] == sid)
    assert old["workflow_state"] == "graded" and old["score"] is not None
    assert set(changed(before, after)) == {sid} and "submitted_at" not in changed(before, after)[sid]
    assert new["entered_score"] != old["entered_score"] and new["workflow_state"] == "graded"
    assert at(new["graded_at"]) == at(new["posted_at"]) == at(sandbox.data.now()) > mark
    assert since(sandbox, cid, graded_since=iso(mark)) == [sid]


def test_grade_submission_with_a_score_sets_entered_score_and_a_consistent_grade(sandbox):
    d = sandbox.data
    cid = big_course(sandbox)
    target = next(
        s for s in d.submissions_of(cid)
        if s["workflow_state"] == "submitted" and d.assignments[s["assignment_id"]]["grading_type"] == "points"
        and not s["late"]
    )  # fmt: skip
    assert sandbox.grade_submission(cid, target["id"], score=3.5) == target["id"]
    new = next(s for s in d.submissions_of(cid) if s["id"] == target["id"])
    assert (new["score"], new["grade"], new["entered_score"], new["entered_grade"]) == (
        3.5,
        "3.5",
        3.5,
        "3.5",
    )
    assert new["workflow_state"] == "graded" and new["submitted_at"] == target["submitted_at"]


def test_excuse_submission_nulls_the_grade_and_counts_as_grading(sandbox):
    cid = big_course(sandbox)
    before = sandbox.data.submissions_of(cid)
    sid = sandbox.excuse_submission(cid)
    after = sandbox.data.submissions_of(cid)
    old = next(s for s in before if s["id"] == sid)
    new = next(s for s in after if s["id"] == sid)
    assert set(changed(before, after)) == {sid} and not old["excused"]
    assert (new["excused"], new["score"], new["grade"], new["workflow_state"]) == (True, None, None, "graded")
    assert at(new["graded_at"]) == at(sandbox.data.now()) and not new["missing"]
    assert new["submitted_at"] == old["submitted_at"]


def test_pass_due_date_turns_submissions_missing_without_touching_their_timestamps(sandbox):
    d = sandbox.data
    cid = big_course(sandbox)
    before = d.submissions_of(cid)
    marks = {f: high_water(before, f) for f in ("submitted_at", "graded_at")}
    aid = sandbox.pass_due_date(cid)
    after = d.submissions_of(cid)
    diff = changed(before, after)
    assert diff and all(fields == {"missing"} for fields in diff.values())
    flipped = [s for s in after if s["id"] in diff]
    assert all(s["assignment_id"] == aid and s["missing"] for s in flipped)
    assert at(d.assignments[aid]["due_at"]) < at(d.now())  # type: ignore[operator]
    due = next(
        a for a in get(sandbox, f"/courses/{cid}/assignments", per_page="100").json() if a["id"] == aid
    )
    assert due["due_at"] == d.assignments[aid]["due_at"]
    # the case an incremental fetch cannot see: nothing was submitted or graded since
    assert since(sandbox, cid, submitted_since=iso(marks["submitted_at"])) == []
    assert since(sandbox, cid, graded_since=iso(marks["graded_at"])) == []


def test_pass_due_date_has_a_default_in_every_course_with_work_at_small_and_medium_scale():
    for scale in ("small", "medium"):
        d = SandboxData(SandboxConfig(scale=scale), "http://127.0.0.1:1")
        courses = [
            c for c in d.course_ids(["all"])
            if any(a["published"] for a in d.assignments_of(c))
            and d.enrollments_of(c, ["active"], ["StudentEnrollment"])
        ]  # fmt: skip
        assert len(courses) > (100 if scale == "medium" else 5)
        for cid in courses:
            now, dues = at(d.now()), {a["id"]: at(a["due_at"]) for a in d.assignments_of(cid)}
            aid = d.pass_due_date(cid)
            rows = list(d.iter_submissions(cid, assignment_ids=[aid]))
            # it was not due before (so none of these was missing by its due date), and now some are
            assert dues[aid] is None or dues[aid] > now  # type: ignore[operator]
            assert any(s["missing"] and s["late_policy_status"] is None for s in rows), (scale, cid)
            assert all(s["submitted_at"] is None for s in rows if s["missing"])


def test_a_past_due_assignment_cannot_pass_its_due_date_again(sandbox):
    cid = big_course(sandbox)
    aid = sandbox.pass_due_date(cid)
    with pytest.raises(ValueError):
        sandbox.pass_due_date(cid, aid)


def test_a_deleted_assignment_takes_its_submissions_with_it(sandbox):
    cid = big_course(sandbox)
    aid = sandbox.data.submissions_of(cid)[0]["assignment_id"]
    assert sandbox.delete_assignment(cid, aid) == aid
    rows = fetch(sandbox, cid)
    assert rows and aid not in {s["assignment_id"] for s in rows}
    assert rows == sandbox.data.submissions_of(cid)


def test_a_dropped_student_has_no_submissions_served(sandbox):
    d = sandbox.data
    cid = big_course(sandbox)
    early = "2025-06-01T00:00:00Z"
    assert since(sandbox, cid, submitted_since=early)  # a since query before the drop...
    had = {s["user_id"] for s in d.submissions_of(cid)}
    eid = sandbox.drop_enrollment(cid)
    uid = d.enrollments[eid]["user_id"]
    assert uid in had  # the student had submissions before being dropped
    rows = fetch(sandbox, cid)
    assert rows and uid not in {s["user_id"] for s in rows}
    assert get(sandbox, f"/courses/{cid}/students/submissions?student_ids[]={uid}").status_code == 401
    expected = [
        s["id"] for s in d.submissions_of(cid) if s["submitted_at"] and at(s["submitted_at"]) > at(early)
    ]
    assert since(sandbox, cid, submitted_since=early) == expected  # ...and after it agree with the truth


# ---------------------------------------------------------------------------- determinism
def test_the_same_seed_serves_the_same_submissions_and_mutations(make_sandbox):
    a, b = make_sandbox(seed=11), make_sandbox(seed=11)
    other = make_sandbox(seed=12)
    for sb in (a, b):
        cid = big_course(sb)
        sb.submit_work(cid)
        sb.grade_submission(cid)
        sb.pass_due_date(cid)
    cid = big_course(a)
    assert fetch(a, cid) == fetch(b, cid)
    assert all(a.data.submissions_of(c) == b.data.submissions_of(c) for c in a.data.course_ids(["all"]))
    assert a.data.now() == b.data.now()
    assert other.data.submissions_of(big_course(other)) != b.data.submissions_of(cid)
