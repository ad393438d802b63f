"""Small builders of raw FHIR resources for unit tests (synthetic data only)."""

from __future__ import annotations

import copy
import warnings
from datetime import date
from typing import Any

from fhir_tailor.definitions import Definitions
from fhir_tailor.mapping import CodeIndex, FeatureFile
from fhir_tailor.pipeline import profile_and_plan
from fhir_tailor.plan import Plan
from fhir_tailor.profile import build_profile
from fhir_tailor.profile_model import Finding, Profile
from fhir_tailor.record import PatientRecord
from fhir_tailor.terminology.valuesets import ValueSetLibrary, parse_valueset

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


def plan_of(definitions: Definitions, rec: PatientRecord) -> Plan:
    """The plan for a record as of :data:`AS_OF`; a record no module applies to fails the test."""
    _, plan = profile_and_plan(rec, definitions, AS_OF)
    assert plan is not None, f"no module applies to {rec.patient_id}"
    return plan


def finding_of(
    definitions: Definitions, feature: str, *resources: dict[str, Any]
) -> Finding | None:
    return profile_of(definitions, record(*resources)).finding(feature)


def reading(found: Finding | None) -> tuple[str, str | None] | None:
    """``(status, severity)`` of a finding, or None when there is no finding."""
    return None if found is None else (found.status, found.severity)


#: Where the synthetic value sets of :func:`code_index` live.
TEST_VALUESETS = "http://example.org/fhir/ValueSet"


def code_index(*files: dict[str, Any]) -> CodeIndex:
    """A CodeIndex over synthetic feature files written in a test shorthand: a rule lists its
    ``codes`` inline (``{system, code, prefix}``), and each such rule is given an in-memory value
    set of its own, ``prefix: true`` ICD-10-CM codes expanded with their tabular-list
    descendants, exactly as the shipped value sets are expanded."""
    valuesets = []
    parsed = []
    for data in files:
        data = copy.deepcopy(data)
        for feature in data["features"]:
            for rule in feature["rules"]:
                codes = rule.pop("codes", None)
                if codes is None:
                    continue
                url = f"{TEST_VALUESETS}/{rule['id']}"
                rule["valuesets"] = [url]
                resource = {
                    "resourceType": "ValueSet",
                    "url": url,
                    "expansion": {"contains": [c for ref in codes for c in _expanded(ref)]},
                }
                valuesets.append(parse_valueset(resource, url))
        parsed.append(FeatureFile.model_validate(data))
    return CodeIndex(parsed, ValueSetLibrary(valuesets))


def _expanded(ref: dict[str, Any]) -> list[dict[str, str]]:
    if not ref.get("prefix"):
        return [{"system": ref["system"], "code": ref["code"]}]
    assert ref["system"] == ICD10, "prefix expansion is defined for ICD-10-CM only"
    tabular = icd10cm()
    codes = [ref["code"], *tabular.get_descendants(ref["code"])]
    return [{"system": ICD10, "code": code} for code in codes]


def icd10cm() -> Any:
    """The ICD-10-CM tabular list (the dev extra's simple_icd_10_cm), imported quietly."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it imports pkg_resources
        import simple_icd_10_cm

    return simple_icd_10_cm
