"""File sources: FHIR Bundle JSON files and Bulk Data NDJSON folders."""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..fhirdata import Resource, load_json
from ..record import IssueHandler, Located, PatientRecord, ReadIssue, group_by_patient

#: Input bytes per grouping bucket: larger inputs are spilled to temporary bucket files, so peak
#: memory is about ten times this (parsed JSON), whatever the population size.
BUCKET_BYTES = 16 * 1024 * 1024
#: Python's JSON reader recurses per nesting level and gives up near the interpreter's limit.
TOO_DEEP = "invalid JSON: nested too deeply (over about 1000 levels)"


def _bucket_count(paths: list[Path]) -> int:
    total = sum(p.stat().st_size for p in paths)
    return max(1, -(-total // BUCKET_BYTES))


@dataclass(frozen=True, slots=True)
class NdjsonSource:
    """A folder of Bulk Data ``$export`` output: ``Patient.ndjson``, ``Condition.ndjson``, ...

    Files are read line by line; a line that is not a JSON object is reported with its file and
    line number and skipped. Any ``*.ndjson`` name works, so an export that splits a type
    into ``Observation.1.ndjson`` and ``Observation.2.ndjson`` reads as one; ``only`` limits
    the source to the files one export wrote, whatever else the folder holds.
    """

    folder: Path
    only: tuple[Path, ...] = ()

    def files(self) -> list[Path]:
        return sorted(self.only) if self.only else sorted(self.folder.glob("*.ndjson"))

    def records(self, on_issue: IssueHandler) -> Iterator[PatientRecord]:
        paths = self.files()
        return group_by_patient(
            self._lines(paths, on_issue), on_issue, buckets=_bucket_count(paths)
        )

    @staticmethod
    def _lines(paths: list[Path], on_issue: IssueHandler) -> Iterator[Located]:
        for path in paths:
            with path.open("rb") as handle:
                for number, line in enumerate(handle, start=1):
                    read = read_line(line, path.name, number)
                    if isinstance(read, ReadIssue):
                        on_issue(read)
                    elif read is not None:
                        yield read


def read_line(line: bytes, name: str, number: int) -> Located | ReadIssue | None:
    """Line ``number`` of NDJSON file ``name`` as a resource, or why it is not one (``None``
    for a blank line). Every engine reading NDJSON reads it through here, so they agree."""
    if number == 1:  # a byte order mark (Windows tools write one) is no content
        line = line.removeprefix(codecs.BOM_UTF8)
    text = line.rstrip(b"\r\n")
    if not text.strip():
        return None
    location = f"{name}:{number}"
    try:
        return Located(load_json(text), location, text)
    except json.JSONDecodeError as exc:
        return ReadIssue(location, f"invalid JSON: {exc.msg} at column {exc.colno}")
    except RecursionError:
        return ReadIssue(location, TOO_DEEP)


@dataclass(frozen=True, slots=True)
class BundleSource:
    """A FHIR Bundle JSON file, or a folder of them (``*.json``, read in name order).

    Any Bundle type is read (transaction, collection, searchset, ...). ``urn:uuid`` references
    between entries are resolved through the entries' ``fullUrl`` so a transaction written for
    a server reads the same as one with server-assigned ids.
    """

    path: Path

    def files(self) -> list[Path]:
        return sorted(self.path.glob("*.json")) if self.path.is_dir() else [self.path]

    def records(self, on_issue: IssueHandler) -> Iterator[PatientRecord]:
        paths = self.files()
        return group_by_patient(
            self._entries(paths, on_issue), on_issue, buckets=_bucket_count(paths)
        )

    @staticmethod
    def _entries(paths: list[Path], on_issue: IssueHandler) -> Iterator[Located]:
        for path in paths:
            try:
                bundle = json.loads(path.read_text(encoding="utf-8-sig", errors="replace"))
            except json.JSONDecodeError as exc:
                on_issue(ReadIssue(path.name, f"invalid JSON: {exc.msg} at line {exc.lineno}"))
                continue
            except RecursionError:
                on_issue(ReadIssue(path.name, TOO_DEEP))
                continue
            if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
                on_issue(ReadIssue(path.name, "field resourceType: not a Bundle"))
                continue
            entries = bundle.get("entry")
            if not isinstance(entries, list):
                if entries is not None:
                    on_issue(ReadIssue(path.name, "field entry: not a list", "Bundle"))
                continue
            yield from _resolved_entries(entries, path.name, on_issue)


def _resolved_entries(
    entries: list[object], name: str, on_issue: IssueHandler
) -> Iterator[Located]:
    """The entries' resources, with ``urn:uuid`` ids and subject references made relative."""
    local_ids: dict[str, str] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        resource, full_url = entry.get("resource"), entry.get("fullUrl")
        if isinstance(resource, dict) and isinstance(full_url, str) and full_url.startswith("urn:"):
            rid = resource.get("id") or full_url.rsplit(":", 1)[-1]
            local_ids[full_url] = f"{resource.get('resourceType')}/{rid}"
    for index, entry in enumerate(entries):
        location = f"{name}#entry[{index}]"
        if not isinstance(entry, dict) or "resource" not in entry:
            on_issue(ReadIssue(location, "field entry.resource: missing"))
            continue
        resource = entry["resource"]
        if isinstance(resource, dict) and local_ids:
            resource = _localise(resource, entry.get("fullUrl"), local_ids)
        yield Located(resource, location)


def _localise(resource: Resource, full_url: object, local_ids: dict[str, str]) -> Resource:
    resource = dict(resource)
    if "id" not in resource and isinstance(full_url, str) and full_url in local_ids:
        resource["id"] = local_ids[full_url].split("/", 1)[1]
    for field in ("subject", "patient"):
        ref = resource.get(field)
        if isinstance(ref, dict) and ref.get("reference") in local_ids:
            resource[field] = {**ref, "reference": local_ids[ref["reference"]]}
    return resource
