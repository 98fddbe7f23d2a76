"""Client configuration, link parsing, redaction and the Dagster resource: no Canvas needed."""

import logging

import dagster as dg
import pytest

from canvas_assets.canvas import CanvasClient
from canvas_assets.canvas.error_map import canvas_error_text, error_for_response
from canvas_assets.canvas.redact import RedactingFilter, redact, redact_url
from canvas_assets.canvas.urls import parse_link_header
from canvas_assets.defs.resources import CanvasResource
from canvas_assets.errors import (
    CanvasAuthError,
    CanvasBadRequest,
    CanvasNotFound,
    CanvasPermissionError,
    CanvasServerError,
    CanvasThrottled,
    ConfigurationError,
)

TOKEN = "7~SuperSecretTokenValue1234567890"


def test_http_to_a_non_loopback_host_is_refused_with_advice_to_use_https():
    with pytest.raises(ConfigurationError, match="use https://"):
        CanvasClient("http://school.instructure.com", TOKEN)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080", "http://localhost:3000/api/v1", "http://[::1]:9000/"]
)
def test_http_to_a_loopback_host_is_accepted(url):
    CanvasClient(url, TOKEN).close()


@pytest.mark.parametrize(
    "url",
    [
        "https://school.instructure.com",
        "https://school.instructure.com/",
        "https://school.instructure.com/api/v1",
        "https://school.instructure.com/api/v1/",
    ],
)
def test_the_base_url_is_accepted_with_or_without_api_v1_and_a_trailing_slash(url):
    with CanvasClient(url, TOKEN) as client:
        assert client.base_url == "https://school.instructure.com"
        assert client.api_url == "https://school.instructure.com/api/v1"


@pytest.mark.parametrize(
    "url",
    [
        "https://admin:hun#ter2@school.instructure.com",
        "https://admin:hun?ter2@school.instructure.com",
        "https://admin:hun/ter2@school.instructure.com",
        "https://school.instructure.com:hunter2",
    ],
)
def test_a_client_given_a_password_in_the_base_url_refuses_it_without_echoing_it(url):
    with pytest.raises(ConfigurationError, match="CANVAS_BASE_URL") as info:
        CanvasClient(url, TOKEN)
    assert info.value.category.value == "configuration" and info.value.recoverable is False
    assert "ter2" not in str(info.value) and "ter2" not in str(info.value.to_metadata())
    assert "school.instructure.com" in str(info.value)  # the host is shown, to say which setting it is


def test_the_resource_refuses_a_password_in_canvas_base_url_without_echoing_it(monkeypatch):
    monkeypatch.setenv("CANVAS_BASE_URL", "https://admin:hun#ter2@school.instructure.com")
    monkeypatch.setenv("CANVAS_API_TOKEN", TOKEN)
    seen: list[str] = []

    @dg.op
    def probe(canvas: CanvasResource) -> None:
        canvas.get_client()

    @dg.job(resource_defs={"canvas": CanvasResource(
        base_url=dg.EnvVar("CANVAS_BASE_URL"), api_token=dg.EnvVar("CANVAS_API_TOKEN"))})  # fmt: skip
    def job() -> None:
        probe()

    result = job.execute_in_process(raise_on_error=False)
    assert not result.success
    for event in result.all_events:
        seen.append(str(event.message or "") + str(event.event_specific_data or ""))
    text = "\n".join(seen)
    assert "must not contain credentials" in text
    assert "ter2" not in text and TOKEN not in text


@pytest.mark.parametrize("url", [None, "", "   "])
def test_a_missing_base_url_names_the_environment_variable(url):
    with pytest.raises(ConfigurationError, match="CANVAS_BASE_URL"):
        CanvasClient(url, TOKEN)


@pytest.mark.parametrize("token", [None, ""])
def test_a_missing_token_names_the_environment_variable(token):
    with pytest.raises(ConfigurationError, match="CANVAS_API_TOKEN"):
        CanvasClient("https://school.instructure.com", token)


def test_the_client_repr_does_not_show_the_token():
    with CanvasClient("https://school.instructure.com", TOKEN) as client:
        assert TOKEN not in repr(client)
        assert TOKEN not in repr(client.__dict__.get("_transport"))


def test_link_headers_are_parsed_case_insensitively_with_several_rels():
    header = (
        '<https://x/api/v1/a?page=2>; REL="Next", <https://x/api/v1/a?page=1>; rel="current first", '
        "<https://x/api/v1/a?page=9>; rel=last"
    )
    links = parse_link_header(header)
    assert links == {
        "next": "https://x/api/v1/a?page=2",
        "current": "https://x/api/v1/a?page=1",
        "first": "https://x/api/v1/a?page=1",
        "last": "https://x/api/v1/a?page=9",
    }


def test_canvas_error_text_is_found_whatever_its_shape():
    assert canvas_error_text('{"errors":[{"message":"bad date"}]}') == "bad date"
    assert canvas_error_text('{"errors":{"start_at":[{"message":"is invalid"}]}}') == "start_at: is invalid"
    assert canvas_error_text('{"error":"per_page must be a number"}') == "per_page must be a number"
    assert canvas_error_text('{"message":"missing parameter"}') == "missing parameter"
    assert canvas_error_text("403 Forbidden (Rate Limit Exceeded)") == "403 Forbidden (Rate Limit Exceeded)"


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (401, '{"errors":[{"message":"Invalid access token."}]}', CanvasAuthError),
        (401, '{"errors":[{"message":"Revoked access token."}]}', CanvasAuthError),
        (
            401,
            '{"status":"unauthenticated","errors":[{"message":"user authorization required"}]}',
            CanvasAuthError,
        ),
        (
            401,
            '{"status":"unauthorized","errors":[{"message":"user not authorized to perform that action"}]}',
            CanvasPermissionError,
        ),
        (403, "403 Forbidden (Rate Limit Exceeded)", CanvasThrottled),
        (429, "429 Too Many Requests (Rate Limit Exceeded)", CanvasThrottled),
        (403, '{"errors":[{"message":"forbidden"}]}', CanvasPermissionError),
        (404, '{"errors":[{"message":"The specified resource does not exist."}]}', CanvasNotFound),
        (400, '{"errors":{"per_page":"must be a number"}}', CanvasBadRequest),
        (422, '{"message":"bad"}', CanvasBadRequest),
        (503, '{"errors":[{"message":"An error occurred."}]}', CanvasServerError),
    ],
)
def test_each_error_response_maps_to_its_type(status, body, expected):
    err = error_for_response(status, body, method="GET", url="https://x/api/v1/courses/1")
    assert type(err) is expected
    assert err.status == status and err.method == "GET" and err.url == "https://x/api/v1/courses/1"


def test_a_bad_request_message_carries_canvas_error_text():
    err = error_for_response(400, '{"errors":{"per_page":"must be a number"}}', method="GET", url="u")
    assert "per_page: must be a number" in err.message


def test_redact_scrubs_the_token_and_bearer_credentials():
    text = f"token {TOKEN} and header Authorization: Bearer abc.def-123"
    out = redact(text, [TOKEN])
    assert TOKEN not in out and "abc.def-123" not in out


def test_redact_url_scrubs_access_token_parameters():
    url = f"https://x/api/v1/courses?access_token={TOKEN}&per_page=100"
    out = redact_url(url)
    assert TOKEN not in out and "per_page=100" in out


def test_the_logging_filter_scrubs_messages_arguments_and_tracebacks(caplog):
    logger = logging.getLogger("canvas_assets_tests.redaction")
    logger.addFilter(RedactingFilter([TOKEN]))
    with caplog.at_level(logging.DEBUG, logger=logger.name):
        logger.debug("using %s", TOKEN)
        try:
            raise RuntimeError(f"boom {TOKEN}")
        except RuntimeError:
            logger.exception("failed")
    assert TOKEN not in caplog.text


def test_the_resource_builds_a_client_with_the_callers_timeout_and_retries():
    resource = CanvasResource(base_url="https://school.instructure.com", api_token=TOKEN, max_in_flight=8)
    with resource.get_client(read_timeout=12.0, max_retries=5) as client:
        assert (client.read_timeout, client.max_retries, client.max_in_flight) == (12.0, 5, 8)
    assert TOKEN not in repr(resource)


def test_the_resource_reads_its_settings_from_environment_variables(monkeypatch):
    monkeypatch.setenv("CANVAS_BASE_URL", "https://school.instructure.com/api/v1")
    monkeypatch.setenv("CANVAS_API_TOKEN", TOKEN)

    @dg.asset
    def probe(canvas: CanvasResource) -> None:
        with canvas.get_client(read_timeout=5.0, max_retries=1) as client:
            assert client.api_url == "https://school.instructure.com/api/v1"

    resources = {
        "canvas": CanvasResource(
            base_url=dg.EnvVar("CANVAS_BASE_URL"), api_token=dg.EnvVar("CANVAS_API_TOKEN")
        )
    }
    assert dg.materialize([probe], resources=resources).success
