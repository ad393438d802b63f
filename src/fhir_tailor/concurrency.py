"""Bounded, ordered concurrency for patient-at-a-time work.

Reading a patient (five searches) and writing its plan (a search and a transaction) are almost
all waiting on the server, so throughput scales with how many patients are in flight. The
work runs on a small thread pool sharing the one ``httpx.Client`` (and its connection pool);
:func:`bounded_map` keeps at most ``window`` items in flight, so a fast producer never runs
ahead of a slow server (backpressure) and memory stays flat whatever the population size.
Results come back in input order, so reports and journals read the same at any concurrency.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def bounded_map(
    work: Callable[[T], R], items: Iterable[T], workers: int, window: int | None = None
) -> Iterator[R]:
    """``map(work, items)`` on ``workers`` threads, at most ``window`` items in flight.

    With one worker it is a plain loop: no threads, the same behaviour as before concurrency.
    An exception raised by ``work`` is re-raised when its result is reached.
    """
    if workers <= 1:
        yield from map(work, items)
        return
    limit = window or 2 * workers
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fhir-tailor") as pool:
        pending: deque[Future[R]] = deque()
        for item in items:
            pending.append(pool.submit(work, item))
            if len(pending) >= limit:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
