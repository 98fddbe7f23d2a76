"""Account-level assets: lists Canvas keeps per account, not per course (the enrollment terms): one
unpartitioned `account/<name>` asset each, fetch, transform and load in one step, no staging
(docs/maintaining.md, "Add an account-level entity").
"""

import os
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Optional

import dagster as dg

from canvas_assets.defs.assets.common import CANVAS_RETRY_POLICY, dagster_failures, database_retries
from canvas_assets.defs.assets.tables import table_metadata
from canvas_assets.defs.resources import CanvasResource, SyncProfileResource, WarehouseResource
from canvas_assets.entities import ENTITIES
from canvas_assets.errors import ConfigurationError
from canvas_assets.profiles import ACCOUNT_ENTITIES
from canvas_assets.transform import TRANSFORMERS

# TermsApiController answers for a root account only (400 "Terms only belong to root_accounts." otherwise);
# `self` is the token's own root account (Api#api_find), which is what an unset account means.
SELF_ACCOUNT = "self"


class AccountConfig(dg.Config):
    """Which account's list to read."""

    # default: CANVAS_ACCOUNT_ID, else `self` (the root account of the token's Canvas)
    account_id: Optional[str] = None


def account_key(name: str) -> dg.AssetKey:
    """Outside `layer1/`: `--select key:"layer1/*" --partition ID` (course partitions) must not pick it up,
    since Dagster refuses a partition for an unpartitioned asset."""
    return dg.AssetKey(["account", name])


def account_of(config: AccountConfig) -> str:
    """The account to ask: the config's, CANVAS_ACCOUNT_ID, or `self`; a numeric id or `self`."""
    account = config.account_id or os.environ.get("CANVAS_ACCOUNT_ID") or SELF_ACCOUNT
    if account != SELF_ACCOUNT and not str(account).isdigit():
        raise ConfigurationError(
            f"the account id must be a numeric Canvas root account id or 'self', got {account!r} (config "
            "account_id or CANVAS_ACCOUNT_ID)",
            stage="extract",
        )
    return account


def build_account_asset(name: str) -> dg.AssetsDefinition:
    spec = ENTITIES[name]
    transformer = TRANSFORMERS[name]

    @dg.asset(
        key=account_key(name),
        name=None,
        group_name="account",
        description=spec.layer1_description,
        kinds={"canvas", "sql"},
        metadata=table_metadata(*transformer.tables),
        pool="canvas_api",
        retry_policy=CANVAS_RETRY_POLICY,
        output_required=False,
    )
    def _asset(
        context: dg.AssetExecutionContext,
        config: AccountConfig,
        canvas: CanvasResource,
        warehouse: WarehouseResource,
        sync_profile: SyncProfileResource,
    ) -> Iterator[dg.MaterializeResult]:
        with dagster_failures("extract"):
            profile = sync_profile.resolve()
            if not profile.wants(name):
                context.log.info(f"profile {profile.name} switches {name} off: account/{name} skipped")
                return
            account = account_of(config)
            wh = warehouse.get_warehouse()
            wh.ensure_schema()
            timeout = min(60.0, profile.request_timeout_seconds)
            with canvas.get_client(read_timeout=timeout, max_retries=profile.retry_attempts) as client:
                records = spec.fetch(client, profile, account, timeout)  # type: ignore[arg-type]
                api_calls = client.metrics.snapshot()["requests"]
            course_key = int(account) if account.isdigit() else 0  # where quarantined records name a course
            result = transformer({course_key: records}, profile.transform_options())
            with database_retries():  # a lost connection: Dagster runs the step again (one transaction)
                done = wh.load_account(result, run_id=context.run_id, synced_at=datetime.now(timezone.utc))
        if not done.complete:
            context.log.warning(
                f"{name}: {len(result.rejected)} record(s) quarantined without a usable id, so the list is not "
                "known to be complete and nothing was soft-deleted (canvas_rejected_records says why)"
            )
        yield dg.MaterializeResult(
            metadata={
                "dagster/row_count": done.rows,
                "account": account,
                "inserted": done.inserted,
                "updated": done.updated,
                "soft_deleted": done.soft_deleted,
                "rejected": len(result.rejected),
                "api_calls": api_calls,
            }
        )

    return _asset


ACCOUNT_ASSETS = [build_account_asset(name) for name in ACCOUNT_ENTITIES]
