"""When and how long to wait before repeating a failed request to a FHIR server.

Exponential backoff with *full jitter* (a uniformly random delay up to the exponential cap)
spreads out clients that failed together, so they do not hammer a recovering server in
lock-step. A server's own ``Retry-After`` beats our guess. A total time budget bounds how
long one call can hang, which matters more to a batch run than any single attempt count.

A POST that is not conditional is not idempotent: repeating it after the server may already
have acted on it can create duplicates (two CarePlans for one patient). Such requests are
retried only on failures that prove the server never processed them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from fhir_tailor.errors import FhirServerError, RetryBudgetExceededError

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

# The server refused before doing any work: safe to repeat even a non-idempotent request.
_UNPROCESSED_STATUSES = frozenset({408, 429, 503})

# The connection never carried the request, so the server cannot have acted on it.
_UNSENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


@dataclass(frozen=True)
class RetryPolicy:
    """How persistently to retry transient failures. Inject ``rng`` for reproducible delays."""

    max_attempts: int = 6
    base_delay: float = 0.5
    max_delay: float = 30.0
    total_budget: float = 120.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if min(self.base_delay, self.max_delay, self.total_budget) < 0:
            raise ValueError("delays and the total budget must not be negative")

    def should_retry_status(self, status: int, *, idempotent: bool) -> bool:
        """Whether a response with ``status`` is worth repeating."""
        return status in (RETRYABLE_STATUSES if idempotent else _UNPROCESSED_STATUSES)

    def should_retry_error(self, error: Exception, *, idempotent: bool) -> bool:
        """Whether a transport failure (refused connection, timeout, reset) is worth repeating."""
        return isinstance(error, httpx.TransportError if idempotent else _UNSENT_ERRORS)

    def backoff(self, retry_number: int) -> float:
        """A full-jitter delay before retry ``retry_number`` (0 for the first retry)."""
        cap = min(self.max_delay, self.base_delay * 2**retry_number)
        return self.rng.uniform(0, cap)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait according to a ``Retry-After`` header, or ``None`` if absent or invalid.

    The header is either whole seconds or an HTTP-date; a date already past means "now".
    """
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000" dates parse as naive; HTTP-dates are always GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def describe_failure(failure: Exception) -> str:
    """A short, query-free label for a failure: ``HTTP 503``, or an exception class name with
    the transport's own reason (``certificate verify failed``, ``Connection refused``), which
    names no URL and is what an operator needs to fix the setup."""
    if isinstance(failure, FhirServerError):
        return f"HTTP {failure.status}"
    reason = " ".join(str(failure).split())[:160]
    if isinstance(failure, httpx.TransportError) and reason:
        return f"{type(failure).__name__}: {reason}"
    return type(failure).__name__


class RetryBudget:
    """The attempts and time one logical request has used up against a :class:`RetryPolicy`.

    Time counts both waiting on the server and sleeping between attempts, as callers report
    it via :meth:`spend`; that keeps the budget exact when tests replace ``time.sleep``.
    """

    def __init__(self, policy: RetryPolicy, method: str, url_path: str) -> None:
        self.policy = policy
        self.method = method
        self.url_path = url_path
        self.attempts = 0
        self.elapsed = 0.0

    def spend(self, seconds: float, *, attempt: bool = False) -> None:
        """Record time spent on an attempt (``attempt=True``) or on sleeping."""
        self.elapsed += seconds
        self.attempts += int(attempt)

    def next_delay(self, failure: Exception, retry_after: float | None) -> float:
        """How long to sleep before the next attempt after ``failure``.

        Raises :class:`RetryBudgetExceededError` (caused by ``failure``) when attempts are used
        up, or when the server asks us to wait longer than the budget has left: sleeping only
        to give up afterwards would waste the caller's time.
        """
        remaining = self.policy.total_budget - self.elapsed
        if self.attempts >= self.policy.max_attempts:
            raise self._exhausted(failure, None) from failure
        if retry_after is not None and retry_after > remaining:
            reason = f"server asked to wait {retry_after:.0f}s, {remaining:.1f}s of budget left"
            raise self._exhausted(failure, reason) from failure
        if remaining <= 0:
            raise self._exhausted(failure, "time budget used up") from failure
        if retry_after is not None:
            return retry_after
        return min(self.policy.backoff(self.attempts - 1), remaining)

    def _exhausted(self, failure: Exception, reason: str | None) -> RetryBudgetExceededError:
        return RetryBudgetExceededError(
            self.method,
            self.url_path,
            self.attempts,
            self.elapsed,
            describe_failure(failure),
            reason,
        )
