"""Generation of the sandbox's deterministic dataset (one seeded random stream, so order matters).

Awkward on purpose: unicode names, null scores and due dates, override and unposted grades, ids
above 2**31, timestamps with offsets, concluded/unpublished/deleted courses, enrollments in every
state, test students, users shared across courses, courses without analytics.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from canvas_assets.sandbox.structure import add_structure, term_grading_periods
from canvas_assets.sandbox.submission_store import ensure_future_work
from canvas_assets.sandbox.vocab import (
    ASSIGNMENT_ID_BASE,
    DAY,
    ENROLLMENT_STATES,
    NOW_TS,
    SHARD,
    USER_ID_BASE,
    Record,
    letter,
)

if TYPE_CHECKING:
    from canvas_assets.sandbox.data import SandboxData

ROLE_IDS = {
    "StudentEnrollment": 3,
    "TeacherEnrollment": 4,
    "TaEnrollment": 5,
    "DesignerEnrollment": 6,
    "ObserverEnrollment": 7,
    "StudentViewEnrollment": 3,
}

# Id bases: enrollments all above 2**31; some users and courses carry cross-shard global ids (SHARD).
ENROLLMENT_ID_BASE = 2_200_000_000

FIRST_NAMES = [
    "Ana", "José", "Zoë", "Łukasz", "Søren", "Chloé", "Mía", "Thảo", "Aiyana", "Oluwaseun", "Ærin",
    "Björn", "Renée", "Siobhán", "Ömer", "Ксения", "Αλέξανδρος", "محمد", "Priyanka", "Ngozi", "Hana",
    "Jean-Luc", "Mary Ann", "Kwame", "Yuki", "Ines", "Noah", "Emma", "Liam", "Olivia", "Mateo", "Amara",
    "Dmitri", "Fatima", "Sven", "Aoife", "Tomás", "Lucía", "Wei", "Ahmed", "Saoirse", "Zeynep",
]  # fmt: skip
LAST_NAMES = [
    "García", "O'Brien", "Nguyễn", "Müller", "Smith", "van der Berg", "Dvořák", "Kowalski", "Ødegaard",
    "Johnson", "Okafor", "Tanaka", "Иванова", "Παπαδόπουλος", "Al-Farsi", "Sharma", "Brown", "Lee",
    "de la Cruz", "Łęcka", "Fernández", "Schröder", "Kim", "Mbeki", "Rossi", "Núñez", "Smith-Jones",
    "Wang", "李", "Ó Súilleabháin", "Johansson", "Côté", "Yılmaz", "Haddad", "Wilson", "Martin",
]  # fmt: skip
SUBJECTS = [
    "Biology", "Introducción a la Economía", "Физика", "数学", "Art & Design <Studio>", "Chemistry",
    "Histoire de l'Europe", "Data Science", "Ελληνική Φιλοσοφία", "Statistics", "Music Theory ♪",
    "Computer Science", "Literature", "Psychology", "Deutsch für Anfänger", "Engineering Ethics",
]  # fmt: skip
ITEM_TYPES = ("Assignment", "Page", "File", "Discussion", "Quiz", "SubHeader", "ExternalUrl", "ExternalTool")
GRADING_TYPES = (
    "points",
    "points",
    "points",
    "percent",
    "letter_grade",
    "pass_fail",
    "gpa_scale",
    "not_graded",
)
SUBMISSION_TYPES = (
    ["online_upload"],
    ["online_text_entry", "online_upload"],
    ["online_quiz"],
    ["discussion_topic"],
    ["none"],
    ["on_paper"],
    ["external_tool"],
)


def _person(rng: random.Random) -> tuple[str, str, str]:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    name = f"{first} {last}"
    if rng.random() < 0.02:
        name += " 🦄"
    return name, f"{last}, {first}", first if rng.random() < 0.1 else name


def _make_user(d: SandboxData, *, test_student: bool = False, name: str | None = None) -> int:
    rng, clock = d._rng, d._clock
    n = d.next_id("user", 0)
    uid = (SHARD if n % 8 == 7 else 0) + USER_ID_BASE + n
    if test_student:
        full, sortable, short = "Test Student", "Student, Test", "Test Student"
    elif name is not None:
        first, _, last = name.rpartition(" ")
        full, sortable, short = name, f"{last}, {first}" if first else name, name
    else:
        full, sortable, short = _person(rng)
    login = None if test_student else f"u{n:05d}@example.edu"
    d.users[uid] = {
        "id": uid,
        "name": full,
        "created_at": clock.ts(NOW_TS - rng.randint(30 * DAY, 1500 * DAY)),
        "sortable_name": sortable,
        "short_name": short,
        "sis_user_id": None if test_student or rng.random() < 0.1 else f"SIS{n:06d}",
        "integration_id": None,
        "login_id": login if not test_student else f"testuser_{n}",
        "email": None if test_student or rng.random() < 0.05 else f"{login}",
        "avatar_url": f"{d.base_url}/images/messages/avatar-50.png",
    }
    return uid


def _grades(d: SandboxData, cid: int, uid: int, has_work: bool) -> Record:
    rng = d._rng
    g: Record = {"html_url": f"{d.base_url}/courses/{cid}/grades/{uid}"}
    if not has_work or rng.random() < 0.12:
        cur = None
        fin = 0.0 if has_work else None
    else:
        cur = round(min(110.0, max(0.0, rng.gauss(82, 12))), 2)
        fin = round(cur * rng.uniform(0.6, 1.0), 2)
    ucur, ufin = cur, fin
    if cur is not None and rng.random() < 0.15:  # unposted grades differ from posted ones
        ucur = round(min(110.0, cur + rng.uniform(0.5, 8)), 2)
        ufin = round(min(110.0, (fin or 0.0) + rng.uniform(0.5, 8)), 2)
    g.update(
        current_score=cur,
        final_score=fin,
        current_grade=letter(cur),
        final_grade=letter(fin),
        unposted_current_score=ucur,
        unposted_final_score=ufin,
        unposted_current_grade=letter(ucur),
        unposted_final_grade=letter(ufin),
    )
    if cur is not None and rng.random() < 0.05:  # override only present when set
        o = round(rng.uniform(60, 100), 1)
        g["override_score"] = o
        g["override_grade"] = letter(o)
    return g


def _enroll(
    d: SandboxData, cid: int, uid: int, etype: str, state: str, *, associated: int | None = None,
    has_work: bool = True,
) -> int:  # fmt: skip
    rng, clock = d._rng, d._clock
    eid = d.next_id("enrollment", ENROLLMENT_ID_BASE)
    u = d.users[uid]
    c = d.courses[cid]
    created = NOW_TS - rng.randint(5, 400) * DAY
    active = state in ("active", "completed", "inactive")
    e: Record = {
        "id": eid,
        "user_id": uid,
        "course_id": cid,
        "course_section_id": d.sections[cid]["id"],
        "type": etype,
        "role": etype,
        "role_id": ROLE_IDS[etype],
        "enrollment_state": state,
        "limit_privileges_to_course_section": False,
        "root_account_id": d.account_id,
        "created_at": clock.ts(created),
        "updated_at": clock.ts(min(NOW_TS, created + rng.randint(0, 30) * DAY)),  # never after now
        "start_at": None,
        "end_at": None,
        "sis_course_id": c.get("sis_course_id"),
        "sis_user_id": u["sis_user_id"],
        "html_url": f"{d.base_url}/courses/{cid}/users/{uid}",
        "last_activity_at": clock.ts(NOW_TS - rng.randint(0, 60 * DAY))
        if active and rng.random() < 0.9
        else None,
        "last_attended_at": clock.ts(NOW_TS - rng.randint(0, 30) * DAY) if rng.random() < 0.08 else None,
        "total_activity_time": rng.randint(0, 200_000) if active else 0,
        "user": {
            "id": uid,
            "name": u["name"],
            "created_at": u["created_at"],
            "sortable_name": u["sortable_name"],
            "short_name": u["short_name"],
            "sis_user_id": u["sis_user_id"],
            "integration_id": None,
            "login_id": u["login_id"],
        },
    }
    if etype == "ObserverEnrollment":
        e["associated_user_id"] = associated
    if etype in ("StudentEnrollment", "StudentViewEnrollment"):
        e["grades"] = _grades(d, cid, uid, has_work)
    d.enrollments[eid] = e
    d._enrollments_by_course.setdefault(cid, []).append(eid)
    return eid


STUDENT_STATE_WEIGHTS = (
    ("active", 0.80), ("invited", 0.05), ("creation_pending", 0.01), ("deleted", 0.03),
    ("rejected", 0.01), ("completed", 0.05), ("inactive", 0.05),
)  # fmt: skip


def _student_state(rng: random.Random, course_state: str) -> str:
    if course_state == "completed":
        return "completed" if rng.random() < 0.9 else "inactive"
    r = rng.random()
    for state, w in STUDENT_STATE_WEIGHTS:
        r -= w
        if r < 0:
            return state
    return "active"


def make_course(
    d: SandboxData, idx: int, *, state: str, n_students: int, name: str | None = None,
    analytics: bool = True, big_module: int = 0, force_all_kinds: bool = False,
) -> int:  # fmt: skip
    """A course with its settings, content, staff, students and analytics; every draw in a fixed order."""
    cid = _course_record(d, idx, state=state, name=name)
    d.settings[cid] = _course_settings(d._rng)
    d.analytics_enabled[cid] = analytics
    d._enrollments_by_course.setdefault(cid, [])
    n_asg = _course_content(
        d, cid, n_students=n_students, big_module=big_module, force_all_kinds=force_all_kinds
    )
    _course_staff(d, cid, concluded=state == "completed", force_all_kinds=force_all_kinds)
    students = _course_students(
        d, cid, state=state, n_students=n_students, has_work=n_asg > 0, force_all_kinds=force_all_kinds
    )
    if analytics and state in ("available", "completed"):
        d.summaries[cid] = {uid: _summary(d._rng, uid, n_asg) for uid in students}
    ensure_future_work(d, cid)
    add_structure(d, cid)  # a random stream of its own: the main stream draws the same with or without it
    return cid


def _course_record(d: SandboxData, idx: int, *, state: str, name: str | None) -> int:
    """The course itself (and its default section), as an admin token sees it."""
    rng, clock = d._rng, d._clock
    cid = (SHARD if idx % 10 == 9 else 0) + 1000 + idx
    term_id = rng.choice(list(d.terms))
    term = d.terms[term_id]
    subject = rng.choice(SUBJECTS)
    code = f"{subject[:4].upper().strip()}-{100 + idx}"
    created = NOW_TS - rng.randint(100, 900) * DAY
    start = created + rng.randint(5, 60) * DAY
    concluded = state == "completed"
    d.sections[cid] = {"id": d.next_id("section", 400), "name": code}
    d.courses[cid] = {
        "id": cid,
        "name": name or f"{subject} {rng.choice(['I', 'II', '101', 'Avancé', 'Seminar'])} ({code})",
        "course_code": code,
        "original_name": None,
        "workflow_state": state,
        "account_id": rng.choice([d.account_id, d.account_id + 1, d.account_id + 2]),
        "root_account_id": d.account_id,
        "enrollment_term_id": term_id,
        "uuid": f"{rng.getrandbits(160):040x}",
        "created_at": clock.ts(created),
        "start_at": None if rng.random() < 0.2 else clock.ts(start),
        "end_at": clock.ts(NOW_TS - rng.randint(1, 90) * DAY)
        if concluded
        else (None if rng.random() < 0.5 else clock.ts(NOW_TS + rng.randint(10, 200) * DAY)),
        "time_zone": rng.choice(["America/Denver", "Europe/Berlin", "UTC", "America/New_York"]),
        "default_view": rng.choice(["modules", "wiki", "syllabus", "feed", "assignments"]),
        "is_public": rng.random() < 0.1,
        "is_public_to_auth_users": False,
        "public_syllabus": False,
        "sis_course_id": None if rng.random() < 0.2 else f"C-{term['name'][:4]}-{idx:05d}",
        "integration_id": None,
        "license": rng.choice(["private", "cc_by", None]),
        "grading_standard_id": None,
        "apply_assignment_group_weights": rng.random() < 0.3,
        "hide_final_grades": False,
        "restrict_enrollments_to_course_dates": False,
        "storage_quota_mb": 500,
        "blueprint": False,
        "homeroom_course": False,
        "friendly_name": None,
        "course_format": rng.choice(["on_campus", "online", "blended", None]),
        "calendar": {"ics": f"{d.base_url}/feeds/calendars/course_{cid}.ics"},
        # include-only fields (served only with include[]=syllabus_body / public_description):
        "syllabus_body": None if rng.random() < 0.3 else f"<h2>Syllabus</h2><p>Bienvenue — {subject} ✓</p>",
        "public_description": None if rng.random() < 0.6 else f"Un cours de {subject}.",
    }
    return cid


def _course_settings(rng: random.Random) -> Record:
    return {
        "allow_final_grade_override": rng.random() < 0.3,
        "allow_student_discussion_topics": True,
        "allow_student_forum_attachments": rng.random() < 0.5,
        "allow_student_discussion_editing": True,
        "allow_student_organized_groups": True,
        "filter_speed_grader_by_student_group": False,
        "grading_standard_enabled": False,
        "grading_standard_id": None,
        "hide_final_grades": False,
        "hide_distribution_graphs": rng.random() < 0.2,
        "hide_sections_on_course_users_page": False,
        "lock_all_announcements": False,
        "usage_rights_required": False,
        "restrict_student_past_view": False,
        "restrict_student_future_view": False,
        "show_announcements_on_home_page": False,
        "home_page_announcement_limit": 3,
        "syllabus_course_summary": True,
        "default_due_time": "23:59:59",
        "image_url": None,
        "image_id": None,
        "image": None,
        "banner_image_url": None,
        "conditional_release": False,
    }


def _course_content(
    d: SandboxData, cid: int, *, n_students: int, big_module: int, force_all_kinds: bool
) -> int:
    """Assignments and modules (with items); the number of assignments."""
    rng, preset = d._rng, d.config.preset
    n_asg = 0 if n_students == 0 and not force_all_kinds else rng.randint(0, preset.max_assignments)
    asg_ids = [_make_assignment(d, cid, pos) for pos in range(1, n_asg + 1)]
    n_mod = 0 if n_students == 0 and not force_all_kinds else rng.randint(0, preset.max_modules)
    for pos in range(1, n_mod + 1):
        _make_module(d, cid, pos, rng.randint(0, preset.max_items), asg_ids)
    if big_module:
        _make_module(d, cid, n_mod + 1, big_module, asg_ids)
    return n_asg


def _course_staff(d: SandboxData, cid: int, *, concluded: bool, force_all_kinds: bool) -> None:
    """The admin teaches every course (so /courses lists them), plus teachers, TAs, designers."""
    rng = d._rng
    staff_state = "completed" if concluded else "active"
    _enroll(d, cid, d.admin_user_id, "TeacherEnrollment", staff_state)
    pool = d._staff_pool
    _enroll(d, cid, rng.choice(pool), "TeacherEnrollment", staff_state)
    if force_all_kinds or rng.random() < 0.4:
        _enroll(d, cid, rng.choice(pool), "TaEnrollment", staff_state if not force_all_kinds else "invited")
    if force_all_kinds or rng.random() < 0.15:
        _enroll(d, cid, rng.choice(pool), "DesignerEnrollment", staff_state)


def _course_students(
    d: SandboxData, cid: int, *, state: str, n_students: int, has_work: bool, force_all_kinds: bool
) -> list[int]:
    """Students drawn from the shared pool (so users appear in several courses), an observer, a test student."""
    rng = d._rng
    student_pool = d._student_pool
    n_students = min(n_students, len(student_pool))
    students = rng.sample(student_pool, n_students)
    for i, uid in enumerate(students):
        if force_all_kinds and i < len(ENROLLMENT_STATES):
            st = ENROLLMENT_STATES[i]
        else:
            st = _student_state(rng, state)
        _enroll(d, cid, uid, "StudentEnrollment", st, has_work=has_work)
    if students and (force_all_kinds or rng.random() < 0.2):
        parent = rng.choice(d._staff_pool)
        _enroll(d, cid, parent, "ObserverEnrollment", "active", associated=students[-1])
    if state in ("available", "unpublished") and (force_all_kinds or rng.random() < 0.4):
        test_uid = _make_user(d, test_student=True)
        _enroll(d, cid, test_uid, "StudentViewEnrollment", "active", has_work=has_work)
    return students


def _summary(rng: random.Random, uid: int, n_asg: int) -> Record:
    """One student's analytics summary."""
    views = int(rng.paretovariate(1.3) * 20) - 20
    parts = rng.randint(0, 40)
    total = n_asg
    on_time = rng.randint(0, total)
    late = rng.randint(0, total - on_time)
    missing = rng.randint(0, total - on_time - late)
    return {
        "id": uid,
        "page_views": views,
        "max_page_views": 500,
        "page_views_level": min(3, views // 100),
        "participations": parts,
        "max_participations": 40,
        "participations_level": min(3, parts // 10),
        "tardiness_breakdown": {
            "total": total,
            "on_time": on_time,
            "late": late,
            "missing": missing,
            "floating": total - on_time - late - missing,
        },
    }


def _make_assignment(d: SandboxData, cid: int, pos: int) -> int:
    rng, clock = d._rng, d._clock
    aid = d.next_id("assignment", ASSIGNMENT_ID_BASE)
    gtype = rng.choice(GRADING_TYPES)
    created = NOW_TS - rng.randint(20, 300) * DAY
    due = None if rng.random() < 0.3 else created + rng.randint(3, 120) * DAY
    published = rng.random() < 0.9
    d.assignments[aid] = {
        "id": aid,
        "course_id": cid,
        "name": rng.choice(["Essay", "Quiz", "Lab report", "Problem set", "Réflexion", "Проект", "課題"])
        + f" {pos}",
        "description": None if rng.random() < 0.25 else f"<p>Do the work for part {pos} — “carefully”.</p>",
        "created_at": clock.ts(created),
        "updated_at": clock.ts(created + rng.randint(0, 10) * DAY),
        "due_at": None if due is None else clock.ts(due),
        "unlock_at": None if rng.random() < 0.7 else clock.ts(created),
        "lock_at": None if due is None or rng.random() < 0.6 else clock.ts(due + 7 * DAY),
        "points_possible": None if gtype == "not_graded" else float(rng.choice([1, 5, 10, 20, 25, 100])),
        "grading_type": gtype,
        "submission_types": list(rng.choice(SUBMISSION_TYPES)),
        "published": published,
        "workflow_state": "published" if published else "unpublished",
        "position": pos,
        "assignment_group_id": 9000 + cid % 1000,
        "omit_from_final_grade": rng.random() < 0.05,
        "has_overrides": False,
        "muted": False,
        "anonymous_grading": False,
        "html_url": f"{d.base_url}/courses/{cid}/assignments/{aid}",
    }
    d._assignments_by_course.setdefault(cid, []).append(aid)
    d._submissions.register(aid, created, due)
    return aid


def _make_module(d: SandboxData, cid: int, pos: int, n_items: int, asg_ids: list[int]) -> int:
    rng, clock = d._rng, d._clock
    mid = d.next_id("module", 700)
    items = []
    for ipos in range(1, n_items + 1):
        iid = d.next_id("item", 90_000)
        itype = rng.choice(ITEM_TYPES)
        if itype == "Assignment" and not asg_ids:
            itype = "Page"
        item: Record = {
            "id": iid,
            "module_id": mid,
            "position": ipos,
            "title": f"{itype} {ipos} — «{rng.choice(SUBJECTS)}»",
            "indent": rng.choice([0, 0, 0, 1, 2]),
            "type": itype,
            "html_url": f"{d.base_url}/courses/{cid}/modules/items/{iid}",
            "published": rng.random() < 0.9,
        }
        if itype == "Assignment":
            item["content_id"] = rng.choice(asg_ids)
            item["url"] = f"{d.base_url}/api/v1/courses/{cid}/assignments/{item['content_id']}"
        elif itype == "Page":
            item["content_id"] = d.next_id("page", 300)
            item["page_url"] = f"page-{item['content_id']}"
            item["url"] = f"{d.base_url}/api/v1/courses/{cid}/pages/page-{item['content_id']}"
        elif itype in ("File", "Discussion", "Quiz"):
            item["content_id"] = d.next_id("content", 60_000)
            kind = {"File": "files", "Discussion": "discussion_topics", "Quiz": "quizzes"}[itype]
            item["url"] = f"{d.base_url}/api/v1/courses/{cid}/{kind}/{item['content_id']}"
        elif itype == "ExternalUrl":
            item["external_url"] = "https://example.org/ressource?é=1"
            item["new_tab"] = True
        elif itype == "ExternalTool":
            item["content_id"] = d.next_id("tool", 10)
            item["external_url"] = "https://tool.example.com/launch"
            item["url"] = f"{d.base_url}/api/v1/courses/{cid}/external_tools/sessionless_launch?url=x"
        if itype != "SubHeader" and rng.random() < 0.6:
            req = rng.choice(["must_view", "must_submit", "min_score", "must_contribute", "must_mark_done"])
            item["completion_requirement"] = {"type": req, "min_score": 7.0 if req == "min_score" else None}
        items.append(item)
    d.modules[mid] = {
        "id": mid,
        "name": f"Module {pos}: {rng.choice(SUBJECTS)}",
        "position": pos,
        "unlock_at": None if rng.random() < 0.8 else clock.ts(NOW_TS - rng.randint(0, 100) * DAY),
        "require_sequential_progress": rng.random() < 0.2,
        "requirement_type": "all",
        "publish_final_grade": False,
        "prerequisite_module_ids": [],
        "published": rng.random() < 0.85,
        "items_count": n_items,
        "items_url": f"{d.base_url}/api/v1/courses/{cid}/modules/{mid}/items",
        "items": items,
    }
    d._modules_by_course.setdefault(cid, []).append(mid)
    return mid


def generate(d: SandboxData) -> None:
    cfg, rng = d.config, d._rng
    preset = cfg.preset
    n_courses = cfg.course_count
    aid = d.account_id
    d.accounts = {
        aid: {"id": aid, "name": "Université Sandbox", "parent_account_id": None, "root_account_id": None},
        aid + 1: {"id": aid + 1, "name": "Faculty of Arts", "parent_account_id": aid, "root_account_id": aid},
        aid + 2: {
            "id": aid + 2,
            "name": "School of Science",
            "parent_account_id": aid,
            "root_account_id": aid,
        },
    }
    d.terms = {
        1: {"id": 1, "name": "Default Term", "start_at": None, "end_at": None, "workflow_state": "active"},
        2: {
            "id": 2,
            "name": "Fall 2024",
            "start_at": "2024-08-26T06:00:00Z",
            "end_at": "2024-12-20T06:00:00Z",
        },
        3: {
            "id": 3,
            "name": "Spring 2025",
            "start_at": "2025-01-13T07:00:00Z",
            "end_at": "2025-05-09T06:00:00Z",
        },
        4: {"id": 4, "name": "Fall 2025", "start_at": "2025-08-25T06:00:00+02:00", "end_at": None},
    }
    for t in d.terms.values():
        t.setdefault("workflow_state", "active")
        t.update(created_at="2024-01-02T03:04:05Z", sis_term_id=None, grading_period_group_id=None)
    d.terms[2].update(sis_term_id="FA24")
    d.terms[3].update(sis_term_id="SP25")
    term_grading_periods(d)
    for term_id, group_id in d.term_period_groups.items():  # TermsApiController shows the term's group
        d.terms[term_id]["grading_period_group_id"] = group_id

    d.admin_user_id = _make_user(d, name="Sandbox Admin")
    d.limited_user_id = _make_user(d, name="Limited Teacher")

    # student counts: heavy-tailed, one very large course (index 0), one empty (index 1)
    counts = []
    for i in range(n_courses):
        if i == 0:
            counts.append(preset.big_course_students)
        elif i == 1 or rng.random() < 0.04:
            counts.append(0)
        else:
            counts.append(
                min(preset.max_students, int(rng.lognormvariate(preset.students_mu, preset.students_sigma)))
            )
    pool_size = max(int(sum(counts) * 0.65), max(counts, default=0) + 20, 30)
    d._student_pool = [_make_user(d) for _ in range(pool_size)]
    d._staff_pool = [_make_user(d) for _ in range(max(8, n_courses // 3))]

    fixed_states = {2: "unpublished", 3: "completed", 4: "deleted", 7: "completed"}
    for i in range(n_courses):
        if i in fixed_states:
            state = fixed_states[i]
        elif i < 8:
            state = "available"
        else:
            r = rng.random()
            state = "available" if r < 0.75 else "completed" if r < 0.87 else "unpublished"
            if r >= 0.95 and i % 10 != 9:  # the cross-shard course ids (i % 10 == 9) stay visible
                state = "deleted"
        analytics = i != 5 and (i < 8 or rng.random() > 0.05)
        make_course(
            d, i, state=state, n_students=counts[i], analytics=analytics,
            big_module=preset.big_module_items if i == 0 else 0, force_all_kinds=i == 0,
        )  # fmt: skip
    # the limited teacher teaches the first two available courses
    d.limited_course_ids = [c for c in d.course_ids(["available"]) if d.total_students(c) > 0][:2]
    for cid in d.limited_course_ids:
        _enroll(d, cid, d.limited_user_id, "TeacherEnrollment", "active")
    # A deleted term no course uses (TermsApiController lists it for `workflow_state[]=all` only); added last,
    # so the courses' random term choices are those of a dataset without it.
    d.terms[5] = {
        "id": 5, "name": "Summer 2023 (cancelled)", "start_at": "2023-06-01T06:00:00Z", "end_at": None,
        "workflow_state": "deleted", "created_at": "2023-01-10T09:00:00Z", "sis_term_id": "SU23",
        "grading_period_group_id": None,
    }  # fmt: skip
