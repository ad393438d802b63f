"""Sinks: where a patient's plan resources are written.

- :class:`~fhir_tailor.sinks.server.ServerSink`: back to a FHIR server, one transaction per
  patient, idempotent and never overwriting a clinician's edits;
- :class:`~fhir_tailor.sinks.files.FolderSink`: a folder of transaction Bundles or NDJSON;
- :class:`~fhir_tailor.sinks.files.StdoutSink`: standard output, as NDJSON or a readable summary.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Protocol, cast

from ..plan import Plan
from ..report import PatientOutcome
from ..resources import PlanResources
from ..withdrawal import Withdrawal


class Sink(Protocol):
    def write(self, plan: Plan, resources: PlanResources) -> PatientOutcome: ...

    def withdraw(self, withdrawal: Withdrawal) -> PatientOutcome:
        """A patient recorded as deceased: write nothing new; a server withdraws our draft."""
        ...

    def close(self) -> None: ...


Submit = Callable[[Plan, PlanResources], "Future[PatientOutcome]"]


def concurrent_writer(sink: Sink) -> Submit | None:
    """The sink's ``submit`` (start a write, get a future) if it writes patients concurrently.

    Only a server sink that writes (not a dry run printing diffs) does: each patient is its own
    transaction. File and stdout sinks share handles and are written one patient at a time.
    """
    if not getattr(sink, "concurrent_writes", False):
        return None
    return cast(Submit, sink.submit)  # type: ignore[attr-defined]


__all__ = ["Sink", "Submit", "concurrent_writer"]
