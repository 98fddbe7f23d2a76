"""Sync profiles: which entities and field groups a sync fetches, and how hard it pushes.

A profile is run config, `resources.sync_profile.config` (README, "Sync profiles"). Its shape is stated once,
as the typed config models below: what Dagster's launchpad shows, what `parse_profile` validates (every error
a `ProfileError` naming the field, before any Canvas call) and what a `Profile` holds. A field left out comes
from the preset named by `name`; a profile whose name is no preset must give every field. The presets are
the YAML files beside this module (also the run config of the `sync_*` jobs), their entity switches taken
from each entity's declaration (`entities.Entity.presets`) unless the file sets one.
"""

import functools
import os
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import dagster as dg
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationError,
    create_model,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from canvas_assets.entities import ENTITIES as REGISTERED_ENTITIES
from canvas_assets.errors import ProfileError

PROFILES_DIR = Path(__file__).parent / "profiles"
PROFILE_ENV_VAR = "CANVAS_SYNC_PROFILE"
DEFAULT_PROFILE = "LIGHTWEIGHT"

# Every staging (course-partitioned) entity, in registry (fetch) order. Not every one is an entity switch of
# its own: student_summaries is what `fields.students.analytics` fetches (its declaration's `fetched_with`).
STAGING_ENTITIES = tuple(n for n, e in REGISTERED_ENTITIES.items() if not e.account_level)
# entities fetched once per sync for the account (terms): one unpartitioned asset each, no staging
ACCOUNT_ENTITIES = tuple(n for n, e in REGISTERED_ENTITIES.items() if e.account_level)
SWITCHED_ENTITIES = tuple(e.name for e in REGISTERED_ENTITIES.values() if e.fetched_with is None)

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


# --- the profile's shape ---------------------------------------------------------------------------------
class _Section(dg.Config):
    """A profile or a block of one: unknown keys are refused. In a block, an unset (None) field comes
    from the preset."""

    model_config = ConfigDict(extra="forbid")


def _number(description: str, *, low: int, high: int) -> Any:
    """A processing number, limited to [low, high] (the limits are also shown in its description)."""
    return Field(default=None, ge=low, le=high, description=f"{description} ({low}-{high})")


def _group(description: str, *, needs: str) -> Any:
    """A field-group switch; `needs` is the entity that must be on with it (else a contradiction)."""
    return Field(default=None, description=description, json_schema_extra={"needs": needs})


_ENTITIES_DOC = "Entity switches. Off means: not fetched, and its staging and Layer-1 steps skip."

if TYPE_CHECKING:  # the switches are read by name (`getattr`); mypy sees an open model

    class EntitiesConfig(_Section):
        def __getattr__(self, name: str) -> Optional[bool]: ...

else:
    # One switch per declared entity that is not a field group's (canvas_assets/entities.py), in
    # declaration order: the launchpad and `profile show` list them as the registry does.
    EntitiesConfig = create_model(
        "EntitiesConfig",
        __base__=_Section,
        __doc__=_ENTITIES_DOC,
        __module__=__name__,
        **{
            name: (
                Optional[StrictBool],
                Field(default=None, description=REGISTERED_ENTITIES[name].switch_description),
            )
            for name in SWITCHED_ENTITIES
        },
    )


class CourseFieldsConfig(_Section):
    extended_info: Optional[StrictBool] = _group("syllabus_body", needs="courses")
    public_info: Optional[StrictBool] = _group("is_public, public_description", needs="courses")
    settings: Optional[StrictBool] = _group("GET /courses/:id/settings → settings", needs="courses")


class StudentFieldsConfig(_Section):
    basic_info: Optional[StrictBool] = _group("email, login_id, sis_user_id", needs="students")
    # scores live on the enrollment's grades object
    scores: Optional[StrictBool] = _group("enrollment scores and canvas_score_history", needs="enrollments")
    analytics: Optional[StrictBool] = _group(
        "GET /courses/:id/analytics/student_summaries → canvas_student_summaries", needs="students"
    )
    enrollment_details: Optional[StrictBool] = _group(
        "last_activity_at, last_attended_at, total_activity_time", needs="enrollments"
    )


class FieldsConfig(_Section):
    courses: Optional[CourseFieldsConfig] = None
    students: Optional[StudentFieldsConfig] = None


class ProcessingConfig(_Section):
    batch_size: Optional[StrictInt] = _number(
        "finished courses committed to staging per transaction", low=1, high=1000
    )
    request_timeout_seconds: Optional[StrictFloat] = _number(
        "each course's time budget in seconds", low=1, high=3600
    )
    retry_attempts: Optional[StrictInt] = _number(
        "retries of one request after a recoverable error", low=0, high=10
    )
    submissions_full_refresh_days: Optional[StrictInt] = _number(
        "days after which a course's submissions are fetched in full again instead of incrementally "
        "(0: every sync is full)",
        low=0,
        high=365,
    )


class Profile(_Section):
    """A complete, validated sync profile: every field set and no contradiction.

    Build one with `parse_profile`, `preset` or `load_profile_file`: they complete a partial profile from
    its preset and turn validation errors into a `ProfileError` naming the field.
    """

    name: str = Field(min_length=1)
    entities: EntitiesConfig = Field(default_factory=EntitiesConfig)
    fields: FieldsConfig = Field(default_factory=FieldsConfig)
    processing: ProcessingConfig = Field(default_factory=ProcessingConfig)

    @model_validator(mode="after")
    def _complete_and_consistent(self) -> "Profile":
        for where, _, value in _leaves(Profile, self):
            if value is None:
                raise ProfileError(
                    f"profile field '{where}' is missing "
                    f"(profile '{self.name}' is not a preset, so every field is needed)",
                    field=where,
                )
        for where, info, value in _leaves(FieldsConfig, self.fields, "fields."):
            extra = info.json_schema_extra
            needed = extra.get("needs") if isinstance(extra, dict) else None
            if value and needed and not getattr(self.entities, str(needed)):
                entity, group = where.split(".")[1:]
                raise ProfileError(
                    f"profile field '{where}' is on but 'entities.{needed}' is off: "
                    f"{entity}.{group} needs {needed}; turn one of them around",
                    field=where,
                )
        for name, spec in REGISTERED_ENTITIES.items():
            if name not in SWITCHED_ENTITIES or not getattr(self.entities, name):
                continue
            for needed in spec.needs:
                if not getattr(self.entities, needed):
                    raise ProfileError(
                        f"profile field 'entities.{name}' is on but 'entities.{needed}' is off: {name} "
                        f"need {' and '.join(spec.needs)}; switch {needed} on or {name} off",
                        field=f"entities.{name}",
                    )
        if not any(self.entities.model_dump().values()):
            raise ProfileError("profile switches every entity off: nothing would be synced", field="entities")
        return self

    @property
    def batch_size(self) -> int:
        return int(typing.cast(int, self.processing.batch_size))

    @property
    def request_timeout_seconds(self) -> float:
        return float(typing.cast(float, self.processing.request_timeout_seconds))

    @property
    def retry_attempts(self) -> int:
        return int(typing.cast(int, self.processing.retry_attempts))

    def processing_value(self, name: str) -> Any:
        """A processing field by name (`submissions_full_refresh_days`, ...)."""
        return getattr(self.processing, name)

    def field_on(self, entity: str, group: str) -> bool:
        return bool(getattr(getattr(self.fields, entity), group))

    def wants(self, staging_entity: str) -> bool:
        """Whether this profile fetches (and loads) the given staging entity: its switch, or the field group
        that fetches it (`Entity.fetched_with`)."""
        group = REGISTERED_ENTITIES[staging_entity].fetched_with
        if group is not None:
            return self.field_on(*group)
        return bool(getattr(self.entities, staging_entity))

    @property
    def staging_entities(self) -> list[str]:
        return [e for e in STAGING_ENTITIES if self.wants(e)]

    def transform_options(self) -> Any:
        """The transformers' options: one per field-group switch (`transform.options.PROFILE_SWITCHES`)."""
        from canvas_assets.transform import TransformOptions

        return TransformOptions.from_profile(self)

    def to_config(self) -> dict[str, Any]:
        """The `resources.sync_profile.config` block (complete, so it never depends on a preset)."""
        return {key: plain(getattr(self, key)) for key in type(self).model_fields}

    def to_run_config(self) -> dict[str, Any]:
        return {"resources": {"sync_profile": {"config": self.to_config()}}}


# --- walking the models and naming the field -------------------------------------------------------------
def _section_class(info: FieldInfo) -> Optional[type[BaseModel]]:
    """The model a field holds (`Optional[EntitiesConfig]` → EntitiesConfig), None for a leaf."""
    for candidate in (info.annotation, *typing.get_args(info.annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _leaves(
    cls: type[BaseModel], value: Optional[BaseModel], prefix: str = ""
) -> Iterator[tuple[str, FieldInfo, Any]]:
    """(dotted path, field, value) of every leaf field, descending into sections that are unset too."""
    for key, info in cls.model_fields.items():
        sub = getattr(value, key) if value is not None else None
        section = _section_class(info)
        if section is not None:
            yield from _leaves(section, sub, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", info, sub


def plain(value: Any) -> Any:
    return value.model_dump() if isinstance(value, BaseModel) else value


def _type_name(value: Any) -> str:
    return type(value).__name__ if value is not None else "null"


def _field_at(cls: type[BaseModel], loc: list[str]) -> tuple[Optional[type[BaseModel]], Optional[FieldInfo]]:
    """The model holding the field at a dotted location, and the field (None where unknown)."""
    owner: Optional[type[BaseModel]] = cls
    info: Optional[FieldInfo] = None
    for i, part in enumerate(loc):
        if i:
            owner = _section_class(info) if info is not None else None
        info = owner.model_fields.get(part) if owner is not None else None
    return owner, info


def profile_error(cls: type[BaseModel], exc: ValidationError) -> ProfileError:
    """The first problem of a failed validation as a ProfileError naming the field; unknown keys first."""
    errors = exc.errors()
    err: ErrorDetails = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = [str(part) for part in err["loc"]]
    where, value, kind = ".".join(loc), err.get("input"), err["type"]
    owner, info = _field_at(cls, loc)
    if kind == "extra_forbidden":
        allowed = ", ".join(owner.model_fields) if owner is not None else ""
        message = f"unknown profile field '{where}'; expected one of: {allowed}"
    elif kind == "bool_type":
        message = f"profile field '{where}' must be true or false, got {value!r} ({_type_name(value)})"
    elif kind in ("int_type", "int_from_float"):
        message = f"profile field '{where}' must be a whole number, got {value!r} ({_type_name(value)})"
    elif kind == "float_type":
        message = f"profile field '{where}' must be a number, got {value!r} ({_type_name(value)})"
    elif kind in ("greater_than_equal", "less_than_equal"):
        metadata = info.metadata if info else ()
        bounds = {k: getattr(m, k) for m in metadata for k in ("ge", "le") if hasattr(m, k)}
        low, high = bounds.get("ge", float("-inf")), bounds.get("le", float("inf"))
        message = f"profile field '{where}' must be between {low:g} and {high:g}, got {value!r}"
    elif kind in ("model_type", "dict_type", "model_attributes_type"):
        message = f"profile field '{where}' must be a mapping, got {_type_name(value)}"
    elif loc == ["name"]:
        message = f"profile field 'name' must be a non-empty string, got {value!r}"
    else:
        message = f"profile field '{where}': {err['msg']}"
    return ProfileError(message, field=where)


# --- reading profiles ------------------------------------------------------------------------------------
def canonical_preset_name(name: str) -> Optional[str]:
    """`lightweight`, `Lightweight`, `lightweight.yaml` → `LIGHTWEIGHT`; None when it is no preset."""
    stem = name.strip()
    if stem.lower().endswith((".yaml", ".yml")):
        stem = stem.rsplit(".", 1)[0]
    if stem.upper() in PRESET_FILES:
        return stem.upper()
    return PRESET_ALIASES.get(stem.lower())


# What each run-config section other than the profile is set by instead. A `--config` file carries only
# the profile: `canvas-assets sync` builds the rest of the run itself, so any other section would be
# silently ignored (issue 21), and a base URL or token in a file is a secret in a file.
_SECTION_INSTEAD = {
    "resources.canvas": "the Canvas connection is set by the environment variables CANVAS_BASE_URL and "
    "CANVAS_API_TOKEN",
    "resources.warehouse": "the warehouse is set by the environment variable CANVAS_ASSETS_DATABASE_URL",
    "ops": "op config is not taken from a profile file: choose courses with `canvas-assets sync --course` "
    "and `--max-courses`",
    "execution": "the executor is not taken from a profile file: `canvas-assets sync` runs the steps in "
    "its own process, and the extract's concurrency is processing.batch_size",
    "loggers": "loggers are not taken from a profile file: set them in the Dagster instance (dagster.yaml)",
}
_ONLY_PROFILE = "a --config file carries only resources.sync_profile.config (the sync profile)"


def _refuse_section(section: str) -> ProfileError:
    instead = _SECTION_INSTEAD.get(section) or (
        f"'{section}' is not something canvas-assets reads"
        if section.startswith("resources.")
        else f"'{section}' is not a run-config section canvas-assets reads"
    )
    return ProfileError(
        f"run config section '{section}' would be ignored, so it is refused: {instead}; {_ONLY_PROFILE}. "
        "Remove the section",
        field=section,
    )


def unwrap_run_config(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """Accept a whole run-config document or just the `sync_profile` config block.

    A run-config document may hold nothing but `resources.sync_profile.config`: any other section
    (`resources.canvas`, `ops`, `execution`...) is refused, naming it and what sets it instead, rather
    than ignored.
    """
    if "resources" in data:
        for key in data:
            if key != "resources":
                raise _refuse_section(str(key))
        resources = data.get("resources") or {}
        if isinstance(resources, Mapping):
            for key in resources:
                if key != "sync_profile":
                    raise _refuse_section(f"resources.{key}")
        block = resources.get("sync_profile") if isinstance(resources, Mapping) else None
        if not isinstance(block, Mapping) or not isinstance(block.get("config"), Mapping):
            raise ProfileError(
                "run config has no 'resources.sync_profile.config' block; see canvas_assets/profiles/*.yaml",
                field="resources.sync_profile.config",
            )
        for key in block:
            if key != "config":
                raise _refuse_section(f"resources.sync_profile.{key}")
        return block["config"]
    for key in ("ops", "execution", "loggers"):
        if key in data:
            raise _refuse_section(key)
    return data


def _merge(base: Any, over: Any) -> Any:
    """`over` laid onto `base`, mapping by mapping; an unset (None) value keeps the base's."""
    if over is None:
        return base
    if isinstance(base, Mapping) and isinstance(over, Mapping):
        return {**base, **{key: _merge(base.get(key), value) for key, value in over.items()}}
    return over


def parse_profile(data: Optional[Mapping[str, Any]], *, env: Optional[Mapping[str, str]] = None) -> Profile:
    """Validate a profile mapping and complete it from its preset; raise ProfileError naming the field."""
    env = os.environ if env is None else env
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ProfileError(f"a profile must be a mapping, got {_type_name(data)}", field="")
    raw = unwrap_run_config(data)

    name = raw.get("name")
    from_env = name is None
    if from_env:
        name = env.get(PROFILE_ENV_VAR) or DEFAULT_PROFILE
    if not isinstance(name, str) or not name.strip():
        raise ProfileError(f"profile field 'name' must be a non-empty string, got {name!r}", field="name")
    preset_name = canonical_preset_name(name)
    if preset_name is None and from_env:
        raise ProfileError(
            f"{PROFILE_ENV_VAR}={name!r} is not a preset; use one of {', '.join(PRESET_FILES)}",
            field=PROFILE_ENV_VAR,
        )
    base = _preset(preset_name).to_config() if preset_name else {}
    return _validated({**_merge(base, raw), "name": preset_name or name.strip()})


def _validated(config: Mapping[str, Any]) -> Profile:
    try:
        return Profile.model_validate(config)
    except ValidationError as exc:
        raise profile_error(Profile, exc) from None


def load_preset_config(preset_name: str) -> dict[str, Any]:
    """The config block of a shipped preset: its YAML file (the single source of the fields and processing
    values) with every entity switch it leaves out taken from the entity's declaration (`Entity.presets`)."""
    path = PROFILES_DIR / PRESET_FILES[preset_name]
    with path.open(encoding="utf-8") as fh:
        config = dict(yaml.safe_load(fh)["resources"]["sync_profile"]["config"])
    declared = {name: preset_name in REGISTERED_ENTITIES[name].presets for name in SWITCHED_ENTITIES}
    return {**config, "entities": {**declared, **(config.get("entities") or {})}}


@functools.cache
def _preset(preset_name: str) -> Profile:
    """A shipped preset, read once; it must be complete on its own (it is merged onto nothing)."""
    return _validated(load_preset_config(preset_name))


def environment_profile_name() -> str:
    """The preset for runs that carry no profile: $CANVAS_SYNC_PROFILE, else DEFAULT_PROFILE."""
    return os.environ.get(PROFILE_ENV_VAR) or DEFAULT_PROFILE


def preset(name: str) -> Profile:
    canonical = canonical_preset_name(name)
    if canonical is None:
        raise ProfileError(
            f"unknown profile {name!r}; use one of {', '.join(PRESET_FILES)} (case-insensitive)", field="name"
        )
    return _preset(canonical)


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
