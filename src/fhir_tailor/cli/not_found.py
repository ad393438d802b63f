"""A patient asked for by id (``--patient``) that the source does not hold, on a server or in
the files: one behaviour for every command. Each is named once (``error: Patient/ID not found
on the server``, or ``in the input``) and the command exits 3, as for a run that could not
start, after doing what it was asked for the patients it found: the command names something
that is not there, which no rerun mends. A run's report counts such a patient as ``not-found``,
not as failed (:mod:`fhir_tailor.report`)."""

from __future__ import annotations

import sys
from collections.abc import Iterable

from ..logs import notice
from ..record import ReadIssue
from .exits import EXIT_CANNOT_START

#: A ``--patient`` is not in the source (the patients found were done).
EXIT_NOT_FOUND = EXIT_CANNOT_START


def missing(issues: Iterable[ReadIssue]) -> list[ReadIssue]:
    """The issues that say a patient asked for is not in the source."""
    return [issue for issue in issues if issue.not_found]


def exit_if_missing(issues: Iterable[ReadIssue]) -> None:
    """Name each patient asked for that is not in the source, then exit 3; nothing if none."""
    absent = missing(issues)
    for issue in absent:
        notice(f"error: {issue.reason}", error=True)
    if absent:
        sys.exit(EXIT_NOT_FOUND)
