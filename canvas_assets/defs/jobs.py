"""Jobs: one per preset sync profile (with the preset as run config) and course discovery."""

from typing import Any

import dagster as dg

from canvas_assets.defs.assets.account import account_key
from canvas_assets.defs.partitions import COURSES
from canvas_assets.defs.resources import SyncProfileResource
from canvas_assets.profiles import ACCOUNT_ENTITIES, PRESET_FILES, Profile, preset

JOB_FOR_PRESET = {
    "LIGHTWEIGHT": "sync_lightweight",
    "ANALYTICS_FOCUSED": "sync_analytics",
    "FULL_PROCESSING": "sync_full",
}


def profile_asset_keys(profile: Profile) -> list[dg.AssetKey]:
    """The staging and Layer-1 assets that a profile materialises, and the account-level ones it switches on
    (unpartitioned: a run over course partitions materialises them once)."""
    keys = [dg.AssetKey([layer, e]) for e in profile.staging_entities for layer in ("staging", "layer1")]
    return keys + [account_key(e) for e in ACCOUNT_ENTITIES if profile.wants(e)]


def sync_job(preset_name: str) -> Any:
    profile = preset(preset_name)
    return dg.define_asset_job(
        JOB_FOR_PRESET[preset_name],
        selection=dg.AssetSelection.assets(*profile_asset_keys(profile)),  # their checks included
        partitions_def=COURSES,
        config=dg.RunConfig(resources={"sync_profile": SyncProfileResource.from_profile(profile)}),
        description=f"Sync the selected courses with the {preset_name} profile (staging + Layer-1).",
        tags={"canvas/profile": preset_name},
    )


SYNC_JOBS = [sync_job(name) for name in PRESET_FILES]

discover_courses = dg.define_asset_job(
    "discover_courses",
    selection=dg.AssetSelection.assets("canvas_course_catalog"),
    description="List the Canvas courses, record the catalog and register new course partitions.",
)
