"""The sandbox's endpoints: routing, what each Canvas endpoint serves, and the record serialisers.

Endpoints see the live dataset (`SandboxData`, read under its lock by the caller) and answer with a
`Response` or raise `ApiError`; the request pipeline (`server`) does authentication, throttling,
latency, faults and statistics around them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from operator import itemgetter

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
ENROLLMENT_STATE_ALIASES = {
    "current_and_invited": ("active", "invited"),
    "current_and_future": ("active", "invited", "creation_pending"),
    "current_and_concluded": ("active", "completed"),
}
USER_ENROLLMENT_TYPES = {
    "student": ("StudentEnrollment", "StudentViewEnrollment"),
    "student_view": ("StudentViewEnrollment",),
    "teacher": ("TeacherEnrollment",),
    "ta": ("TaEnrollment",),
    "observer": ("ObserverEnrollment",),
    "designer": ("DesignerEnrollment",),
}
MAX_INLINE_ITEMS = 100
LIMITED_HIDDEN = ("sis_user_id", "sis_course_id", "integration_id", "login_id", "total_activity_time")
_USER_ORDER = itemgetter("sortable_name", "id")  # /courses/:id/users order, also its bookmark key


def _parse_time(raw: str | None, name: str) -> float | None:
    """An ISO 8601 timestamp parameter (`Z`, an offset, or naive meaning UTC) as epoch seconds."""
    if raw is None:
        return None
    try:
        return epoch_of(raw)
    except ValueError:
        raise bad_request(f"Invalid {name}: {raw!r} is not an ISO 8601 timestamp") from None


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
            ("/courses/:id", ["courses", "#"], self._course),
            ("/courses/:id/settings", ["courses", "#", "settings"], self._settings),
            ("/courses/:id/users", ["courses", "#", "users"], self._course_users),
            ("/courses/:id/enrollments", ["courses", "#", "enrollments"], self._enrollments),
            ("/courses/:id/assignments", ["courses", "#", "assignments"], self._assignments),
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

    def _user_json(self, u: Record, inc: set[str], principal: Principal) -> Record:
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
        out["login_id"] = u["login_id"]
        if principal.limited:
            for k in LIMITED_HIDDEN:
                out.pop(k, None)
        if "email" in inc:
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

    def _course_states(self, req: Request) -> set[str]:
        wanted = req.values("state")
        bad = [s for s in wanted if s not in COURSE_LIST_STATES]
        if bad:
            raise bad_request(f"invalid state: {', '.join(bad)}")
        if not wanted:
            return {"unpublished", "available", "completed"}
        if "all" in wanted:
            return {"unpublished", "available", "completed", "deleted"}
        return {COURSE_STATE_ALIASES.get(s, s) for s in wanted}

    def _filter_courses(self, req: Request, courses: Iterable[Record]) -> list[Record]:
        states = self._course_states(req)
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
        if req.principal.limited:
            raise ApiError(401, UNAUTHORIZED)
        accounts = {
            a for a, acc in d.accounts.items() if a == account_id or acc["parent_account_id"] == account_id
        }
        courses = self._filter_courses(req, (c for c in d.courses.values() if c["account_id"] in accounts))
        inc = req.includes()
        return self.pages.bookmarked(
            req, courses, lambda c: (c["id"],), lambda c: self._course_json(c, inc, req.principal)
        )

    def _course(self, req: Request, course_id: int | None, _b: int | None) -> Response:
        c = self._visible_course(course_id, req.principal)
        return json_response(200, self._course_json(c, req.includes(), req.principal), records=1)

    def _settings(self, req: Request, course_id: int | None, _b: int | None) -> Response:
        self._visible_course(course_id, req.principal)
        assert course_id is not None
        return json_response(200, self.data.settings[course_id], records=1)

    def _enrollment_states(self, req: Request, name: str, default: tuple[str, ...]) -> set[str]:
        wanted = req.values(name)
        if not wanted:
            return set(default)
        out: set[str] = set()
        for s in wanted:
            if s in ENROLLMENT_STATE_ALIASES:
                out.update(ENROLLMENT_STATE_ALIASES[s])
            elif s in ENROLLMENT_STATES:
                out.add(s)
            else:
                raise bad_request(f"invalid {name}: {s}")
        return out

    def _course_users(self, req: Request, course_id: int | None, _b: int | None) -> Response:
        d = self.data
        c = self._visible_course(course_id, req.principal)
        inc = req.includes()
        states = self._enrollment_states(req, "enrollment_state", ("active", "invited"))
        types: set[str] = set()
        for t in req.values("enrollment_type"):
            if t not in USER_ENROLLMENT_TYPES:
                raise bad_request(f"invalid enrollment_type: {t}")
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

        def render(u: Record) -> Record:
            out = self._user_json(u, inc, req.principal)
            if "enrollments" in inc:
                out["enrollments"] = [
                    self._enrollment_json(e, req.principal, embed_user=False) for e in by_user[u["id"]]
                ]
            return out

        return self.pages.bookmarked(req, users, _USER_ORDER, render)

    def _enrollments(self, req: Request, course_id: int | None, _b: int | None) -> Response:
        c = self._visible_course(course_id, req.principal)
        # Canvas's default when state[] is absent: active and invited only.
        states = self._enrollment_states(req, "state", ("active", "invited"))
        types = req.values("type")
        bad = [t for t in types if t not in ENROLLMENT_TYPES]
        if bad:
            raise bad_request(f"invalid type: {', '.join(bad)}")
        user_id = req.integer("user_id")
        rows = [
            e
            for e in self.data.enrollments_of(c["id"], states, types or None)
            if user_id is None or e["user_id"] == user_id
        ]
        return self.pages.bookmarked(
            req, rows, lambda e: (e["id"],), lambda e: self._enrollment_json(e, req.principal)
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

    def _submissions(self, req: Request, course_id: int | None, _b: int | None) -> Response:
        """Canvas's multiple-submissions list: `student_ids[]` (`all` or ids; without it only the
        caller's own, which an admin has none of), `assignment_ids[]`, `workflow_state`, and
        `submitted_since` / `graded_since` (strictly after, both apply); bookmarked by id."""
        c = self._visible_course(course_id, req.principal)
        ids = req.values("student_ids")
        users: set[int] | None = None
        if "all" not in ids:
            if not all(s.isdigit() for s in ids):
                raise bad_request("student_ids must be integers or 'all'")
            users = {int(s) for s in ids}
        assignments = self._requested_assignments(c["id"], req.values("assignment_ids"))
        state = req.one("workflow_state")
        since = {name: _parse_time(req.one(name), name) for name in ("submitted_since", "graded_since")}

        def seek(mark: tuple[object, ...] | None) -> Iterator[Record]:
            after: int | None = None
            if mark is not None:
                if len(mark) != 1 or not isinstance(mark[0], int):
                    raise bad_request("invalid bookmark")
                after = mark[0]
            return self.data.iter_submissions(
                c["id"], after_id=after, assignment_ids=assignments, user_ids=users, workflow_state=state,
                submitted_since=since["submitted_since"], graded_since=since["graded_since"],
            )  # fmt: skip

        return self.pages.keyset(req, seek, lambda s: (s["id"],))
