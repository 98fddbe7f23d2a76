"""How each sandbox course is organised and graded: its sections (some cross-listed in from another course),
assignment groups with weights and drop rules, grading periods (its own, or its term's), and the student
enrollments' scores per grading period; the serialisers the endpoints use for them.

Generated after each course with a random stream of its own (seeded by the sandbox's seed and the course id),
so the dataset the main stream generates is the same with or without them. Canvas's rules are in
docs/canvas-api.md §7 (SectionsController, AssignmentGroupsController, GradingPeriodsController,
EnrollmentsApiController with `grading_period_id`).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from canvas_assets.sandbox.submissions import fmt
from canvas_assets.sandbox.vocab import DAY, NOW_TS, Record, letter, stable_int

if TYPE_CHECKING:
    from canvas_assets.sandbox.data import SandboxData

GROUP_NAMES = ("Assignments", "Quizzes", "Exams", "Labs", "Participation", "Projets", "Домашние задания")
SECTION_STUDENT_TYPES = ("StudentEnrollment",)  # total_students counts real students (not the test student)
SECTION_COUNTED_STATES = ("active", "invited")
# Terms whose grading period group (set) every course of the term inherits, unless it has periods of its own.
TERM_PERIODS = {3: (("Quarter 3", "2025-01-13", "2025-03-14"), ("Quarter 4", "2025-03-17", "2025-05-09"))}


def _ts(day: str) -> str:
    return f"{day}T06:00:00Z"


def _fmt(epoch: int) -> str:
    return fmt(epoch) or ""


def _period(d: SandboxData, group_id: int, title: str, start: str, end: str, weight: float | None) -> int:
    pid = d.next_id("grading_period", 500)
    close = end
    d.grading_periods[pid] = {
        "id": pid,
        "grading_period_group_id": group_id,
        "title": title,
        "start_date": start,
        "end_date": end,
        "close_date": close,
        "weight": weight,
        "workflow_state": "active",
    }
    d.period_groups.setdefault(group_id, []).append(pid)
    return pid


def term_grading_periods(d: SandboxData) -> None:
    """The grading period groups of terms (`TERM_PERIODS`): their periods apply to every course of the term."""
    for term_id, periods in TERM_PERIODS.items():
        if term_id not in d.terms:
            continue
        gid = d.next_id("grading_period_group", 80)
        d.term_period_groups[term_id] = gid
        for title, start, end in periods:
            _period(d, gid, title, _ts(start), _ts(end), 50.0)


def _rng(d: SandboxData, cid: int) -> random.Random:
    return random.Random(stable_int(d.config.seed, "structure", cid))


def add_structure(d: SandboxData, cid: int) -> None:
    """Sections, assignment groups and (for some courses) grading periods of a course just generated."""
    rng = _rng(d, cid)
    _sections(d, cid, rng)
    _assignment_groups(d, cid, rng)
    if rng.random() < 0.15:
        gid = d.next_id("grading_period_group", 80)
        d.course_period_groups[cid] = gid
        n = rng.randint(2, 4)
        start = NOW_TS - 120 * DAY
        for i in range(n):
            a, b = start + i * 40 * DAY, start + (i + 1) * 40 * DAY - DAY
            weight = round(100.0 / n, 2) if rng.random() < 0.5 else None
            _period(d, gid, f"Période {i + 1}", _fmt(a), _fmt(b), weight)


def section_record(
    d: SandboxData, cid: int, name: str, *, nonxlist: int | None = None, sid: int | None = None
) -> Record:
    """An active section of course `cid` (stored; the caller fills its enrollments), a new id unless given."""
    rng = _rng(d, cid * 31 + len(d.course_sections))
    c = d.courses[cid]
    sid = d.next_id("section", 400) if sid is None else sid
    start = None if rng.random() < 0.6 else _fmt(NOW_TS - rng.randint(30, 200) * DAY)
    s: Record = {
        "id": sid,
        "course_id": cid,
        "name": name,
        "sis_section_id": None if rng.random() < 0.3 else f"SEC-{sid}",
        "sis_course_id": c.get("sis_course_id"),
        "integration_id": None,
        "start_at": start,
        "end_at": None if start is None else _fmt(NOW_TS + rng.randint(10, 120) * DAY),
        "restrict_enrollments_to_section_dates": start is not None and rng.random() < 0.5,
        "nonxlist_course_id": nonxlist,
        "created_at": c["created_at"],
        "workflow_state": "active",
    }
    d.course_sections[sid] = s
    return s


def _sections(d: SandboxData, cid: int, rng: random.Random) -> None:
    """The default section (created with the course) made a full record, extra sections holding some of the
    students, now and then a deleted (empty) section, and a section cross-listed in from another course."""
    default = d.sections[cid]
    c = d.courses[cid]
    section_record(d, cid, default["name"], sid=default["id"]).update(
        sis_section_id=c.get("sis_course_id"), start_at=None, end_at=None,
        restrict_enrollments_to_section_dates=False,
    )  # fmt: skip
    students = [
        d.enrollments[e]
        for e in d._enrollments_by_course.get(cid, [])
        if d.enrollments[e]["type"] == "StudentEnrollment"
    ]
    extra = rng.randint(1, 3) if students and rng.random() < 0.4 else 0
    for i in range(extra):
        s = section_record(d, cid, f"{c['course_code']} — Section {chr(66 + i)}")
        for e in students:
            if rng.random() < 0.4:
                e["course_section_id"] = s["id"]
    if rng.random() < 0.1:
        section_record(d, cid, f"{c['course_code']} (old)")["workflow_state"] = "deleted"
    others = [o for o in d.courses if o != cid and d.courses[o]["workflow_state"] != "deleted"]
    index = len(d.courses) - 1  # every sixth course has one, so that the small sandbox has some too
    if len(students) >= 4 and others and (rng.random() < 0.15 or index % 6 == 5):
        origin = rng.choice(others)
        s = section_record(d, cid, f"{d.courses[origin]['course_code']} (cross-listed)", nonxlist=origin)
        for e in rng.sample(students, 2):
            e["course_section_id"] = s["id"]


def _assignment_groups(d: SandboxData, cid: int, rng: random.Random) -> None:
    """1-4 groups; weights adding up to 100 when the course applies them (set but unused otherwise); drop
    rules now and then; the course's assignments spread over the groups."""
    c = d.courses[cid]
    names = rng.sample(GROUP_NAMES, rng.randint(1, 4))
    cuts = sorted(rng.randint(1, 19) * 5 for _ in range(len(names) - 1))
    weights = [float(b - a) for a, b in zip([0, *cuts], [*cuts, 100], strict=True)]
    ids = []
    for pos, (name, weight) in enumerate(zip(names, weights, strict=True), start=1):
        gid = d.next_id("assignment_group", 30_000)
        ids.append(gid)
        rules: Record = {}
        r = rng.random()
        if r < 0.2:
            rules["drop_lowest"] = rng.randint(1, 2)
        elif r < 0.3:
            rules["drop_highest"] = 1
            rules["drop_lowest"] = 1
        d.assignment_groups[gid] = {
            "id": gid,
            "course_id": cid,
            "name": name,
            "position": pos,
            "group_weight": weight if c["apply_assignment_group_weights"] or rng.random() < 0.3 else 0.0,
            "sis_source_id": None if rng.random() < 0.7 else f"AG-{gid}",
            "integration_data": None if rng.random() < 0.8 else {"lms": "sandbox", "n": pos},
            "rules": rules,
            "workflow_state": "active",
        }
    if rng.random() < 0.05:
        gid = d.next_id("assignment_group", 30_000)
        d.assignment_groups[gid] = {**d.assignment_groups[ids[0]], "id": gid, "workflow_state": "deleted"}
    for aid in d._assignments_by_course.get(cid, []):
        gid = rng.choice(ids)
        d.assignments[aid]["assignment_group_id"] = gid
        g = d.assignment_groups[gid]
        if g["rules"].get("drop_lowest") and "never_drop" not in g["rules"] and rng.random() < 0.3:
            g["rules"]["never_drop"] = [aid]


# ---------------------------------------------------------------------------------------------- queries
def sections_of(d: SandboxData, cid: int) -> list[Record]:
    """The course's active sections as SectionsController#index orders them (name, then id)."""
    rows = [
        s for s in d.course_sections.values() if s["course_id"] == cid and s["workflow_state"] == "active"
    ]
    return sorted(rows, key=lambda s: (s["name"].casefold(), s["id"]))


def section_students(d: SandboxData, section_id: int) -> int:
    """Active and invited students of a section (`total_students`)."""
    s = d.course_sections[section_id]
    return len(
        {
            e["user_id"]
            for e in d.enrollments_of(s["course_id"], SECTION_COUNTED_STATES, SECTION_STUDENT_TYPES)
            if e["course_section_id"] == section_id
        }
    )


def assignment_groups_of(d: SandboxData, cid: int) -> list[Record]:
    """The course's active groups, by position then name."""
    rows = [
        g for g in d.assignment_groups.values() if g["course_id"] == cid and g["workflow_state"] == "active"
    ]
    return sorted(rows, key=lambda g: (g["position"], g["name"], g["id"]))


def grading_periods_of(d: SandboxData, cid: int) -> list[Record]:
    """GradingPeriod.for(course): the course's own group's active periods, else its term's, by start date."""
    gid = d.course_period_groups.get(cid)
    if gid is None:
        gid = d.term_period_groups.get(d.courses[cid]["enrollment_term_id"])
    rows = [d.grading_periods[p] for p in d.period_groups.get(gid, [])] if gid is not None else []
    return sorted(
        (p for p in rows if p["workflow_state"] == "active"), key=lambda p: (p["start_date"], p["id"])
    )


def _shift(score: float | None, delta: float) -> float | None:
    return None if score is None else round(min(110.0, max(0.0, score + delta)), 2)


def period_grades(d: SandboxData, e: Record, period_id: int) -> Record:
    """A student enrollment's `grades` within a period: set by a mutation, else the course's grades moved by
    a deterministic amount per (enrollment, period), so that they follow the course's as it changes."""
    edited = d.period_grade_edits.get((e["id"], period_id))
    if edited is not None:
        return {"html_url": e["grades"]["html_url"], **edited}
    g = e["grades"]
    delta = stable_int(d.config.seed, "period", e["id"], period_id, bits=16) % 1501 / 100 - 7.5
    out: Record = {"html_url": g["html_url"]}
    for kind in ("current", "final", "unposted_current", "unposted_final"):
        score = _shift(g[f"{kind}_score"], delta)
        out[f"{kind}_score"] = score
        out[f"{kind}_grade"] = letter(score)
    return out


def period_json(d: SandboxData, p: Record) -> Record:
    """A period as GradingPeriodSerializer serves it (`is_closed`: its close date has passed)."""
    out = {
        k: p[k] for k in ("id", "grading_period_group_id", "title", "start_date", "end_date", "close_date")
    }
    out["weight"] = p["weight"]
    out["is_closed"] = p["close_date"] is not None and p["close_date"] < d.now()
    out["permissions"] = {"read": True, "create": False, "update": True, "delete": True}
    return out


def section_json(d: SandboxData, s: Record, *, total_students: bool, limited: bool) -> Record:
    """A section as SectionsController#index serves it (SIS fields only to a token that may read SIS)."""
    out = {k: v for k, v in s.items() if k not in ("workflow_state", "created_at")}
    if limited:
        for k in ("sis_section_id", "sis_course_id", "integration_id"):
            out.pop(k, None)
    if total_students:
        out["total_students"] = section_students(d, s["id"])
    return out


def group_json(g: Record) -> Record:
    """An assignment group as assignment_group_json serves it (no `include[]`)."""
    out = {k: g[k] for k in ("id", "name", "position", "group_weight", "sis_source_id", "integration_data")}
    rules = g["rules"]
    out["rules"] = {k: (list(v) if isinstance(v, list) else v) for k, v in rules.items()}
    return out
