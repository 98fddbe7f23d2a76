"""Canvas's own rules, one test each, over real HTTP against the sandbox that models them.

Each rule is read from Canvas's source (docs/canvas-api.md, "Endpoint rules (from Canvas's source)" names
the controller and this file's test for every one): what refuses a request, what silently filters it, how
parameters are read. The product's side (the states it asks for, the ids it may name) is tested where the
product is; these pin the sandbox to Canvas so those tests mean something.
"""

import threading
from collections import Counter
from typing import Any
from urllib.parse import quote

import requests

from canvas_assets import entities
from canvas_assets.sandbox import CanvasSandbox

STUDENT_TYPES = ("StudentEnrollment", "StudentViewEnrollment")
CURRENT = ("active", "invited", "creation_pending")  # Course#current_enrollments


def get(sb: CanvasSandbox, path: str, token: str | None = None) -> requests.Response:
    return requests.get(
        sb.api_url + path, headers={"Authorization": f"Bearer {token or sb.token}"}, timeout=30
    )


def fetch_all(sb: CanvasSandbox, path: str) -> tuple[list[dict], list[requests.Response]]:
    url: str | None = sb.api_url + path
    records: list[dict] = []
    pages: list[requests.Response] = []
    with requests.Session() as s:
        s.headers["Authorization"] = f"Bearer {sb.token}"
        while url:
            r = s.get(url, timeout=30)
            assert r.status_code == 200, r.text
            pages.append(r)
            records.extend(r.json())
            url = r.links.get("next", {}).get("url")
    return records, pages


def big_course(sb: CanvasSandbox) -> int:
    return max(sb.data.course_ids(), key=sb.data.total_students)


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
