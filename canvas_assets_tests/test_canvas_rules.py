"""Canvas's own rules, one test each, over real HTTP against the sandbox that models them.

Each rule is read from Canvas's source (docs/canvas-api.md, "Endpoint rules (from Canvas's source)" names
the controller and this file's test for every one): what refuses a request, what silently filters it, how
parameters are read. The product's side (the states it asks for, the ids it may name) is mostly tested where
the product is; these pin the sandbox to Canvas so those tests mean something. Whose submissions Canvas lists
is tested on both sides here: the sandbox serves them, and a sync then an incremental sync keeps them.
"""

import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import requests

from canvas_assets import entities
from canvas_assets.sandbox import CanvasSandbox
from canvas_assets_tests.harness import Harness, failure_text, pipeline_harness
from canvas_assets_tests.test_sandbox import big_course, fetch_all

STUDENT_TYPES = ("StudentEnrollment", "StudentViewEnrollment")
CURRENT = ("active", "invited", "creation_pending")  # Course#current_enrollments


def get(sb: CanvasSandbox, path: str, token: str | None = None) -> requests.Response:
    return requests.get(
        sb.api_url + path, headers={"Authorization": f"Bearer {token or sb.token}"}, timeout=30
    )


def submissions(sb: CanvasSandbox, cid: int, query: str) -> requests.Response:
    return get(sb, f"/courses/{cid}/students/submissions?{query}")


def active_students(sb: CanvasSandbox, cid: int) -> list[int]:
    return sorted(e["user_id"] for e in sb.data.enrollments_of(cid, ("active",), ["StudentEnrollment"]))


# ---------------------------------------------------------------- SubmissionsApiController#for_students
def test_student_ids_naming_a_user_who_is_not_a_student_refuse_the_whole_request_with_401(sandbox):
    cid = big_course(sandbox)
    teacher = next(e["user_id"] for e in sandbox.data.enrollments_of(cid, types=["TeacherEnrollment"]))
    r = submissions(sandbox, cid, f"student_ids[]={active_students(sandbox, cid)[0]}&student_ids[]={teacher}")
    assert r.status_code == 401
    assert r.json()["status"] == "unauthorized"


def test_student_ids_naming_a_deleted_enrollment_refuse_the_whole_request_with_401(sandbox):
    cid = big_course(sandbox)
    student = active_students(sandbox, cid)[0]
    sandbox.data.drop_enrollment(cid, next(
        e["id"] for e in sandbox.data.enrollments_of(cid, types=["StudentEnrollment"]) if e["user_id"] == student
    ))  # fmt: skip
    assert submissions(sandbox, cid, f"student_ids[]={student}").status_code == 401


def test_student_ids_of_students_in_any_state_but_deleted_are_accepted(sandbox):
    cid = big_course(sandbox)
    others = [
        e["user_id"]
        for e in sandbox.data.enrollments_of(
            cid, ("invited", "completed", "inactive", "rejected"), STUDENT_TYPES
        )
    ]
    assert others
    r = submissions(sandbox, cid, "&".join(f"student_ids[]={u}" for u in others[:50]))
    assert r.status_code == 200, r.text


def test_no_student_ids_means_the_callers_own_which_an_admin_may_not_ask_for(sandbox):
    r = submissions(sandbox, big_course(sandbox), "per_page=10")
    assert r.status_code == 401
    assert r.json()["status"] == "unauthorized"


def test_student_ids_all_anywhere_in_the_list_means_every_student(sandbox):
    cid = big_course(sandbox)
    r = submissions(sandbox, cid, "student_ids[]=12345&student_ids[]=all&per_page=5")
    assert r.status_code == 200 and len(r.json()) == 5


def test_more_than_100_student_ids_are_refused_with_too_many_students(sandbox):
    cid = big_course(sandbox)
    ids = active_students(sandbox, cid)[:101]
    assert len(ids) == 101
    r = submissions(sandbox, cid, "&".join(f"student_ids[]={u}" for u in ids))
    assert (r.status_code, r.json()) == (400, {"error": "too many students"})
    assert submissions(sandbox, cid, "&".join(f"student_ids[]={u}" for u in ids[:100])).status_code == 200


def test_student_ids_may_be_sis_user_ids(sandbox):
    cid = big_course(sandbox)
    uid = next(u for u in active_students(sandbox, cid) if sandbox.data.users[u].get("sis_user_id"))
    r = submissions(sandbox, cid, f"student_ids[]=sis_user_id:{sandbox.data.users[uid]['sis_user_id']}")
    assert r.status_code == 200 and r.json()
    assert {s["user_id"] for s in r.json()} == {uid}


# `student_ids[]=all` is `all_student_enrollments` (StudentEnrollment and StudentViewEnrollment, any state but
# deleted) over `Course#submissions` (active ones); SubmissionLifecycleManager keeps a submission for every
# student with an enrollment neither rejected nor deleted and soft-deletes the others'.
LISTED = ("active", "invited", "creation_pending", "completed", "inactive")


def listed_students(sb: CanvasSandbox, cid: int) -> set[int]:
    return {e["user_id"] for e in sb.data.enrollments_of(cid, LISTED, STUDENT_TYPES)}


def only_in_state(sb: CanvasSandbox, cid: int, state: str, etype: str = "StudentEnrollment") -> int:
    """A user whose every student enrollment in the course is in `state` (and of type `etype`)."""
    by_user: dict[int, set[tuple[str, str]]] = {}
    for e in sb.data.enrollments_of(cid, types=STUDENT_TYPES):
        by_user.setdefault(e["user_id"], set()).add((e["type"], e["enrollment_state"]))
    return min(u for u, kinds in by_user.items() if kinds == {(etype, state)})


def test_student_ids_all_lists_the_test_students_and_concluded_inactive_and_invited_students_submissions(
    sandbox,
):
    cid = big_course(sandbox)
    records, _ = fetch_all(sandbox, f"/courses/{cid}/students/submissions?student_ids[]=all&per_page=100")
    users = {s["user_id"] for s in records}
    assert users == listed_students(sandbox, cid)
    for state, etype in (
        ("active", "StudentViewEnrollment"),  # the test student
        ("completed", "StudentEnrollment"),
        ("inactive", "StudentEnrollment"),
        ("invited", "StudentEnrollment"),
        ("creation_pending", "StudentEnrollment"),
    ):
        assert only_in_state(sandbox, cid, state, etype) in users, (state, etype)
    assert records == sandbox.data.submissions_of(cid)  # the ground truth tests compare with agrees


def test_student_ids_all_leaves_out_a_rejected_students_submissions_which_canvas_soft_deleted(sandbox):
    cid = big_course(sandbox)
    rejected = only_in_state(sandbox, cid, "rejected")
    records, _ = fetch_all(sandbox, f"/courses/{cid}/students/submissions?student_ids[]=all&per_page=100")
    assert rejected not in {s["user_id"] for s in records}
    # Named explicitly, a rejected student is still a student of the course (no 401), with nothing listed.
    r = submissions(sandbox, cid, f"student_ids[]={rejected}")
    assert (r.status_code, r.json()) == (200, [])


def test_student_ids_naming_the_test_student_list_their_submissions(sandbox):
    cid = big_course(sandbox)
    test_student = only_in_state(sandbox, cid, "active", "StudentViewEnrollment")
    r = submissions(sandbox, cid, f"student_ids[]={test_student}&per_page=100")
    assert r.status_code == 200 and r.json()
    assert r.json() == [s for s in sandbox.data.submissions_of(cid) if s["user_id"] == test_student]


# The product obeys the same rule: an incremental merge keeps what Canvas lists (`entities._submission_parents`)
# and fetches the submissions of students it has not seen (`entities._submissions_of_new_parents`).
@pytest.fixture
def harness(make_sandbox, db_url, monkeypatch) -> Iterator[Harness]:
    """The pipeline over a small sandbox, on SQLite and on PostgreSQL."""
    with pipeline_harness(make_sandbox(scale="small", throttle="hosted"), db_url, monkeypatch) as h:
        assert h.discover().success
        yield h


def sync_submissions(h: Harness, cid: int) -> None:
    result = h.sync("ANALYTICS_FOCUSED", [str(cid)])  # submissions incremental after the first sync
    assert result.success, failure_text(result)


def stored_submissions(h: Harness, cid: int) -> tuple[dict[int, Any], int]:
    """(the course's live canvas_submissions rows by id, how many rows are soft-deleted)."""
    rows = h.rows(
        "SELECT id, user_id, assignment_id, deleted_at FROM canvas_submissions WHERE course_id = :c", c=cid
    )
    live = {r[0]: r for r in rows if r[3] is None}
    return live, len(rows) - len(live)


def fetch_mode(h: Harness, cid: int) -> str:
    (row,) = h.rows(
        "SELECT fetch_mode FROM canvas_staging WHERE entity = 'submissions' AND course_id = :c", c=cid
    )
    return str(row[0])


def test_an_incremental_sync_keeps_the_test_students_and_concluded_students_submissions(harness):
    h, cid = harness, big_course(harness.sandbox)
    sync_submissions(h, cid)
    regular = min(
        e["user_id"] for e in h.sandbox.data.enrollments_of(cid, ("active",), ["StudentEnrollment"])
    )
    h.sandbox.data.submit_work(cid, user_id=regular)  # something to merge
    sync_submissions(h, cid)

    assert fetch_mode(h, cid) == "incremental"
    truth = {s["id"]: s for s in h.sandbox.data.submissions_of(cid)}
    live, soft_deleted = stored_submissions(h, cid)
    assert set(live) == set(truth) and soft_deleted == 0
    users = {r[1] for r in live.values()}
    for state, etype in (
        ("active", "StudentViewEnrollment"),
        ("completed", "StudentEnrollment"),
        ("inactive", "StudentEnrollment"),
    ):
        assert only_in_state(h.sandbox, cid, state, etype) in users, (state, etype)


def test_a_student_invited_between_syncs_has_their_submissions_after_the_next_incremental_sync(harness):
    h, cid = harness, big_course(harness.sandbox)
    sync_submissions(h, cid)
    newcomer = h.sandbox.data.enrollments[h.sandbox.data.enroll_student(cid, state="invited")]["user_id"]
    theirs = {s["id"] for s in h.sandbox.data.submissions_of(cid) if s["user_id"] == newcomer}
    assert theirs  # Canvas creates an invited student's (unsubmitted) submissions at once
    h.sandbox.reset_stats()
    sync_submissions(h, cid)

    assert fetch_mode(h, cid) == "incremental"
    live, soft_deleted = stored_submissions(h, cid)
    assert {sid for sid, r in live.items() if r[1] == newcomer} == theirs
    assert set(live) == {s["id"] for s in h.sandbox.data.submissions_of(cid)} and soft_deleted == 0
    # Two change lists (submitted since, graded since) and the newcomer's own list, not every page.
    assert h.requests_to("/students/submissions") == 2 + -(-len(theirs) // 100)


def test_submitted_since_must_match_the_iso8601_pattern_or_get_canvases_400_body(sandbox):
    cid = big_course(sandbox)
    for bad in ("2024-01-01", "2024-01-01 10:00:00", "2024-01-01T10:00:00 02:00", "yesterday"):
        r = submissions(sandbox, cid, f"student_ids[]=all&submitted_since={quote(bad)}")
        assert (r.status_code, r.json()) == (
            400,
            {"errors": {"submitted_since": "Invalid datetime for submitted_since"}},
        ), bad
    for good in ("2024-01-01T10:00:00Z", "2024-01-01T10:00:00.5%2B02:00", "2024-01-01T10:00:00"):
        assert submissions(sandbox, cid, f"student_ids[]=all&submitted_since={good}").status_code == 200


def test_graded_since_must_match_the_iso8601_pattern_or_get_canvases_400_body(sandbox):
    r = submissions(sandbox, big_course(sandbox), "student_ids[]=all&graded_since=2024-01-01")
    assert (r.status_code, r.json()) == (
        400,
        {"errors": {"graded_since": "Invalid datetime for graded_since"}},
    )


# ---------------------------------------------------------------- Api.paginate / BookmarkedCollection
def test_per_page_of_zero_negative_or_not_a_number_is_clamped_to_one(sandbox):
    cid = big_course(sandbox)
    for value in ("0", "-5", "lots"):
        r = get(sandbox, f"/courses/{cid}/enrollments?per_page={value}")
        assert r.status_code == 200, value
        assert len(r.json()) == 1, value
        assert "per_page=1" in r.links["next"]["url"]


def test_an_undecodable_bookmark_or_a_page_number_on_a_bookmarked_list_is_the_first_page(sandbox):
    cid = big_course(sandbox)
    first = submissions(sandbox, cid, "student_ids[]=all&per_page=5").json()
    for page in ("2", "bookmark:bm90LWpzb24", "bookmark:WyJ4Il0", "bookmark:!!"):
        r = submissions(sandbox, cid, f"student_ids[]=all&per_page=5&page={page}")
        assert r.status_code == 200, page
        assert r.json() == first, page
    enrollments = get(sandbox, f"/courses/{cid}/enrollments?per_page=5").json()
    assert get(sandbox, f"/courses/{cid}/enrollments?per_page=5&page=bookmark:xyz").json() == enrollments


def test_course_users_are_numbered_pages_without_a_last_link(sandbox):
    cid = big_course(sandbox)
    users, pages = fetch_all(sandbox, f"/courses/{cid}/users?enrollment_type[]=student&per_page=100")
    assert len(pages) > 1
    assert all("last" not in p.links for p in pages)
    assert "page=2" in pages[0].links["next"]["url"]
    assert [u["id"] for u in users] == [u["id"] for u in sandbox.data.students_of(cid, CURRENT)]


def test_account_courses_are_numbered_pages_without_a_last_link(sandbox):
    courses, pages = fetch_all(sandbox, "/accounts/1/courses?per_page=5")
    assert len(pages) > 1
    assert all("last" not in p.links for p in pages)
    assert "page=2" in pages[0].links["next"]["url"]
    assert [c["id"] for c in courses] == sandbox.data.course_ids()


# ---------------------------------------------------------------- AccountsController#courses_api
def test_account_courses_state_created_lists_unpublished_courses_and_unpublished_matches_nothing(sandbox):
    created, _ = fetch_all(sandbox, "/accounts/1/courses?state[]=created&per_page=100")
    claimed, _ = fetch_all(sandbox, "/accounts/1/courses?state[]=claimed&per_page=100")
    assert created and {c["workflow_state"] for c in created} == {"unpublished"}
    assert created == claimed
    assert get(sandbox, "/accounts/1/courses?state[]=unpublished").json() == []


def test_account_courses_unknown_state_matches_nothing_rather_than_400(sandbox):
    r = get(sandbox, "/accounts/1/courses?state[]=bogus")
    assert (r.status_code, r.json()) == (200, [])


def test_account_courses_unknown_enrollment_term_id_is_404(sandbox):
    assert get(sandbox, "/accounts/1/courses?enrollment_term_id=987654321").status_code == 404


def test_account_courses_refuse_a_teacher_token_with_401(sandbox):
    assert get(sandbox, "/accounts/1/courses", token=sandbox.limited_token).status_code == 401


# ---------------------------------------------------------------- EnrollmentsApiController#index
def test_enrollments_unknown_or_synthetic_states_match_nothing_rather_than_400(sandbox):
    cid = big_course(sandbox)
    for state in ("bogus", "current_and_invited"):
        r = get(sandbox, f"/courses/{cid}/enrollments?state[]={state}")
        assert (r.status_code, r.json()) == (200, []), state


def test_enrollments_unknown_type_matches_nothing_rather_than_400(sandbox):
    r = get(sandbox, f"/courses/{big_course(sandbox)}/enrollments?type[]=NoSuchEnrollment")
    assert (r.status_code, r.json()) == (200, [])


def test_enrollments_default_to_active_invited_creation_pending_and_inactive_for_an_admin(sandbox):
    cid = big_course(sandbox)
    records, _ = fetch_all(sandbox, f"/courses/{cid}/enrollments?per_page=100")
    expected = sandbox.data.enrollments_of(cid, ("active", "invited", "creation_pending", "inactive"))
    assert [e["id"] for e in records] == [e["id"] for e in expected]


def test_enrollments_list_the_test_students_student_view_enrollment(sandbox):
    cid = big_course(sandbox)
    records, _ = fetch_all(sandbox, f"/courses/{cid}/enrollments?per_page=100")
    assert "StudentViewEnrollment" in {e["type"] for e in records}


# ---------------------------------------------------------------- CoursesController#users
def test_course_users_accept_creation_pending_in_enrollment_state(sandbox):
    d = sandbox.data
    cid = next(c for c in d.course_ids() if d.enrollments_of(c, ("creation_pending",), ["StudentEnrollment"]))
    users, _ = fetch_all(
        sandbox,
        f"/courses/{cid}/users?enrollment_type[]=student&enrollment_state[]=creation_pending&per_page=100",
    )
    assert users and [u["id"] for u in users] == [u["id"] for u in d.students_of(cid, ["creation_pending"])]


def test_course_users_default_to_current_users_active_invited_and_creation_pending(sandbox):
    cid = big_course(sandbox)
    users, _ = fetch_all(sandbox, f"/courses/{cid}/users?enrollment_type[]=student&per_page=100")
    assert [u["id"] for u in users] == [u["id"] for u in sandbox.data.students_of(cid, CURRENT)]


def test_course_users_unknown_enrollment_state_matches_nothing_rather_than_400(sandbox):
    r = get(sandbox, f"/courses/{big_course(sandbox)}/users?enrollment_state[]=bogus")
    assert (r.status_code, r.json()) == (200, [])


def test_course_users_unknown_enrollment_type_is_400(sandbox):
    r = get(sandbox, f"/courses/{big_course(sandbox)}/users?enrollment_type[]=bogus")
    assert r.status_code == 400
    assert "Invalid enrollment type" in r.text


def test_course_users_hide_email_and_login_id_of_users_only_invited_or_pending(make_sandbox):
    sb = make_sandbox(roster_privacy=True)
    cid = big_course(sb)
    states = "&".join(f"enrollment_state[]={s}" for s in entities.STUDENT_STATES)
    users, _ = fetch_all(sb, f"/courses/{cid}/users?enrollment_type[]=student&{states}&per_page=100")
    by_state: dict[int, set[str]] = {}
    for e in sb.data.enrollments_of(cid):
        by_state.setdefault(e["user_id"], set()).add(e["enrollment_state"])
    unconfirmed = [u for u in users if by_state[u["id"]] <= {"invited", "creation_pending", "rejected"}]
    confirmed = [u for u in users if u not in unconfirmed]
    assert unconfirmed and confirmed
    assert all("email" not in u and "login_id" not in u for u in unconfirmed)
    assert all("email" in u and "login_id" in u for u in confirmed)


def test_course_users_serve_email_without_include_email(make_sandbox):
    sb = make_sandbox(roster_privacy=True)
    users = get(
        sb, f"/courses/{big_course(sb)}/users?enrollment_type[]=student&enrollment_state[]=active"
    ).json()
    assert users and all("email" in u for u in users)


# ---------------------------------------------------------------- app/middleware/request_throttle.rb
def _burst(sb: CanvasSandbox, n: int) -> Counter[int]:
    barrier = threading.Barrier(n)
    statuses: Counter[int] = Counter()
    lock = threading.Lock()

    def one() -> None:
        barrier.wait()
        r = get(sb, "/courses")
        with lock:
            statuses[r.status_code] += 1

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses


def test_a_request_whose_own_hold_would_reach_the_high_water_mark_is_refused(make_sandbox):
    # No leak, and requests in flight for 3 s: the 14th hold would bring the bucket to 700, the 12th to 600.
    hosted = make_sandbox(throttle="hosted", latency_ms=3000, latency_jitter=0.0, leak_rate=0.0)
    legacy = make_sandbox(throttle="legacy", latency_ms=3000, latency_jitter=0.0, leak_rate=0.0)
    results: dict[str, Counter[int]] = {}
    threads = [
        threading.Thread(target=lambda k=k, sb=sb: results.__setitem__(k, _burst(sb, 24)))
        for k, sb in (("hosted", hosted), ("legacy", legacy))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results["hosted"][200] == 13 and results["hosted"][429] == 11
    assert results["legacy"][200] == 11 and results["legacy"][403] == 13


def test_the_lower_bound_divides_latency_by_the_requests_canvas_admits_at_once(make_sandbox):
    sb = make_sandbox(throttle="legacy", latency_ms=5)
    for _ in range(3):
        get(sb, "/courses")
    s: dict[str, Any] = sb.stats()
    assert sb.lower_bound_seconds() == max(
        s["total_cost"] / 10, s["total_latency_s"] / 11, s["longest_chain_s"]
    )
