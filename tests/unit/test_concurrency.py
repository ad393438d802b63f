"""Bounded, ordered concurrency: order kept, in-flight work bounded, errors surfaced."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest
from click.testing import CliRunner

from fhir_tailor.cli import main
from fhir_tailor.concurrency import EventLoop, done, in_order, together

RECORDED = re.compile(r'"recorded":\s*"[^"]+"')


@pytest.fixture
def loop() -> Iterator[EventLoop]:
    running = EventLoop()
    yield running
    running.close()


def test_results_come_in_input_order_whatever_finishes_first(loop: EventLoop) -> None:
    async def slow_for_small(n: int) -> int:
        await asyncio.sleep(0.01 * (5 - n % 5))
        return n * n

    results = in_order(lambda n: loop.submit(slow_for_small(n)), range(20), window=8)
    assert [(n, f.result()) for n, f in results] == [(n, n * n) for n in range(20)]


def test_the_producer_never_runs_more_than_the_window_ahead(loop: EventLoop) -> None:
    produced = 0
    consumed = 0
    ahead: list[int] = []

    def items() -> Iterator[int]:
        nonlocal produced
        for n in range(50):
            produced += 1
            ahead.append(produced - consumed)
            yield n

    async def work(n: int) -> int:
        await asyncio.sleep(0.001)
        return n

    for _ in in_order(lambda n: loop.submit(work(n)), items(), window=5):
        consumed += 1
    assert max(ahead) == 5  # the window is filled, never exceeded


def test_work_overlaps_up_to_the_window(loop: EventLoop) -> None:
    running = 0
    peak = 0

    async def work(n: int) -> int:
        nonlocal running, peak
        running += 1  # all coroutines run on the one loop thread: no lock needed
        peak = max(peak, running)
        await asyncio.sleep(0.02)
        running -= 1
        return n

    list(in_order(lambda n: loop.submit(work(n)), range(24), window=6))
    assert 2 < peak <= 6


def test_an_error_belongs_to_its_item_and_the_others_go_on(loop: EventLoop) -> None:
    async def fail_on_three(n: int) -> int:
        if n == 3:
            raise ValueError("three")
        return n

    outcomes = {}
    for n, future in in_order(lambda n: loop.submit(fail_on_three(n)), range(10), window=4):
        outcomes[n] = future.exception() or future.result()
    assert [n for n, o in outcomes.items() if isinstance(o, ValueError)] == [3]
    assert [o for o in outcomes.values() if not isinstance(o, ValueError)] == [
        0,
        1,
        2,
        4,
        5,
        6,
        7,
        8,
        9,
    ]


def test_a_window_of_one_finishes_each_item_before_taking_the_next() -> None:
    taken: list[int] = []

    def start(n: int) -> Future[int]:
        taken.append(n)
        return done(n)

    for n, _ in in_order(start, range(4), window=1):
        assert taken[-1] == n


def test_the_loop_refuses_to_wait_on_itself(loop: EventLoop) -> None:
    async def nested() -> int:
        return loop.call(asyncio.sleep(0, 1))

    with pytest.raises(RuntimeError, match="inside the loop"):
        loop.call(nested())


@pytest.mark.parametrize("out_format", ["bundles", "ndjson"])
def test_concurrent_sync_writes_the_same_files(tmp_path: Path, out_format: str) -> None:
    def sync(concurrency: int) -> dict[str, str]:
        out = tmp_path / f"c{concurrency}"
        result = CliRunner().invoke(
            main,
            [
                "--as-of",
                "2026-11-15",
                "sync",
                "--out",
                str(out),
                "--out-format",
                out_format,
                "--concurrency",
                str(concurrency),
            ],
        )
        assert result.exit_code == 0, result.output
        # Only the Provenance's recording time may differ between two runs.
        return {
            p.name: RECORDED.sub('"recorded": "T"', p.read_text()) for p in sorted(out.iterdir())
        }

    one, eight = sync(1), sync(8)
    assert len(one) > 3 and one == eight


def test_closing_the_loop_cancels_work_still_in_flight() -> None:
    loop = EventLoop()
    unwound: list[str] = []

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            unwound.append("cleaned up")

    future = loop.submit(forever())
    loop.close()
    assert unwound == ["cleaned up"]
    assert future.cancelled()
    loop.close()  # idempotent


def test_together_runs_the_coroutines_at_once_and_answers_in_their_order() -> None:
    running = 0
    peak = 0

    async def work(n: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01 * (4 - n))  # the last finishes first
        running -= 1
        return n * 10

    assert asyncio.run(together([work(n) for n in range(4)])) == [0, 10, 20, 30]
    assert peak == 4
    assert asyncio.run(together([])) == []


def test_together_stops_the_others_at_the_first_failure() -> None:
    finished: list[str] = []

    async def slow() -> str:
        await asyncio.sleep(3600)
        finished.append("slow")
        return "slow"

    async def quick() -> str:
        return "quick"

    async def failing() -> str:
        await asyncio.sleep(0.01)
        raise ValueError("refused")

    answers = asyncio.run(asyncio.wait_for(together([slow(), quick(), failing()]), 5))
    cancelled, first, failure = answers
    assert isinstance(cancelled, asyncio.CancelledError) and finished == []
    assert first == "quick"
    assert isinstance(failure, ValueError) and str(failure) == "refused"


def test_cancelling_together_cancels_what_it_runs(loop: EventLoop) -> None:
    unwound: list[int] = []
    started = threading.Semaphore(0)

    async def forever(n: int) -> None:
        started.release()
        try:
            await asyncio.sleep(3600)
        finally:
            unwound.append(n)

    future = loop.submit(together([forever(1), forever(2)]))
    assert started.acquire(timeout=5) and started.acquire(timeout=5)
    loop.close()
    assert future.cancelled()
    assert sorted(unwound) == [1, 2]
