"""Server source: a FHIR R4 server read patient by patient with standard searches.

Per patient it reads the Patient, ``Condition?patient=ID`` and ``Observation?patient=ID`` (all
categories, so vital signs, laboratory, survey and SDOH screenings alike), then
QuestionnaireResponses (screenings kept as forms), Encounters (recent discharges),
MedicationRequests (polypharmacy) and ServiceRequests (referrals a clinician made, such as to a
nephrologist), each the first way the server's CapabilityStatement declares: a ``patient``
search, a ``subject=Patient/ID`` search, or ``Patient/ID/$everything`` limited to the types
that need it (``_type``). Only standard searches and operations are used, so it works the same
on HAPI FHIR, Epic, Cerner, Azure, Google or Medplum.

A patient is read whole or not at all: any search that still fails after the client's retries
fails the patient (reported, nothing written, the run not complete), because a plan made from
part of a record can miss what the rest would have shown. A type the server gives no way to
read is named on each record (:attr:`~fhir_tailor.record.PatientRecord.unread_types`), so
the run report says which plans were made without it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from ..client import AsyncFhirClient, FhirClient
from ..concurrency import in_order, together
from ..errors import FhirTailorError, PatientNotFoundError, ResourceNotFoundError
from ..fhirdata import Resource, subject_patient_id
from ..record import IssueHandler, PatientRecord, ReadIssue, check_resource

log = logging.getLogger("fhir_tailor.sources.server")

#: The resource types read for each patient, by their ``patient`` search parameter (assumed
#: where undeclared: a server that cannot search them by patient cannot be used at all).
PATIENT_DATA_TYPES = ("Condition", "Observation")
#: Read each the first way the server declares (``patient``, ``subject``, ``$everything``);
#: a type it offers no way to read is named on every record as unread.
OPTIONAL_DATA_TYPES = ("QuestionnaireResponse", "Encounter", "MedicationRequest", "ServiceRequest")
#: The canonical of the Patient ``$everything`` operation (FHIR R4, OperationDefinition).
EVERYTHING = "http://hl7.org/fhir/OperationDefinition/Patient-everything"
#: Where the types read by ``$everything`` come from, in issues and :func:`patient_requests`.
EVERYTHING_LOCATION = "Patient/$everything"

Way = Literal["patient", "subject", "everything"]


@dataclass(frozen=True, slots=True)
class PatientSelection:
    """Which patients a server run covers: listed ids, everyone, or changed since a time."""

    ids: tuple[str, ...] = ()
    everyone: bool = False
    since: datetime | None = None

    def __post_init__(self) -> None:
        chosen = sum((bool(self.ids), self.everyone, self.since is not None))
        if chosen != 1:
            raise ValueError("choose exactly one of: patient ids, all patients, or since")


@dataclass(frozen=True, slots=True)
class Reading:
    """How this server lets each resource type be read for one patient."""

    ways: tuple[tuple[str, Way], ...]
    #: Types the server declares no way to read per patient: each record lacks them.
    unreadable: tuple[str, ...]

    def by(self, way: Way) -> tuple[str, ...]:
        return tuple(rtype for rtype, used in self.ways if used == way)

    def types_at(self, location: str) -> tuple[str, ...]:
        """The types one of :func:`patient_requests` reads, by its location."""
        if location == EVERYTHING_LOCATION:
            return self.by("everything")
        return (location.split("?")[0],)

    def answered(self, location: str, answer: list[Resource]) -> dict[str, list[Resource]]:
        """One request's answer by type, only the types it was to read: ``$everything`` may
        ignore ``_type``, and a search may carry included resources."""
        return {
            rtype: [r for r in answer if r.get("resourceType") == rtype]
            for rtype in self.types_at(location)
        }


async def reading_of(
    aio: AsyncFhirClient, types: Sequence[str] = (*PATIENT_DATA_TYPES, *OPTIONAL_DATA_TYPES)
) -> Reading:
    """How this server lets each of ``types`` be read for one patient: the first way its
    CapabilityStatement declares (fetched only when an optional type is asked about)."""
    ways: list[tuple[str, Way]] = [(t, "patient") for t in types if t in PATIENT_DATA_TYPES]
    unreadable: list[str] = []
    optional = [t for t in types if t in OPTIONAL_DATA_TYPES]
    everything = bool(optional) and declares_everything(await aio.capabilities())
    for rtype in optional:
        if await aio.supports_search(rtype, "patient"):
            ways.append((rtype, "patient"))
        elif await aio.supports_search(rtype, "subject"):
            ways.append((rtype, "subject"))
        elif everything:
            ways.append((rtype, "everything"))
        else:
            unreadable.append(rtype)
    return Reading(tuple(ways), tuple(unreadable))


def patient_requests(
    aio: AsyncFhirClient, pid: str, reading: Reading, count: int | None
) -> dict[str, Coroutine[Any, Any, list[Resource]]]:
    """The requests that read one patient's data as ``reading`` says, by location
    (``Type?way``, or :data:`EVERYTHING_LOCATION` once for all the types read that way); each
    answer is sorted by :meth:`Reading.answered`. They do not depend on each other, so they can
    be sent together: a patient is read in one round trip (and its pages), not one per type."""
    requests = {
        f"{rtype}?{way}": aio.search_all(
            rtype, {way: pid if way == "patient" else f"Patient/{pid}"}, count=count
        )
        for rtype, way in reading.ways
        if way != "everything"
    }
    if everything := reading.by("everything"):
        requests[EVERYTHING_LOCATION] = _everything(aio, pid, everything, count)
    return requests


async def _everything(
    aio: AsyncFhirClient, pid: str, types: tuple[str, ...], count: int | None
) -> list[Resource]:
    return [r async for r in aio.everything(pid, types, count=count)]


def declares_everything(statement: Resource) -> bool:
    """Whether a CapabilityStatement declares ``Patient/[id]/$everything``: on the Patient
    resource by name (servers give it their own definition), or anywhere by its canonical."""
    for rest in _objects(statement.get("rest")):
        for resource in _objects(rest.get("resource")):
            if resource.get("type") == "Patient" and any(
                op.get("name") == "everything" or _canonical(op) == EVERYTHING
                for op in _objects(resource.get("operation"))
            ):
                return True
        if any(_canonical(op) == EVERYTHING for op in _objects(rest.get("operation"))):
            return True
    return False


def _objects(value: object) -> list[Resource]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _canonical(operation: Resource) -> str:
    return str(operation.get("definition") or "").split("|")[0]


@dataclass(slots=True)
class ServerSource:
    client: FhirClient
    selection: PatientSelection
    page_size: int = 100
    concurrency: int = 1
    reading: Reading | None = None

    async def _reading(self) -> Reading:
        """How each type is read here, decided once from the CapabilityStatement."""
        if self.reading is None:
            self.reading = await reading_of(self.client.aio)
            unreadable = self.reading.unreadable
            if unreadable:
                log.warning(
                    "server declares no patient or subject search and no Patient/$everything "
                    "for %s: each record is reported without them",
                    ", ".join(unreadable),
                )
        return self.reading

    def records(self, on_issue: IssueHandler) -> Iterator[PatientRecord]:
        """Each selected patient's record; up to twice ``concurrency`` patients are read at a
        time (the connection pool bounds the requests in flight to ``concurrency``)."""
        patients: Iterator[Resource | str]
        if self.selection.everyone:
            patients = self.client.search("Patient", count=self.page_size)
        else:
            patients = iter(self._selected_ids(on_issue))
        window = 2 * self.concurrency if self.concurrency > 1 else 1
        for _, reading in in_order(
            lambda patient: self.client.submit(self.read(patient, on_issue)), patients, window
        ):
            record = reading.result()
            if record is not None:
                yield record

    async def read(self, patient: Resource | str, on_issue: IssueHandler) -> PatientRecord | None:
        """The record of a Patient resource, or of a patient id read first."""
        if not isinstance(patient, str):
            return await self._record(patient, on_issue)
        location = f"Patient/{patient}"
        try:
            resource = await self.client.aio.read("Patient", patient)
        except ResourceNotFoundError:
            missing = PatientNotFoundError(patient, "on the server")
            issue = ReadIssue(location, str(missing), "Patient", patient, patient, not_found=True)
            on_issue(issue)
            return None
        except FhirTailorError as exc:
            on_issue(ReadIssue(location, str(exc), "Patient", patient, patient))
            return None
        return await self._record(resource, on_issue)

    def _selected_ids(self, on_issue: IssueHandler) -> list[str]:
        if self.selection.ids:
            return list(dict.fromkeys(self.selection.ids))
        assert self.selection.since is not None
        since = f"ge{self.selection.since.isoformat()}"
        changed: set[str] = set()
        reading = self.client.call(self._reading())
        for rtype in ("Patient", *(t for t, _ in reading.ways)):
            try:
                for resource in self.client.search(
                    rtype, {"_lastUpdated": since}, count=self.page_size
                ):
                    pid = subject_patient_id(resource)
                    if pid:
                        changed.add(pid)
            except FhirTailorError as exc:
                if rtype in OPTIONAL_DATA_TYPES:
                    # The patients found are still synced, but those whose only change is of
                    # this type are missed: the run is reported incomplete and so the watermark
                    # holds, for the next run to list them again.
                    issue = ReadIssue(f"{rtype}?_lastUpdated", str(exc), rtype, unread_input=True)
                    on_issue(issue)
                else:  # changed patients would be missed, and the watermark move past them
                    raise
        return sorted(changed)

    async def _record(self, patient: Resource, on_issue: IssueHandler) -> PatientRecord | None:
        _, pid, problem = check_resource(patient)
        if problem is not None or pid is None:
            on_issue(ReadIssue("Patient", problem or "unusable", "Patient", patient.get("id")))
            return None
        reading = await self._reading()
        requests = patient_requests(self.client.aio, pid, reading, self.page_size)
        answers = await together(list(requests.values()))
        found: dict[str, list[Resource]] = {}
        for location, answer in zip(requests, answers, strict=True):
            if isinstance(answer, asyncio.CancelledError):
                continue  # another search failed first and stopped this one
            if isinstance(answer, FhirTailorError):
                # Whatever failed, a plan from the rest of the record could miss what it held.
                on_issue(ReadIssue(location, str(answer), "Patient", pid, pid))
                return None
            if isinstance(answer, BaseException):
                raise answer
            found |= reading.answered(location, answer)
        resources = [
            resource
            for rtype, way in reading.ways
            for resource in self._usable(found.get(rtype, []), pid, rtype, way, on_issue)
        ]
        return PatientRecord(patient, tuple(resources), reading.unreadable)

    @staticmethod
    def _usable(
        found: list[Resource], pid: str, rtype: str, way: Way, on_issue: IssueHandler
    ) -> Iterator[Resource]:
        """The resources (of ``rtype``: :meth:`Reading.answered`) about this patient; strays
        are dropped."""
        location = EVERYTHING_LOCATION if way == "everything" else f"{rtype}?{way}"
        for resource in found:
            _, owner, problem = check_resource(resource)
            if problem is not None:
                on_issue(ReadIssue(location, problem, rtype, resource.get("id")))
            elif owner == pid:
                yield resource
