"""Where the sandbox's submissions live: generation parameters, the overlay of changed submissions, the
course-level iteration the endpoint pages through, and the generator's guarantee of future work.
See `submissions` for what one submission is."""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from canvas_assets.sandbox.submissions import (
    SUB_BASE,
    USER_MASK,
    AssignmentGen,
    digital_types,
    fmt,
    generate,
    serve,
    split_id,
    submission_id,
    user_ordinal,
)
from canvas_assets.sandbox.vocab import (
    DAY,
    NOW_TS,
    SUBMISSION_STATES,
    SUBMISSION_TYPES,
    USER_ID_BASE,
    Record,
    stable_int,
)

if TYPE_CHECKING:
    from canvas_assets.sandbox.data import SandboxData


class SubmissionStore:
    """Generation parameters by assignment id and the overlay of changed submissions."""

    def __init__(self, d: SandboxData) -> None:
        self.d = d
        self.params: dict[int, AssignmentGen] = {}
        self.overlay: dict[tuple[int, int], Record] = {}
        self._index: dict[int, tuple[tuple[tuple[int, ...], tuple[int, ...]], array, array]] = {}
        # course id -> (its listed students' ids as the enrollments list them, sorted by ordinal, ordinals)
        self._order: dict[int, tuple[tuple[int, ...], tuple[int, ...], array]] = {}

    def register(self, aid: int, created: int, due: int | None, *, fresh: bool = False) -> None:
        self.params[aid] = AssignmentGen(created, due, fresh=fresh)

    def stored(self, a: Record, uid: int) -> Record:
        """The stored fields (overlay or generated); a fresh dict for generated ones, the live one otherwise."""
        rec = self.overlay.get((a["id"], uid))
        return rec if rec is not None else generate(self.d.config.seed, a, self.params[a["id"]], uid)

    def served(self, rec: Record, a: Record) -> Record:
        return serve(rec, a, self.d.now_ts)

    def for_update(self, a: Record, uid: int) -> Record:
        """The overlay record of (assignment, user), created from the generated one on first change."""
        key = (a["id"], uid)
        if key not in self.overlay:
            self.overlay[key] = self.stored(a, uid)
        return self.overlay[key]

    # ------------------------------------------------------------------ what a course serves
    def assignments(self, course_id: int, only: Iterable[int] | None = None) -> list[Record]:
        """Published, live assignments with an id, by id (the first half of the submission order)."""
        wanted = None if only is None else set(only)
        rows = [
            a
            for a in self.d.assignments_of(course_id)
            if a["published"] and isinstance(a["id"], int) and (wanted is None or a["id"] in wanted)
        ]
        return sorted(rows, key=lambda a: a["id"])

    def students(self, course_id: int, only: Iterable[int] | None = None) -> Sequence[int]:
        """Listed students' user ids (`listed_students`) by user ordinal (the second half of the
        submission order)."""
        ids = self._listed_students(course_id)[0]
        if only is None:
            return ids
        wanted = set(only)
        return [u for u in ids if u in wanted]

    def _listed_students(self, course_id: int) -> tuple[tuple[int, ...], array]:
        """(the user ids whose submissions the course lists, by user ordinal, their ordinals): every user
        with a StudentEnrollment or StudentViewEnrollment (the test student) in a state but deleted or
        rejected (`vocab.SUBMISSION_STATES`: active, invited, creation_pending, completed, inactive), once
        however many such enrollments (sections) they have, as Canvas keeps one submission per
        (assignment, user).

        Every call reads the enrollments (a mutation, or a test editing a record, shows at once); only
        their order is kept, while the course's listed students stay the same: sorting a big course's
        students again on each of its hundreds of pages was half the CPU of serving them.
        """
        present = tuple(
            [e["user_id"] for e in self.d.enrollments_of(course_id, SUBMISSION_STATES, SUBMISSION_TYPES)]
        )
        order = self._order.get(course_id)
        if order is None or order[0] != present:
            ids = tuple(sorted(set(present), key=user_ordinal))
            order = (present, ids, array("q", map(user_ordinal, ids)))
            self._order[course_id] = order
        return order[1], order[2]

    def rows(
        self, course_id: int, *, after: int | None = None, assignment_ids: Iterable[int] | None = None,
        user_ids: Iterable[int] | None = None, since: tuple[float | None, float | None] | None = None,
    ) -> Iterator[tuple[Record, Record]]:  # fmt: skip
        """(stored record, assignment) of the course's submissions with id > `after`, by id.

        With `since` = (submitted_since, graded_since), generated records that cannot pass those
        bounds are skipped without being generated (see `_times`); the caller still applies them.
        """
        students, ordinals = self._listed_students(course_id)
        assignments = self.assignments(course_id)
        only_a = None if assignment_ids is None else set(assignment_ids)
        only_u = None if user_ids is None else set(user_ids)
        subs = grds = None
        ss = gs = None
        if since is not None and since != (None, None):
            subs, grds = self._times(course_id, assignments, students)
            ss, gs = since
        n, overlay = len(students), self.overlay
        for i, a in enumerate(assignments):
            aid = a["id"]
            if only_a is not None and aid not in only_a:
                continue
            start = 0
            if after is not None:
                base = submission_id(aid, USER_ID_BASE)  # the id of user ordinal 0
                if after >= base + USER_MASK:
                    continue
                start = bisect.bisect_right(ordinals, after - base) if after >= base else 0
            for j in range(start, n):
                uid = students[j]
                if only_u is not None and uid not in only_u:
                    continue
                if subs is not None and grds is not None and (aid, uid) not in overlay:
                    p = i * n + j
                    if ss is not None and (subs[p] < 0 or subs[p] <= ss):
                        continue
                    if gs is not None and (grds[p] < 0 or grds[p] <= gs):
                        continue
                yield self.stored(a, uid), a

    def _times(
        self, course_id: int, assignments: list[Record], students: Sequence[int]
    ) -> tuple[array, array]:
        """Generated submitted/graded epochs (-1 for null) of the course in `rows` order, built on the
        first since-filtered request and kept while the course's assignments and students stay the
        same: 16 bytes a submission, so an incremental fetch generates only what it may serve."""
        sig = (tuple(a["id"] for a in assignments), tuple(students))
        hit = self._index.get(course_id)
        if hit is not None and hit[0] == sig:
            return hit[1], hit[2]
        subs, grds = array("q"), array("q")
        seed = self.d.config.seed
        for a in assignments:
            gen = self.params[a["id"]]
            for uid in students:
                r = generate(seed, a, gen, uid)
                subs.append(-1 if r["_sub"] is None else r["_sub"])
                grds.append(-1 if r["_grd"] is None else r["_grd"])
        self._index[course_id] = (sig, subs, grds)
        return subs, grds

    def locate(self, course_id: int, sub_id: int) -> tuple[Record, int]:
        """(assignment, user id) of a submission the course serves; KeyError otherwise."""
        aid, ordinal = split_id(sub_id) if sub_id >= SUB_BASE else (-1, -1)
        rows = self.assignments(course_id, [aid])
        uid = next((u for u in self.students(course_id) if user_ordinal(u) == ordinal), None)
        if not rows or uid is None:
            raise KeyError(f"course {course_id} serves no submission {sub_id}")
        return rows[0], uid


def ensure_future_work(d: SandboxData, course_id: int) -> None:
    """Generation: a course with published assignments and listed students gets one digital assignment
    due in the future with an unsubmitted (not excused, no late policy status) submission, so that
    `pass_due_date` always has something to turn missing. No random draws: the stream is unchanged."""
    store = d._submissions
    published = store.assignments(course_id)
    students = store.students(course_id)
    if not published or not students:
        return
    digital = [a for a in published if digital_types(a)]
    anchor = next((a for a in digital if (store.params[a["id"]].due or 0) > NOW_TS), None)
    if anchor is None:
        anchor = digital[-1] if digital else published[-1]
        if not digital:
            anchor["submission_types"] = ["online_text_entry"]
        due = NOW_TS + (3 + stable_int(d.config.seed, "due", anchor["id"]) % 40) * DAY
        anchor["due_at"], anchor["lock_at"] = fmt(due), None
        store.params[anchor["id"]].due = due
    gen = store.params[anchor["id"]]

    def open_(uid: int) -> bool:
        r = generate(d.config.seed, anchor, gen, uid)
        return r["workflow_state"] == "unsubmitted" and not r["excused"] and r["late_policy_status"] is None

    if not any(open_(u) for u in students):
        gen.forced_unsubmitted = students[0]
