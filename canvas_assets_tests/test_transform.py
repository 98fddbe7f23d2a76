"""Transformers: raw Canvas records (as staged) -> typed frames, with quarantine of malformed records."""

import json
from datetime import datetime, timezone

import pandas as pd
import pytest

from canvas_assets.entities import ENTITIES
from canvas_assets.errors import TransformationError
from canvas_assets.transform import TRANSFORMERS, TransformOptions

STAGED_AT = datetime(2025, 3, 1, tzinfo=timezone.utc)

BIG_ID = 2**31 + 12345  # hosted Canvas ids pass 2^31
COURSE = 101


def course_record(**overrides):
    record = {
        "id": COURSE,
        "name": "Biology 101",
        "course_code": "BIO101",
        "workflow_state": "available",
        "account_id": 1,
        "root_account_id": 1,
        "enrollment_term_id": 5,
        "uuid": "abc",
        "created_at": "2025-01-06T08:00:00Z",
        "start_at": "2025-01-06T08:00:00+02:00",
        "end_at": None,
        "time_zone": "Europe/Berlin",
        "default_view": "modules",
        "is_public": False,
        "public_description": "<p>Cells</p>",
        "syllabus_body": "<h1>Syllabus</h1>",
        "total_students": 30,
        "term": {"id": 5, "name": "Spring 2025", "start_at": "2025-01-01T00:00:00Z", "end_at": None},
        "settings": {"hide_final_grades": False, "allow_student_forum_attachments": True},
    }
    record.update(overrides)
    return record


def enrollment_record(id=1, user_id=11, **overrides):
    record = {
        "id": id,
        "user_id": user_id,
        "course_id": COURSE,
        "course_section_id": 7,
        "type": "StudentEnrollment",
        "role": "StudentEnrollment",
        "enrollment_state": "active",
        "created_at": "2025-01-06T08:00:00Z",
        "last_activity_at": "2025-02-01T10:00:00Z",
        "total_activity_time": 3600,
        "grades": {"current_score": 85.5, "final_score": 70.0, "current_grade": "B", "final_grade": "C"},
    }
    record.update(overrides)
    return record


def transform(entity, records_by_course, **options):
    return TRANSFORMERS[entity](records_by_course, TransformOptions(**options))


def test_the_registry_has_one_transformer_per_staging_entity():
    assert list(TRANSFORMERS) == list(ENTITIES)  # derived from the declarations, in their order
    assert {"courses", "students", "enrollments", "assignments", "submissions"} <= set(TRANSFORMERS)
    assert TRANSFORMERS["modules"].tables == ("canvas_modules", "canvas_module_items")


def test_timestamps_with_offsets_become_utc_instants():
    result = transform("courses", {COURSE: [course_record(start_at="2025-01-06T08:00:00+02:00")]})
    frame = result.tables["canvas_courses"]
    assert frame.loc[0, "start_at"] == pd.Timestamp("2025-01-06T06:00:00Z")
    assert frame.loc[0, "created_at"] == pd.Timestamp("2025-01-06T08:00:00Z")
    assert str(frame["start_at"].dtype.tz) == "UTC"


def test_ids_above_2_31_and_digit_strings_become_64_bit_integers():
    records = [enrollment_record(id=BIG_ID, user_id=str(BIG_ID + 1))]
    frame = transform("enrollments", {COURSE: records}).tables["canvas_enrollments"]
    assert frame.loc[0, "id"] == BIG_ID
    assert frame.loc[0, "user_id"] == BIG_ID + 1
    assert frame["id"].dtype == "int64"


def test_absent_and_null_fields_both_become_null():
    absent = enrollment_record(id=1)
    del absent["last_activity_at"]
    null = enrollment_record(id=2, last_activity_at=None)
    frame = transform("enrollments", {COURSE: [absent, null]}).tables["canvas_enrollments"]
    assert frame["last_activity_at"].isna().all()


def test_enrollment_grades_are_flattened_into_score_columns():
    frame = transform("enrollments", {COURSE: [enrollment_record()]}).tables["canvas_enrollments"]
    row = frame.iloc[0]
    assert (row["current_score"], row["final_score"]) == (85.5, 70.0)
    assert (row["current_grade"], row["final_grade"]) == ("B", "C")
    assert pd.isna(row["unposted_current_score"])


def test_an_enrollment_without_grades_has_null_scores():
    teacher = enrollment_record(type="TeacherEnrollment")
    del teacher["grades"]
    frame = transform("enrollments", {COURSE: [teacher]}).tables["canvas_enrollments"]
    assert frame[["current_score", "final_score", "current_grade"]].isna().all(axis=None)


def test_a_record_with_a_bad_date_is_rejected_with_the_field_and_value_and_the_rest_loads():
    records = [enrollment_record(id=1), enrollment_record(id=2, created_at="2025-02-30T00:00:00Z")]
    result = transform("enrollments", {COURSE: records})
    assert result.tables["canvas_enrollments"]["id"].tolist() == [1]
    [rejected] = result.rejected
    assert (rejected.entity, rejected.course_id, rejected.canvas_id) == ("enrollments", COURSE, 2)
    assert "created_at" in rejected.reason and "2025-02-30" in rejected.reason
    assert rejected.payload["id"] == 2


def test_a_record_without_an_id_is_rejected():
    record = enrollment_record()
    del record["id"]
    result = transform("enrollments", {COURSE: [record]})
    assert result.tables["canvas_enrollments"].empty
    assert result.rejected[0].canvas_id is None
    assert result.rejected[0].reason == "id: missing (required)"


def test_an_invalid_id_is_rejected_with_its_value():
    result = transform("students", {COURSE: [{"id": "12a", "name": "X"}]})
    assert result.rejected[0].reason == "id: not a valid Canvas id: '12a'"


def test_a_non_numeric_score_is_rejected():
    record = enrollment_record(grades={"current_score": "eighty"})
    result = transform("enrollments", {COURSE: [record]})
    assert result.tables["canvas_enrollments"].empty
    assert result.rejected[0].reason == "grades.current_score: not a number: 'eighty'"


def test_numeric_strings_are_accepted_as_scores():
    record = enrollment_record(grades={"current_score": "91.25"})
    frame = transform("enrollments", {COURSE: [record]}).tables["canvas_enrollments"]
    assert frame.loc[0, "current_score"] == 91.25


def test_a_record_that_is_not_an_object_is_rejected():
    result = transform("students", {COURSE: [{"id": 1}, "garbage"]})
    assert len(result.tables["canvas_students"]) == 1
    assert "not a JSON object" in result.rejected[0].reason


def test_scores_off_drops_the_score_columns():
    frame = transform("enrollments", {COURSE: [enrollment_record()]}, student_scores=False).tables[
        "canvas_enrollments"
    ]
    assert not {"current_score", "final_score", "current_grade", "override_score"} & set(frame.columns)
    assert "enrollment_state" in frame.columns


def test_enrollment_details_off_drops_activity_columns():
    frame = transform(
        "enrollments", {COURSE: [enrollment_record()]}, student_enrollment_details=False
    ).tables["canvas_enrollments"]
    assert not {"last_activity_at", "total_activity_time", "last_attended_at"} & set(frame.columns)


def test_student_basic_info_off_drops_email_login_and_sis_id():
    records = [{"id": 1, "name": "Ann", "email": "ann@example.edu", "login_id": "ann", "sis_user_id": "S1"}]
    frame = transform("students", {COURSE: records}, student_basic_info=False).tables["canvas_students"]
    assert not {"email", "login_id", "sis_user_id"} & set(frame.columns)
    assert frame.loc[0, "name"] == "Ann"


@pytest.mark.parametrize(
    ("option", "columns"),
    [
        ("course_public_info", {"is_public", "public_description"}),
        ("course_extended_info", {"syllabus_body", "term_start_at", "term_end_at"}),
        ("course_settings", {"settings"}),
    ],
)
def test_course_options_off_drop_their_columns(option, columns):
    frame = transform("courses", {COURSE: [course_record()]}, **{option: False}).tables["canvas_courses"]
    assert not columns & set(frame.columns)
    assert "name" in frame.columns


def test_the_course_term_gives_term_name_and_dates_and_settings_become_json():
    frame = transform("courses", {COURSE: [course_record()]}).tables["canvas_courses"]
    row = frame.iloc[0]
    assert row["term_name"] == "Spring 2025"
    assert row["term_start_at"] == pd.Timestamp("2025-01-01T00:00:00Z")
    assert pd.isna(row["term_end_at"])
    assert row["settings"] == '{"allow_student_forum_attachments":true,"hide_final_grades":false}'


def test_html_is_kept_as_text_and_booleans_stay_booleans():
    frame = transform("courses", {COURSE: [course_record()]}).tables["canvas_courses"]
    assert frame.loc[0, "syllabus_body"] == "<h1>Syllabus</h1>"
    assert frame["is_public"].tolist() == [False]
    assert frame["is_public"].dtype == "boolean"


def test_lists_become_stable_json_text():
    assignment = {
        "id": 5,
        "course_id": COURSE,
        "name": "Essay",
        "submission_types": ["online_upload", "online_text_entry"],
    }
    frame = transform("assignments", {COURSE: [assignment]}).tables["canvas_assignments"]
    assert json.loads(frame.loc[0, "submission_types"]) == ["online_upload", "online_text_entry"]


def test_modules_produce_modules_and_items_with_the_module_id():
    module = {
        "id": 50,
        "name": "Week 1",
        "position": 1,
        "prerequisite_module_ids": [49],
        "items": [
            {"id": 500, "title": "Intro", "type": "Page", "completion_requirement": {"type": "must_view"}},
            {
                "id": 501,
                "title": "Quiz",
                "type": "Quiz",
                "content_id": BIG_ID,
                "completion_requirement": {"type": "min_score", "min_score": 7},
            },
        ],
    }
    result = transform("modules", {COURSE: [module]})
    modules, items = result.tables["canvas_modules"], result.tables["canvas_module_items"]
    assert modules[["id", "course_id"]].values.tolist() == [[50, COURSE]]
    assert modules.loc[0, "prerequisite_module_ids"] == "[49]"
    assert items["module_id"].tolist() == [50, 50]
    assert items["course_id"].tolist() == [COURSE, COURSE]
    assert items.loc[1, "content_id"] == BIG_ID
    assert items.loc[1, "completion_requirement"] == '{"min_score":7,"type":"min_score"}'


def test_a_bad_module_item_is_rejected_alone():
    module = {"id": 50, "name": "Week 1", "items": [{"id": 500, "title": "ok"}, {"title": "no id"}]}
    result = transform("modules", {COURSE: [module]})
    assert result.tables["canvas_module_items"]["id"].tolist() == [500]
    [rejected] = result.rejected
    assert rejected.table == "canvas_module_items"
    assert rejected.reason == "module item in module 50: id: missing (required)"


def test_a_rejected_module_takes_its_items_with_it():
    module = {"id": 50, "unlock_at": "soon", "items": [{"id": 500}]}
    result = transform("modules", {COURSE: [module]})
    assert result.tables["canvas_modules"].empty
    assert result.tables["canvas_module_items"].empty
    assert result.rejected[0].reason == "unlock_at: not an ISO 8601 timestamp: 'soon'"


def test_ids_listed_twice_yield_one_row():
    records = [{"id": 1, "name": "Ann"}, {"id": 1, "name": "Ann"}, {"id": 2, "name": "Bob"}]
    frame = transform("students", {COURSE: records, COURSE + 1: [{"id": 1, "name": "Ann"}]}).tables[
        "canvas_students"
    ]
    assert sorted(frame["id"].tolist()) == [1, 2]


def test_an_enrollment_without_course_id_takes_the_staging_course():
    record = enrollment_record()
    del record["course_id"]
    frame = transform("enrollments", {COURSE: [record]}).tables["canvas_enrollments"]
    assert frame.loc[0, "course_id"] == COURSE


def test_student_summaries_flatten_the_tardiness_breakdown():
    summary = {
        "id": BIG_ID,
        "page_views": 120,
        "participations": 7,
        "tardiness_breakdown": {"total": 10, "on_time": 6, "late": 2, "missing": 1, "floating": 1},
    }
    frame = transform("student_summaries", {COURSE: [summary]}).tables["canvas_student_summaries"]
    row = frame.iloc[0]
    assert (row["course_id"], row["user_id"]) == (COURSE, BIG_ID)
    assert (row["tardiness_on_time"], row["tardiness_late"], row["tardiness_total"]) == (6, 2, 10)


def test_no_records_give_typed_empty_frames():
    frame = transform("enrollments", {}).tables["canvas_enrollments"]
    assert frame.empty
    assert str(frame["created_at"].dtype) == "datetime64[us, UTC]"
    assert frame["current_score"].dtype == "float64"


def test_records_in_counts_every_input_record():
    result = transform("students", {COURSE: [{"id": 1}, {"id": "x"}], COURSE + 1: [{"id": 2}]})
    assert result.records_in == 3


def test_an_unexpected_failure_is_a_transformation_error(monkeypatch):
    from canvas_assets.transform import base

    def boom(*args, **kwargs):
        raise RuntimeError("bug")

    monkeypatch.setattr(base, "build_frame", boom)
    with pytest.raises(TransformationError, match="students transformer failed"):
        transform("students", {COURSE: [{"id": 1}]})


def test_parsed_timestamps_are_the_same_instants_as_python_parses():
    stamp = "2025-03-30T01:30:00-07:00"
    frame = transform("students", {COURSE: [{"id": 1, "created_at": stamp}]}).tables["canvas_students"]
    assert frame.loc[0, "created_at"].to_pydatetime() == datetime.fromisoformat(stamp).astimezone(
        timezone.utc
    )


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("course_section_id", -3, "not a valid Canvas id"),
        ("course_section_id", 2**63, "not a valid Canvas id"),
        ("course_section_id", True, "not a valid Canvas id"),
        ("total_activity_time", 2**64, "not an integer"),
        ("type", ["x"], "not a string"),
    ],
)
def test_one_bad_value_in_an_otherwise_clean_column_is_quarantined(field, value, words):
    records = [enrollment_record(id=i, user_id=100 + i) for i in range(1, 6)]
    records[2][field] = value
    result = transform("enrollments", {COURSE: records})
    assert [r.canvas_id for r in result.rejected] == [3]
    assert words in result.rejected[0].reason
    assert result.tables["canvas_enrollments"]["id"].tolist() == [1, 2, 4, 5]


@pytest.mark.parametrize("score", [float("nan"), float("inf"), "high"])
def test_a_score_that_is_not_a_finite_number_is_quarantined(score):
    records = [enrollment_record(id=i, user_id=100 + i) for i in range(1, 4)]
    records[1]["grades"] = {**records[1]["grades"], "current_score": score}
    result = transform("enrollments", {COURSE: records})
    assert [r.canvas_id for r in result.rejected] == [2]
    frame = result.tables["canvas_enrollments"]
    assert frame["current_score"].tolist() == [85.5, 85.5]


def test_clean_columns_keep_their_types_and_nulls():
    records = [enrollment_record(id=1, user_id=11), enrollment_record(id=2**40, user_id=12, grades=None)]
    records[1]["course_section_id"] = None
    frame = transform("enrollments", {COURSE: records}).tables["canvas_enrollments"]
    assert frame["id"].tolist() == [1, 2**40]
    assert frame["course_section_id"].isna().tolist() == [False, True]
    assert str(frame["course_section_id"].dtype) == "Int64"
    assert frame["current_score"].isna().tolist() == [False, True]
    assert str(frame["type"].dtype) == "string"


def test_a_range_is_transformed_in_course_chunks_with_the_same_result(monkeypatch, sqlite_url):
    import canvas_assets.transform.base as base
    from canvas_assets.warehouse import Warehouse
    from canvas_assets.warehouse.staging import staged_batches

    records = {c: [enrollment_record(id=c * 10 + i, user_id=i) for i in range(4)] for c in range(1, 8)}
    records[3].append(enrollment_record(id=10, user_id=99))  # id of course 1 again: first wins
    records[5][1]["created_at"] = "not a date"  # quarantined in its chunk
    whole = transform("enrollments", records)
    monkeypatch.setattr(base, "CHUNK_RECORDS", 5)
    wh = Warehouse(sqlite_url)
    wh.ensure_schema()
    wh.write_staging([("enrollments", c, r) for c, r in records.items()], run_id="r", fetched_at=STAGED_AT)
    chunked = transform("enrollments", wh.read_staging("enrollments", records))  # read course by course
    pd.testing.assert_frame_equal(
        chunked.tables["canvas_enrollments"], whole.tables["canvas_enrollments"], check_dtype=False
    )
    with wh.engine.connect() as conn:  # read a batch of courses at a time, as the Layer-1 step does
        batches = staged_batches(conn, "enrollments", records, records=5)
        chunked = TRANSFORMERS["enrollments"].batches(batches, TransformOptions())
    pd.testing.assert_frame_equal(
        chunked.tables["canvas_enrollments"], whole.tables["canvas_enrollments"], check_dtype=False
    )
    assert [(r.course_id, r.canvas_id) for r in chunked.rejected] == [(5, 51)]
    assert chunked.records_in == whole.records_in == 29
    summaries = {c: [{"id": 5, "page_views": c}] for c in range(1, 8)}
    frame = transform("student_summaries", summaries).tables["canvas_student_summaries"]
    assert frame[["course_id", "user_id", "page_views"]].values.tolist() == [[c, 5, c] for c in range(1, 8)]


def test_staged_records_read_like_a_list(sqlite_url):
    from canvas_assets.warehouse import Warehouse

    wh = Warehouse(sqlite_url)
    wh.ensure_schema()
    wh.write_staging(
        [("students", 1, [{"id": 2}, {"id": 1}]), ("students", 2, [])], run_id="r", fetched_at=STAGED_AT
    )
    staged = wh.read_staging("students", [1, 2])
    assert len(staged[1]) == 2 and staged[1][1] == {"id": 2} and list(staged[1]) == [{"id": 1}, {"id": 2}]
    assert staged[1] == [{"id": 1}, {"id": 2}]
    expected = [{"id": 1}, {"id": 2}]
    assert expected == staged[1]
    assert bool(staged[2]) is False


# --- regressions found by the property tests (test_transform_properties.py) --------------------------------
@pytest.mark.parametrize(
    ("stamp", "instant"),
    [
        ("2300-01-01T00:00:00Z", datetime(2300, 1, 1, tzinfo=timezone.utc)),  # past pandas' nanosecond range
        ("1500-06-01T12:00:00+01:00", datetime(1500, 6, 1, 11, tzinfo=timezone.utc)),
        ("0001-01-01T00:00:00Z", datetime(1, 1, 1, tzinfo=timezone.utc)),
        ("2025-01-06t08:00:00Z", datetime(2025, 1, 6, 8, tzinfo=timezone.utc)),  # fromisoformat reads it
    ],
)
def test_every_timestamp_python_reads_is_kept(stamp, instant):
    records = [{"id": 1, "created_at": "2025-01-01T00:00:00.123456789Z"}, {"id": 2, "created_at": stamp}]
    result = transform("students", {COURSE: records})  # one column: pandas parses it at one resolution
    assert result.rejected == []
    assert result.tables["canvas_students"].loc[1, "created_at"] == pd.Timestamp(instant)


@pytest.mark.parametrize("stamp", ["0001-01-01T00:30:00+01:00", "9999-12-31T23:59:59-01:00", "10000-01-01"])
def test_a_timestamp_whose_utc_instant_is_outside_years_1_to_9999_is_quarantined(stamp):
    result = transform("students", {COURSE: [{"id": 1, "created_at": stamp}]})
    assert result.tables["canvas_students"].empty
    assert result.rejected[0].reason.startswith("created_at: not an ISO 8601 timestamp")


@pytest.mark.parametrize(
    ("table_entity", "record", "reason"),
    [
        (
            "assignments",
            {"id": 1, "position": 2**31},
            "position: not an integer: 2147483648",
        ),  # INTEGER column
        ("assignments", {"id": 1, "position": "--5"}, "position: not an integer: '--5'"),
        ("assignments", {"id": 1, "position": 1e300}, "position: not an integer: 1e+300"),
        ("students", {"id": "1" * 5000}, "id: not a valid Canvas id: '111"),
        ("assignments", {"id": 1, "points_possible": 10**400}, "points_possible: not a number: 1000"),
        ("students", {"id": 1, "name": float("nan")}, "name: not a string: nan"),
        ("students", {"id": 1, "name": "a\x00b"}, "name: contains a NUL character"),
        ("students", {"id": 1, "name": "a\ud800b"}, "name: not valid Unicode (a lone surrogate)"),
        (
            "assignments",
            {"id": 1, "submission_types": [float("nan")]},
            "submission_types: not JSON-serialisable",
        ),
        ("enrollments", {"id": 1, "user_id": 2, "grades": "A+"}, "grades: not an object: 'A+'"),
    ],
)
def test_a_hostile_value_is_quarantined_naming_its_field(table_entity, record, reason):
    result = transform(table_entity, {COURSE: [record]})
    assert all(frame.empty for frame in result.tables.values())
    assert result.rejected[0].reason.startswith(reason)


def test_a_value_nested_deeper_than_json_writes_is_quarantined():
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    result = transform("assignments", {COURSE: [{"id": 1, "submission_types": deep}]})
    assert result.rejected[0].reason.startswith("submission_types: not JSON-serialisable")


def test_a_nul_inside_json_text_is_escaped_and_kept():
    frame = transform("assignments", {COURSE: [{"id": 1, "submission_types": ["a\x00b"]}]}).tables[
        "canvas_assignments"
    ]
    assert frame.loc[0, "submission_types"] == '["a\\u0000b"]'


def test_a_quarantined_payload_with_a_lone_surrogate_is_stored_as_escape_text():
    result = transform("students", {COURSE: [{"id": 1, "name": "x\udc80", "bio\ud800": ["\udfff"]}]})
    [rejected] = result.rejected
    assert rejected.payload == {"id": 1, "name": "x\\udc80", "bio\\ud800": ["\\udfff"]}
    json.dumps(rejected.payload, ensure_ascii=False).encode("utf-8")


def test_the_items_of_a_quarantined_or_repeated_module_are_not_loaded():
    modules = [
        {"id": 50, "name": "Week 1", "items": [{"id": 500}]},
        {"id": 50, "unlock_at": "soon", "items": [{"id": 501}]},  # quarantined: its items go with it
        {"id": 50, "name": "Week 1 again", "items": [{"id": 502}]},  # a second listing: the first won
    ]
    result = transform("modules", {COURSE: modules})
    assert result.tables["canvas_modules"]["name"].tolist() == ["Week 1"]
    assert result.tables["canvas_module_items"]["id"].tolist() == [500]
