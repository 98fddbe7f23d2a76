"""Sync profiles: presets, partial profiles, and validation that names the field."""

import dagster as dg
import pytest
import yaml

from canvas_assets.defs.resources import SyncProfileResource
from canvas_assets.entities import ENTITIES
from canvas_assets.errors import ProfileError
from canvas_assets.profiles import (
    PRESET_FILES,
    PROFILES_DIR,
    SWITCHED_ENTITIES,
    Profile,
    load_profile_file,
    parse_profile,
    preset,
)


def test_the_three_presets_have_the_original_designs_values():
    light, analytics, full = preset("LIGHTWEIGHT"), preset("ANALYTICS_FOCUSED"), preset("FULL_PROCESSING")
    assert light.staging_entities == ["courses", "students", "enrollments"]
    assert (light.batch_size, light.request_timeout_seconds, light.retry_attempts) == (3, 120.0, 3)
    assert analytics.staging_entities == [
        "courses",
        "students",
        "enrollments",
        "assignments",
        "submissions",
        # issue 24: the structure behind a grade (docs/tables.md, "Which presets carry them")
        "sections",
        "assignment_groups",
        "grading_periods",
        "period_scores",
        "student_summaries",
    ]
    assert all(all(groups.values()) for groups in analytics.to_config()["fields"].values())
    assert (analytics.batch_size, analytics.request_timeout_seconds, analytics.retry_attempts) == (
        2,
        180.0,
        2,
    )
    # every course entity, modules and student summaries included; terms are account-level (no staging)
    assert full.staging_entities == [n for n, e in ENTITIES.items() if not e.account_level]
    assert all(p.wants("terms") for p in (light, analytics, full))
    assert (full.batch_size, full.request_timeout_seconds, full.retry_attempts) == (1, 300.0, 2)
    # Submissions: off in LIGHTWEIGHT; incremental with a weekly full refresh in ANALYTICS_FOCUSED; every
    # FULL_PROCESSING sync (the weekly schedule) fetches them in full.
    assert "submissions" not in light.staging_entities and "submissions" in full.staging_entities
    assert analytics.processing.submissions_full_refresh_days == 7
    assert full.processing.submissions_full_refresh_days == 0


@pytest.mark.parametrize("off", ["assignments", "enrollments"])
def test_submissions_need_assignments_and_enrollments(off):
    # (the enrollment field groups go off with enrollments, so that only submissions contradict)
    groups = {"students": {"scores": False, "enrollment_details": False}}
    with pytest.raises(ProfileError) as info:
        parse_profile({"name": "ANALYTICS_FOCUSED", "entities": {off: False}, "fields": groups})
    assert info.value.field == "entities.submissions"
    assert f"'entities.{off}' is off" in info.value.message
    assert "submissions need assignments and enrollments" in info.value.message
    # Switching submissions off with it is a valid profile.
    assert parse_profile(
        {"name": "ANALYTICS_FOCUSED", "entities": {off: False, "submissions": False}, "fields": groups}
    )


def test_the_full_refresh_interval_is_validated_like_the_other_numbers():
    with pytest.raises(
        ProfileError, match=r"'processing\.submissions_full_refresh_days' must be between 0 and 365"
    ):
        parse_profile({"name": "ANALYTICS_FOCUSED", "processing": {"submissions_full_refresh_days": 400}})
    with pytest.raises(ProfileError, match="must be a whole number"):
        parse_profile({"name": "ANALYTICS_FOCUSED", "processing": {"submissions_full_refresh_days": 1.5}})


@pytest.mark.parametrize("alias", ["lightweight", "Lightweight", "lightweight.yaml", "LIGHTWEIGHT"])
def test_a_preset_is_found_by_any_spelling_of_its_name(alias):
    assert preset(alias).name == "LIGHTWEIGHT"


def test_every_preset_file_is_a_valid_run_config_of_its_preset():
    for name, filename in PRESET_FILES.items():
        data = yaml.safe_load((PROFILES_DIR / filename).read_text())
        block = data["resources"]["sync_profile"]["config"]
        # the entity switches come from the entities' declarations (Entity.presets)
        assert set(block) <= {"name", "entities", "fields", "processing"}
        assert load_profile_file(PROFILES_DIR / filename) == preset(name)


def test_a_preset_takes_each_entity_switch_it_leaves_out_from_the_entitys_declaration():
    for name in PRESET_FILES:
        switches = preset(name).to_config()["entities"]
        assert switches == {e: name in ENTITIES[e].presets for e in SWITCHED_ENTITIES}
        # and the completed preset is complete on its own: a non-preset name with its values is valid
        assert (
            Profile.model_validate({**preset(name).to_config(), "name": "copy"}).entities
            == preset(name).entities
        )


def test_a_preset_file_that_sets_an_entity_switch_wins_over_the_declaration(tmp_path, monkeypatch):
    import canvas_assets.profiles as profiles

    data = yaml.safe_load((PROFILES_DIR / "lightweight.yaml").read_text())
    data["resources"]["sync_profile"]["config"]["entities"] = {"assignments": True}
    (tmp_path / "lightweight.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.setattr(profiles, "PROFILES_DIR", tmp_path)
    config = profiles.load_preset_config("LIGHTWEIGHT")
    assert config["entities"]["assignments"] is True
    assert config["entities"]["modules"] is False  # the declaration's default for what the file leaves out


def test_a_partial_profile_is_completed_from_its_preset():
    p = parse_profile({"name": "LIGHTWEIGHT", "entities": {"assignments": True}})
    assert p.entities.assignments is True
    assert p.batch_size == 3


def test_a_profile_round_trips_through_run_config():
    full = preset("FULL_PROCESSING")
    assert parse_profile(full.to_run_config()) == full


def test_no_name_takes_the_preset_from_the_environment():
    assert parse_profile({}, env={"CANVAS_SYNC_PROFILE": "analytics_focused"}).name == "ANALYTICS_FOCUSED"
    assert parse_profile({}, env={}).name == "LIGHTWEIGHT"


@pytest.mark.parametrize(
    ("profile", "field", "words"),
    [
        ({"name": "LIGHTWEIGHT", "entities": {"modulez": True}}, "entities.modulez", "unknown profile field"),
        ({"name": "LIGHTWEIGHT", "procesing": {}}, "procesing", "unknown profile field"),
        (
            {"name": "LIGHTWEIGHT", "fields": {"students": {"grades": True}}},
            "fields.students.grades",
            "unknown",
        ),
        ({"name": "LIGHTWEIGHT", "entities": {"courses": "yes"}}, "entities.courses", "true or false"),
        ({"name": "LIGHTWEIGHT", "processing": {"batch_size": 2.5}}, "processing.batch_size", "whole number"),
        (
            {"name": "LIGHTWEIGHT", "processing": {"retry_attempts": 99}},
            "processing.retry_attempts",
            "between",
        ),
        (
            {"name": "LIGHTWEIGHT", "entities": {"enrollments": False}},
            "fields.students.scores",
            "needs enrollments",
        ),
        (
            {"name": "ANALYTICS_FOCUSED", "entities": {"students": False}},
            "fields.students.basic_info",
            "needs students",
        ),
        ({"name": "MY_PROFILE"}, "entities.courses", "missing"),
        ({"name": ""}, "name", "non-empty"),
        ({"name": "LIGHTWEIGHT", "processing": 3}, "processing", "mapping"),
    ],
)
def test_an_invalid_profile_is_refused_naming_the_field(profile, field, words):
    with pytest.raises(ProfileError) as err:
        parse_profile(profile)
    assert err.value.field == field
    assert words in str(err.value)
    assert err.value.recoverable is False


def test_a_bad_environment_profile_name_says_which_variable_is_wrong():
    with pytest.raises(ProfileError, match="CANVAS_SYNC_PROFILE='NIGHTLY' is not a preset"):
        parse_profile({}, env={"CANVAS_SYNC_PROFILE": "NIGHTLY"})


def test_a_profile_file_that_is_not_yaml_or_not_there_gets_a_clear_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("resources: [unclosed")
    with pytest.raises(ProfileError, match="not valid YAML"):
        load_profile_file(bad)
    with pytest.raises(ProfileError, match="cannot read profile file"):
        load_profile_file(tmp_path / "missing.yaml")
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("resources: {canvas: {config: {}}}")
    with pytest.raises(ProfileError, match=r"resources\.sync_profile\.config"):
        load_profile_file(wrong)


PROFILE_BLOCK = {"sync_profile": {"config": {"name": "LIGHTWEIGHT"}}}


@pytest.mark.parametrize(
    ("document", "section", "advice"),
    [
        (
            {"resources": {**PROFILE_BLOCK, "canvas": {"config": {"base_url": "https://other.example.com"}}}},
            "resources.canvas",
            "CANVAS_BASE_URL and CANVAS_API_TOKEN",
        ),
        (
            {"resources": {**PROFILE_BLOCK, "warehouse": {"config": {}}}},
            "resources.warehouse",
            "CANVAS_ASSETS_DATABASE_URL",
        ),
        (
            {"resources": PROFILE_BLOCK, "ops": {"canvas_course_catalog": {"config": {}}}},
            "ops",
            "--course",
        ),
        ({"resources": PROFILE_BLOCK, "execution": {"config": {"multiprocess": {}}}}, "execution", "batch_size"),
        ({"resources": PROFILE_BLOCK, "loggers": {"console": {}}}, "loggers", "dagster.yaml"),
        ({"resources": {**PROFILE_BLOCK, "mystery": {}}}, "resources.mystery", "not something"),
        ({"resources": {"sync_profile": {"config": {}, "io_manager_key": "x"}}}, "resources.sync_profile.io_manager_key", "Remove"),
        ({"name": "LIGHTWEIGHT", "ops": {}}, "ops", "--course"),
    ],
)  # fmt: skip
def test_a_run_config_section_other_than_the_profile_is_refused_by_name(tmp_path, document, section, advice):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(ProfileError) as info:
        load_profile_file(path)
    assert info.value.field == section
    assert f"'{section}'" in info.value.message and "would be ignored" in info.value.message
    assert advice in info.value.message
    assert "resources.sync_profile.config" in info.value.message


def test_a_run_config_with_only_the_profile_is_still_accepted(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"resources": PROFILE_BLOCK}))
    assert load_profile_file(path) == preset("LIGHTWEIGHT")


def test_the_resource_resolves_to_the_same_profile_as_the_run_config():
    for name in PRESET_FILES:
        assert SyncProfileResource.from_profile(preset(name)).resolve() == preset(name)
    partial = SyncProfileResource(name="full")
    assert partial.resolve() == preset("FULL_PROCESSING")


def test_the_presets_are_profile_instances_equal_to_their_files():
    for name, filename in PRESET_FILES.items():
        p = preset(name)
        assert isinstance(p, Profile)
        data = yaml.safe_load((PROFILES_DIR / filename).read_text())
        block = data["resources"]["sync_profile"]["config"]
        completed = {**block, "entities": {**p.to_config()["entities"], **block.get("entities", {})}}
        assert p.to_run_config() == {"resources": {"sync_profile": {"config": completed}}}


@pytest.mark.parametrize(
    ("config", "field", "words"),
    [
        ({"processing": {"batch_size": 0}}, "processing.batch_size", "between 1 and 1000"),
        ({"processing": {"request_timeout_seconds": 4000}}, "processing.request_timeout_seconds", "between"),
        ({"entities": {"courses": "yes"}}, "entities.courses", "true or false"),
        ({"fields": {"students": {"grades": True}}}, "fields.students.grades", "unknown profile field"),
    ],
)
def test_the_resource_validates_itself_naming_the_field(config, field, words):
    with pytest.raises(ProfileError) as err:
        SyncProfileResource(**config)
    assert err.value.field == field
    assert words in str(err.value)


@pytest.fixture
def sync_job(monkeypatch):
    """The real sync_lightweight job (its Canvas resource reads these variables while validating)."""
    from canvas_assets.definitions import defs

    monkeypatch.setenv("CANVAS_BASE_URL", "http://canvas.invalid")
    monkeypatch.setenv("CANVAS_API_TOKEN", "not-a-token")

    return defs.resolve_job_def("sync_lightweight")


def test_dagster_accepts_a_partial_profile_and_the_resource_completes_it_from_the_preset(sync_job):
    partial = {"name": "LIGHTWEIGHT", "entities": {"assignments": True}, "processing": {"batch_size": 7}}
    resolved = dg.validate_run_config(sync_job, {"resources": {"sync_profile": {"config": partial}}})
    config = resolved["resources"]["sync_profile"]["config"]
    profile = SyncProfileResource(**{k: v for k, v in config.items() if v is not None}).resolve()
    assert profile == parse_profile(partial)
    assert profile.entities.assignments is True and profile.entities.modules is False
    assert (profile.batch_size, profile.retry_attempts) == (7, 3)
    # nothing at all is a valid run config too: the preset then comes from the environment
    dg.validate_run_config(sync_job, {"resources": {"sync_profile": {"config": {}}}})


def test_dagster_refuses_an_unknown_key_naming_it(sync_job):
    bad = {
        "resources": {
            "sync_profile": {"config": {"name": "LIGHTWEIGHT", "fields": {"students": {"grades": True}}}}
        }
    }
    with pytest.raises(
        dg.DagsterInvalidConfigError, match=r'"grades" at path .*sync_profile:config:fields:students'
    ):
        dg.validate_run_config(sync_job, bad)


def test_the_launchpad_schema_is_typed_and_every_field_optional():
    shape = SyncProfileResource.to_config_schema().as_field().config_type
    assert set(shape.fields) == {"name", "entities", "fields", "processing"}
    assert all(not f.is_required for f in shape.fields.values())
    processing = shape.fields["processing"].config_type.inner_type
    assert "1-1000" in (processing.fields["batch_size"].description or "")
    entities = shape.fields["entities"].config_type.inner_type
    assert list(entities.fields) == list(SWITCHED_ENTITIES)  # built from the entities' declarations
    assert all(f.config_type.inner_type.key == "BoolSourceType" for f in entities.fields.values())
    assert entities.fields["submissions"].description == (
        "GET /courses/:id/students/submissions → canvas_submissions (needs assignments and enrollments)"
    )
    kinds = {key: f.config_type.inner_type.key for key, f in processing.fields.items()}
    assert kinds == {
        "batch_size": "IntSourceType",
        "request_timeout_seconds": "Float",
        "retry_attempts": "IntSourceType",
        "submissions_full_refresh_days": "IntSourceType",
    }
