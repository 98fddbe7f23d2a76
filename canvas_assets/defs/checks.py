"""Asset checks on the Layer-1 tables.

In a ranged (backfill) run a check executes once, without a partition, so every check here works on
the run's list of courses (`run_course_ids`) and reports one combined result with per-course detail.
"""

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import dagster as dg
import sqlalchemy as sa

from canvas_assets.defs.assets.common import extract_log, extract_outcomes, retry_on_lost_database
from canvas_assets.defs.partitions import course_keys_of_run
from canvas_assets.defs.resources import WarehouseResource
from canvas_assets.entities import ID_CHECKED_ENTITIES
from canvas_assets.extract.outcomes import repeated_ids
from canvas_assets.profiles import STAGING_ENTITIES

MAX_LISTED = 20


def run_course_ids(context: Any) -> list[int]:
    """The course ids the check's run covers (a check in a ranged run has no partition of its own)."""
    return [int(k) for k in course_keys_of_run(context.instance, context.run.tags)]


def _query(warehouse: WarehouseResource, sql: str, ids: Sequence[int], **params: Any) -> list[Any]:
    wh = warehouse.get_warehouse()
    stmt = sa.text(sql).bindparams(sa.bindparam("ids", value=list(ids), expanding=True))
    with wh.engine.connect() as conn:
        return list(conn.execute(stmt, params))


def _result(
    bad: list[Any], *, describe: Callable[[Any], str], checked: int, severity=dg.AssetCheckSeverity.ERROR
):
    return dg.AssetCheckResult(
        passed=not bad,
        severity=severity,
        metadata={
            "courses_checked": checked,
            "violations": len(bad),
            "examples": dg.MetadataValue.json([describe(r) for r in bad[:MAX_LISTED]]),
        },
    )


def _sql_check(
    asset: str,
    name: str,
    description: str,
    sql: str,
    describe: Callable[[Any], str],
    additional_deps: Sequence[str] = (),
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR,
    params: Mapping[str, Any] | None = None,
) -> dg.AssetChecksDefinition:
    """A check failing on every row `sql` finds among the run's courses (`:ids`, and `:run_id` and `params`
    if used)."""

    @dg.asset_check(
        asset=dg.AssetKey(["layer1", asset]),
        name=name,
        description=description,
        additional_deps=[dg.AssetKey(["layer1", d]) for d in additional_deps],
    )
    @retry_on_lost_database
    def check(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
        ids = run_course_ids(context)
        bad = _query(warehouse, sql, ids, run_id=context.run.run_id, **(params or {}))
        return _result(bad, describe=describe, checked=len(ids), severity=severity)

    return check


student_enrollments_have_students = _sql_check(
    "enrollments",
    "student_enrollments_have_students",
    "Every live student enrollment points at a user present in canvas_students.",
    """SELECT e.course_id, e.id, e.user_id FROM canvas_enrollments e
       LEFT JOIN canvas_students s ON s.id = e.user_id
       WHERE e.course_id IN :ids AND e.type = 'StudentEnrollment' AND e.deleted_at IS NULL
         AND e.enrollment_state <> 'creation_pending' AND s.id IS NULL ORDER BY e.course_id, e.id""",
    lambda r: f"course {r[0]} enrollment {r[1]}: user {r[2]} missing",
)
students_match_total_students = _sql_check(
    "students",
    "students_match_total_students",
    "Students synced per course (active or invited) equal the course's total_students from Canvas.",
    """SELECT c.id, c.total_students, COUNT(DISTINCT s.id) AS synced FROM canvas_courses c
       LEFT JOIN canvas_enrollments e ON e.course_id = c.id AND e.type = 'StudentEnrollment'
            AND e.enrollment_state IN ('active', 'invited') AND e.deleted_at IS NULL
       LEFT JOIN canvas_students s ON s.id = e.user_id
       WHERE c.id IN :ids AND c.total_students IS NOT NULL AND c.deleted_at IS NULL
       GROUP BY c.id, c.total_students HAVING COUNT(DISTINCT s.id) <> c.total_students
       ORDER BY c.id""",
    lambda r: f"course {r[0]}: Canvas says {r[1]} students, {r[2]} synced",
    additional_deps=("enrollments", "courses"),
)
scores_non_negative = _sql_check(
    "enrollments",
    "scores_non_negative",
    "No current or final score below zero.",
    """SELECT course_id, id, current_score, final_score FROM canvas_enrollments
       WHERE course_id IN :ids AND (current_score < 0 OR final_score < 0) ORDER BY course_id, id""",
    lambda r: f"course {r[0]} enrollment {r[1]}: {r[2]}/{r[3]}",
)


def _duplicate_check(entity: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=dg.AssetKey(["layer1", entity]),
        name=f"no_duplicate_{entity}_ids",
        description=f"Canvas returned each {entity} id once per course (pages that shift while being read "
        "repeat records).",
    )
    @retry_on_lost_database
    def check(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
        ids = run_course_ids(context)
        wh = warehouse.get_warehouse()
        noted = extract_log(wh, context.run.run_id, entity, "repeated_ids")
        if noted:
            # The extract ran in this run: it noted the repeats while it had the records in hand. A course
            # it could not fetch keeps its previous staging, which an earlier run's check covered.
            bad = [
                (c, rid)
                for c, (repeated,) in sorted(noted.items())
                if repeated
                for rid in json.loads(repeated)
            ]
        else:  # no extract in this run (Layer-1 only): read what is staged
            bad = [
                (course_id, rid)
                for course_id, records in sorted(wh.read_staging(entity, ids).items())
                for rid in repeated_ids(records)
            ]
        return _result(
            bad,
            describe=lambda r: f"course {r[0]}: id {r[1]} repeated",
            checked=len(ids),
            severity=dg.AssetCheckSeverity.WARN,
        )

    return check


def _rejected_check(entity: str) -> dg.AssetChecksDefinition:
    return _sql_check(
        entity,
        f"no_rejected_{entity}",
        f"No {entity} record of this run was quarantined in canvas_rejected_records.",
        """SELECT course_id, canvas_id, reason FROM canvas_rejected_records
           WHERE run_id = :run_id AND entity = :entity AND (course_id IN :ids OR course_id IS NULL)
           ORDER BY id""",
        lambda r: f"course {r[0]} id {r[1]}: {r[2]}",
        severity=dg.AssetCheckSeverity.WARN,
        params={"entity": entity},
    )


def _fetched_check(entity: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=dg.AssetKey(["layer1", entity]),
        name=f"all_courses_fetched_{entity}",
        description=f"Every course of the run had its {entity} fetched from Canvas (a course that failed keeps "
        "its previous rows; canvas_sync_log says why).",
    )
    @retry_on_lost_database
    def check(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
        outcomes = extract_outcomes(warehouse.get_warehouse(), context.run.run_id, entity)
        bad = sorted((c, error) for c, (status, error) in outcomes.items() if status == "failed")
        return _result(bad, describe=lambda r: f"course {r[0]}: {r[1]}", checked=len(outcomes))

    return check


ASSET_CHECKS = [
    *[_fetched_check(e) for e in STAGING_ENTITIES],
    student_enrollments_have_students,
    students_match_total_students,
    scores_non_negative,
    *[_duplicate_check(e) for e in ID_CHECKED_ENTITIES],
    *[_rejected_check(e) for e in STAGING_ENTITIES],
]
