"""The sandbox's endpoints: routing, what each Canvas endpoint serves, and the record serialisers.

Endpoints see the live dataset (`SandboxData`, read under its lock by the caller) and answer with a
`Response` or raise `ApiError`; the request pipeline (`server`) does authentication, throttling,
latency, faults and statistics around them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from operator import itemgetter

from canvas_assets.sandbox import audit, structure
from canvas_assets.sandbox.data import ENROLLMENT_STATES, ENROLLMENT_TYPES, Record, SandboxData
from canvas_assets.sandbox.pagination import Pages
from canvas_assets.sandbox.protocol import (
    INVALID_ASSIGNMENT_IDS,
    NOT_FOUND,
    UNAUTHORIZED,
    ApiError,
    Principal,
    Request,
    Response,
    bad_request,
    json_response,
    ruby_to_i,
)
from canvas_assets.sandbox.submissions import epoch_of

COURSE_STATE_ALIASES = {"created": "unpublished", "claimed": "unpublished"}
COURSE_LIST_STATES = ("unpublished", "available", "completed", "deleted", "created", "claimed", "all")
# AccountsController#courses_api filters `workflow_state IN (state[])` on the stored states: created and
# claimed (served as "unpublished"), available, completed, deleted; `all` is every one. "unpublished" is
# not a stored state, so it, like any unknown value, matches nothing (no 400).
ACCOUNT_COURSE_STATES = {"created": "unpublished", "claimed": "unpublished", "available": "available",
                         "completed": "completed", "deleted": "deleted"}  # fmt: skip
# Course#current_enrollments (`NOT IN ('rejected', 'completed', 'deleted', 'inactive')`): the users
# endpoint's states when enrollment_state[] is absent, and the enrollments endpoint's `active_or_pending`.
CURRENT_STATES = ("active", "invited", "creation_pending")
USER_ENROLLMENT_TYPES = {
    "student": ("StudentEnrollment", "StudentViewEnrollment"),
    "student_view": ("StudentViewEnrollment",),
    "teacher": ("TeacherEnrollment",),
    "ta": ("TaEnrollment",),
    "observer": ("ObserverEnrollment",),
    "designer": ("DesignerEnrollment",),
}
MAX_INLINE_ITEMS = 100
MAX_STUDENT_IDS = 100  # Api::MAX_PER_PAGE: for_students refuses more explicit student ids
# for_students: `student_ids[]` go through `map_user_ids` (Api.map_ids): digits, or `sis_user_id:...`;
# anything else is dropped.
_SIS_USER = "sis_user_id:"
# Api::ISO8601_REGEX (lib/api.rb), which for_students checks submitted_since / graded_since against: a full
# date and time with `T`, optional fraction, optional `Z` or `+HH:MM` / `-HH:MM`. A date alone, a space for
# `T`, or an offset whose `+` arrived unencoded (a space) is refused.
ISO8601_REGEX = re.compile(
    r"^-?\d{4,}-(1[0-2]|0[1-9])-(3[01]|0[1-9]|[12]\d)T(2[0-3]|[01]\d):[0-5]\d:(60|[0-5]\d)(\.\d+)?"
    r"(Z|[+-](2[0-3]|[01]\d):[0-5]\d)?$"
)
# The two states a user's roster entry loses `email` and `login_id` in (CoursesController#users: a user
# whose enrollments in the course are all invited / creation_pending / rejected is "unconfirmed", and
# user_json then excludes `pseudonym` and `personal_info`).
UNCONFIRMED_STATES = frozenset({"invited", "creation_pending", "rejected"})
LIMITED_HIDDEN = ("sis_user_id", "sis_course_id", "integration_id", "login_id", "total_activity_time")
_USER_ORDER = itemgetter("sortable_name", "id")  # /courses/:id/users order, also its bookmark key


def _parse_time(raw: str | None, name: str) -> float | None:
    """submitted_since / graded_since as SubmissionsApiController#for_students reads them: the value must
    match Api::ISO8601_REGEX, else `400 {"errors": {name: "Invalid datetime for <name>"}}` (a dict of field
    names, not Canvas's usual list). A value without offset is read in `Time.zone`: UTC here (a token
    user's own zone on real Canvas)."""
    if raw is None:
        return None
    if not ISO8601_REGEX.match(raw):
        raise ApiError(400, {"errors": {name: f"Invalid datetime for {name}"}})
    try:
        return epoch_of(raw)
    except ValueError:  # matched the pattern but is no real instant (Feb 30th): Time.zone.parse fails too
        raise ApiError(400, {"errors": {name: f"Invalid datetime for {name}"}}) from None


Route = tuple[str, int | None, int | None, Callable[..., Response]]


class Endpoints:
    """The API under `/api/v1`: `route(path)` finds an endpoint, which serves a `Request`."""

    def __init__(self, data: SandboxData, base_url: str, pages: Pages) -> None:
        self.data = data
        self.base_url = base_url
        self.pages = pages
        self.routes: list[tuple[str, list[str], Callable[..., Response]]] = [
            ("/users/self", ["users", "self"], self._users_self),
            ("/courses", ["courses"], self._courses),
            ("/accounts/:id/courses", ["accounts", "#", "courses"], self._account_courses),
            ("/accounts/:id/terms", ["accounts", "#", "terms"], self._terms),
            ("/accounts/self/terms", ["accounts", "self", "terms"], self._terms),
            (
                "/audit/grade_change/courses/:id",
                ["audit", "grade_change", "courses", "#"],
                self._grade_changes,
            ),
            ("/courses/:id", ["courses", "#"], self._course),
            ("/courses/:id/settings", ["courses", "#", "settings"], self._settings),
            ("/courses/:id/users", ["courses", "#", "users"], self._course_users),
            ("/courses/:id/enrollments", ["courses", "#", "enrollments"], self._enrollments),
            ("/courses/:id/assignments", ["courses", "#", "assignments"], self._assignments),
            ("/courses/:id/sections", ["courses", "#", "sections"], self._sections),
            (
                "/courses/:id/assignment_groups",
                ["courses", "#", "assignment_groups"],
                self._assignment_groups,
            ),
            ("/courses/:id/grading_periods", ["courses", "#", "grading_periods"], self._grading_periods),
            ("/courses/:id/modules", ["courses", "#", "modules"], self._modules),
            ("/courses/:id/modules/:id/items", ["courses", "#", "modules", "#", "items"], self._module_items),
            (
                "/courses/:id/analytics/student_summaries",
                ["courses", "#", "analytics", "student_summaries"],
                self._summaries,
            ),
            (
                "/courses/:id/students/submissions",
                ["courses", "#", "students", "submissions"],
                self._submissions,
            ),
        ]

    def route(self, path: str) -> Route | None:
        if not path.startswith("/api/v1/"):
            return None
        parts = [p for p in path[len("/api/v1/") :].split("/") if p]
        for template, pattern, fn in self.routes:
            if len(pattern) != len(parts):
                continue
            ids: list[int] = []
            for pat, part in zip(pattern, parts, strict=True):
                if pat == "#":
                    if not part.isdigit():
                        break
                    ids.append(int(part))
                elif pat != part:
                    break
            else:
                return template, ids[0] if ids else None, ids[1] if len(ids) > 1 else None, fn
        return None

    # ------------------------------------------------------------------ serialisers
    def _course_json(self, c: Record, inc: set[str], principal: Principal) -> Record:
        d = self.data
        out = {k: v for k, v in c.items() if k not in ("syllabus_body", "public_description")}
        if principal.limited:
            for k in LIMITED_HIDDEN:
                out.pop(k, None)
        if "syllabus_body" in inc:
            out["syllabus_body"] = c["syllabus_body"]
        if "public_description" in inc:
            out["public_description"] = c["public_description"]
        if "term" in inc:
            t = d.terms[c["enrollment_term_id"]]
            out["term"] = {k: t[k] for k in ("id", "name", "start_at", "end_at", "workflow_state")}
        if "total_students" in inc:
            out["total_students"] = d.total_students(c["id"])
        if "concluded" in inc:
            out["concluded"] = c["workflow_state"] == "completed"
        if "account_name" in inc:
            out["account_name"] = d.accounts[c["account_id"]]["name"]
        if "teachers" in inc:
            out["teachers"] = [
                {
                    "id": e["user_id"],
                    "display_name": e["user"]["short_name"],
                    "avatar_image_url": d.users[e["user_id"]]["avatar_url"],
                    "html_url": f"{self.base_url}/courses/{c['id']}/users/{e['user_id']}",
                }
                for e in d.enrollments_of(c["id"], ("active", "invited", "completed"), ["TeacherEnrollment"])
            ]
        if "sections" in inc:
            s = d.sections[c["id"]]
            out["sections"] = [{"id": s["id"], "name": s["name"], "start_at": None, "end_at": None}]
        return out

    def _user_json(
        self, u: Record, inc: set[str], principal: Principal, *, unconfirmed: bool = False
    ) -> Record:
        """A user as CoursesController#users serves it. With `roster_privacy` (lib/api/v1/user.rb
        `user_json`, as the users action calls it): `email` whatever include[] says (the action pushes
        "email" into the includes; the caller has `read_email_addresses`), and neither `email` nor
        `login_id` for an `unconfirmed` user (excludes personal_info and pseudonym). Without it, the
        sandbox's older simplification: email only with include[]=email, for every user."""
        out = {
            k: u[k]
            for k in (
                "id",
                "name",
                "created_at",
                "sortable_name",
                "short_name",
                "sis_user_id",
                "integration_id",
            )
        }
        private = self.data.config.roster_privacy
        if not (private and unconfirmed):
            out["login_id"] = u["login_id"]
        if principal.limited:
            for k in LIMITED_HIDDEN:
                out.pop(k, None)
        if (private and not unconfirmed) or (not private and "email" in inc):
            out["email"] = u["email"]
        if "avatar_url" in inc:
            out["avatar_url"] = u["avatar_url"]
        return out

    def _enrollment_json(self, e: Record, principal: Principal, *, embed_user: bool = True) -> Record:
        out = dict(e)
        if embed_user:
            out["user"] = dict(e["user"])
        else:
            out.pop("user", None)
        if "grades" in e:
            out["grades"] = dict(e["grades"])
        if principal.limited:
            for k in LIMITED_HIDDEN:
                out.pop(k, None)
                if embed_user:
                    out["user"].pop(k, None)
        return out

    def _visible_course(self, course_id: int | None, principal: Principal) -> Record:
        d = self.data
        c = d.courses.get(course_id) if course_id is not None else None
        if c is None or c["workflow_state"] == "deleted":
            raise ApiError(404, NOT_FOUND)
        if course_id in d.forbidden_courses:
            raise ApiError(401, UNAUTHORIZED)
        return c

    def _course_states(self, req: Request, *, account: bool) -> set[str]:
        """The served workflow states `state[]` selects. The account listing (AccountsController#courses_api)
        filters raw stored states: default created/claimed/available/completed, `all` adds deleted, and
        anything else (including "unpublished") matches nothing. The token's own listing
        (CoursesController#index) takes the served names (unpublished, available, completed, deleted)."""
        wanted = req.values("state")
        if account:
            if not wanted:
                return {"unpublished", "available", "completed"}
            if "all" in wanted:
                return {"unpublished", "available", "completed", "deleted"}
            return {ACCOUNT_COURSE_STATES[s] for s in wanted if s in ACCOUNT_COURSE_STATES}
        bad = [s for s in wanted if s not in COURSE_LIST_STATES]
        if bad:
            raise bad_request(f"invalid state: {', '.join(bad)}")
        if not wanted:
            return {"unpublished", "available", "completed"}
        if "all" in wanted:
            return {"unpublished", "available", "completed", "deleted"}
        return {COURSE_STATE_ALIASES.get(s, s) for s in wanted}

    def _filter_courses(
        self, req: Request, courses: Iterable[Record], *, account: bool = False
    ) -> list[Record]:
        states = self._course_states(req, account=account)
        term = req.integer("enrollment_term_id")
        published = req.flag("published")
        with_enrollments = req.flag("with_enrollments")
        search = (req.one("search_term") or "").lower()
        out = []
        for c in courses:
            if c["workflow_state"] not in states:
                continue
            if term is not None and c["enrollment_term_id"] != term:
                continue
            if published is not None and (c["workflow_state"] in ("available", "completed")) != published:
                continue
            if with_enrollments is not None and bool(self.data.enrollments_of(c["id"])) != with_enrollments:
                continue
            if search and search not in f"{c['name']} {c['course_code']} {c.get('sis_course_id')}".lower():
                continue
            out.append(c)
        out.sort(key=lambda c: c["id"])
        return out

    # ------------------------------------------------------------------ endpoints
    def _users_self(self, req: Request, _a: int | None, _b: int | None) -> Response:
        u = self.data.users[req.principal.user_id]
        out = self._user_json(u, {"avatar_url"}, req.principal)
        out.update(locale=None, effective_locale="en", permissions={"can_update_name": True})
        return json_response(200, out, records=1)

    def _courses(self, req: Request, _a: int | None, _b: int | None) -> Response:
        d = self.data
        uid = req.principal.user_id
        mine = {
            e["course_id"]
            for e in d.enrollments.values()
            if e["user_id"] == uid and e["enrollment_state"] != "deleted"
        }
        courses = self._filter_courses(req, (d.courses[c] for c in mine))
        inc = req.includes()
        return self.pages.numbered(req, courses, lambda c: self._course_json(c, inc, req.principal))

    def _account_courses(self, req: Request, account_id: int | None, _b: int | None) -> Response:
        d = self.data
        if account_id not in d.accounts:
            raise ApiError(404, NOT_FOUND)
        if req.principal.limited:  # `read_course_list` on the account: a teacher's token has not
            raise ApiError(401, UNAUTHORIZED)
        # courses_api looks the term up with `api_find`: an unknown term is 404, not an empty list.
        term = req.integer("enrollment_term_id")
        if term is not None and term not in d.terms:
            raise ApiError(404, NOT_FOUND)
        accounts = {
            a for a, acc in d.accounts.items() if a == account_id or acc["parent_account_id"] == account_id
        }
        courses = self._filter_courses(
            req, (c for c in d.courses.values() if c["account_id"] in accounts), account=True
        )
        inc = req.includes()
        # Numbered pages without a count (`page_opts = { total_entries: nil }`): no `last` link.
        return self.pages.numbered(
            req, courses, lambda c: self._course_json(c, inc, req.principal), last=False
        )

    def _terms(self, req: Request, account_id: int | None, _b: int | None) -> Response:
        return audit.serve_terms(self.data, self.pages, req, account_id)

    def _grade_changes(self, req: Request, course_id: int | None, _b: int | None) -> Response:
        return audit.serve_grade_changes(self.data, self.pages, req, course_id)

    def _course(self, req: Request, course_id: int | None, _b: int | None) -> Response:
        c = self._visible_course(course_id, req.principal)
        return json_response(200, self._course_json(c, req.includes(), req.principal), records=1)

    def _settings(self, req: Request, course_id: int | None, _b: int | None) -> Response:
        self._visible_course(course_id, req.principal)
        assert course_id is not None
        return json_response(200, self.data.settings[course_id], records=1)

    def _enrollment_states(self, req: Request, name: str, default: tuple[str, ...]) -> set[str]:
        """`state[]` / `enrollment_state[]` as the course's enrollments and users actions apply them: raw,
        `workflow_state IN (...)`. An unknown value, or a synthetic one like `current_and_invited` (expanded
        only on a user's own enrollments, EnrollmentsApiController `use_course_state`), matches nothing:
        never a 400."""
        wanted = req.values(name)
        if not wanted:
            return set(default)
        return {s for s in wanted if s in ENROLLMENT_STATES}

    def _course_users(self, req: Request, course_id: int | None, _b: int | None) -> Response:
        d = self.data
        c = self._visible_course(course_id, req.principal)
        inc = req.includes()
        # CoursesController#users: `read_roster` (both tokens). enrollment_state[] absent: current users
        # (Course#current_users); given, every non-deleted enrollment in those raw states, creation_pending
        # included (the YARD enum leaves it out; the code does not check it).
        states = self._enrollment_states(req, "enrollment_state", CURRENT_STATES)
        types: set[str] = set()
        for t in req.values("enrollment_type"):
            if t not in USER_ENROLLMENT_TYPES:  # lib/user_search.rb: RequestError 400
                raise bad_request(f"Invalid enrollment type: {t}")
            types.update(USER_ENROLLMENT_TYPES[t])
        if not types:
            types = set(ENROLLMENT_TYPES)
        if "test_student" not in inc and "student_view" not in req.values("enrollment_type"):
            types.discard("StudentViewEnrollment")
        wanted_ids = {int(u) for u in req.values("user_ids") if u.isdigit()}
        by_user: dict[int, list[Record]] = {}
        for e in d.enrollments_of(c["id"], states, types):
            if not wanted_ids or e["user_id"] in wanted_ids:
                by_user.setdefault(e["user_id"], []).append(e)
        users = sorted(map(d.users.__getitem__, by_user), key=_USER_ORDER)
        with_enrollments = "enrollments" in inc

        def unconfirmed(uid: int) -> bool:
            # With include[]=enrollments, the listed ones decide; else every non-deleted enrollment of the
            # user in the course (`confirmed_user_ids`).
            rows = (
                by_user[uid]
                if with_enrollments
                else [e for e in d.enrollments_of(c["id"]) if e["user_id"] == uid]
            )
            return all(e["enrollment_state"] in UNCONFIRMED_STATES for e in rows)

        def render(u: Record) -> Record:
            hidden = d.config.roster_privacy and unconfirmed(u["id"])
            out = self._user_json(u, inc, req.principal, unconfirmed=hidden)
            if "enrollments" in inc:
                out["enrollments"] = [
                    self._enrollment_json(e, req.principal, embed_user=False) for e in by_user[u["id"]]
                ]
            return out

        # Numbered pages without a count (`{ total_entries: nil }`): no `last` link.
        return self.pages.numbered(req, users, render, last=False)

    def _enrollments(self, req: Request, course_id: int | None, _b: int | None) -> Response:
        c = self._visible_course(course_id, req.principal)
        # EnrollmentsApiController#course_index_enrollments: state[] absent is `active_or_pending` (active,
        # invited, creation_pending), `all_active_or_pending` (also inactive) for a caller with read_as_admin,
        # which both tokens here have. type[] is raw too: an unknown type matches nothing.
        states = self._enrollment_states(req, "state", (*CURRENT_STATES, "inactive"))
        types = req.values("type")
        user_id = req.integer("user_id")
        period = self._grading_period(c["id"], req.one("grading_period_id"))
        rows = [
            e
            for e in self.data.enrollments_of(c["id"], states, types or None)
            if user_id is None or e["user_id"] == user_id
        ]

        def render(e: Record) -> Record:
            out = self._enrollment_json(e, req.principal)
            if period is not None and "grades" in e:  # grades_hash with the period's score_opts
                out["grades"] = self.data.period_grades(e, period)
            return out

        return self.pages.bookmarked(req, rows, lambda e: (e["id"],), render)

    def _grading_period(self, course_id: int, raw: str | None) -> int | None:
        """`grading_period_id` as EnrollmentsApiController#index takes it: `GradingPeriod.for(course)
        .find_by(id:)`, else `400 {"error": "invalid grading_period_id"}`; absent or empty is no period."""
        if not raw:
            return None
        wanted = ruby_to_i(raw)
        if wanted not in {p["id"] for p in self.data.grading_periods_of(course_id)}:
            raise ApiError(400, {"error": "invalid grading_period_id"})
        return wanted

    def _sections(self, req: Request, course_id: int | None, _b: int | None) -> Response:
        """SectionsController#index: `active_course_sections` (deleted ones are not listed; a section
        cross-listed into the course is, with `nonxlist_course_id`), by name then id, numbered pages;
        `include[]=total_students` adds the section's active and invited students."""
        c = self._visible_course(course_id, req.principal)
        counted = "total_students" in req.includes()
        limited = req.principal.limited
        return self.pages.numbered(
            req,
            self.data.sections_of(c["id"]),
            lambda s: structure.section_json(self.data, s, total_students=counted, limited=limited),
        )

    def _assignment_groups(self, req: Request, course_id: int | None, _b: int | None) -> Response:
        """AssignmentGroupsController#index: the course's active groups (assignment_group_json: id, name,
        position, group_weight, sis_source_id, integration_data, rules), numbered pages."""
        c = self._visible_course(course_id, req.principal)
        return self.pages.numbered(req, self.data.assignment_groups_of(c["id"]), structure.group_json)

    def _grading_periods(self, req: Request, course_id: int | None, _b: int | None) -> Response:
        """GradingPeriodsController#index: GradingPeriod.for(course), by start date, as
        `{"grading_periods": [...], "meta": {"pagination": ...}}` with a Link header."""
        c = self._visible_course(course_id, req.principal)
        return self.pages.numbered(
            req,
            self.data.grading_periods_of(c["id"]),
            lambda p: structure.period_json(self.data, p),
            wrapped_in="grading_periods",
        )

    def _assignments(self, req: Request, course_id: int | None, _b: int | None) -> Response:
        c = self._visible_course(course_id, req.principal)
        rows = self.data.assignments_of(c["id"])
        order = req.one("order_by")
        if order == "name":
            rows.sort(key=lambda a: (a["name"], self.data._key_id(a)))
        elif order == "due_at":
            rows.sort(key=lambda a: (a["due_at"] is None, a["due_at"] or "", self.data._key_id(a)))
        inc = req.includes()

        def render(a: Record) -> Record:
            out = dict(a)
            out["submission_types"] = list(a["submission_types"])
            if "overrides" in inc:
                out["overrides"] = []
            if "all_dates" in inc:
                out["all_dates"] = [
                    {
                        "base": True,
                        "due_at": a["due_at"],
                        "unlock_at": a["unlock_at"],
                        "lock_at": a["lock_at"],
                    }
                ]
            return out

        return self.pages.numbered(req, rows, render)

    def _modules(self, req: Request, course_id: int | None, _b: int | None) -> Response:
        c = self._visible_course(course_id, req.principal)
        inline = "items" in req.includes()

        def render(m: Record) -> Record:
            out = {k: v for k, v in m.items() if k != "items"}
            # Canvas inlines items only for modules with at most 100; otherwise follow items_url.
            if inline and len(m["items"]) <= MAX_INLINE_ITEMS:
                out["items"] = [dict(i) for i in m["items"]]
            return out

        return self.pages.numbered(req, self.data.modules_of(c["id"]), render)

    def _module_items(self, req: Request, course_id: int | None, module_id: int | None) -> Response:
        c = self._visible_course(course_id, req.principal)
        m = next(
            (
                m
                for m in self.data.modules_of(c["id"])
                if m["items_url"].endswith(f"/modules/{module_id}/items")
            ),
            None,
        )
        if m is None:
            raise ApiError(404, NOT_FOUND)
        return self.pages.numbered(req, m["items"], dict)

    def _summaries(self, req: Request, course_id: int | None, _b: int | None) -> Response:
        c = self._visible_course(course_id, req.principal)
        rows = self.data.summaries_of(c["id"])
        if rows is None:
            raise ApiError(404, NOT_FOUND)
        student = req.integer("student_id")
        if student is not None:
            rows = [r for r in rows if r["id"] == student]
        return self.pages.numbered(
            req, rows, lambda r: {**r, "tardiness_breakdown": dict(r["tardiness_breakdown"])}
        )

    def _requested_assignments(self, course_id: int, values: list[str]) -> set[int] | None:
        """`assignment_ids[]` as SubmissionsApiController#for_students takes them: each id through Ruby's
        `to_i` (leading digits, else 0), scoped to `@context.assignments.published`; any id outside that
        scope refuses the whole request with `403 {"error": "invalid assignment ids requested"}`."""
        if not values:
            return None
        requested = {ruby_to_i(v) for v in values}
        published = {a["id"] for a in self.data.assignments_of(course_id) if a["published"]}
        if requested - published:
            raise ApiError(403, INVALID_ASSIGNMENT_IDS)
        return requested

    def _requested_students(self, course_id: int, values: list[str], principal: Principal) -> set[int] | None:
        """`student_ids[]` as SubmissionsApiController#for_students takes them from a caller with
        manage_grades / view_all_grades: `all` (anywhere in the list) is every student (None); otherwise
        the ids through `map_user_ids` (digits or `sis_user_id:`, others dropped), the caller's own id when
        none is left, and then any id that is not a user of the course's `all_student_enrollments`
        (non-deleted StudentEnrollment or StudentViewEnrollment, any state) refuses the whole request with
        401 unauthorized; more than 100 ids (Api::MAX_PER_PAGE) refuse it with
        `400 {"error": "too many students"}`."""
        if "all" in values:
            return None
        by_sis: dict[str, int] = {}
        if any(v.startswith(_SIS_USER) for v in values):  # a walk over every user: only when asked for
            by_sis = {u["sis_user_id"]: uid for uid, u in self.data.users.items() if u.get("sis_user_id")}
        ids: list[int] = []
        for v in values:
            if v.isdigit():
                ids.append(int(v))
            elif v.startswith(_SIS_USER) and v[len(_SIS_USER) :] in by_sis:
                ids.append(by_sis[v[len(_SIS_USER) :]])
        if not ids:
            ids = [principal.user_id]
        students = {
            e["user_id"]
            for e in self.data.enrollments_of(course_id, types=("StudentEnrollment", "StudentViewEnrollment"))
        }
        if set(ids) - students:
            raise ApiError(401, UNAUTHORIZED)
        if len(ids) > MAX_STUDENT_IDS:
            raise ApiError(400, {"error": "too many students"})
        return set(ids)

    def _submissions(self, req: Request, course_id: int | None, _b: int | None) -> Response:
        """Canvas's multiple-submissions list (SubmissionsApiController#for_students): `student_ids[]`
        (`all` or ids: `_requested_students`), `assignment_ids[]` (`_requested_assignments`),
        `workflow_state`, and `submitted_since` / `graded_since` (Api::ISO8601_REGEX; strictly after, both
        apply); bookmarked by id (`Submission::IdBookmarker`)."""
        c = self._visible_course(course_id, req.principal)
        users = self._requested_students(c["id"], req.values("student_ids"), req.principal)
        assignments = self._requested_assignments(c["id"], req.values("assignment_ids"))
        state = req.one("workflow_state")
        since = {name: _parse_time(req.one(name), name) for name in ("submitted_since", "graded_since")}

        def seek(mark: tuple[object, ...] | None) -> Iterator[Record]:
            after: int | None = None  # a mark of another shape is the first page, as a bad bookmark is
            if (
                mark is not None
                and len(mark) == 1
                and isinstance(mark[0], int)
                and not isinstance(mark[0], bool)
            ):
                after = mark[0]
            return self.data.iter_submissions(
                c["id"], after_id=after, assignment_ids=assignments, user_ids=users, workflow_state=state,
                submitted_since=since["submitted_since"], graded_since=since["graded_since"],
            )  # fmt: skip

        return self.pages.keyset(req, seek, lambda s: (s["id"],))
