"""Patient records: one patient and the resources about it, grouped from any source.

Every source (server, Bundle files, Bulk NDJSON) ends in the same shape, a stream of
:class:`PatientRecord`. File sources do not arrive grouped by patient, so
:func:`group_by_patient` groups a resource stream without holding a population in memory:
small inputs are grouped in memory, larger ones are first spilled to temporary bucket files
by a stable hash of the patient id, then grouped one bucket at a time.
"""

from __future__ import annotations

import json
import tempfile
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .fhirdata import Resource, is_fhir_id, is_resource_type, subject_patient_id

#: Resource types that carry patient data we map; other valid types are passed over.
USED_TYPES = frozenset(
    {
        "Patient",
        "Condition",
        "Observation",
        "QuestionnaireResponse",
        "Encounter",
        "MedicationRequest",
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

    def __str__(self) -> str:
        what = f"{self.resource_type or '?'}/{self.resource_id or '?'}"
        return f"{self.location}: {what}: {self.reason}"


IssueHandler = Callable[[ReadIssue], None]


@dataclass(frozen=True, slots=True)
class PatientRecord:
    """A patient and the resources that reference it, in source order."""

    patient: Resource
    resources: tuple[Resource, ...] = field(default=())

    @property
    def patient_id(self) -> str:
        return str(self.patient["id"])

    def of_type(self, resource_type: str) -> Iterator[Resource]:
        return (r for r in self.resources if r.get("resourceType") == resource_type)


@dataclass(frozen=True, slots=True)
class Located:
    """A raw resource with where it came from (``file:line`` or a URL path)."""

    resource: object
    location: str


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

    With ``buckets`` > 1, resources are spilled to that many temporary files first, so memory
    holds one bucket (about ``1/buckets`` of the input) at a time. Records come out sorted by
    patient id within each bucket, so the order is the same on every run.
    """
    if buckets <= 1:
        yield from _group_in_memory(_attributed(items, on_issue), on_issue)
        return
    with tempfile.TemporaryDirectory(prefix="fhir-tailor-") as tmp:
        paths = [Path(tmp) / f"bucket-{n}.ndjson" for n in range(buckets)]
        files = [p.open("w", encoding="utf-8") for p in paths]
        try:
            for pid, resource, location in _attributed(items, on_issue):
                bucket = zlib.crc32(pid.encode()) % buckets
                files[bucket].write(json.dumps([pid, location, resource]) + "\n")
        finally:
            for handle in files:
                handle.close()
        for path in paths:
            yield from _group_in_memory(_read_bucket(path), on_issue)


def _attributed(
    items: Iterable[Located], on_issue: IssueHandler
) -> Iterator[tuple[str, Resource, str]]:
    for item in items:
        rtype, pid, problem = check_resource(item.resource)
        if problem is not None:
            rid = item.resource.get("id") if isinstance(item.resource, dict) else None
            # An invalid id (100k characters, control or bidi characters) is not echoed.
            on_issue(ReadIssue(item.location, problem, rtype, rid if is_fhir_id(rid) else None))
        elif pid is not None and isinstance(item.resource, dict):
            yield pid, item.resource, item.location


def _read_bucket(path: Path) -> Iterator[tuple[str, Resource, str]]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            pid, location, resource = json.loads(line)
            yield pid, resource, location


def _group_in_memory(
    attributed: Iterable[tuple[str, Resource, str]], on_issue: IssueHandler
) -> Iterator[PatientRecord]:
    patients: dict[str, Resource] = {}
    others: defaultdict[str, list[tuple[Resource, str]]] = defaultdict(list)
    for pid, resource, location in attributed:
        if resource["resourceType"] == "Patient":
            if pid in patients:
                on_issue(ReadIssue(location, "duplicate Patient; first one kept", "Patient", pid))
            else:
                patients[pid] = resource
        else:
            others[pid].append((resource, location))
    for pid in sorted(others.keys() - patients.keys()):
        for resource, location in others[pid]:
            on_issue(
                ReadIssue(
                    location,
                    f"field subject: references Patient/{pid}, which is not in the input",
                    resource["resourceType"],
                    resource.get("id"),
                )
            )
    for pid in sorted(patients):
        yield PatientRecord(patients[pid], tuple(_dedupe(others.get(pid, ()), on_issue)))


def _dedupe(
    resources: Iterable[tuple[Resource, str]], on_issue: IssueHandler
) -> Iterator[Resource]:
    seen: set[tuple[str, str]] = set()
    for resource, location in resources:
        key = (resource["resourceType"], resource["id"])
        if key in seen:
            on_issue(ReadIssue(location, "duplicate resource; first one kept", *key))
            continue
        seen.add(key)
        yield resource
