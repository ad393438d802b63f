"""Progress of a run over patients, on stderr when it is a terminal.

click's progress bar (click is a dependency already) shows the patients done out of the total,
the share and the time left; the total is counted before the run where that is cheap
(:func:`expected_patients`), otherwise the bar shows the count alone.
"""

from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import click

from ..bulk import BulkSource
from ..errors import FhirTailorError
from ..sources import FileSource, NdjsonSource
from ..sources.server import ServerSource
from .sources import SourceChoice


class Progress:
    """Counts the patients done; a bar on stderr when ``shown`` (a context manager, so the
    terminal gets its cursor and line back however the run ends)."""

    def __init__(self, total: int | None, *, shown: bool) -> None:
        self.count = 0
        self._started = time.monotonic()
        self._bar: Any = None
        if shown:
            known = total is not None
            self._bar = click.progressbar(
                # click needs a length or an iterable; a count has no length: no total shown
                iterable=None if known else itertools.count(),
                length=total,
                label="patients",
                show_pos=True,
                show_percent=known,
                item_show_func=self._rate,
                # without a total a bar would only bounce: the count and the rate say it all
                bar_template="%(label)s  [%(bar)s]  %(info)s" if known else "%(label)s  %(info)s",
                file=sys.stderr,
            )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """End the bar's line (once), so what is printed next starts on a line of its own."""
        if self._bar is not None and self.count:
            self._bar.render_finish()
        self._bar = None

    def __call__(self) -> None:
        self.count += 1
        if self._bar is not None:
            self._bar.update(1)

    def _rate(self, _item: object) -> str:
        return f"{self.count / max(time.monotonic() - self._started, 1e-9):.0f}/s"


def start_progress(choice: SourceChoice, *, quiet: bool) -> Progress:
    """The progress of a run over ``choice``: shown on a terminal unless ``--quiet``."""
    shown = sys.stderr.isatty() and not quiet
    return Progress(expected_patients(choice) if shown else None, shown=shown)


def expected_patients(choice: SourceChoice) -> int | None:
    """How many patients ``choice`` will yield, where that is known or cheap to learn: the
    ``--patient`` ids, the lines of the Patient NDJSON files, or the server's count of Patients
    (one ``_summary=count`` search); ``None`` otherwise (Bundles, which may hold any number of
    patients each, and changed-since selections)."""
    if choice.patient_ids:
        return len(set(choice.patient_ids))
    source = choice.source
    if isinstance(source, NdjsonSource | FileSource):
        files = source.files()
        if all(path.suffix.lower() == ".ndjson" for path in files):  # not with any Bundle
            return _patient_lines(files)
    if isinstance(source, BulkSource) and source.since is None:
        return _patient_lines(source.result.files)
    if isinstance(source, ServerSource):
        if source.selection.ids:
            return len(set(source.selection.ids))
        if source.selection.everyone:
            return _server_count(source)
    return None


def _patient_lines(files: list[Path]) -> int:
    """Non-blank lines of the Patient files (``Patient.ndjson``, ``Patient.1.ndjson``, ...)."""
    total = 0
    for path in files:
        if path.name.split(".", 1)[0] == "Patient":
            with path.open("rb") as handle:
                total += sum(1 for line in handle if line.strip())
    return total


def _server_count(source: ServerSource) -> int | None:
    """The server's count of Patients; a progress bar is no reason to fail, so ``None`` when
    the server cannot say."""
    try:  # a count is one page: read to the end, so the search is closed
        pages = list(source.client.search_pages("Patient", {"_summary": "count"}))
    except FhirTailorError:
        return None
    total = pages[0].get("total") if pages else None
    return total if isinstance(total, int) and total >= 0 else None
