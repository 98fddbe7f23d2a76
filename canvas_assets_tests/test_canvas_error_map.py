"""The client's status -> error map (canvas_assets/canvas/error_map.py), table by table: no Canvas needed."""

import pytest
import requests
import urllib3
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, ProtocolError, ReadTimeoutError

from canvas_assets.canvas.client import CanvasClient
from canvas_assets.canvas.error_map import (
    canvas_error_text,
    error_for_redirect,
    error_for_response,
    error_for_transport,
    error_for_unparsable,
)
from canvas_assets.errors import (
    CanvasAPIError,
    CanvasAuthError,
    CanvasBadRequest,
    CanvasConnectionError,
    CanvasNotFound,
    CanvasPermissionError,
    CanvasRequestRefused,
    CanvasServerError,
    CanvasThrottled,
    CanvasTimeout,
    ErrorCategory,
)

URL = "https://x/api/v1/courses/1"
UNAUTHORIZED = '{"status":"unauthorized","errors":[{"message":"user not authorized to perform that action"}]}'
UNAUTHENTICATED = '{"status":"unauthenticated","errors":[{"message":"user authorization required"}]}'


@pytest.mark.parametrize(
    ("body", "text"),
    [
        ("", ""),
        ("   ", ""),
        ('{"errors":[{"message":"bad date"}]}', "bad date"),
        ('{"errors":[{"message":"a"},{"message":"b"}]}', "a; b"),
        ('{"errors":{"start_at":[{"message":"is invalid"}]}}', "start_at: is invalid"),
        ('{"errors":{"per_page":"must be a number"}}', "per_page: must be a number"),
        ('{"errors":[{"attribute":"x","type":"y","message":"m"}]}', "m"),
        # nothing readable inside: the body itself, whitespace collapsed
        (
            '{"errors":{"x":{"attribute":"x","type":"invalid","error_code":"e"}}}',
            '{"errors":{"x":{"attribute":"x","type":"invalid","error_code":"e"}}}',
        ),
        ('{"error":"per_page must be a number"}', "per_page must be a number"),
        ('{"message":"missing parameter"}', "missing parameter"),
        ('{"errors":[],"message":"fallback"}', "fallback"),
        ('["one", "two"]', "one; two"),
        ('"just text"', "just text"),
        ("403 Forbidden (Rate Limit Exceeded)", "403 Forbidden (Rate Limit Exceeded)"),
        ("  several\n  lines\tof  text ", "several lines of text"),
        ("<html><body>Log in</body></html>", ""),
        ("x" * 400, "x" * 300 + "…"),
        ('{"errors":[{"message":"Zoë \\u0000 ✓"}]}', "Zoë \x00 ✓"),
    ],
)
def test_canvas_error_text(body, text):
    assert canvas_error_text(body) == text


@pytest.mark.parametrize(
    ("status", "body", "expected", "in_message"),
    [
        (
            401,
            '{"errors":[{"message":"Invalid access token."}]}',
            CanvasAuthError,
            "rejected the access token",
        ),
        (
            401,
            '{"errors":[{"message":"Revoked access token."}]}',
            CanvasAuthError,
            "rejected the access token",
        ),
        (
            401,
            '{"errors":[{"message":"Expired access token."}]}',
            CanvasAuthError,
            "rejected the access token",
        ),
        (401, "", CanvasAuthError, "Invalid access token."),
        (401, UNAUTHENTICATED, CanvasAuthError, "did not recognise the request as authenticated"),
        (401, UNAUTHORIZED, CanvasPermissionError, "not permitted"),
        (403, "403 Forbidden (Rate Limit Exceeded)", CanvasThrottled, "throttled"),
        (429, "429 Too Many Requests (Rate Limit Exceeded)", CanvasThrottled, "throttled"),
        (429, "", CanvasThrottled, "Rate Limit Exceeded"),
        (
            403,
            '{"errors":[{"message":"forbidden"}]}',
            CanvasPermissionError,
            "refused the request (403 forbidden)",
        ),
        (403, "", CanvasPermissionError, "403 Forbidden"),
        (404, '{"errors":[{"message":"The specified resource does not exist."}]}', CanvasNotFound, "no such"),
        (404, "", CanvasNotFound, "404 Not Found"),
        (400, '{"errors":{"per_page":"must be a number"}}', CanvasBadRequest, "per_page: must be a number"),
        (422, '{"message":"bad"}', CanvasBadRequest, "422 bad"),
        (408, "", CanvasTimeout, "timed out the request (408)"),
        (500, '{"errors":[{"message":"An error occurred."}]}', CanvasServerError, "failed with 500"),
        (503, "", CanvasServerError, "503 (server error)"),
        (599, "", CanvasServerError, "failed with 599"),
        (409, "", CanvasAPIError, "409 (unexpected status)"),
        (418, '{"message":"teapot"}', CanvasAPIError, "418 (teapot)"),
        (600, "", CanvasAPIError, "unexpected status"),
    ],
)
def test_each_error_status_maps_to_its_type_and_message(status, body, expected, in_message):
    err = error_for_response(status, body, method="GET", url=URL)
    assert type(err) is expected
    assert in_message in err.message and f"GET {URL}" in err.message
    assert (err.status, err.method, err.url) == (status, "GET", URL)


@pytest.mark.parametrize(
    ("status", "recoverable"),
    [
        (401, False),
        (403, False),
        (404, False),
        (400, False),
        (429, True),
        (500, True),
        (503, True),
        (408, True),
    ],
)
def test_only_transient_statuses_are_recoverable(status, recoverable):
    body = "429 Too Many Requests (Rate Limit Exceeded)" if status == 429 else ""
    assert error_for_response(status, body, method="GET", url=URL).recoverable is recoverable


def _pool() -> urllib3.HTTPConnectionPool:
    return urllib3.HTTPConnectionPool("127.0.0.1", 9)


@pytest.mark.parametrize(
    ("exc", "expected", "in_message"),
    [
        (ConnectTimeoutError("connect timed out"), CanvasTimeout, "Connecting to Canvas timed out"),
        (requests.ConnectTimeout("connect timed out"), CanvasTimeout, "Connecting to Canvas timed out"),
        (ReadTimeoutError(_pool(), URL, "read timed out"), CanvasTimeout, "did not answer within 2.5 s"),
        (requests.ReadTimeout("read timed out"), CanvasTimeout, "did not answer within 2.5 s"),
        (
            requests.ConnectionError(ReadTimeoutError(_pool(), URL, "read timed out")),
            CanvasTimeout,
            "did not answer within 2.5 s",
        ),
        (
            ProtocolError("Connection broken", ReadTimeoutError(_pool(), URL, "t")),
            CanvasTimeout,
            "did not answer",
        ),
        (
            ProtocolError("Connection aborted.", ConnectionResetError(104, "reset")),
            CanvasConnectionError,
            "(ProtocolError)",
        ),
        # urllib3 makes NewConnectionError a ConnectTimeoutError: a refused connection reads as a timeout.
        (NewConnectionError(None, "refused"), CanvasTimeout, "Connecting to Canvas timed out"),
        (requests.ConnectionError("refused"), CanvasConnectionError, "(ConnectionError)"),
    ],
)
def test_each_transport_failure_maps_to_its_type(exc, expected, in_message):
    err = error_for_transport(exc, method="GET", url=URL, read_timeout=2.5)
    assert type(err) is expected
    assert in_message in err.message and URL in err.message
    assert err.recoverable and err.status is None


def test_a_redirect_is_an_error_naming_both_urls():
    err = error_for_redirect(302, "https://sso.example.com/login", method="GET", url=URL)
    assert type(err) is CanvasAPIError and err.status == 302
    assert "https://sso.example.com/login" in err.message and "CANVAS_BASE_URL" in err.message


@pytest.mark.parametrize(
    ("content_type", "expected", "recoverable"),
    [
        ("text/html; charset=utf-8", CanvasAPIError, False),
        ("TEXT/HTML", CanvasAPIError, False),
        ("application/json; charset=utf-8", CanvasConnectionError, True),
        ("", CanvasConnectionError, True),
    ],
)
def test_a_body_that_is_not_json(content_type, expected, recoverable):
    err = error_for_unparsable(200, content_type, url=URL)
    assert type(err) is expected and err.recoverable is recoverable and err.status == 200


# --- 403: a permission refusal, the legacy throttle, or a request Canvas refused as invalid ----------------
@pytest.mark.parametrize(
    ("body", "expected", "in_message"),
    [
        # SubmissionsApiController#for_students: a request of ours that Canvas will not serve.
        (
            '{"error":"invalid assignment ids requested"}',
            CanvasRequestRefused,
            "refused the request as invalid (403 invalid assignment ids requested)",
        ),
        (
            '{"errors":[{"message":"cannot do that to a concluded course"}]}',
            CanvasRequestRefused,
            "report it",
        ),
        ('{"errors":{"base":"page is too large"}}', CanvasRequestRefused, "base: page is too large"),
        (UNAUTHORIZED, CanvasPermissionError, "user not authorized to perform that action"),
        ('{"status":"unauthorized","errors":[{"message":"no"}]}', CanvasPermissionError, "(403 no)"),
        (
            '{"errors":[{"message":"Forbidden: access to this resource has been restricted."}]}',
            CanvasPermissionError,
            "lacks the permission",
        ),
        ('{"errors":[{"message":"Insufficient scopes on access token."}]}', CanvasPermissionError, "scopes"),
        ('{"error":"Forbidden"}', CanvasPermissionError, "(403 Forbidden)"),
        ('{"message":"you shall not pass"}', CanvasPermissionError, "you shall not pass"),
        ("Forbidden", CanvasPermissionError, "(403 Forbidden)"),
        ("<html><body>403</body></html>", CanvasPermissionError, "(403 Forbidden)"),
        ("403 Forbidden (Rate Limit Exceeded)", CanvasThrottled, "throttled"),
    ],
)
def test_a_403_is_told_apart_by_what_canvas_says(body, expected, in_message):
    err = error_for_response(403, body, method="GET", url=URL)
    assert type(err) is expected
    assert in_message in err.message and f"GET {URL}" in err.message


def test_a_refused_request_is_a_bad_request_of_ours_and_never_retried():
    err = error_for_response(403, '{"error":"invalid assignment ids requested"}', method="GET", url=URL)
    assert isinstance(err, CanvasBadRequest) and not isinstance(err, CanvasPermissionError)
    assert err.category is ErrorCategory.CANVAS_API and err.recoverable is False
    assert "permission" not in err.message.replace("not a missing permission", "")
    assert err.to_metadata()["error_type"] == "CanvasRequestRefused"


def test_a_403_refused_request_over_http_shows_canvas_text_and_blames_the_request(sandbox):
    course_id = sandbox.data.course_ids()[0]
    sandbox.misbehave(
        "/students/submissions", status=403, body=b'{"error":"invalid assignment ids requested"}'
    )
    with (
        CanvasClient(sandbox.base_url, sandbox.token, max_retries=0) as client,
        pytest.raises(CanvasRequestRefused) as info,
    ):
        client.list_submissions(course_id, assignment_ids=[999999])
    message = info.value.message
    assert message.startswith(
        "Canvas refused the request as invalid (403 invalid assignment ids requested): GET "
    )
    assert f"/courses/{course_id}/students/submissions" in message
    assert "should not have made" in message and "please report it" in message
    assert "lacks the permission" not in message and sandbox.token not in message


# --- redaction after decoding ------------------------------------------------------------------------------
TOKEN = "7~SuperSecretTokenValue1234567890"
ESCAPED = "".join(f"\\u{ord(c):04x}" for c in TOKEN)  # each character as a JSON \u escape


@pytest.mark.parametrize(
    "body",
    [
        f'{{"errors":[{{"message":"token {ESCAPED} is not valid here"}}]}}',
        f'{{"errors":{{"base":{{"message":"bad {ESCAPED}"}}}}}}',
        f'{{"errors":{{"message":"bad {ESCAPED}"}}}}',
        f'{{"error":"bad {TOKEN[:5]}\\u{ord(TOKEN[5]):04X}{TOKEN[6:]}"}}',  # one escape, upper-case hex
        f'{{"message":"the token {TOKEN} as it is"}}',
        f"not JSON at all: {ESCAPED}",  # shown raw: the escapes are still the token to a reader
        f'{{"errors":[{{"message":"{"x" * 290} {ESCAPED}"}}]}}',  # the token straddles the 300-char cut
        f'{{"errors":[{{"message":"percent {TOKEN.replace("~", "%7E")}"}}]}}',
        f'{{"errors":[{{"message":"entity {TOKEN.replace("~", "&#126;")}"}}]}}',
    ],
)
def test_canvas_error_text_redacts_the_token_after_decoding(body):
    for status in (400, 401, 403, 404, 422, 500):
        err = error_for_response(status, body, method="GET", url=URL, secrets=[TOKEN])
        assert TOKEN not in err.message and TOKEN[2:12] not in err.message, (status, err.message)
        assert "[REDACTED]" in err.message or "[REDA" in err.message


def test_a_token_written_with_escapes_of_several_kinds_is_still_found():
    # "~" as a JSON escape, "S" as a JavaScript \\x escape, and a %-escape of the JSON escape of "7".
    mixed = "%5Cu0037" + "\\u007e" + "\\x53" + TOKEN[3:]
    err = error_for_response(400, '{"error":"t ' + mixed + '"}', method="GET", url=URL, secrets=[TOKEN])
    assert "[REDACTED]" in err.message and TOKEN[3:] not in err.message


@pytest.mark.parametrize(
    "body",
    [
        '[{"id": 1, "user_id": 7, "grade": "A-", "body": "my essay"}]',
        '{"id": 1, "user_id": 7, "grade": "A-", "body": "my essay"}',
        '[{"user": {"name": "Ada Lovelace"}}]',
    ],
)
def test_an_error_body_of_records_shows_no_record_data(body):
    """A broken proxy may answer 500 with a page of records: the message says nothing of what they hold."""
    for status in (400, 403, 404, 500, 503):
        message = str(error_for_response(status, body, method="GET", url="https://c/api/v1/x"))
        for data in ("my essay", "A-", "Ada Lovelace", "user_id"):
            assert data not in message, (status, message)
