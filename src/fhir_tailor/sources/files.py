"""File sources: FHIR Bundle JSON files and Bulk Data NDJSON folders, and ``--input``, which
reads either kind, in a folder and its subfolders."""

from __future__ import annotations

import codecs
import json
import os
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from ..errors import NoPatientsError, PatientNotFoundError
from ..fhirdata import Resource, load_json
from ..record import IssueHandler, Located, PatientRecord, ReadIssue, group_by_patient

#: Input bytes per grouping bucket: larger inputs are spilled to temporary bucket files, so peak
#: memory is about ten times this (parsed JSON), whatever the population size.
BUCKET_BYTES = 16 * 1024 * 1024
#: Python's JSON reader recurses per nesting level and gives up near the interpreter's limit.
TOO_DEEP = "invalid JSON: nested too deeply (over about 1000 levels)"
JSON_KINDS: dict[type, str] = {
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


#: Bytes read at a time when counting the lines of an NDJSON file to cut it into parts.
SCAN_BYTES = 1024 * 1024


def _bucket_count(paths: list[Path]) -> int:
    total = sum(p.stat().st_size for p in paths)
    return max(1, -(-total // BUCKET_BYTES))


@dataclass(slots=True)
class Tally:
    """Lines of an NDJSON file read as FHIR resources, and lines that were not: a file with
    only the second kind is not FHIR input, and is reported as an input left unread."""

    fhir: int = 0
    unreadable: int = 0

    def add(self, other: Tally) -> None:
        self.fhir += other.fhir
        self.unreadable += other.unreadable


@dataclass(frozen=True, slots=True)
class Part:
    """An input file, or some of its lines: what one reader reads.

    A Bundle file is read whole. An NDJSON file may be cut into parts between lines (bytes
    ``start`` to ``end``, whose first line is line ``first_line`` of the file), so that worker
    processes (:mod:`fhir_tailor.workers`) read a large file together, naming each line as a
    reader of the whole file would. ``last`` marks the file's last part: once it is read, the
    whole file's :class:`Tally` says whether it held FHIR at all (:meth:`judged`).
    """

    path: Path
    name: str
    ndjson: bool
    start: int = 0
    end: int | None = None
    first_line: int = 1
    last: bool = True

    def items(self, on_issue: IssueHandler, tally: Tally) -> Iterator[Located]:
        """The resources of this part, its lines counted in ``tally``."""
        if self.ndjson:
            return _ndjson_lines(self, on_issue, tally)
        return _bundle_items(self.path, self.name, on_issue)

    def judged(self, tally: Tally) -> ReadIssue | None:
        """What the file's ``tally`` (all its parts) says of it: an NDJSON file none of whose
        lines is a FHIR resource is an input left unread."""
        if not (self.ndjson and tally.unreadable and not tally.fhir):
            return None
        reason = (
            f"not FHIR NDJSON: none of its {tally.unreadable} lines is a JSON object with a "
            "resourceType"
        )
        return ReadIssue(self.name, reason, unread_input=True)


def read_parts(parts: list[Part], on_issue: IssueHandler) -> Iterator[Located]:
    """The resources of ``parts`` in order, each file judged after its last part."""
    tally = Tally()
    for part in parts:
        yield from part.items(on_issue, tally)
        if part.last:
            issue = part.judged(tally)
            if issue is not None:
                on_issue(issue)
            tally = Tally()


def pieces(parts: list[Part], size: int) -> Iterator[tuple[Part, ...]]:
    """Whole-file ``parts`` (in input order) as consecutive pieces of about ``size`` bytes,
    in order: NDJSON files cut between lines where a piece is full, Bundles whole."""
    piece: list[Part] = []
    filled = 0
    for whole in parts:
        for part, length in _cut(whole, size - filled, size):
            piece.append(part)
            filled += length
            if filled >= size:
                yield tuple(piece)
                piece, filled = [], 0
    if piece:
        yield tuple(piece)


def _cut(whole: Part, first: int, size: int) -> Iterator[tuple[Part, int]]:
    """``whole`` as parts with their lengths: the first of at least ``first`` bytes, the
    others of at least ``size``, each ending with a line (its lines are counted to number the
    next part's). A file that cannot be read is one part, which reports it when read."""
    try:
        total = whole.path.stat().st_size
        handle = whole.path.open("rb") if whole.ndjson and total > first else None
    except OSError:
        yield whole, 0
        return
    if handle is None:
        yield whole, total
        return
    start, line, want = 0, 1, first
    offset = lines = 0  # bytes scanned, and the newlines in them
    with handle:
        while block := handle.read(SCAN_BYTES):
            at = 0  # the block's bytes before this are counted in lines
            while start + want - 1 < offset + len(block):
                newline = block.find(b"\n", max(start + want - 1 - offset, at))
                if newline < 0:
                    break
                lines += block.count(b"\n", at, newline + 1)
                at = newline + 1
                end = offset + at
                if end >= total:
                    break
                yield replace(whole, start=start, end=end, first_line=line, last=False), end - start
                start, line, want = end, lines + 1, size
            lines += block.count(b"\n", at)
            offset += len(block)
    yield replace(whole, start=start, first_line=line), total - start


class Grouper(Protocol):
    """Groups the resources of ``parts`` into records, as :func:`group_by_patient` does with
    ``buckets`` buckets, in the same order and with the same issues; ``only`` (when given) are
    the patients whose records the caller will use, the others' records are only counted."""

    def __call__(
        self, parts: list[Part], on_issue: IssueHandler, buckets: int, only: frozenset[str]
    ) -> Iterator[PatientRecord]: ...


#: How an input of more than one bucket is grouped: in this process (``None``), or by the
#: worker processes of the run going on (:mod:`fhir_tailor.workers` sets it for its run).
GROUPER: ContextVar[Grouper | None] = ContextVar("fhir_tailor_grouper", default=None)


def grouped(
    parts: list[Part], on_issue: IssueHandler, only: tuple[str, ...] = ()
) -> Iterator[PatientRecord]:
    """The records of ``parts``, grouped in this process or by the run's worker processes, which
    process only the patients ``only`` names if it names any."""
    buckets = _bucket_count([part.path for part in parts])
    grouper = GROUPER.get()
    if grouper is not None and buckets > 1:
        return grouper(parts, on_issue, buckets, frozenset(only))
    return group_by_patient(read_parts(parts, on_issue), on_issue, buckets=buckets)


@dataclass(frozen=True, slots=True)
class FileSource:
    """What ``--input`` names: one file, or a folder and its subfolders.

    A folder is read with its subfolders, each folder by what it holds: its ``*.ndjson`` files
    as Bulk Data NDJSON if it has any (its ``*.json`` files are then an export's companions,
    such as a manifest, and are not read), else its ``*.json`` files as FHIR Bundles. Other
    files, hidden files and folders (``.git``) are passed over, and symbolic links to folders
    are not followed. So ``fixtures/``, holding ``bundles/`` and ``ndjson/`` of the same
    patients, reads as one input (the duplicates reported). A single file is read as NDJSON if
    named ``*.ndjson``, else as a Bundle.

    Input that says nothing is an error, never an empty success: a file that is not FHIR is
    reported as an unread input (the run is not complete), and an input with no patient at all
    raises :class:`~fhir_tailor.errors.NoPatientsError`. ``patient_ids`` limits the records to
    those patients; one that is not in the input is reported as not found.
    """

    path: Path
    patient_ids: tuple[str, ...] = ()

    def files(self) -> list[Path]:
        if not self.path.is_dir():
            return [self.path]
        found: list[Path] = []
        for folder, subfolders, names in os.walk(self.path):
            subfolders[:] = [name for name in subfolders if not name.startswith(".")]
            by_suffix: dict[str, list[str]] = {}
            for name in names:
                if not name.startswith("."):
                    by_suffix.setdefault(Path(name).suffix.lower(), []).append(name)
            # A folder of NDJSON is a Bulk export: its .json files are companions, not input.
            chosen = by_suffix.get(".ndjson") or by_suffix.get(".json") or []
            found += [Path(folder) / name for name in chosen]
        return sorted(found, key=lambda path: path.relative_to(self.path).parts)

    def records(self, on_issue: IssueHandler) -> Iterator[PatientRecord]:
        paths = self.files()
        if not paths:
            raise NoPatientsError(
                f"no patients in {self.path}: no .json or .ndjson files in it or its subfolders"
            )
        unread: list[ReadIssue] = []

        def noted(issue: ReadIssue) -> None:
            if issue.unread_input:
                unread.append(issue)
            on_issue(issue)

        parts = [self._part(path) for path in paths]
        wanted = dict.fromkeys(self.patient_ids)
        read = 0
        for record in grouped(parts, noted, self.patient_ids):
            read += 1
            if not wanted or record.patient_id in wanted:
                wanted.pop(record.patient_id, None)
                yield record
        if not read:
            raise NoPatientsError(_nothing_read(self.path, len(paths), unread))
        for pid in wanted:
            missing = PatientNotFoundError(pid, "in the input")
            on_issue(ReadIssue(f"Patient/{pid}", str(missing), "Patient", pid, pid, not_found=True))

    def _part(self, path: Path) -> Part:
        name = path.relative_to(self.path).as_posix() if path != self.path else path.name
        return Part(path, name, ndjson=path.suffix.lower() == ".ndjson")


def _nothing_read(path: Path, files: int, unread: list[ReadIssue]) -> str:
    plural = "" if files == 1 else "s"
    found = f"no patients in {path}: {files} file{plural} read"
    if unread:
        return f"{found}, {len(unread)} not FHIR input (first: {unread[0]})"
    return f"{found}, no Patient resource in them"


@dataclass(frozen=True, slots=True)
class NdjsonSource:
    """A folder of Bulk Data ``$export`` output: ``Patient.ndjson``, ``Condition.ndjson``, ...

    Files are read line by line; a line that is not a JSON object is reported with its file and
    line number and skipped, and a file none of whose lines is a FHIR resource is reported as an
    unread input. Any ``*.ndjson`` name works, so an export that splits a type
    into ``Observation.1.ndjson`` and ``Observation.2.ndjson`` reads as one; ``only`` limits
    the source to the files one export wrote, whatever else the folder holds.
    """

    folder: Path
    only: tuple[Path, ...] = ()

    def files(self) -> list[Path]:
        return sorted(self.only) if self.only else sorted(self.folder.glob("*.ndjson"))

    def records(self, on_issue: IssueHandler) -> Iterator[PatientRecord]:
        parts = [Part(path, path.name, ndjson=True) for path in self.files()]
        return grouped(parts, on_issue)


def _ndjson_lines(part: Part, on_issue: IssueHandler, tally: Tally) -> Iterator[Located]:
    """The resources of NDJSON ``part``, its lines counted in ``tally``."""
    try:
        handle = part.path.open("rb")
    except OSError as exc:
        on_issue(ReadIssue(part.name, f"cannot be read: {exc.strerror}", unread_input=True))
        return
    with handle:
        handle.seek(part.start)
        left = None if part.end is None else part.end - part.start
        for number, line in enumerate(handle, start=part.first_line):
            if left is not None:
                if left <= 0:
                    break
                left -= len(line)
            read = read_line(line, part.name, number)
            if isinstance(read, ReadIssue):
                tally.unreadable += 1
                on_issue(read)
            elif read is not None:
                if isinstance(read.resource, dict) and isinstance(
                    read.resource.get("resourceType"), str
                ):
                    tally.fhir += 1
                else:
                    tally.unreadable += 1
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
    a server reads the same as one with server-assigned ids. A file that is not a Bundle is
    reported as an unread input.
    """

    path: Path

    def files(self) -> list[Path]:
        return sorted(self.path.glob("*.json")) if self.path.is_dir() else [self.path]

    def records(self, on_issue: IssueHandler) -> Iterator[PatientRecord]:
        return grouped([Part(path, path.name, ndjson=False) for path in self.files()], on_issue)


def _bundle_items(path: Path, name: str, on_issue: IssueHandler) -> Iterator[Located]:
    """The entries of Bundle file ``path`` (called ``name`` in issues); a file that holds no
    Bundle is reported as an unread input."""
    problem: str | None
    try:
        bundle = json.loads(path.read_text(encoding="utf-8-sig", errors="replace"))
    except OSError as exc:
        problem = f"cannot be read: {exc.strerror}"
    except json.JSONDecodeError as exc:
        problem = f"invalid JSON: {exc.msg} at line {exc.lineno}"
    except RecursionError:
        problem = TOO_DEEP
    else:
        problem = _not_a_bundle(bundle)
    if problem is not None:
        on_issue(ReadIssue(name, problem, unread_input=True))
        return
    entries = bundle.get("entry")
    if entries is None:  # an empty Bundle
        return
    if not isinstance(entries, list):
        on_issue(ReadIssue(name, "field entry: not a list", "Bundle", unread_input=True))
        return
    yield from _resolved_entries(entries, name, on_issue)


def _not_a_bundle(content: object) -> str | None:
    """Why parsed JSON is not a FHIR Bundle, naming the field; ``None`` if it is one."""
    if not isinstance(content, dict):
        kind = JSON_KINDS.get(type(content), type(content).__name__)
        return f"field resourceType: missing (the file holds a JSON {kind}, not a FHIR Bundle)"
    rtype = content.get("resourceType")
    if rtype is None:
        return "field resourceType: missing (this JSON is not FHIR)"
    if rtype != "Bundle":
        return (
            f"field resourceType: {str(rtype)[:40]!r}, not 'Bundle' (a .json input must be a "
            "Bundle; single resources go one per line in an .ndjson file)"
        )
    return None


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
