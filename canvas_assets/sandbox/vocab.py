"""The sandbox's shared vocabulary: record type, Canvas states and types, clock and stable hashing."""

from __future__ import annotations

import hashlib
import random
from datetime import datetime, timezone
from typing import Any

Record = dict[str, Any]

# Id bases shared by the generator and the submission ids (which encode assignment and user ordinals).
SHARD = 170_000_000_000_000  # some users and courses carry this cross-shard prefix
USER_ID_BASE = 5000  # user id = (SHARD or 0) + USER_ID_BASE + ordinal
ASSIGNMENT_ID_BASE = 700  # assignment id = ASSIGNMENT_ID_BASE + ordinal

NOW_TS = int(datetime(2025, 11, 3, 12, 0, 0, tzinfo=timezone.utc).timestamp())
DAY = 86400

COURSE_STATES = ("unpublished", "available", "completed", "deleted")
ENROLLMENT_STATES = ("active", "invited", "creation_pending", "deleted", "rejected", "completed", "inactive")
ENROLLMENT_TYPES = (
    "StudentEnrollment",
    "TeacherEnrollment",
    "TaEnrollment",
    "DesignerEnrollment",
    "ObserverEnrollment",
    "StudentViewEnrollment",
)
ALL_BUT_DELETED = tuple(s for s in ENROLLMENT_STATES if s != "deleted")
# Whose submissions Canvas lists (SubmissionsApiController#for_students, `student_ids[]=all`): the users of
# `all_student_enrollments` (StudentEnrollment and the test student's StudentViewEnrollment, any state but
# deleted) whose submissions are not soft-deleted. SubmissionLifecycleManager creates a submission for every
# student with an enrollment in a state other than rejected or deleted (EffectiveDueDates) and soft-deletes
# those of a student whose every enrollment is rejected or deleted; Course#submissions is `active`. So: a
# user with at least one such enrollment in one of these states.
SUBMISSION_TYPES = ("StudentEnrollment", "StudentViewEnrollment")
SUBMISSION_STATES = tuple(s for s in ENROLLMENT_STATES if s not in ("deleted", "rejected"))


def letter(score: float | None) -> str | None:
    if score is None:
        return None
    for cut, grade in (
        (93, "A"),
        (90, "A-"),
        (87, "B+"),
        (83, "B"),
        (80, "B-"),
        (77, "C+"),
        (70, "C"),
        (60, "D"),
    ):
        if score >= cut:
            return grade
    return "F"


class Clock:
    """Formats epoch seconds as Canvas timestamps: mostly `Z`, some `+02:00` / `-05:00`."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def ts(self, epoch: float) -> str:
        r = self.rng.random()
        if r < 0.85:
            off, suffix = 0, "Z"
        elif r < 0.95:
            off, suffix = 7200, "+02:00"
        else:
            off, suffix = -18000, "-05:00"
        return datetime.fromtimestamp(int(epoch) + off, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + suffix


def stable_int(*parts: object, bits: int = 64) -> int:
    """A deterministic integer from its parts (used for per-request jitter/faults and submissions)."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> (64 - bits)
