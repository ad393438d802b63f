"""Bounded, ordered concurrency for patient-at-a-time work.

Reading a patient (a search per resource type, sent together: :func:`together`) and writing
its plan (a search and a transaction) are almost all waiting on the server, so throughput
scales with how many requests are in flight. All HTTP
runs on one asyncio event loop (:class:`EventLoop`, on a thread of its own) over one
``httpx.AsyncClient`` and its connection pool; synchronous code hands it coroutines and keeps a
bounded window of their futures (:func:`in_order`), so a fast producer never runs ahead of a
slow server (backpressure) and memory stays flat whatever the population size. Results come
back in input order, so reports and journals read the same at any concurrency.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from concurrent.futures import Future, wait
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class EventLoop:
    """An asyncio event loop running on a daemon thread, for synchronous callers.

    The loop outlives every single call, so an ``httpx.AsyncClient`` created for it keeps its
    pooled connections across calls (an ``asyncio.run`` per call would drop them each time).
    """

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="fhir-tailor-io", daemon=True
        )
        self._thread.start()

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> Future[T]:
        """Schedule ``coroutine`` on the loop; its result or exception arrives in the future."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the loop and wait for it.

        Called from the loop's own thread this would wait forever, so that is refused.
        """
        if threading.current_thread() is self._thread:
            coroutine.close()
            raise RuntimeError("EventLoop.call() from inside the loop: await the coroutine")
        return self.submit(coroutine).result()

    def cancel_pending(self) -> None:
        """Cancel the work still on the loop and wait until it has unwound.

        A run that stops part-way (its source failed) leaves requests in flight; cancelling
        them here, rather than dropping the loop under them, lets each close its connection
        and retrieve its exception, so nothing is left half-done in the background.
        """

        async def unwind() -> None:
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        if not self._loop.is_closed():
            self.call(unwind())

    def close(self) -> None:
        """Cancel pending work, stop the loop and its thread; idempotent."""
        if self._loop.is_closed():
            return
        self.cancel_pending()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


def in_order(
    start: Callable[[T], Future[R]], items: Iterable[T], window: int
) -> Iterator[tuple[T, Future[R]]]:
    """Each item with the future of ``start(item)``, finished, in input order; at most
    ``window`` items in flight.

    ``start`` begins the work (typically :meth:`EventLoop.submit`) and returns its future; the
    next item is not taken from ``items`` until a slot is free. The caller reads each future's
    result (or exception) with the item at hand, so it knows whose failure it is.
    """
    if window < 1:
        raise ValueError("the window must be at least 1")
    pending: deque[tuple[T, Future[R]]] = deque()
    for item in items:
        pending.append((item, start(item)))
        if len(pending) >= window:
            yield _finished(pending.popleft())
    while pending:
        yield _finished(pending.popleft())


def _finished(entry: tuple[T, Future[R]]) -> tuple[T, Future[R]]:
    wait([entry[1]])
    return entry


async def together(coroutines: Sequence[Coroutine[Any, Any, T]]) -> list[T | BaseException]:
    """Run ``coroutines`` at once; each one's result or exception, in their order.

    The first to fail cancels those still running (given as :class:`asyncio.CancelledError`):
    their answers could no longer be used, and a failing server is not kept busy for nothing.
    Cancelling the caller cancels them all.
    """
    tasks = [asyncio.ensure_future(coroutine) for coroutine in coroutines]
    try:
        if tasks:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()  # those already done are left as they are
        await asyncio.gather(*tasks, return_exceptions=True)
    outcomes: list[T | BaseException] = []
    for task in tasks:
        if task.cancelled():
            outcomes.append(asyncio.CancelledError())
        else:
            outcomes.append(task.exception() or task.result())
    return outcomes


def done(value: T) -> Future[T]:
    """A future that already holds ``value``, for work that finished without waiting."""
    future: Future[T] = Future()
    future.set_result(value)
    return future
