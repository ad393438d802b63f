"""Server source: a FHIR R4 server read patient by patient with standard searches.

Per patient it reads the Patient, ``Condition?patient=ID`` and ``Observation?patient=ID`` (all
categories, so vital signs, laboratory, survey and SDOH screenings alike), and, where the server's
CapabilityStatement declares a ``patient`` search for them, QuestionnaireResponses (screenings
kept as forms), Encounters (recent discharges), MedicationRequests (polypharmacy) and
ServiceRequests (referrals a clinician made, such as to a nephrologist). Only
standard search parameters are used, so it works the same on HAPI FHIR, Epic, Cerner, Azure,
Google or Medplum.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from ..client import FhirClient
from ..concurrency import in_order
from ..errors import FhirTailorError
from ..fhirdata import Resource, subject_patient_id
from ..record import IssueHandler, PatientRecord, ReadIssue, check_resource

log = logging.getLogger("fhir_tailor.sources.server")

#: The resource types read for each patient, by their ``patient`` search parameter.
PATIENT_DATA_TYPES = ("Condition", "Observation")
#: Read too when the server declares ``patient`` search for them; a failure there is reported
#: and the patient is still profiled from the rest.
OPTIONAL_DATA_TYPES = ("QuestionnaireResponse", "Encounter", "MedicationRequest", "ServiceRequest")


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


@dataclass(slots=True)
class ServerSource:
    client: FhirClient
    selection: PatientSelection
    page_size: int = 100
    optional_types: tuple[str, ...] | None = None
    concurrency: int = 1

    async def _types(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        if self.optional_types is None:
            optional = [
                t
                for t in OPTIONAL_DATA_TYPES
                if await self.client.aio.supports_search(t, "patient")
            ]
            self.optional_types = tuple(optional)
            missing = sorted(set(OPTIONAL_DATA_TYPES) - set(optional))
            if missing:
                log.warning(
                    "server declares no patient search for %s: those resources are not read",
                    ", ".join(missing),
                )
        return PATIENT_DATA_TYPES, self.optional_types

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
        try:
            resource = await self.client.aio.read("Patient", patient)
        except FhirTailorError as exc:
            on_issue(ReadIssue(f"Patient/{patient}", str(exc), "Patient", patient, patient))
            return None
        return await self._record(resource, on_issue)

    def _selected_ids(self, on_issue: IssueHandler) -> list[str]:
        if self.selection.ids:
            return list(dict.fromkeys(self.selection.ids))
        assert self.selection.since is not None
        since = f"ge{self.selection.since.isoformat()}"
        changed: set[str] = set()
        _, optional = self.client.call(self._types())
        for rtype in ("Patient", *PATIENT_DATA_TYPES, *optional):
            try:
                for resource in self.client.search(
                    rtype, {"_lastUpdated": since}, count=self.page_size
                ):
                    pid = subject_patient_id(resource)
                    if pid:
                        changed.add(pid)
            except FhirTailorError as exc:
                if rtype in optional:  # the patients that matter are still found
                    on_issue(ReadIssue(f"{rtype}?_lastUpdated", str(exc), rtype))
                else:  # changed patients would be missed, and the watermark move past them
                    raise
        return sorted(changed)

    async def _record(self, patient: Resource, on_issue: IssueHandler) -> PatientRecord | None:
        _, pid, problem = check_resource(patient)
        if problem is not None or pid is None:
            on_issue(ReadIssue("Patient", problem or "unusable", "Patient", patient.get("id")))
            return None
        resources: list[Resource] = []
        required, optional = await self._types()
        for rtype in (*required, *optional):
            try:
                found = await self.client.aio.search_all(
                    rtype, {"patient": pid}, count=self.page_size
                )
                resources.extend(self._usable(found, pid, rtype, on_issue))
            except FhirTailorError as exc:
                if rtype in required:
                    on_issue(ReadIssue(f"{rtype}?patient", str(exc), "Patient", pid, pid))
                    return None
                on_issue(ReadIssue(f"{rtype}?patient", str(exc), "Patient", pid))
        return PatientRecord(patient, tuple(resources))

    @staticmethod
    def _usable(
        found: list[Resource], pid: str, rtype: str, on_issue: IssueHandler
    ) -> Iterator[Resource]:
        """Resources of the searched type about this patient; includes and strays are dropped."""
        for resource in found:
            if resource.get("resourceType") != rtype:
                continue
            _, owner, problem = check_resource(resource)
            if problem is not None:
                on_issue(ReadIssue(f"{rtype}?patient", problem, rtype, resource.get("id")))
            elif owner == pid:
                yield resource
