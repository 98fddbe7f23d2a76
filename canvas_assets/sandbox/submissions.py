"""The sandbox's submissions: generated on demand from the seed, changed through an overlay, served live.

A course has one submission per (published assignment, listed student): a user with a StudentEnrollment
or the test student's StudentViewEnrollment in any state but deleted or rejected (`vocab.SUBMISSION_STATES`,
docs/canvas-api.md §7). Nothing is materialised up front: a submission's stored fields are a pure function of the seed, the assignment's generation
parameters (`AssignmentGen`, fixed when the assignment was generated) and the user, unless a mutation
changed it, in which case the changed record lives in `SubmissionStore.overlay` (`submission_store`)
keyed by (assignment id, user id). The fields that depend on time or on the assignment's current due date
(`late`, `missing`, `seconds_late`) are computed when served, against the sandbox's clock.

Submission ids encode (assignment, user): `SUB_BASE + (assignment ordinal << 24) + user ordinal`, so
they are unique, stable across mutations, and ordered by assignment then user (Canvas creates an
assignment's submissions together). That order is the order served (id ascending) and lets a
bookmark seek without building the course's whole list.
"""

from __future__ import annotations

import functools
import hashlib
import math
import struct
from dataclasses import dataclass
from datetime import datetime, timezone

from canvas_assets.sandbox.vocab import (
    ASSIGNMENT_ID_BASE,
    DAY,
    NOW_TS,
    SHARD,
    USER_ID_BASE,
    Record,
    letter,
)

SUB_BASE = 1 << 40
USER_SHIFT = 24
USER_MASK = (1 << USER_SHIFT) - 1

_DRAWS = struct.Struct(">16H")  # a 32-byte hash as 16 draws
_DRAW_SCALE = 1 / 65536  # a power of two: x * _DRAW_SCALE is exactly x / 65536
_hash = functools.partial(hashlib.blake2b, digest_size=32)

# Students cannot hand these in (Canvas never marks them missing); every other type is a digital one.
OFFLINE_TYPES = frozenset({"none", "on_paper", "not_graded", "wiki_page"})


@dataclass
class AssignmentGen:
    """What an assignment's generated submissions are drawn from (fixed at generation: a later due-date
    change moves `late`/`missing`, never the generated timestamps)."""

    created: int
    due: int | None
    forced_unsubmitted: int | None = None  # a user whose generated submission is left unsubmitted
    # An assignment created by a mutation (`add_assignment`): nobody has handed anything in yet, so every
    # generated submission is unsubmitted. Drawn like older ones, its work would be stamped between the
    # generated data's now and its creation, after a sync's watermark: a "new" assignment whose submissions
    # the submitted_since list returned (113 of them in the small sandbox's big course).
    fresh: bool = False


def user_ordinal(uid: int) -> int:
    return uid % SHARD - USER_ID_BASE


def submission_id(aid: int, uid: int) -> int:
    return SUB_BASE + ((aid - ASSIGNMENT_ID_BASE) << USER_SHIFT) + user_ordinal(uid)


def split_id(sub_id: int) -> tuple[int, int]:
    """(assignment id, user ordinal) of a submission id."""
    x = sub_id - SUB_BASE
    return ASSIGNMENT_ID_BASE + (x >> USER_SHIFT), x & USER_MASK


OFFSETS = {"Z": 0, "+02:00": 7200, "-05:00": -18000}


# Formatting three numbers per timestamp was a fifth of the CPU of serving a submission: look them up.
_HOUR_MINUTE = [f"{h:02d}:{m:02d}:" for h in range(24) for m in range(60)]
_SECOND = [f"{s:02d}" for s in range(60)]


@functools.lru_cache(maxsize=4096)
def _day(day: int) -> str:
    return datetime.fromtimestamp(day * DAY, timezone.utc).strftime("%Y-%m-%dT")


def fmt(epoch: int | None, suffix: str = "Z") -> str | None:
    """Epoch seconds as a Canvas timestamp in UTC (`Z`) or at a fixed offset (`+02:00`, `-05:00`)."""
    if epoch is None:
        return None
    day, sec = divmod(int(epoch) + OFFSETS[suffix], DAY)
    minute, second = divmod(sec, 60)
    return f"{_day(day)}{_HOUR_MINUTE[minute]}{_SECOND[second]}{suffix}"


@functools.lru_cache(maxsize=65536)
def epoch_of(stamp: str | None) -> float | None:
    """A timestamp (ISO 8601, `Z` or an offset; naive means UTC) as epoch seconds."""
    if stamp is None:
        return None
    dt = datetime.fromisoformat(stamp.replace("Z", "+00:00").replace("z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def grade_of(score: float | None, a: Record) -> str | None:
    """The `grade` string Canvas derives from a score for the assignment's grading type."""
    pts = a["points_possible"]
    if score is None or pts is None or a["grading_type"] == "not_graded":
        return None
    pct = score / pts * 100 if pts else 0.0
    kind = a["grading_type"]
    if kind == "percent":
        return f"{_num(round(pct, 2))}%"
    if kind in ("letter_grade", "gpa_scale"):
        return letter(pct)
    if kind == "pass_fail":
        return "complete" if score > 0 else "incomplete"
    return _num(score)


def gradable(a: Record) -> bool:
    return a["grading_type"] != "not_graded" and a["points_possible"] is not None


def digital_types(a: Record) -> list[str]:
    return [t for t in a["submission_types"] if t not in OFFLINE_TYPES]


def generate(seed: int, a: Record, gen: AssignmentGen, uid: int, now: int = NOW_TS) -> Record:
    """The stored state of a generated submission: numbers and epochs (`_sub`, `_grd`, `_post`, in
    the record's display offset `_tz`); `serve` formats it. Every timestamp is at or before `now`
    (the generated data's now), and none depends on the assignment's current due date."""
    # f[k]: the k-th independent draw in [0, 1), from the k-th big-endian 16-bit word of the hash
    f = [x * _DRAW_SCALE for x in _DRAWS.unpack(_hash(f"{seed}:sub:{a['id']}:{uid}".encode()).digest())]

    created, due = gen.created, gen.due
    digital = digital_types(a)
    can_grade = gradable(a)
    forced = gen.fresh or gen.forced_unsubmitted == uid
    sub: int | None = None
    grd: int | None = None
    state, attempt, stype, resubmitted = "unsubmitted", None, None, False
    future = due is not None and due > now
    if forced:
        pass
    elif not digital:  # on paper / no submission: never submitted, sometimes graded after the deadline
        deadline = due if due is not None else created + 14 * DAY
        if deadline <= now and can_grade and f[0] < 0.7:
            state, grd = "graded", min(now, deadline + 600 + int(f[2] * 10 * DAY))
    elif f[0] >= (0.55 if future else 0.2 if due is None else 0.12):
        if due is None:
            sub = created + int(f[1] * min(30 * DAY, now - created))
        elif future:
            sub = created + int(f[1] * (now - created))
        elif f[11] < 0.12:  # handed in after the due date
            sub = min(now, due + 60 + int(f[1] * 4 * DAY))
        else:
            sub = due - 60 - int(f[1] * min(10 * DAY, due - created - 120))
        state = "submitted"
        attempt = 1 + (f[6] < 0.2) + (f[6] < 0.05)
        stype = digital[int(f[7] * len(digital))]
        if f[9] < 0.03:
            state = "pending_review"
        elif can_grade and f[2] < (0.4 if future else 0.75):
            state, grd = "graded", min(now, sub + 600 + int(f[8] * 7 * DAY))
    excused = not forced and f[4] < 0.025
    lps: str | None = None
    late_override: int | None = None
    late_now = sub is not None and due is not None and sub >= due
    if not forced and not excused and f[5] < 0.05:
        if sub is None and state == "unsubmitted":
            lps = "missing" if f[5] < 0.025 else "none"
        elif late_now:
            lps = "none"
        elif sub is not None:
            lps, late_override = "late", 3600 * (1 + int(f[10] * 47))
    entered: float | None = None
    deducted: float | None = None
    pts = a["points_possible"]
    if state == "graded" and not excused and pts is not None:
        if a["grading_type"] == "pass_fail":
            entered = float(pts) if f[3] > 0.15 else 0.0
        elif pts >= 10:
            entered = round(pts * (0.45 + 0.55 * f[3]) * 2) / 2
        else:
            entered = round(pts * (0.45 + 0.55 * f[3]), 2)
        if late_now and lps is None and f[10] < 0.5 and a["grading_type"] != "pass_fail" and entered > 0:
            assert sub is not None and due is not None
            days = math.ceil((sub - due + 1) / DAY)
            deducted = round(min(entered, pts * 0.1 * days), 2) or None
        if grd is not None and f[12] < 0.04 and sub is not None and grd + 3600 <= now:
            # the student handed in again after grading: back to submitted, the old score stays
            sub = grd + 3600 + int(f[13] * (min(now, grd + 5 * DAY) - grd - 3600))
            attempt = (attempt or 1) + 1
            state, resubmitted, deducted = "submitted", True, None
    if excused:
        state = "graded"
        grd = min(now, (sub or created) + 600 + int(f[8] * 7 * DAY))
    tz = "Z" if f[14] < 0.86 else "+02:00" if f[14] < 0.96 else "-05:00"
    return {
        "id": submission_id(a["id"], uid),
        "user_id": uid,
        "assignment_id": a["id"],
        "score": None if entered is None else round(entered - (deducted or 0.0), 2),
        "entered_score": entered,
        "workflow_state": state,
        "excused": excused,
        "late_policy_status": lps,
        "attempt": attempt,
        "submission_type": stype,
        "points_deducted": deducted,
        "grade_matches_current_submission": not resubmitted,
        "_sub": sub,
        "_grd": grd,
        "_post": grd if grd is not None and (excused or f[15] >= 0.08) else None,
        "_late_override": late_override,
        "_tz": tz,
    }


def serve(rec: Record, a: Record, now: int) -> Record:
    """The record as the API serves it at sandbox time `now`: timestamps and grades formatted, and
    `late` / `missing` / `seconds_late` derived from the assignment's current due date and `now`."""
    due = epoch_of(a["due_at"])
    sub = rec["_sub"]
    lps = rec["late_policy_status"]
    late = missing = False
    seconds_late = 0
    if rec["excused"]:
        pass
    elif lps == "late":
        late, seconds_late = True, rec["_late_override"] or 0
    elif lps == "missing":
        missing = True
    elif lps is None and due is not None:
        if sub is not None:
            late = sub >= due
            seconds_late = int(sub - due) if late else 0
        else:
            missing = rec["workflow_state"] == "unsubmitted" and now >= due and bool(digital_types(a))
    tz = rec["_tz"]
    return {
        "id": rec["id"],
        "user_id": rec["user_id"],
        "assignment_id": rec["assignment_id"],
        "score": rec["score"],
        "grade": grade_of(rec["score"], a),
        "entered_score": rec["entered_score"],
        "entered_grade": grade_of(rec["entered_score"], a),
        "submitted_at": fmt(sub, tz),
        "graded_at": fmt(rec["_grd"], tz),
        "posted_at": fmt(rec["_post"], tz),
        "workflow_state": rec["workflow_state"],
        "late": late,
        "missing": missing,
        "excused": rec["excused"],
        "late_policy_status": lps,
        "seconds_late": seconds_late,
        "attempt": rec["attempt"],
        "submission_type": rec["submission_type"],
        "points_deducted": rec["points_deducted"],
        "grade_matches_current_submission": rec["grade_matches_current_submission"],
    }
