"""Configuration of the simulated Canvas: dataset scale, throttle mode, latency, faults."""

from __future__ import annotations

from dataclasses import dataclass, field

THROTTLE_MODES = ("hosted", "legacy", "off")

# High-water marks of the two real Canvas flavours (docs/canvas-api.md §1).
HOSTED_HWM = 700.0
LEGACY_HWM = 600.0


@dataclass(frozen=True)
class ScalePreset:
    """Knobs of the data generator for one scale."""

    courses: int
    big_course_students: int  # the one very large course
    big_module_items: int  # the one module over the 100-item inlining limit
    students_mu: float  # lognormal parameters of students per ordinary course (heavy tail)
    students_sigma: float
    max_students: int
    max_assignments: int
    max_modules: int
    max_items: int


SCALES: dict[str, ScalePreset] = {
    # ~12 courses, a few hundred enrollments, one course of 250 students (3 pages at per_page=100).
    "small": ScalePreset(12, 270, 120, 2.4, 0.7, 60, 12, 5, 12),
    # ~300 courses, ~30k enrollments.
    "medium": ScalePreset(300, 2500, 150, 4.15, 1.0, 2000, 20, 8, 15),
    # ~1500 courses, ~150k enrollments.
    "large": ScalePreset(1500, 8000, 300, 4.0, 1.0, 4000, 25, 10, 20),
}


@dataclass(frozen=True)
class SandboxConfig:
    """Everything that shapes one sandbox.

    `scale` picks a preset, `courses` overrides its course count, `seed` makes data, latency jitter
    and random faults deterministic. The throttle defaults follow docs/canvas-api.md §1 (leak 10 units/s,
    up-front cost 50, high-water mark 700 hosted / 600 legacy); `high_water_mark` overrides it.
    The real cost of a request is `cost_base + cost_per_record * records serialised`.
    """

    scale: str = "small"
    courses: int | None = None
    seed: int = 7
    throttle: str = "hosted"
    latency_ms: float = 0.0
    latency_jitter: float = 0.25  # each request sleeps latency_ms * (1 ± jitter), deterministic
    fault_rate: float = 0.0
    slow_seconds: float = 3.0
    per_page_max: int = 100
    high_water_mark: float | None = None
    leak_rate: float = 10.0
    upfront_cost: float = 50.0
    cost_base: float = 0.005
    cost_per_record: float = 0.0003
    account_id: int = 1
    # CoursesController#users' roster privacy (docs/canvas-api.md, Endpoint rules): `email` with or without
    # include[]=email, and neither `email` nor `login_id` for a user whose enrollments in the course are all
    # invited / creation_pending / rejected. Off by default until the students transformer reads an absent
    # email as "unknown" rather than "cleared"; the rule's own tests switch it on.
    roster_privacy: bool = False
    # Whether the tokens may read the grade change audit log (`manage_grades` / `view_all_grades` in the
    # course, GradeChangeAuditApiController#for_course): False answers 401 unauthorized, as Canvas does for a
    # token whose user lacks them.
    grade_audit: bool = True
    fault_kinds: tuple[str, ...] = field(default=("500", "503", "drop", "slow"))

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ValueError(f"unknown scale {self.scale!r}; expected one of {sorted(SCALES)}")
        if self.throttle not in THROTTLE_MODES:
            raise ValueError(f"unknown throttle mode {self.throttle!r}; expected one of {THROTTLE_MODES}")
        if self.courses is not None and self.courses < 0:
            raise ValueError("courses must be >= 0")
        if not 0.0 <= self.fault_rate <= 1.0:
            raise ValueError("fault_rate must be between 0 and 1")
        if self.per_page_max < 1:
            raise ValueError("per_page_max must be >= 1")
        if self.latency_ms < 0 or self.slow_seconds < 0:
            raise ValueError("latency_ms and slow_seconds must be >= 0")

    @property
    def preset(self) -> ScalePreset:
        return SCALES[self.scale]

    @property
    def course_count(self) -> int:
        return self.preset.courses if self.courses is None else self.courses

    @property
    def hwm(self) -> float:
        """High-water mark of the bucket (also used for X-Rate-Limit-Remaining when throttle is off)."""
        if self.high_water_mark is not None:
            return self.high_water_mark
        return LEGACY_HWM if self.throttle == "legacy" else HOSTED_HWM
