"""Sync profiles: which entities and field groups a sync fetches, and how hard it pushes.

A profile is run config (DESIGN.md §1.5): `resources.sync_profile.config`. The three presets ship as
YAML files beside this module and as the presets of the jobs `sync_lightweight`, `sync_analytics` and
`sync_full`. Everything that reads a profile goes through `parse_profile`, which refuses an invalid one
before any Canvas call and names the offending field.

A profile may be partial: `{name: ANALYTICS_FOCUSED}` alone is that preset, and
`{name: LIGHTWEIGHT, entities: {assignments: true}}` is LIGHTWEIGHT plus assignments. A profile whose
name is not a preset must give every field.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import dagster as dg
import yaml

from canvas_assets.entities import ENTITIES as REGISTERED_ENTITIES
from canvas_assets.errors import ProfileError

PROFILES_DIR = Path(__file__).parent / "profiles"
PROFILE_ENV_VAR = "CANVAS_SYNC_PROFILE"
DEFAULT_PROFILE = "LIGHTWEIGHT"

ENTITIES = ("courses", "students", "enrollments", "assignments", "modules")
FIELD_GROUPS: dict[str, tuple[str, ...]] = {
    "courses": ("extended_info", "public_info", "settings"),
    "students": ("basic_info", "scores", "analytics", "enrollment_details"),
}
PROCESSING_LIMITS: dict[str, tuple[type, float, float]] = {
    # field: (type, minimum, maximum)
    "batch_size": (int, 1, 1000),
    "request_timeout_seconds": (float, 1, 3600),
    "retry_attempts": (int, 0, 10),
}
# Staging entities in fetch order. student_summaries is not an entity switch of its own: it is what
# `fields.students.analytics` fetches.
STAGING_ENTITIES = tuple(REGISTERED_ENTITIES)  # every staging entity, in registry order

# A field group that is on needs these entities on (otherwise the profile contradicts itself).
FIELD_REQUIRES: dict[tuple[str, str], tuple[str, ...]] = {
    ("courses", "extended_info"): ("courses",),
    ("courses", "public_info"): ("courses",),
    ("courses", "settings"): ("courses",),
    ("students", "basic_info"): ("students",),
    ("students", "scores"): ("enrollments",),  # scores live on the enrollment's grades object
    ("students", "analytics"): ("students",),
    ("students", "enrollment_details"): ("enrollments",),
}

# Aliases accepted wherever a preset is named: the canonical names and the preset file stems.
PRESET_FILES = {
    "LIGHTWEIGHT": "lightweight.yaml",
    "ANALYTICS_FOCUSED": "analytics_focused.yaml",
    "FULL_PROCESSING": "full_processing.yaml",
}
PRESET_ALIASES = {
    "lightweight": "LIGHTWEIGHT",
    "analytics_focused": "ANALYTICS_FOCUSED",
    "analytics": "ANALYTICS_FOCUSED",
    "full_processing": "FULL_PROCESSING",
    "full": "FULL_PROCESSING",
}


@dataclass(frozen=True)
class Profile:
    """A complete, validated sync profile."""

    name: str
    entities: Mapping[str, bool]
    fields: Mapping[str, Mapping[str, bool]]
    batch_size: int
    request_timeout_seconds: float
    retry_attempts: int
    extra: Mapping[str, Any] = field(default_factory=dict)

    def field_on(self, entity: str, group: str) -> bool:
        return bool(self.fields[entity][group])

    def wants(self, staging_entity: str) -> bool:
        """Whether this profile fetches (and loads) the given staging entity."""
        if staging_entity == "student_summaries":
            return self.field_on("students", "analytics")
        return bool(self.entities[staging_entity])

    @property
    def staging_entities(self) -> list[str]:
        return [e for e in STAGING_ENTITIES if self.wants(e)]

    def transform_options(self) -> Any:
        from canvas_assets.transform import TransformOptions

        return TransformOptions(
            course_public_info=self.field_on("courses", "public_info"),
            course_extended_info=self.field_on("courses", "extended_info"),
            course_settings=self.field_on("courses", "settings"),
            student_basic_info=self.field_on("students", "basic_info"),
            student_scores=self.field_on("students", "scores"),
            student_enrollment_details=self.field_on("students", "enrollment_details"),
        )

    def to_config(self) -> dict[str, Any]:
        """The `resources.sync_profile.config` block (complete, so it never depends on a preset)."""
        return {
            "name": self.name,
            "entities": dict(self.entities),
            "fields": {k: dict(v) for k, v in self.fields.items()},
            "processing": {
                "batch_size": self.batch_size,
                "request_timeout_seconds": self.request_timeout_seconds,
                "retry_attempts": self.retry_attempts,
            },
        }

    def to_run_config(self) -> dict[str, Any]:
        return {"resources": {"sync_profile": {"config": self.to_config()}}}


def canonical_preset_name(name: str) -> Optional[str]:
    """`lightweight`, `Lightweight`, `lightweight.yaml` → `LIGHTWEIGHT`; None when it is no preset."""
    stem = name.strip()
    if stem.lower().endswith((".yaml", ".yml")):
        stem = stem.rsplit(".", 1)[0]
    if stem.upper() in PRESET_FILES:
        return stem.upper()
    return PRESET_ALIASES.get(stem.lower())


def _type_name(value: Any) -> str:
    return type(value).__name__ if value is not None else "null"


def _check_keys(section: Mapping[str, Any], allowed: tuple[str, ...], path: str) -> None:
    for key in section:
        if key not in allowed:
            where = f"{path}.{key}" if path else str(key)
            raise ProfileError(
                f"unknown profile field '{where}'; expected one of: {', '.join(allowed)}", field=where
            )


def _section(raw: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        where = f"{path}.{key}" if path else key
        raise ProfileError(f"profile field '{where}' must be a mapping, got {_type_name(value)}", field=where)
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ProfileError(
            f"profile field '{where}' must be true or false, got {value!r} ({_type_name(value)})", field=where
        )
    return value


def _number(value: Any, where: str, kind: type, low: float, high: float) -> Any:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        ok = ok and float(value).is_integer()
    if not ok:
        expected = "a whole number" if kind is int else "a number"
        raise ProfileError(
            f"profile field '{where}' must be {expected}, got {value!r} ({_type_name(value)})", field=where
        )
    if not low <= value <= high:
        raise ProfileError(
            f"profile field '{where}' must be between {low:g} and {high:g}, got {value!r}", field=where
        )
    return kind(value)


def unwrap_run_config(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """Accept a whole run-config document or just the `sync_profile` config block."""
    if "resources" in data:
        resources = data.get("resources") or {}
        block = resources.get("sync_profile") if isinstance(resources, Mapping) else None
        if not isinstance(block, Mapping) or not isinstance(block.get("config"), Mapping):
            raise ProfileError(
                "run config has no 'resources.sync_profile.config' block; see canvas_assets/profiles/*.yaml",
                field="resources.sync_profile.config",
            )
        return block["config"]
    return data


def parse_profile(data: Optional[Mapping[str, Any]], *, env: Optional[Mapping[str, str]] = None) -> Profile:
    """Validate a profile mapping and complete it from its preset; raise ProfileError naming the field."""
    env = os.environ if env is None else env
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ProfileError(f"a profile must be a mapping, got {_type_name(data)}", field="")
    raw = unwrap_run_config(data)
    _check_keys(raw, ("name", "entities", "fields", "processing"), "")

    name = raw.get("name")
    if name is None:
        name = env.get(PROFILE_ENV_VAR) or DEFAULT_PROFILE
        name_field = PROFILE_ENV_VAR
    else:
        name_field = "name"
    if not isinstance(name, str) or not name.strip():
        raise ProfileError(f"profile field 'name' must be a non-empty string, got {name!r}", field="name")
    preset_name = canonical_preset_name(name)
    if preset_name is None and name_field == PROFILE_ENV_VAR:
        raise ProfileError(
            f"{PROFILE_ENV_VAR}={name!r} is not a preset; use one of {', '.join(PRESET_FILES)}",
            field=PROFILE_ENV_VAR,
        )
    base = load_preset_config(preset_name) if preset_name else None

    entities_raw = _section(raw, "entities", "")
    _check_keys(entities_raw, ENTITIES, "entities")
    fields_raw = _section(raw, "fields", "")
    _check_keys(fields_raw, tuple(FIELD_GROUPS), "fields")
    processing_raw = _section(raw, "processing", "")
    _check_keys(processing_raw, tuple(PROCESSING_LIMITS), "processing")

    def pick(
        section: Mapping[str, Any], key: str, where: str, base_section: Optional[Mapping[str, Any]]
    ) -> Any:
        if section.get(key) is not None:
            return section[key]
        if base_section is not None:
            return base_section[key]
        raise ProfileError(
            f"profile field '{where}' is missing (profile '{name}' is not a preset, so every field is needed)",
            field=where,
        )

    entities = {
        e: _bool(pick(entities_raw, e, f"entities.{e}", base["entities"] if base else None), f"entities.{e}")
        for e in ENTITIES
    }
    fields: dict[str, dict[str, bool]] = {}
    for entity, groups in FIELD_GROUPS.items():
        group_raw = _section(fields_raw, entity, "fields")
        _check_keys(group_raw, groups, f"fields.{entity}")
        base_groups = base["fields"][entity] if base else None
        fields[entity] = {
            g: _bool(pick(group_raw, g, f"fields.{entity}.{g}", base_groups), f"fields.{entity}.{g}")
            for g in groups
        }
    processing = {
        key: _number(
            pick(processing_raw, key, f"processing.{key}", base["processing"] if base else None),
            f"processing.{key}",
            kind,
            low,
            high,
        )
        for key, (kind, low, high) in PROCESSING_LIMITS.items()
    }

    for (entity, group), needs in FIELD_REQUIRES.items():
        if fields[entity][group]:
            for needed in needs:
                if not entities[needed]:
                    raise ProfileError(
                        f"profile field 'fields.{entity}.{group}' is on but 'entities.{needed}' is off: "
                        f"{entity}.{group} needs {needed}; turn one of them around",
                        field=f"fields.{entity}.{group}",
                    )
    if not any(entities.values()):
        raise ProfileError("profile switches every entity off: nothing would be synced", field="entities")

    return Profile(
        name=preset_name or name.strip(),
        entities=entities,
        fields=fields,
        batch_size=int(processing["batch_size"]),
        request_timeout_seconds=float(processing["request_timeout_seconds"]),
        retry_attempts=int(processing["retry_attempts"]),
    )


def load_preset_config(preset_name: str) -> dict[str, Any]:
    """The config block of a shipped preset (the YAML files are the single source of the values)."""
    path = PROFILES_DIR / PRESET_FILES[preset_name]
    with path.open(encoding="utf-8") as fh:
        return dict(yaml.safe_load(fh)["resources"]["sync_profile"]["config"])


def environment_profile_name() -> str:
    """The preset for runs that carry no profile: $CANVAS_SYNC_PROFILE, else DEFAULT_PROFILE."""
    return os.environ.get(PROFILE_ENV_VAR) or DEFAULT_PROFILE


def preset(name: str) -> Profile:
    canonical = canonical_preset_name(name)
    if canonical is None:
        raise ProfileError(
            f"unknown profile {name!r}; use one of {', '.join(PRESET_FILES)} (case-insensitive)", field="name"
        )
    return parse_profile(load_preset_config(canonical))


def load_profile_file(path: str | os.PathLike[str]) -> Profile:
    """Read and validate a run-config (or bare profile) YAML file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProfileError(f"cannot read profile file {p}: {exc.strerror}", field="") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ProfileError(f"profile file {p} is not valid YAML: {exc}", field="") from exc
    try:
        return parse_profile(data)
    except ProfileError as exc:
        raise ProfileError(f"{p}: {exc.message}", field=exc.field) from exc


# --- the Dagster resource -------------------------------------------------------------------------------
class EntitiesConfig(dg.Config):
    """Entity switches. Off means: not fetched, and its staging and Layer-1 steps skip."""

    courses: Optional[bool] = None
    students: Optional[bool] = None
    enrollments: Optional[bool] = None
    assignments: Optional[bool] = None
    modules: Optional[bool] = None


class CourseFieldsConfig(dg.Config):
    extended_info: Optional[bool] = None
    public_info: Optional[bool] = None
    settings: Optional[bool] = None


class StudentFieldsConfig(dg.Config):
    basic_info: Optional[bool] = None
    scores: Optional[bool] = None
    analytics: Optional[bool] = None
    enrollment_details: Optional[bool] = None


class FieldsConfig(dg.Config):
    courses: Optional[CourseFieldsConfig] = None
    students: Optional[StudentFieldsConfig] = None


class ProcessingConfig(dg.Config):
    batch_size: Optional[int] = None
    request_timeout_seconds: Optional[float] = None
    retry_attempts: Optional[int] = None


class SyncProfileResource(dg.ConfigurableResource):
    """The run's sync profile (resource key `sync_profile`).

    Unset fields come from the preset named by `name`; with no `name` the preset comes from the
    environment variable CANVAS_SYNC_PROFILE (runs launched by automation carry no run config), and
    LIGHTWEIGHT when that is unset too.
    """

    name: Optional[str] = None
    entities: Optional[EntitiesConfig] = None
    fields: Optional[FieldsConfig] = None
    processing: Optional[ProcessingConfig] = None

    def as_mapping(self) -> dict[str, Any]:
        def strip(value: Any) -> Any:
            if isinstance(value, dg.Config):
                value = value.model_dump()
            if isinstance(value, Mapping):
                return {k: strip(v) for k, v in value.items() if v is not None}
            return value

        out: dict[str, Any] = {}
        if self.name is not None:
            out["name"] = self.name
        for key in ("entities", "fields", "processing"):
            value = getattr(self, key)
            if value is not None:
                out[key] = strip(value)
        return out

    def resolve(self) -> Profile:
        """The complete, validated profile (raises ProfileError naming the field)."""
        return parse_profile(self.as_mapping())

    @classmethod
    def from_profile(cls, profile: Profile) -> "SyncProfileResource":
        cfg = profile.to_config()
        return cls(
            name=cfg["name"],
            entities=EntitiesConfig(**cfg["entities"]),
            fields=FieldsConfig(
                courses=CourseFieldsConfig(**cfg["fields"]["courses"]),
                students=StudentFieldsConfig(**cfg["fields"]["students"]),
            ),
            processing=ProcessingConfig(**cfg["processing"]),
        )
