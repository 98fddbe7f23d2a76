"""The transformers' options: which optional column groups a sync produces, from its profile's `fields`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TransformOptions:
    """Which optional column groups to produce (from the sync profile's `fields`).

    A group that is off is DROPPED from the frame, so the loader leaves those columns untouched in the
    database (a LIGHTWEIGHT sync does not wipe the syllabus a FULL sync stored).
    """

    course_public_info: bool = True  # is_public, public_description
    course_extended_info: bool = True  # syllabus_body, term_start_at, term_end_at
    course_settings: bool = True  # settings (JSON)
    student_basic_info: bool = True  # email, login_id, sis_user_id
    student_scores: bool = True  # enrollment scores and grades (+ score history)
    student_enrollment_details: bool = True  # last_activity_at, total_activity_time, last_attended_at

    def enabled(self, group: str | None) -> bool:
        return group is None or bool(getattr(self, group))

    @classmethod
    def from_profile(cls, profile: Any) -> TransformOptions:
        """The options of a sync profile: each is its `fields.<entity>.<group>` switch (`PROFILE_SWITCHES`)."""
        return cls(**{option: bool(profile.field_on(*switch)) for option, switch in PROFILE_SWITCHES.items()})


# The profile switch (`fields.<entity>.<group>`) behind each option, e.g. `courses.public_info`.
PROFILE_SWITCHES: dict[str, tuple[str, str]] = {
    "course_public_info": ("courses", "public_info"),
    "course_extended_info": ("courses", "extended_info"),
    "course_settings": ("courses", "settings"),
    "student_basic_info": ("students", "basic_info"),
    "student_scores": ("students", "scores"),
    "student_enrollment_details": ("students", "enrollment_details"),
}
