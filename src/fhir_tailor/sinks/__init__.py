"""Sinks: where a patient's plan resources are written.

- :class:`~fhir_tailor.sinks.server.ServerSink`: back to a FHIR server, one transaction per
  patient, idempotent and never overwriting a clinician's edits;
- :class:`~fhir_tailor.sinks.files.FolderSink`: a folder of transaction Bundles or NDJSON;
- :class:`~fhir_tailor.sinks.files.StdoutSink`: standard output, as NDJSON or a readable summary.
"""

from __future__ import annotations

from typing import Protocol

from ..plan import Plan
from ..report import PatientOutcome
from ..resources import PlanResources


class Sink(Protocol):
    def write(self, plan: Plan, resources: PlanResources) -> PatientOutcome: ...

    def close(self) -> None: ...


def thread_safe(sink: Sink) -> bool:
    """Whether ``write`` may run on several threads at once.

    Only a server sink that writes (not a dry run printing diffs) is: each patient is its own
    transaction. File and stdout sinks share handles and are written one patient at a time.
    """
    return bool(getattr(sink, "concurrent_writes", False))


__all__ = ["Sink", "thread_safe"]
