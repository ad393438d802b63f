"""Sources: where patient data is read from. Each yields :class:`~fhir_tailor.record.PatientRecord`.

- :class:`~fhir_tailor.sources.files.FileSource`: ``--input``, a file or a folder read with its
  subfolders, Bundles (``*.json``) and NDJSON (``*.ndjson``) alike;
- :class:`~fhir_tailor.sources.files.BundleSource`: a FHIR Bundle JSON file or a folder of them;
- :class:`~fhir_tailor.sources.files.NdjsonSource`: a folder of Bulk Data NDJSON files;
- :class:`~fhir_tailor.sources.server.ServerSource`: a FHIR R4 server, patient by patient.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from ..record import IssueHandler, PatientRecord
from .files import BundleSource, FileSource, NdjsonSource


class Source(Protocol):
    """Anything that streams patient records and reports what it could not read."""

    def records(self, on_issue: IssueHandler) -> Iterator[PatientRecord]: ...


def file_source(path: Path, patient_ids: tuple[str, ...] = ()) -> FileSource:
    """The source for ``--input``: ``path`` read whole, limited to ``patient_ids`` if given."""
    return FileSource(path, patient_ids)


__all__ = ["BundleSource", "FileSource", "NdjsonSource", "Source", "file_source"]
