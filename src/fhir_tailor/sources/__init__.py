"""Sources: where patient data is read from. Each yields :class:`~fhir_tailor.record.PatientRecord`.

- :class:`~fhir_tailor.sources.files.BundleSource`: a FHIR Bundle JSON file or a folder of them;
- :class:`~fhir_tailor.sources.files.NdjsonSource`: a folder of Bulk Data NDJSON files;
- :class:`~fhir_tailor.sources.server.ServerSource`: a FHIR R4 server, patient by patient.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from ..record import IssueHandler, PatientRecord
from .files import BundleSource, NdjsonSource


class Source(Protocol):
    """Anything that streams patient records and reports what it could not read."""

    def records(self, on_issue: IssueHandler) -> Iterator[PatientRecord]: ...


def file_source(path: Path) -> Source:
    """The file source for a path: NDJSON if the folder holds ``*.ndjson``, else Bundles."""
    if path.is_dir() and any(path.glob("*.ndjson")):
        return NdjsonSource(path)
    return BundleSource(path)


__all__ = ["BundleSource", "NdjsonSource", "Source", "file_source"]
