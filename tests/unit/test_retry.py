"""RetryPolicy, Retry-After parsing and the per-request budget, without any HTTP."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import httpx
import pytest

from fhir_tailor.errors import FhirServerError, RetryBudgetExceededError
from fhir_tailor.retry import RetryBudget, RetryPolicy, parse_retry_after

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("7", 7.0),
        (" 0 ", 0.0),
        ("Wed, 01 May 2024 12:00:45 GMT", 45.0),
        ("Wed, 01 May 2024 11:00:00 GMT", 0.0),  # already past
        ("-5", None),
        ("1.5", None),
        ("soon", None),
    ],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, now=NOW) == seconds


def test_backoff_is_full_jitter_under_an_exponential_cap() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=3.0, rng=random.Random(11))
    delays = [policy.backoff(n) for n in range(8) for _ in range(50)]
    caps = [min(3.0, 0.5 * 2**n) for n in range(8) for _ in range(50)]
    assert all(0 <= d <= cap for d, cap in zip(delays, caps, strict=True))
    assert max(delays[-50:]) > 2.0  # reaches towards max_delay, not stuck at base_delay
    replay = RetryPolicy(base_delay=0.5, max_delay=3.0, rng=random.Random(11))
    assert [replay.backoff(n) for n in range(8) for _ in range(50)] == delays


@pytest.mark.parametrize(
    "kwargs", [{"max_attempts": 0}, {"base_delay": -1.0}, {"total_budget": -1.0}]
)
def test_policy_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_what_is_retried_depends_on_idempotency() -> None:
    policy = RetryPolicy()
    assert all(policy.should_retry_status(s, idempotent=True) for s in (408, 429, 500, 502, 503))
    assert not policy.should_retry_status(400, idempotent=True)
    assert not policy.should_retry_status(500, idempotent=False)
    assert policy.should_retry_status(429, idempotent=False)
    assert policy.should_retry_error(httpx.ReadTimeout("x"), idempotent=True)
    assert not policy.should_retry_error(httpx.ReadTimeout("x"), idempotent=False)
    assert policy.should_retry_error(httpx.ConnectError("x"), idempotent=False)


def test_budget_counts_attempts_and_time() -> None:
    budget = RetryBudget(RetryPolicy(max_attempts=2, total_budget=10), "GET", "/fhir/Patient")
    failure = FhirServerError(503, [], "GET", "/fhir/Patient")
    budget.spend(1.0, attempt=True)
    assert budget.next_delay(failure, retry_after=4.0) == 4.0
    budget.spend(4.0)
    budget.spend(1.0, attempt=True)
    with pytest.raises(RetryBudgetExceededError) as info:
        budget.next_delay(failure, retry_after=None)
    assert str(info.value) == (
        "gave up on GET /fhir/Patient after 2 attempts in 6.0s (last failure: HTTP 503)"
    )
    assert info.value.__cause__ is failure
