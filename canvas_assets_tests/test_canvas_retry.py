"""The retry decision and backoff schedule: pure functions, no HTTP."""

import random

import pytest

from canvas_assets.canvas.retry import backoff_delay, is_throttle, should_retry


def decide(
    status: int | None, body: str = "", *, transport: bool = False, done: int = 0, budget: int = 3
) -> bool:
    return should_retry(
        status=status, body=body, transport_error=transport, retries_done=done, max_retries=budget
    )


def test_a_429_is_retried():
    assert decide(429)


def test_a_403_that_says_rate_limit_exceeded_is_retried():
    assert decide(403, "403 Forbidden (Rate Limit Exceeded)")


def test_a_403_without_the_throttle_text_is_never_retried():
    assert not decide(403, '{"errors":[{"message":"forbidden"}]}')


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
def test_server_errors_and_408_are_retried(status):
    assert decide(status)


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_client_errors_are_not_retried(status):
    assert not decide(status, '{"errors":[{"message":"nope"}]}')


def test_a_timeout_or_dropped_connection_is_retried():
    assert decide(None, transport=True)


def test_a_success_is_never_retried():
    assert not decide(200)


def test_nothing_is_retried_once_the_retry_budget_is_spent():
    assert not decide(503, done=3, budget=3)
    assert not decide(None, transport=True, done=3, budget=3)
    assert decide(503, done=2, budget=3)


def test_zero_retries_means_no_retry_at_all():
    assert not decide(429, budget=0)


def test_throttle_detection_ignores_case():
    assert is_throttle(403, "403 FORBIDDEN (rate limit exceeded)")
    assert not is_throttle(401, "Rate Limit Exceeded")


def test_backoff_grows_exponentially_up_to_the_cap_with_full_jitter():
    top = random.Random()
    top.uniform = lambda a, b: b  # type: ignore[method-assign]
    assert [backoff_delay(n, base=0.5, cap=5.0, rng=top) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    bottom = random.Random()
    bottom.uniform = lambda a, b: a  # type: ignore[method-assign]
    assert backoff_delay(4, base=0.5, cap=5.0, rng=bottom) == 0.0


def test_backoff_with_a_seeded_rng_is_deterministic_and_within_bounds():
    a = [backoff_delay(n, base=1.0, cap=8.0, rng=random.Random(3)) for n in range(5)]
    b = [backoff_delay(n, base=1.0, cap=8.0, rng=random.Random(3)) for n in range(5)]
    assert a == b
    assert all(0.0 <= d <= min(8.0, 2**n) for n, d in enumerate(a))
