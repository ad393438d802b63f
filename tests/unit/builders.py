"""Small builders of raw FHIR resources for unit tests (synthetic data only)."""

from __future__ import annotations

from datetime import date
from typing import Any

from fhir_tailor.definitions import Definitions
from fhir_tailor.profile import Finding, Profile, build_profile
from fhir_tailor.record import PatientRecord

#: The as-of date of every unit test (fixture dates are chosen relative to it).
AS_OF = date(2026, 11, 15)

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"


def patient(pid: str = "p1", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": pid,
        "gender": "female",
        "birthDate": "1960-05-20",
        **extra,
    }


def condition(
    cid: str, system: str, code: str, pid: str = "p1", clinical: str | None = "active", **extra: Any
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Condition",
        "id": cid,
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": f"Patient/{pid}"},
        "onsetDateTime": "2024-02-01",
        **extra,
    }
    if clinical:
        resource["clinicalStatus"] = {"coding": [{"system": CLINICAL, "code": clinical}]}
    return resource


def observation(
    oid: str, code: str, when: str = "2026-09-01", pid: str = "p1", **value: Any
) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": when,
        **value,
    }


def quantity(value: float, unit: str) -> dict[str, Any]:
    return {
        "valueQuantity": {
            "value": value,
            "unit": unit,
            "system": "http://unitsofmeasure.org",
            "code": unit,
        }
    }


def answer(code: str) -> dict[str, Any]:
    return {"valueCodeableConcept": {"coding": [{"system": LOINC, "code": code}]}}


def record(*resources: dict[str, Any], pid: str = "p1", **patient_extra: Any) -> PatientRecord:
    return PatientRecord(patient(pid, **patient_extra), tuple(resources))


def profile_of(
    definitions: Definitions, rec: PatientRecord, issues: list[tuple[str, str]] | None = None
) -> Profile:
    """The profile of a record as of :data:`AS_OF`, collecting data issues if asked."""
    handler = (lambda ref, problem: issues.append((ref, problem))) if issues is not None else None
    return build_profile(rec, definitions.rules, AS_OF, handler)


def finding_of(
    definitions: Definitions, feature: str, *resources: dict[str, Any]
) -> Finding | None:
    return profile_of(definitions, record(*resources)).finding(feature)


def reading(found: Finding | None) -> tuple[str, str | None] | None:
    """``(status, severity)`` of a finding, or None when there is no finding."""
    return None if found is None else (found.status, found.severity)
