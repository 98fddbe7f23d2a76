"""The simulated Canvas, exercised over real HTTP on loopback with `requests`."""

import re
import threading
from collections import Counter
from typing import Any

import pytest
import requests

from canvas_assets.sandbox import ENROLLMENT_STATES, CanvasSandbox, SandboxConfig, SandboxData


def api(sb: CanvasSandbox, path: str, token: str | None = None, **kw: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {token or sb.token}"}
    return requests.get(sb.api_url + path, headers=headers, timeout=kw.pop("timeout", 10), **kw)


def fetch_all(
    sb: CanvasSandbox, path: str, token: str | None = None
) -> tuple[list[dict], list[requests.Response]]:
    """Follow rel=next like a well-behaved client; returns the records and every page's response."""
    url: str | None = sb.api_url + path
    records: list[dict] = []
    pages: list[requests.Response] = []
    with requests.Session() as s:
        s.headers["Authorization"] = f"Bearer {token or sb.token}"
        while url:
            r = s.get(url, timeout=10)
            assert r.status_code == 200, r.text
            pages.append(r)
            records.extend(r.json())
            url = r.links.get("next", {}).get("url")
    return records, pages


def big_course(sb: CanvasSandbox) -> int:
    return max(sb.data.course_ids(), key=sb.data.total_students)


def course_where(sb: CanvasSandbox, pred: Any) -> int:
    return next(c for c in sb.data.courses if pred(sb.data.courses[c]))


def test_the_same_seed_generates_the_same_dataset():
    a = SandboxData(SandboxConfig(seed=3), "http://127.0.0.1:1")
    b = SandboxData(SandboxConfig(seed=3), "http://127.0.0.1:1")
    assert (a.courses, a.users, a.enrollments, a.assignments, a.modules, a.summaries, a.settings) == (
        b.courses, b.users, b.enrollments, b.assignments, b.modules, b.summaries, b.settings,
    )  # fmt: skip


def test_a_different_seed_generates_different_data():
    a = SandboxData(SandboxConfig(seed=3), "http://127.0.0.1:1")
    b = SandboxData(SandboxConfig(seed=4), "http://127.0.0.1:1")
    assert a.users != b.users


def test_courses_overrides_the_scale_course_count():
    assert len(SandboxData(SandboxConfig(courses=20), "http://x").courses) == 20


def test_the_small_scale_contains_the_awkward_cases():
    d = SandboxData(SandboxConfig(), "http://127.0.0.1:1")
    counts = [d.total_students(c) for c in d.course_ids()]
    assert max(counts) > 200 and 0 in counts
    assert 200 < sum(len(d.enrollments_of(c)) for c in d.courses) < 1000
    assert {c["workflow_state"] for c in d.courses.values()} == {
        "unpublished",
        "available",
        "completed",
        "deleted",
    }
    assert set(Counter(e["enrollment_state"] for e in d.enrollments.values())) == set(ENROLLMENT_STATES)
    assert {e["type"] for e in d.enrollments.values()} >= {
        "StudentEnrollment", "TeacherEnrollment", "TaEnrollment", "DesignerEnrollment", "ObserverEnrollment",
        "StudentViewEnrollment",
    }  # fmt: skip
    assert max(m["items_count"] for m in d.modules.values()) > 100
    assert all(e["id"] > 2**31 for e in d.enrollments.values())
    assert any(u > 2**31 for u in d.users) and any(c > 2**31 for c in d.courses)
    stamps = [e["created_at"] for e in d.enrollments.values()]
    assert any(s.endswith("Z") for s in stamps) and any(s.endswith(("+02:00", "-05:00")) for s in stamps)
    assert any(not u["name"].isascii() for u in d.users.values())
    grades = [e["grades"] for e in d.enrollments.values() if e["type"] == "StudentEnrollment"]
    assert any(g["current_score"] is None for g in grades)
    assert any("override_score" in g for g in grades) and not all("override_score" in g for g in grades)
    assert any(g["unposted_current_score"] != g["current_score"] for g in grades)
    assert any(a["due_at"] is None for a in d.assignments.values())
    per_user = Counter(e["user_id"] for e in d.enrollments.values() if e["type"] == "StudentEnrollment")
    assert max(per_user.values()) > 1  # users shared across courses


def test_users_self_returns_the_tokens_user(sandbox):
    assert api(sandbox, "/users/self").json()["id"] == sandbox.data.admin_user_id


def test_numbered_pages_default_to_ten_records(sandbox):
    r = api(sandbox, f"/courses/{big_course(sandbox)}/users")
    assert len(r.json()) == 10
    assert set(r.links) == {"current", "next", "first"}


def test_numbered_pages_follow_next_to_every_course(sandbox):
    courses, pages = fetch_all(sandbox, "/courses?per_page=4")
    assert [c["id"] for c in courses] == sandbox.data.course_ids()
    assert "last" in pages[-1].links and "next" not in pages[-1].links


def test_a_numbered_page_past_the_end_is_empty(sandbox):
    assert api(sandbox, "/courses?page=99&per_page=10").json() == []


def test_per_page_is_clamped_to_the_maximum(sandbox):
    r = api(sandbox, f"/courses/{big_course(sandbox)}/users?enrollment_type[]=student&per_page=500")
    assert len(r.json()) == 100
    assert "per_page=100" in r.links["next"]["url"]


def test_per_page_is_clamped_to_a_configured_maximum_of_fifty(make_sandbox):
    sb = make_sandbox(per_page_max=50)
    assert len(api(sb, f"/courses/{big_course(sb)}/enrollments?per_page=100").json()) == 50


def test_a_non_integer_per_page_is_clamped_to_one(sandbox):
    r = api(sandbox, "/courses?per_page=lots")  # Api.per_page_for: "lots".to_i is 0, clamped to 1
    assert r.status_code == 200
    assert len(r.json()) == 1


def test_bookmark_lists_have_no_last_link_and_end_without_next(sandbox):
    cid = big_course(sandbox)
    records, pages = fetch_all(sandbox, f"/courses/{cid}/enrollments?per_page=100&" + "&".join(
        f"state[]={s}" for s in ENROLLMENT_STATES if s != "deleted"
    ))  # fmt: skip
    assert len(pages) == 3
    assert all("last" not in p.links for p in pages)
    assert "bookmark:" in pages[0].links["next"]["url"]
    assert [e["id"] for e in records] == [e["id"] for e in sandbox.data.enrollments_of(cid)]


def test_course_users_are_numbered_pages_in_sortable_name_order(sandbox):
    cid = big_course(sandbox)
    users, pages = fetch_all(sandbox, f"/courses/{cid}/users?enrollment_type[]=student&per_page=100")
    assert len(pages) == 3 and all("last" not in p.links for p in pages)
    current = ("active", "invited", "creation_pending")  # the default: Course#current_users
    assert [u["id"] for u in users] == [u["id"] for u in sandbox.data.students_of(cid, current)]


def test_account_courses_are_numbered_pages_without_last(sandbox):
    courses, pages = fetch_all(sandbox, "/accounts/1/courses?per_page=5")
    assert [c["id"] for c in courses] == sandbox.data.course_ids()
    assert all("last" not in p.links for p in pages)


def test_link_urls_are_absolute_and_never_carry_the_token(sandbox):
    r = requests.get(sandbox.api_url + f"/courses?access_token={sandbox.token}&per_page=2", timeout=10)
    assert r.status_code == 200
    assert all(link["url"].startswith(sandbox.base_url + "/api/v1/") for link in r.links.values())
    assert sandbox.token not in r.headers["Link"]


def test_a_request_without_a_token_is_unauthenticated(sandbox):
    r = requests.get(sandbox.api_url + "/courses", timeout=10)
    assert r.status_code == 401
    assert r.json() == {"status": "unauthenticated", "errors": [{"message": "user authorization required"}]}
    assert r.headers["WWW-Authenticate"] == 'Bearer realm="canvas-lms"'


def test_an_unknown_token_is_invalid(sandbox):
    r = api(sandbox, "/courses", token="1~nope")
    assert r.status_code == 401
    assert r.json() == {"errors": [{"message": "Invalid access token."}]}
    assert r.headers["WWW-Authenticate"] == 'Bearer realm="canvas-lms"'


def test_the_limited_token_is_unauthorized_on_account_courses(sandbox):
    r = api(sandbox, "/accounts/1/courses", token=sandbox.limited_token)
    assert r.status_code == 401
    assert r.json()["status"] == "unauthorized"


def test_the_limited_token_reads_courses_without_sis_ids(sandbox):
    cid = big_course(sandbox)
    r = api(sandbox, f"/courses/{cid}/users?enrollment_type[]=student", token=sandbox.limited_token)
    assert r.status_code == 200
    assert all("sis_user_id" not in u for u in r.json())


def test_an_unknown_course_is_not_found(sandbox):
    r = api(sandbox, "/courses/999999")
    assert r.status_code == 404
    assert r.json() == {"errors": [{"message": "The specified resource does not exist."}]}


def test_a_deleted_course_is_not_found(sandbox):
    deleted = sandbox.data.course_ids(["deleted"])[0]
    assert api(sandbox, f"/courses/{deleted}").status_code == 404


def test_every_authenticated_response_carries_rate_limit_headers(sandbox):
    for path in ("/courses", "/courses/999999", "/courses?per_page=x"):
        r = api(sandbox, path)
        assert float(r.headers["X-Request-Cost"]) > 0
        assert 0 < float(r.headers["X-Rate-Limit-Remaining"]) <= 700


def burst(sb: CanvasSandbox, n: int = 40) -> list[requests.Response]:
    """n requests at once from n threads, ignoring every rate-limit header."""
    barrier = threading.Barrier(n)
    results: list[requests.Response] = []
    lock = threading.Lock()

    def one() -> None:
        barrier.wait()
        r = api(sb, "/courses", timeout=30)
        with lock:
            results.append(r)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_a_burst_that_ignores_the_headers_is_throttled_with_429_on_hosted(make_sandbox):
    # Requests hold 50 units each while in flight (1.5 s here): 13 fit under the mark of 700 (the 14th
    # would bring the bucket to 700 with its own hold: request_throttle.rb counts it before `full?`).
    sb = make_sandbox(throttle="hosted", latency_ms=1500)
    results = burst(sb)
    statuses = Counter(r.status_code for r in results)
    assert statuses[429] > 0 and statuses[200] > 0
    refused = next(r for r in results if r.status_code == 429)
    assert "Rate Limit Exceeded" in refused.text
    assert float(refused.headers["X-Rate-Limit-Remaining"]) == 0.0
    assert "Retry-After" not in refused.headers
    assert sb.stats()["throttled"] == statuses[429]


def test_a_burst_is_throttled_with_a_plain_text_403_on_legacy(make_sandbox):
    sb = make_sandbox(throttle="legacy", latency_ms=1500)
    refused = [r for r in burst(sb) if r.status_code != 200]
    assert refused and all(r.status_code == 403 for r in refused)
    assert refused[0].text == "403 Forbidden (Rate Limit Exceeded)"


def test_with_the_throttle_off_a_burst_is_never_refused_but_headers_are_sent(make_sandbox):
    sb = make_sandbox(throttle="off", latency_ms=200)
    results = burst(sb)
    assert all(r.status_code == 200 for r in results)
    assert all("X-Rate-Limit-Remaining" in r.headers for r in results)


def test_enrollments_default_to_active_invited_creation_pending_and_inactive(sandbox):
    cid = big_course(sandbox)
    records, _ = fetch_all(sandbox, f"/courses/{cid}/enrollments?per_page=100")
    assert {"active", "invited"} <= {e["enrollment_state"] for e in records}
    assert {e["enrollment_state"] for e in records} <= {"active", "invited", "creation_pending", "inactive"}


def test_enrollment_type_and_state_filters_combine(sandbox):
    cid = big_course(sandbox)
    records, _ = fetch_all(sandbox, f"/courses/{cid}/enrollments?type[]=StudentEnrollment&state[]=deleted")
    expected = sandbox.data.enrollments_of(cid, ["deleted"], ["StudentEnrollment"])
    assert [e["id"] for e in records] == [e["id"] for e in expected] and expected


def test_student_enrollments_embed_the_user_and_grades(sandbox):
    e = api(sandbox, f"/courses/{big_course(sandbox)}/enrollments?type[]=StudentEnrollment").json()[0]
    assert {"id", "name", "sortable_name", "short_name"} <= set(e["user"])
    assert {"current_score", "final_score", "unposted_current_score"} <= set(e["grades"])
    assert {"last_activity_at", "total_activity_time", "last_attended_at"} <= set(e)


def test_test_students_are_hidden_unless_asked_for(sandbox):
    cid = big_course(sandbox)
    plain, _ = fetch_all(sandbox, f"/courses/{cid}/users?enrollment_type[]=student&per_page=100")
    with_test, _ = fetch_all(
        sandbox, f"/courses/{cid}/users?enrollment_type[]=student&include[]=test_student&per_page=100"
    )
    assert "Test Student" not in {u["name"] for u in plain}
    assert "Test Student" in {u["name"] for u in with_test}


def test_email_is_only_served_with_include_email(sandbox):
    cid = big_course(sandbox)
    assert "email" not in api(sandbox, f"/courses/{cid}/users").json()[0]
    assert "email" in api(sandbox, f"/courses/{cid}/users?include[]=email").json()[0]


def test_course_includes_add_term_total_students_and_syllabus(sandbox):
    cid = big_course(sandbox)
    plain = api(sandbox, f"/courses/{cid}").json()
    full = api(
        sandbox, f"/courses/{cid}?include[]=term&include[]=total_students&include[]=syllabus_body"
    ).json()
    assert {"term", "total_students", "syllabus_body"}.isdisjoint(plain)
    assert full["total_students"] == sandbox.data.total_students(cid)
    assert full["term"]["id"] == full["enrollment_term_id"]
    assert "syllabus_body" in full


def test_account_courses_map_created_to_unpublished_and_default_to_all_but_deleted(sandbox):
    created, _ = fetch_all(sandbox, "/accounts/1/courses?state[]=created")
    default, _ = fetch_all(sandbox, "/accounts/1/courses?per_page=100")
    everything, _ = fetch_all(sandbox, "/accounts/1/courses?state[]=all&per_page=100")
    assert {c["workflow_state"] for c in created} == {"unpublished"}
    assert "deleted" not in {c["workflow_state"] for c in default}
    assert len(everything) == len(sandbox.data.courses)


def test_account_courses_filter_by_term(sandbox):
    term = sandbox.data.courses[big_course(sandbox)]["enrollment_term_id"]
    courses, _ = fetch_all(sandbox, f"/accounts/1/courses?enrollment_term_id={term}&per_page=100")
    assert courses and {c["enrollment_term_id"] for c in courses} == {term}


def test_modules_over_100_items_are_not_inlined_but_served_by_items_url(sandbox):
    cid = big_course(sandbox)
    modules, _ = fetch_all(sandbox, f"/courses/{cid}/modules?include[]=items&per_page=100")
    big = next(m for m in modules if m["items_count"] > 100)
    assert "items" not in big
    assert all("items" in m for m in modules if m["items_count"] <= 100)
    items, pages = fetch_all(sandbox, big["items_url"].removeprefix(sandbox.api_url) + "?per_page=100")
    assert len(pages) == 2 and len(items) == big["items_count"]


def test_student_summaries_are_not_found_for_an_unpublished_course(sandbox):
    cid = sandbox.data.course_ids(["unpublished"])[0]
    assert api(sandbox, f"/courses/{cid}/analytics/student_summaries").status_code == 404


def test_student_summaries_are_not_found_when_analytics_is_off(sandbox):
    d = sandbox.data
    cid = next(c for c in d.course_ids(["available"]) if not d.analytics_enabled[c])
    assert api(sandbox, f"/courses/{cid}/analytics/student_summaries").status_code == 404


def test_student_summaries_match_the_ground_truth(sandbox):
    cid = big_course(sandbox)
    rows, _ = fetch_all(sandbox, f"/courses/{cid}/analytics/student_summaries?per_page=100")
    assert rows == sandbox.data.summaries_of(cid)


def test_submissions_without_student_ids_are_the_callers_own_which_an_admin_may_not_ask_for(sandbox):
    cid = big_course(sandbox)
    assert api(sandbox, f"/courses/{cid}/students/submissions").status_code == 401
    assert api(sandbox, f"/courses/{cid}/students/submissions?student_ids[]=all").json()


def test_a_dropped_enrollment_vanishes_from_the_default_lists(sandbox):
    cid = big_course(sandbox)
    eid = sandbox.drop_enrollment(cid)
    records, _ = fetch_all(sandbox, f"/courses/{cid}/enrollments?per_page=100")
    assert eid not in {e["id"] for e in records}
    assert sandbox.data.enrollments[eid]["enrollment_state"] == "deleted"


def test_a_changed_score_is_served(sandbox):
    cid = big_course(sandbox)
    eid = sandbox.change_score(cid, score=42.5)
    records, _ = fetch_all(sandbox, f"/courses/{cid}/enrollments?per_page=100")
    assert next(e for e in records if e["id"] == eid)["grades"]["current_score"] == 42.5


def test_a_deleted_assignment_vanishes(sandbox):
    cid = next(c for c in sandbox.data.course_ids() if sandbox.data.assignments_of(c))
    aid = sandbox.delete_assignment(cid)
    records, _ = fetch_all(sandbox, f"/courses/{cid}/assignments?per_page=100")
    assert aid not in {a["id"] for a in records}


def test_an_added_course_is_listed(sandbox):
    cid = sandbox.add_course(name="Nouveau cours")
    courses, _ = fetch_all(sandbox, "/accounts/1/courses?per_page=100")
    assert cid in {c["id"] for c in courses}
    assert api(sandbox, f"/courses/{cid}").json()["name"] == "Nouveau cours"


def test_a_renamed_user_is_served_with_the_new_name(sandbox):
    cid = big_course(sandbox)
    uid = sandbox.data.students_of(cid)[0]["id"]
    sandbox.rename_user(uid, "Zoë Ångström")
    users, _ = fetch_all(sandbox, f"/courses/{cid}/users?per_page=100")
    assert next(u for u in users if u["id"] == uid)["sortable_name"] == "Ångström, Zoë"


def test_a_removed_course_is_not_found_afterwards(sandbox):
    cid = big_course(sandbox)
    sandbox.remove_course(cid)
    assert api(sandbox, f"/courses/{cid}").status_code == 404
    assert api(sandbox, f"/courses/{cid}/enrollments").status_code == 404


def test_a_forbidden_course_answers_unauthorized(sandbox):
    cid = big_course(sandbox)
    sandbox.forbid_course(cid)
    r = api(sandbox, f"/courses/{cid}/enrollments")
    assert r.status_code == 401 and r.json()["status"] == "unauthorized"


@pytest.mark.parametrize(
    ("entity", "path", "field", "value"),
    [
        ("enrollments", "/enrollments?type[]=StudentEnrollment&per_page=100", "created_at", "not-a-date"),
        ("assignments", "/assignments?per_page=100", "id", None),
    ],
)
def test_a_corrupted_record_is_served_malformed(sandbox, entity, path, field, value):
    cid = big_course(sandbox) if entity == "enrollments" else next(
        c for c in sandbox.data.course_ids() if sandbox.data.assignments_of(c)
    )  # fmt: skip
    info = sandbox.corrupt_record(entity, cid)
    assert (info["field"], info["value"]) == (field, value)
    records, _ = fetch_all(sandbox, f"/courses/{cid}{path}")
    assert sum(1 for r in records if r[field] == value) == 1


@pytest.mark.parametrize(("kind", "status"), [("500", 500), ("503", 503)])
def test_an_injected_server_error_has_a_canvas_body(sandbox, kind, status):
    sandbox.inject(kind)
    r = api(sandbox, "/courses")
    assert r.status_code == status
    assert r.json()["errors"][0]["message"] == "An error occurred."
    assert api(sandbox, "/courses").status_code == 200


def test_an_injected_drop_closes_the_connection_without_a_response(sandbox):
    sandbox.inject("drop")
    with pytest.raises(requests.ConnectionError):
        api(sandbox, "/courses")


def test_an_injected_slow_response_exceeds_a_short_timeout(make_sandbox):
    sb = make_sandbox(slow_seconds=1.0)
    sb.inject("slow")
    with pytest.raises(requests.Timeout):
        api(sb, "/courses", timeout=0.2)


def test_an_injected_forbidden_is_a_json_403_not_a_throttle(sandbox):
    sandbox.inject("forbidden")
    r = api(sandbox, "/courses")
    assert r.status_code == 403
    assert "Rate Limit" not in r.text and r.json()["errors"]


def test_an_injected_throttle_uses_the_modes_refusal(make_sandbox):
    sb = make_sandbox(throttle="legacy")
    sb.inject("throttle")
    r = api(sb, "/courses")
    assert (r.status_code, r.text) == (403, "403 Forbidden (Rate Limit Exceeded)")


def test_an_injection_only_hits_matching_paths(sandbox):
    sandbox.inject("500", count=2, path_contains="/assignments")
    assert api(sandbox, "/courses").status_code == 200
    cid = big_course(sandbox)
    assert [api(sandbox, f"/courses/{cid}/assignments").status_code for _ in range(3)] == [500, 500, 200]


def test_random_faults_follow_the_seed_and_request_sequence(make_sandbox):
    def run() -> list[int]:
        sb = make_sandbox(fault_rate=0.5, fault_kinds=("500", "503"))
        return [api(sb, "/courses").status_code for _ in range(12)]

    first = run()
    assert first == run()
    assert {500, 503} & set(first) and 200 in first


def test_stats_count_requests_by_endpoint_and_pages_per_list(sandbox):
    cid = big_course(sandbox)
    sandbox.reset_stats()
    _, pages = fetch_all(sandbox, f"/courses/{cid}/enrollments?per_page=100")
    api(sandbox, "/courses/999999")
    s = sandbox.stats()
    assert s["requests"] == len(pages) + 1
    assert s["by_endpoint"] == {"/courses/:id/enrollments": len(pages), "/courses/:id": 1}
    assert s["statuses"] == {"200": len(pages), "404": 1}
    assert s["max_pages_per_list"] == len(pages) > 1
    assert s["total_cost"] > 0 and s["throttled"] == 0


def test_the_lower_bound_is_the_longest_chain_when_latency_dominates(make_sandbox):
    sb = make_sandbox(latency_ms=20)
    cid = big_course(sb)
    fetch_all(sb, f"/courses/{cid}/users?per_page=100")
    api(sb, "/courses")
    s = sb.stats()
    assert s["longest_chain_s"] > 0
    assert sb.lower_bound_seconds() == pytest.approx(
        max(s["total_cost"] / 10, s["total_latency_s"] / 13, s["longest_chain_s"])
    )
    assert sb.lower_bound_seconds() == pytest.approx(s["longest_chain_s"])


def test_stop_returns_while_a_slow_request_is_in_flight(make_sandbox):
    sb = make_sandbox(slow_seconds=60)
    sb.inject("slow")
    errors: list[Exception] = []

    def call() -> None:
        try:
            api(sb, "/courses", timeout=120)
        except requests.RequestException as exc:
            errors.append(exc)

    t = threading.Thread(target=call)
    t.start()
    while sb.stats()["in_flight"] == 0:
        threading.Event().wait(0.01)
    sb.stop()
    t.join(timeout=30)
    assert not t.is_alive()


def test_link_headers_use_canvas_rel_syntax(sandbox):
    r = api(sandbox, "/courses?per_page=3&page=2")
    rels = re.findall(r'rel="(\w+)"', r.headers["Link"])
    assert rels == ["current", "next", "prev", "first", "last"]


@pytest.mark.parametrize(
    "obj",
    [
        [],
        {},
        None,
        [{"id": 2200000001, "user_id": 170000000005007, "score": 87.25, "grade": "B+", "late": False}],
        {"name": "Zoë 🦄 数学 <Studio> & “quotes”", "nul": "a\x00b", "ctl": "\x01\x1f\x7f", "esc": '"\\/'},
        [0.1, -0.0, 1e16, 1e-7, 2.5e-324, 1.7976931348623157e308, 110.0],
        [2**63 - 1, -(2**63), 2**64 - 1, 2**64, -(2**63) - 1, 10**30],  # beyond 64 bits: the stdlib encodes
        {1: "int key", None: "null key"},  # non-string keys: the stdlib encodes them as strings
        ("a", ("tuple",)),
    ],
)
def test_response_bodies_encode_the_same_json_value_as_the_stdlib(obj):
    import json

    from canvas_assets.sandbox.protocol import encode_json

    body = encode_json(obj)
    assert isinstance(body, bytes)
    assert json.loads(body) == json.loads(json.dumps(obj, ensure_ascii=False))
    assert json.loads(body.decode("utf-8")) == json.loads(json.dumps(obj))


def test_a_lone_surrogate_fails_to_encode_as_before():
    from canvas_assets.sandbox.protocol import encode_json

    with pytest.raises(UnicodeEncodeError):
        encode_json(["\ud800"])


def test_every_served_page_is_the_json_of_its_records(sandbox):
    cid = big_course(sandbox)
    records, pages = fetch_all(sandbox, f"/courses/{cid}/enrollments?per_page=7")
    expected = sandbox.data.enrollments_of(cid, ("active", "invited", "creation_pending", "inactive"))
    assert records == expected
    assert all(p.headers["Content-Length"] == str(len(p.content)) for p in pages)
    assert [p.links.get("next", {}).get("url") is None for p in pages] == [False] * (len(pages) - 1) + [True]
