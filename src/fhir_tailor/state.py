"""Run state for resumable and incremental syncs (``sync --state FILE``).

A scheduled job may be killed at any point (a deploy, an OOM, a node drained). The state file
lets the same command, run again, carry on instead of starting over:

- ``FILE`` (JSON, replaced atomically) holds the *watermark* (when the last complete run
  started: the ``_since`` of the next ``--since auto`` run) and the run in progress: which
  selection it covers, when it started and its resolved ``_since``;
- ``FILE.done`` is an append-only journal, one patient id per line, written as each patient is
  finished, so a kill loses at most the patient being written.

Correctness does not rest on the journal: writes are idempotent (a patient whose write landed
but was not yet journaled comes out *unchanged* on resume). The journal saves the rework.
A run that ends with failed patients (a search for one of them still failing after its retries
included) or with an input left unread (a changed-since search that failed) stays in progress,
so the next run retries only those and the ones never reached, and the watermark does not move
past data that was not synced (:attr:`~fhir_tailor.report.RunReport.failed`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from .errors import FhirTailorError

FORMAT = 1


class StateError(FhirTailorError):
    """The state file cannot be read or does not belong to this kind of run."""


@dataclass(slots=True)
class RunState:
    path: Path
    watermark: datetime | None = None
    selection: str | None = None
    started: datetime | None = None
    since: datetime | None = None
    done: set[str] = field(default_factory=set)
    bulk_job: dict[str, Any] = field(default_factory=dict)
    _journal: TextIO | None = None

    @classmethod
    def load(cls, path: Path) -> RunState:
        """The state in ``path`` (a missing file is a first run)."""
        state = cls(path)
        if not path.exists():
            return state
        try:
            data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != FORMAT:
                raise StateError(f"{path}: unknown state format {data.get('format')!r}")
            state.watermark = _time(data.get("watermark"))
            run = data.get("run") or {}
            state.selection = run.get("selection")
            state.started = _time(run.get("started"))
            state.since = _time(run.get("since"))
            state.bulk_job = dict(run.get("bulk") or {})
        except (OSError, ValueError, AttributeError) as exc:
            raise StateError(f"{path}: unreadable state file: {exc}") from exc
        if state.selection is not None and state.journal_path.exists():
            lines = state.journal_path.read_text(encoding="utf-8").splitlines()
            state.done = {line for line in lines if line}
        return state

    @property
    def journal_path(self) -> Path:
        return self.path.with_name(self.path.name + ".done")

    @property
    def resuming(self) -> bool:
        return self.selection is not None

    def begin(self, selection: str, now: datetime, since: datetime | None) -> None:
        """Start a run, or resume the one in progress when it covers the same selection."""
        if self.selection != selection:
            self.selection, self.started, self.since = selection, now, since
            self.done = set()
            self.bulk_job = {}
            self.journal_path.unlink(missing_ok=True)
            self.save()
        self._journal = self.journal_path.open("a", encoding="utf-8")

    def mark_done(self, patient_id: str) -> None:
        """Journal a finished patient (flushed at once: a kill must not lose it)."""
        self.done.add(patient_id)
        if self._journal is not None:
            self._journal.write(patient_id + "\n")
            self._journal.flush()

    def complete(self) -> None:
        """The run covered everything: move the watermark and forget the run."""
        self.close()
        self.watermark = self.started
        self.selection = self.started = self.since = None
        self.done = set()
        self.bulk_job = {}
        self.save()
        self.journal_path.unlink(missing_ok=True)

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    def save(self) -> None:
        """Write the state file atomically (a kill leaves the old or the new one, never half)."""
        run = None
        if self.selection is not None:
            run = {
                "selection": self.selection,
                "started": _iso(self.started),
                "since": _iso(self.since),
                "bulk": self.bulk_job or None,
            }
        data = {"format": FORMAT, "watermark": _iso(self.watermark), "run": run}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        with partial.open("w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, self.path)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _time(value: object) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None
