"""Patient records: one patient and the resources about it, grouped from any source.

Every source (server, Bundle files, Bulk NDJSON) ends in the same shape, a stream of
:class:`PatientRecord`. File sources do not arrive grouped by patient, so
:func:`group_by_patient` groups a resource stream without holding a population in memory:
small inputs are grouped in memory, larger ones are first spilled to temporary bucket files
by a stable hash of the patient id, then grouped one bucket at a time. What a run cannot use
(:data:`RELEVANT`) is attributed and checked like the rest, but left out of the records.
"""

from __future__ import annotations

import json
import tempfile
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import orjson

from .fhirdata import Resource, is_fhir_id, is_resource_type, load_json, subject_patient_id

#: Resource types that carry patient data we map; other valid types are passed over.
USED_TYPES = frozenset(
    {
        "Patient",
        "Condition",
        "Observation",
        "QuestionnaireResponse",
        "Encounter",
        "MedicationRequest",
        "ServiceRequest",
    }
)


@dataclass(frozen=True, slots=True)
class ReadIssue:
    """A resource (or line, or file) that could not be used, and why. Never holds PHI."""

    location: str
    reason: str
    resource_type: str | None = None
    resource_id: str | None = None
    #: The id of a patient this issue left unread (its data could not be fetched at all):
    #: that patient's outcome is a failure, not a silent skip, so the run is not complete.
    unread_patient: str | None = None
    #: The patient asked for (``unread_patient``) is not in the source at all, as opposed to
    #: a source that failed to give it: callers about one patient say "not found".
    not_found: bool = False
    #: A whole input was left unread (a file that is not FHIR, a listing search that failed):
    #: patients it held may be missing from the run, so the run is not complete either.
    unread_input: bool = False

    def __str__(self) -> str:
        what = f"{self.resource_type or '?'}/{self.resource_id or '?'}"
        return f"{self.location}: {what}: {self.reason}"


IssueHandler = Callable[[ReadIssue], None]

#: Whether a resource can change what a run makes of its patient (the run's
#: :func:`~fhir_tailor.profile.bears_on`), while one is set (:func:`relevant_only`). Grouping
#: attributes and checks every resource as before (problems, duplicates and strays are
#: reported), but one it answers no for is spilled as its header alone, not parsed again, and
#: left out of its patient's record. The run's worker processes (:mod:`fhir_tailor.workers`)
#: get it when they start.
RELEVANT: ContextVar[Callable[[Resource], bool] | None] = ContextVar("relevant", default=None)


@contextmanager
def relevant_only(relevant: Callable[[Resource], bool]) -> Iterator[None]:
    """Records grouped in the ``with`` block leave out the resources ``relevant`` rejects."""
    token = RELEVANT.set(relevant)
    try:
        yield
    finally:
        RELEVANT.reset(token)


@dataclass(frozen=True, slots=True)
class PatientRecord:
    """A patient and the resources that reference it, in source order."""

    patient: Resource
    resources: tuple[Resource, ...] = field(default=())
    #: Resource types the source had no way to read for this patient (a server that declares
    #: no search for them): the record, and any plan made from it, lack them.
    unread_types: tuple[str, ...] = field(default=())

    @property
    def patient_id(self) -> str:
        return str(self.patient["id"])

    def of_type(self, resource_type: str) -> Iterator[Resource]:
        return (r for r in self.resources if r.get("resourceType") == resource_type)


class Located(NamedTuple):
    """A raw resource with where it came from (``file:line`` or a URL path). A named tuple: one
    is made per line read, and a frozen dataclass takes twice as long to make."""

    resource: object
    location: str
    #: The resource's JSON text as read (a file source's line), kept so that spilling it to
    #: a bucket file needs no second encoding; empty when the resource was not read as text.
    raw: bytes = b""


def check_resource(raw: object) -> tuple[str | None, str | None, str | None]:
    """Classify a raw resource: ``(resource_type, patient_id, problem)``.

    ``problem`` names the field at fault (e.g. ``field subject: missing``) when the resource
    cannot be attributed to a patient; a valid resource of a type we do not use comes back with
    ``patient_id`` None and no problem, to be passed over silently.
    """
    if not isinstance(raw, dict):
        return None, None, f"not a JSON object ({type(raw).__name__})"
    rtype = raw.get("resourceType")
    if not isinstance(rtype, str) or not rtype:
        return None, None, "field resourceType: missing"
    if not is_resource_type(rtype):
        return rtype, None, f"field resourceType: unknown type {rtype[:40]!r}"
    if rtype not in USED_TYPES:
        return rtype, None, None
    rid = raw.get("id")
    if not isinstance(rid, str) or not rid:
        return rtype, None, "field id: missing"
    if not is_fhir_id(rid):
        return rtype, None, "field id: not a valid FHIR id (1-64 of A-Z a-z 0-9 - .)"
    pid = subject_patient_id(raw)
    if pid is None:
        field_name = "id" if rtype == "Patient" else "subject"
        return rtype, None, f"field {field_name}: missing or not a Patient reference"
    return rtype, pid, None


def group_by_patient(
    items: Iterable[Located],
    on_issue: IssueHandler,
    *,
    buckets: int = 1,
) -> Iterator[PatientRecord]:
    """Group located resources into records, reporting what cannot be attributed.

    With ``buckets`` > 1, resources are spilled to that many temporary files first, as their
    JSON text with a small header (patient, location, type, id), so memory holds one bucket's
    text at a time and a resource is parsed again only when its patient's record is built.
    Records come out sorted by patient id within each bucket, so the order is the same on
    every run.
    """
    if buckets <= 1:
        yield from _group(_attributed(items, on_issue), on_issue, _as_resource)
        return
    with tempfile.TemporaryDirectory(prefix="fhir-tailor-") as tmp:
        paths = bucket_paths(Path(tmp), buckets)
        spill(items, on_issue, paths)
        for path in paths:
            yield from group_bucket([path], on_issue)


#: Patients whose bucket :func:`spill` remembers at most (then it starts over).
MAX_REMEMBERED_PATIENTS = 1024


def bucket_paths(folder: Path, buckets: int) -> list[Path]:
    """The files of ``buckets`` buckets in ``folder``, for :func:`spill`."""
    return [folder / f"bucket-{n}.ndjson" for n in range(buckets)]


def spill(items: Iterable[Located], on_issue: IssueHandler, paths: list[Path]) -> None:
    """Attribute ``items`` to their patients and write each to its patient's bucket, the file of
    ``paths`` a stable hash of the patient id picks (the same in every process: worker
    processes spill parts of one input, :mod:`fhir_tailor.workers`)."""
    buckets = len(paths)
    files = [p.open("wb") for p in paths]
    bucket_of: dict[str, int] = {}  # a patient's resources come in runs: hashed once a run
    try:
        for item in _attributed(items, on_issue):
            header = orjson.dumps([item.pid, item.location, item.rtype, item.rid])
            if item.payload is None:  # not relevant: only what grouping reports it by
                text = b""
            else:
                # json, not orjson: it writes back exactly what it read (NaN, big integers).
                text = item.raw or json.dumps(_as_resource(item.payload)).encode()
            bucket = bucket_of.get(item.pid)
            if bucket is None:
                if len(bucket_of) >= MAX_REMEMBERED_PATIENTS:
                    bucket_of.clear()
                bucket = bucket_of[item.pid] = zlib.crc32(item.pid.encode()) % buckets
            files[bucket].write(header + b"\t" + text + b"\n")
    finally:
        for handle in files:
            handle.close()


def group_bucket(paths: Iterable[Path], on_issue: IssueHandler) -> Iterator[PatientRecord]:
    """The records of one bucket spilled to ``paths`` (read one after the other, as one file),
    sorted by patient id."""
    return _group((item for path in paths for item in _read_bucket(path)), on_issue, _parse)


class _Attributed(NamedTuple):
    """A resource attributed to a patient; ``payload`` is the resource or its JSON text, or
    ``None`` for one left out of the record (:data:`RELEVANT`). A named tuple: one is made per
    resource read and again per resource grouped, and a frozen dataclass takes four times as
    long to make."""

    pid: str
    rtype: str
    rid: str
    location: str
    payload: Resource | bytes | None
    raw: bytes = b""


def _attributed(items: Iterable[Located], on_issue: IssueHandler) -> Iterator[_Attributed]:
    relevant = RELEVANT.get()
    for item in items:
        rtype, pid, problem = check_resource(item.resource)
        if problem is not None:
            rid = item.resource.get("id") if isinstance(item.resource, dict) else None
            # An invalid id (100k characters, control or bidi characters) is not echoed.
            on_issue(ReadIssue(item.location, problem, rtype, rid if is_fhir_id(rid) else None))
        elif pid is not None and rtype is not None and isinstance(item.resource, dict):
            rid = str(item.resource["id"])
            kept = relevant is None or rtype == "Patient" or relevant(item.resource)
            payload = item.resource if kept else None
            yield _Attributed(pid, rtype, rid, item.location, payload, item.raw)


def _read_bucket(path: Path) -> Iterator[_Attributed]:
    with path.open("rb") as handle:
        for line in handle:
            header, text = line.rstrip(b"\n").split(b"\t", 1)
            pid, location, rtype, rid = orjson.loads(header)
            yield _Attributed(pid, rtype, rid, location, text or None)


def _as_resource(payload: Resource | bytes | None) -> Resource:
    assert isinstance(payload, dict)
    return payload


def _parse(payload: Resource | bytes | None) -> Resource:
    resource = load_json(payload) if isinstance(payload, bytes) else payload
    assert isinstance(resource, dict)
    return resource


def _group(
    attributed: Iterable[_Attributed],
    on_issue: IssueHandler,
    load: Callable[[Resource | bytes | None], Resource],
) -> Iterator[PatientRecord]:
    patients: dict[str, _Attributed] = {}
    others: defaultdict[str, list[_Attributed]] = defaultdict(list)
    for item in attributed:
        if item.rtype == "Patient":
            if item.pid in patients:
                on_issue(ReadIssue(item.location, "duplicate Patient; first one kept", *_key(item)))
            else:
                patients[item.pid] = item
        else:
            others[item.pid].append(item)
    for pid in sorted(others.keys() - patients.keys()):
        for item in others[pid]:
            on_issue(
                ReadIssue(
                    item.location,
                    f"field subject: references Patient/{pid}, which is not in the input",
                    *_key(item),
                )
            )
    for pid in sorted(patients):
        kept = _dedupe(others.get(pid, ()), on_issue)
        resources = tuple(load(i.payload) for i in kept if i.payload is not None)
        yield PatientRecord(load(patients[pid].payload), resources)


def _key(item: _Attributed) -> tuple[str, str]:
    return item.rtype, item.rid


def _dedupe(items: Iterable[_Attributed], on_issue: IssueHandler) -> Iterator[_Attributed]:
    seen: set[tuple[str, str]] = set()
    for item in items:
        key = _key(item)
        if key in seen:
            on_issue(ReadIssue(item.location, "duplicate resource; first one kept", *key))
            continue
        seen.add(key)
        yield item
