"""Bounded, ordered concurrency: order kept, in-flight work bounded, errors surfaced."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from fhir_tailor.cli import main
from fhir_tailor.concurrency import bounded_map

RECORDED = re.compile(r'"recorded":\s*"[^"]+"')


def test_results_come_in_input_order_whatever_finishes_first() -> None:
    def slow_for_small(n: int) -> int:
        time.sleep(0.02 * (5 - n % 5))
        return n * n

    assert list(bounded_map(slow_for_small, range(20), workers=4)) == [n * n for n in range(20)]


def test_the_producer_never_runs_more_than_the_window_ahead() -> None:
    produced = 0
    consumed = 0
    ahead: list[int] = []
    lock = threading.Lock()

    def items() -> Iterator[int]:
        nonlocal produced
        for n in range(50):
            with lock:
                produced += 1
                ahead.append(produced - consumed)
            yield n

    for _ in bounded_map(lambda n: time.sleep(0.001) or n, items(), workers=3, window=5):
        with lock:
            consumed += 1
    assert max(ahead) <= 6  # the window, plus the item being handed over


def test_runs_in_parallel_up_to_the_worker_count() -> None:
    running = 0
    peak = 0
    lock = threading.Lock()

    def work(n: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.02)
        with lock:
            running -= 1
        return n

    list(bounded_map(work, range(24), workers=6))
    assert 2 < peak <= 6


def test_an_error_is_raised_when_its_result_is_reached() -> None:
    def fail_on_three(n: int) -> int:
        if n == 3:
            raise ValueError("three")
        return n

    results = bounded_map(fail_on_three, range(10), workers=4)
    assert [next(results) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="three"):
        next(results)


def test_one_worker_is_a_plain_loop_on_the_calling_thread() -> None:
    threads = set(bounded_map(lambda _: threading.get_ident(), range(5), workers=1))
    assert threads == {threading.get_ident()}


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
