"""Small builders of raw FHIR resources for unit tests (synthetic data only)."""

from __future__ import annotations

from typing import Any

from fhir_tailor.record import PatientRecord

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
