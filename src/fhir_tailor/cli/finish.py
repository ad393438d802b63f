"""How a run over patients ends: its report written, summarized on stderr, and the exit code
that tells the truth about it."""

from __future__ import annotations

import sys
from pathlib import Path

from ..logs import notice
from ..report import RunReport
from .exits import EXIT_CANNOT_START, EXIT_INCOMPLETE, EXIT_PARTIAL_FAILURE, EXIT_STOPPED
from .not_found import exit_if_missing


def finish(report: RunReport, report_path: Path | None, stopped: str | None = None) -> None:
    """Write the report, summarize it on stderr and exit with the run's status: ``stopped``
    says why a run ended early: part-way (exit 4; with --state the same command resumes it),
    or before any patient (exit 3, as for a server refusing us at the start)."""
    if report_path is not None:
        report.write(report_path)
    if stopped is not None:
        notice(f"error: {stopped}", error=True)
        notice(f"stopped after {report.summary()}", error=True)
        sys.exit(EXIT_STOPPED if report.patients else EXIT_CANNOT_START)
    notice(report.summary())
    for issue in report.unread_inputs:  # each one: a whole file or listing went unread
        notice(f"  unreadable: {issue}")
    skipped = [i for i in report.read_issues if not i.unread_input and not i.not_found]
    for issue in skipped[:20]:
        notice(f"  skipped: {issue}")
    if len(skipped) > 20:
        notice(f"  ... and {len(skipped) - 20} more (see --report)")
    for outcome in report.patients:
        # A deceased patient's line only when something was, or was not, done to a stored plan;
        # none for a patient not found, named once by exit_if_missing.
        if outcome.outcome in ("failed", "skipped-edited") or (
            outcome.outcome == "skipped-deceased" and outcome.detail
        ):
            failed = outcome.outcome == "failed"
            notice(f"  {outcome.outcome}: {outcome.patient}: {outcome.detail}", error=failed)
    exit_if_missing(report.read_issues)
    if report.failed:
        sys.exit(EXIT_PARTIAL_FAILURE)
    if report.incomplete:
        sys.exit(EXIT_INCOMPLETE)
