"""`canvas_course_catalog`: which courses exist, and one Dagster partition per course."""

import os
from datetime import datetime, timezone
from typing import Any, Optional

import dagster as dg

from canvas_assets.canvas.api import DISCOVERY_BUDGET_S
from canvas_assets.defs.assets.common import CANVAS_RETRY_POLICY, dagster_failures
from canvas_assets.defs.partitions import COURSE_PARTITIONS_NAME
from canvas_assets.defs.resources import CanvasResource, WarehouseResource
from canvas_assets.errors import CanvasAPIError, ConfigurationError
from canvas_assets.transform.convert import to_id
from canvas_assets.transform.quarantine import short_repr

COURSE_STATES = ("created", "claimed", "available", "completed", "deleted", "all")
DEFAULT_STATES = ("available", "completed")


class CatalogConfig(dg.Config):
    """Which courses to discover. The defaults mirror what a school usually wants: live and past courses."""

    states: list[str] = list(DEFAULT_STATES)
    enrollment_term_id: Optional[int] = None
    max_courses: Optional[int] = None
    account_id: Optional[str] = None  # default: CANVAS_ACCOUNT_ID, else the token's own courses
    # Discovery's time budget: every page and retry of the listing (a listing that never ends fails here).
    timeout_seconds: float = DISCOVERY_BUDGET_S


def catalog_account_id(config: CatalogConfig) -> Optional[str]:
    account = config.account_id or os.environ.get("CANVAS_ACCOUNT_ID") or None
    if account is not None and not str(account).isdigit():
        raise ConfigurationError(
            f"CANVAS_ACCOUNT_ID must be a numeric Canvas account id, got {account!r}", stage="catalog"
        )
    return account


def require_course_ids(courses: list[dict[str, Any]]) -> None:
    """Refuse a listing with a course that has no usable id, before anything is written: a full listing of
    objects without ids (a broken proxy, a changed API) would mark every known course gone (issue 21). A
    list item that is not an object never gets here: the client refuses the page."""
    unusable = [c for c in courses if not isinstance(c, dict) or not isinstance(to_id(c.get("id")), int)]
    if unusable:
        raise CanvasAPIError(
            f"Canvas's course listing holds {len(unusable)} course(s) of {len(courses)} without a usable id "
            f"(first: {short_repr(unusable[0])}): the listing is malformed, so it is not taken. No course was "
            "added or marked gone; discover again once Canvas lists courses with their ids",
            stage="catalog",
            recoverable=False,
        )


@dg.asset(
    key="canvas_course_catalog",
    group_name="catalog",
    pool="canvas_api",
    retry_policy=CANVAS_RETRY_POLICY,
    kinds={"canvas", "sql"},
)
def canvas_course_catalog(
    context: dg.AssetExecutionContext,
    config: CatalogConfig,
    canvas: CanvasResource,
    warehouse: WarehouseResource,
) -> dg.MaterializeResult:
    """The courses of the Canvas account (or of the token), recorded in `canvas_course_catalog`.

    Every course found becomes a partition of `canvas_course`, so the staging and Layer-1 assets can be
    materialised per course and backfilled over any range of courses. Courses that no longer appear are
    marked gone in the catalog (their partitions stay, with their history).
    """
    with dagster_failures("catalog"):
        for state in config.states:
            if state not in COURSE_STATES:
                raise ConfigurationError(
                    f"course state {state!r} is not one Canvas knows; use {', '.join(COURSE_STATES)}",
                    stage="catalog",
                )
        if config.max_courses is not None and config.max_courses < 1:
            raise ConfigurationError("max_courses must be at least 1", stage="catalog")
        if not 1 <= config.timeout_seconds <= 24 * 3600:
            raise ConfigurationError(
                f"timeout_seconds must be between 1 and 86400 (seconds), got {config.timeout_seconds:g}",
                stage="catalog",
            )
        account_id = catalog_account_id(config)
        wh = warehouse.get_warehouse()
        wh.ensure_schema()
        client = canvas.get_client()
        try:
            courses = client.list_courses(
                account_id=account_id,
                states=tuple(config.states),
                enrollment_term_id=config.enrollment_term_id,
                budget_seconds=config.timeout_seconds,
            )
            api_calls = client.metrics.snapshot()["requests"]
        finally:
            client.close()
        require_course_ids(courses)
        if config.enrollment_term_id is not None:
            # /courses (the token's own) has no term filter: apply it here so both listings agree.
            courses = [c for c in courses if c.get("enrollment_term_id") == config.enrollment_term_id]
        courses = sorted(courses, key=lambda c: int(to_id(c["id"])))
        if config.max_courses is not None:
            courses = courses[: config.max_courses]
        # Only an unfiltered listing says that a course which is not in it is gone.
        full_listing = (
            config.max_courses is None
            and config.enrollment_term_id is None
            and ({"all"} <= set(config.states) or set(DEFAULT_STATES) <= set(config.states))
        )
        diff = wh.upsert_catalog(courses, seen_at=datetime.now(timezone.utc), full_listing=full_listing)
        if full_listing and not courses and diff.vanished:
            # Trusted: Canvas may have no course left for this token or account, and marking courses gone
            # deletes no Layer-1 row (the next listing that has them again brings them back). But it is far
            # more often a wrong CANVAS_ACCOUNT_ID or a token that lost its enrollments: say so.
            context.log.warning(
                f"catalog: Canvas listed no course at all; the {len(diff.vanished)} course(s) the catalog knew "
                "are marked gone and will not be synced (their Layer-1 rows are kept). If that is wrong, check "
                "CANVAS_ACCOUNT_ID and the token's access, then discover again"
            )
    existing = set(context.instance.get_dynamic_partitions(COURSE_PARTITIONS_NAME))
    new_keys = [str(to_id(c["id"])) for c in courses if str(to_id(c["id"])) not in existing]
    if new_keys:
        context.instance.add_dynamic_partitions(COURSE_PARTITIONS_NAME, new_keys)
    context.log.info(
        f"catalog: {len(courses)} courses ({len(new_keys)} new partitions, {len(diff.vanished)} vanished) "
        f"from {'account ' + account_id if account_id else 'the token'}"
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(courses),
            "total_courses": len(courses),
            "new_partitions": len(new_keys),
            "new_courses": dg.MetadataValue.json(sorted(diff.new)),
            "vanished_courses": dg.MetadataValue.json(sorted(diff.vanished)),
            "returned_courses": dg.MetadataValue.json(sorted(diff.returned)),
            "source": f"account {account_id}" if account_id else "token's own courses",
            "states": ", ".join(config.states),
            "api_calls": api_calls,
        }
    )
