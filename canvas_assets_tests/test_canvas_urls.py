"""The client's pure URL rules (canvas_assets/canvas/urls.py), table by table: no Canvas needed."""

import pytest

from canvas_assets.canvas.redact import redact_base_url
from canvas_assets.canvas.urls import (
    array_params,
    is_loopback,
    normalize_base_url,
    origin_of,
    parse_link_header,
    path_segment,
    same_origin_link,
)
from canvas_assets.errors import CanvasAPIError, ConfigurationError

TOKEN = "7~SuperSecretTokenValue1234567890"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://school.instructure.com", "https://school.instructure.com"),
        ("https://school.instructure.com/", "https://school.instructure.com"),
        ("https://school.instructure.com/api/v1", "https://school.instructure.com"),
        ("https://school.instructure.com/api/v1/", "https://school.instructure.com"),
        ("https://school.instructure.com/API/V1", "https://school.instructure.com"),
        ("  https://school.instructure.com  ", "https://school.instructure.com"),
        ("https://canvas.example.edu:8443/lms", "https://canvas.example.edu:8443/lms"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://localhost:3000/api/v1", "http://localhost:3000"),
        ("http://[::1]:9000/", "http://[::1]:9000"),
        ("http://canvas.localhost", "http://canvas.localhost"),
        ("HTTPS://School.Instructure.com", "HTTPS://School.Instructure.com"),
    ],
)
def test_accepted_base_urls_are_normalised(given, expected):
    assert normalize_base_url(given) == expected


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (None, "is not set"),
        ("", "is not set"),
        ("   ", "is not set"),
        ("http://school.instructure.com", "use https://"),
        ("http://10.0.0.5", "use https://"),
        ("ftp://school.instructure.com", "must be an https:// URL"),
        ("school.instructure.com", "must be an https:// URL"),
        ("https://", "must be an https:// URL"),
        ("https://school.instructure.com:notaport", "is not a valid URL"),
        (f"https://user:{TOKEN}@school.instructure.com", "must not contain credentials"),
        ("https://school.instructure.com/?x=1", "must not contain a query or fragment"),
        ("https://school.instructure.com/#top", "must not contain a query or fragment"),
    ],
)
def test_refused_base_urls_say_why_and_never_quote_a_token(given, message):
    with pytest.raises(ConfigurationError, match=message) as info:
        normalize_base_url(given)
    assert TOKEN not in str(info.value)
    assert "CANVAS_BASE_URL" in str(info.value)


# A password with `#`, `?` or `/` in it is cut there by urlsplit, which then sees no userinfo at all; a
# "port" that is not a number may be a password too (issue 21). The whole error text must not show it.
@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("https://admin:hun#ter2@school.instructure.com", "must not contain credentials"),
        ("https://admin:hun?ter2@school.instructure.com", "must not contain credentials"),
        ("https://admin:hun/ter2@school.instructure.com", "must not contain credentials"),
        ("https://admin:hun/ter2@school.instructure.com/api/v1/", "must not contain credentials"),
        ("https://admin:1234#ter2@school.instructure.com", "must not contain credentials"),
        ("https://admin:hunter2@school.instructure.com", "must not contain credentials"),
        ("https://hunter2@school.instructure.com", "must not contain credentials"),
        ("admin:hunter2@school.instructure.com", "must not contain credentials"),
        ("https://school.instructure.com:hunter2", "is not a valid URL"),
        ("https://school.instructure.com:hunter2/api/v1", "is not a valid URL"),
        ("https://school.instructure.com:hun#ter2", "is not a valid URL"),
        ("https://:hunter2", "is not a valid URL"),
        ("https://school.instructure.com/?password=hunter2", "must not contain a query or fragment"),
        ("https://school.instructure.com/#hunter2", "must not contain a query or fragment"),
        ("hunter2", "must be an https:// URL"),
        ("ftp://admin:hunter2@school.instructure.com", "must not contain credentials"),
    ],
)
def test_a_password_in_the_base_url_is_refused_and_never_shown(given, message):
    with pytest.raises(ConfigurationError, match=message) as info:
        normalize_base_url(given)
    text = " ".join([str(info.value), repr(info.value), str(info.value.to_metadata())])
    assert "hunter2" not in text and "ter2" not in text and "hun" not in text.replace("not shown", "")
    assert "CANVAS_BASE_URL" in text


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        ("https://admin:hun#ter2@school.instructure.com", "https://school.instructure.com"),
        ("https://admin:hun?ter2@host:8443/api/v1", "https://host:8443"),
        ("https://admin:a@b/c@host", "https://host"),
        ("https://host:hunter2", "https://host"),
        ("http://[::1]:9000/x", "http://[::1]:9000"),
        ("https://school.instructure.com/lms?x=1#y", "https://school.instructure.com"),
        ("school.instructure.com", "school.instructure.com"),
        ("hunter2", ""),
        ("admin:hunter2@host", ""),
        ("https://admin:hunter2@", ""),
        ("https://", ""),
    ],
)
def test_redact_base_url_shows_at_most_the_scheme_host_and_port(given, shown):
    assert redact_base_url(given) == shown


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("LOCALHOST", True),
        ("localhost.localdomain", True),
        ("canvas.localhost", True),
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("10.0.0.1", False),
        ("192.168.1.1", False),
        ("localhost.example.com", False),
        ("school.instructure.com", False),
        ("", False),
    ],
)
def test_loopback_hosts(host, loopback):
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://X.instructure.com/api/v1", ("https", "x.instructure.com", 443)),
        ("https://x.instructure.com:443/a", ("https", "x.instructure.com", 443)),
        ("https://x.instructure.com:8443/a", ("https", "x.instructure.com", 8443)),
        ("HTTP://127.0.0.1/a?b=c", ("http", "127.0.0.1", 80)),
        ("http://127.0.0.1:5000", ("http", "127.0.0.1", 5000)),
        ("http://[::1]:9000/x", ("http", "::1", 9000)),
        ("gopher://x/y", ("gopher", "x", None)),
    ],
)
def test_origins_are_lower_cased_with_the_default_port(url, origin):
    assert origin_of(url) == origin


BASE = "https://school.instructure.com"
CURRENT = BASE + "/api/v1/courses/1/enrollments?per_page=100"


@pytest.mark.parametrize(
    ("link", "followed"),
    [
        (BASE + "/api/v1/courses/1/enrollments?page=2", BASE + "/api/v1/courses/1/enrollments?page=2"),
        (
            "https://SCHOOL.instructure.com:443/api/v1/x?page=2",
            "https://SCHOOL.instructure.com:443/api/v1/x?page=2",
        ),
        ("/api/v1/courses/1/enrollments?page=3", BASE + "/api/v1/courses/1/enrollments?page=3"),
        ("enrollments?page=4", BASE + "/api/v1/courses/1/enrollments?page=4"),
    ],
)
def test_links_on_the_base_urls_origin_are_followed_absolute(link, followed):
    assert same_origin_link(link, CURRENT, origin_of(BASE), BASE, [TOKEN]) == followed


@pytest.mark.parametrize(
    "link",
    [
        "https://evil.example.com/api/v1/courses?page=2",
        "http://school.instructure.com/api/v1/courses?page=2",
        "https://school.instructure.com:8443/api/v1/courses?page=2",
        f"https://evil.example.com/api/v1/courses?page=2&access_token={TOKEN}",
        "//evil.example.com/api/v1/courses?page=2",
    ],
)
def test_links_to_another_origin_are_refused_without_showing_the_token(link):
    with pytest.raises(CanvasAPIError, match="another origin") as info:
        same_origin_link(link, CURRENT, origin_of(BASE), BASE, [TOKEN])
    assert TOKEN not in str(info.value) and TOKEN not in (info.value.url or "")


@pytest.mark.parametrize(
    ("header", "links"),
    [
        (None, {}),
        ("", {}),
        ('<https://x/a?page=2>; rel="next"', {"next": "https://x/a?page=2"}),
        ("<https://x/a?page=2>; rel=next", {"next": "https://x/a?page=2"}),
        ('<https://x/a?page=2>; REL="Next"', {"next": "https://x/a?page=2"}),
        (
            '<https://x/a?page=1>; rel="current first", <https://x/a?page=9>; rel="last"',
            {"current": "https://x/a?page=1", "first": "https://x/a?page=1", "last": "https://x/a?page=9"},
        ),
        (
            '<https://x/a?page=2>; rel="next",<https://x/a?page=3>; rel="next"',
            {"next": "https://x/a?page=2"},  # the first link per rel wins
        ),
        (
            '<https://x/a?page=2>; title="a b"; rel="next"',
            {"next": "https://x/a?page=2"},
        ),
        ('< https://x/a?page=2 > ; type="application/json" ; rel="next"', {"next": "https://x/a?page=2"}),
        ('<https://x/a?page=bookmark:WzEsMl0>; rel="next"', {"next": "https://x/a?page=bookmark:WzEsMl0"}),
        ('<https://x/a?page=2>; type="next"', {}),
        ("not a link header", {}),
        (
            '<https://x/api/v1/courses/1/users?include%5B%5D=email&page=2&per_page=100>; rel="next"',
            {"next": "https://x/api/v1/courses/1/users?include%5B%5D=email&page=2&per_page=100"},
        ),
    ],
)
def test_link_headers(header, links):
    assert parse_link_header(header) == links


@pytest.mark.parametrize(
    ("value", "segment"),
    [(1234, "1234"), ("1234", "1234"), ("sis_course_id:ABC 1", "sis_course_id:ABC%201"), ("a/b", "a%2Fb")],
)
def test_path_segments_are_quoted_but_keep_colons(value, segment):
    assert path_segment(value) == segment


@pytest.mark.parametrize(
    ("key", "values", "params"),
    [
        ("state[]", (), []),
        ("state[]", ("active",), [("state[]", "active")]),
        ("include[]", ["term", "total_students"], [("include[]", "term"), ("include[]", "total_students")]),
        ("user_ids[]", [1, 2], [("user_ids[]", "1"), ("user_ids[]", "2")]),
    ],
)
def test_array_parameters_repeat_the_key(key, values, params):
    assert array_params(key, values) == params
