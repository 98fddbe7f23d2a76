"""The one Definitions object: assets, checks, jobs, automation and resources.

Importing this module touches no network and no disk: resources read their environment variables and
open connections only when a run uses them.
"""

import warnings

import dagster as dg

from canvas_assets.defs.assets.account import ACCOUNT_ASSETS
from canvas_assets.defs.assets.catalog import canvas_course_catalog
from canvas_assets.defs.assets.common import SYNC_REPORT
from canvas_assets.defs.assets.extract import canvas_extract
from canvas_assets.defs.assets.layer1 import LAYER1_ASSETS
from canvas_assets.defs.assets.tables import FRESHNESS
from canvas_assets.defs.automation import SCHEDULES, SENSORS
from canvas_assets.defs.checks import ASSET_CHECKS
from canvas_assets.defs.handover import Layer1HandOver
from canvas_assets.defs.jobs import SYNC_JOBS, discover_courses
from canvas_assets.defs.live import LIVE_ASSETS, LIVE_CHECKS
from canvas_assets.defs.resources import CanvasResource, SyncProfileResource, WarehouseResource

# Layer-1 tables carry a freshness policy (a missed nightly sync shows as stale in the UI); every asset
# links to the code that builds it.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.BetaWarning)  # code references are beta in 1.13: no noise on import
    ASSETS = dg.with_source_code_references(
        [
            canvas_course_catalog,
            canvas_extract,
            *ACCOUNT_ASSETS,
            *dg.map_asset_specs(
                lambda spec: spec.replace_attributes(freshness_policy=FRESHNESS), LAYER1_ASSETS
            ),
        ]
    )

defs = dg.Definitions(
    # The sync report is observed by the sync steps (their run-wide figures), never materialized.
    # The live feed is an external asset: `canvas-assets live` reports it (canvas_assets/defs/live.py).
    assets=[*ASSETS, SYNC_REPORT, *LIVE_ASSETS],
    asset_checks=[*ASSET_CHECKS, *LIVE_CHECKS],
    jobs=[*SYNC_JOBS, discover_courses],
    schedules=SCHEDULES,
    # One process per run, steps one after another (docs/architecture.md, "Ranged runs", says why).
    executor=dg.in_process_executor,
    sensors=SENSORS,
    resources={
        "canvas": CanvasResource(
            base_url=dg.EnvVar("CANVAS_BASE_URL"), api_token=dg.EnvVar("CANVAS_API_TOKEN")
        ),
        # No name: the preset comes from CANVAS_SYNC_PROFILE (LIGHTWEIGHT when unset) for runs without run config.
        "sync_profile": SyncProfileResource(),
        "warehouse": WarehouseResource(),
        # The transformer ops' chunk files and manifests, handed to the load ops (defs/handover.py).
        "layer1_handover": Layer1HandOver(),
    },
)
