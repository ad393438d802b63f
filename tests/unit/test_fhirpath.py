"""Published FHIRPath applicability expressions agree with the Python rule evaluation.

Each expression is evaluated with fhirpathpy (R4 model) over a collection Bundle of the patient's
record, with ``%asOf`` in the environment, and compared with ``rule.evaluate(profile).holds``:
over every bundled fixture patient for every module and variant of the catalog, and over
hand-written records for each kind of rule on synthetic mappings.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import cache
from typing import Any

import pytest
from builders import (
    AS_OF,
    ICD10,
    LOINC,
    SNOMED,
    answer,
    code_index,
    condition,
    observation,
    quantity,
    record,
)
from fhirpathpy import compile as compile_fhirpath
from fhirpathpy.models import models
from pydantic import TypeAdapter

from fhir_tailor.definitions import bundled_path, load_definitions
from fhir_tailor.fhirpath import Translator
from fhir_tailor.profile import (
    DimensionDefinition,
    GapDefinition,
    ProfileRules,
    build_profile,
)
from fhir_tailor.record import PatientRecord
from fhir_tailor.rules import RuleExpr
from fhir_tailor.sources import file_source
from fhir_tailor.terminology.valuesets import normalize_code

R4 = models["r4"]
ENVIRONMENT = {"asOf": AS_OF.isoformat()}
RULE = TypeAdapter(RuleExpr)


def bundle(rec: PatientRecord) -> dict[str, Any]:
    """The evaluation context: a collection Bundle of the patient and its resources."""
    entries = [{"resource": copy.deepcopy(r)} for r in (rec.patient, *rec.resources)]
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}


def member_of(inputs: list[Any], canonical: str) -> list[bool]:
    """FHIRPath's ``memberOf`` for fhirpathpy, which has no terminology service: a Coding is a
    member when its ``(system, code)`` is in the value set's shipped expansion (ICD-10-CM
    compared without the dot, as the index compares it)."""
    members = VALUESETS[canonical]
    return [
        isinstance(c, dict)
        and isinstance(c.get("system"), str)
        and isinstance(c.get("code"), str)
        and (c["system"], normalize_code(c["system"], c["code"])) in members
        for c in inputs
    ]


@cache
def compiled(expression: str) -> Callable[..., list[Any]]:
    table = {"memberOf": {"fn": member_of, "arity": {1: ["String"]}}}
    options = {"userInvocationTable": table}
    function: Callable[..., list[Any]] = compile_fhirpath(expression, R4, options)
    return function


def fhirpath_holds(expression: str, rec: PatientRecord) -> object:
    result = compiled(expression)(bundle(rec), ENVIRONMENT)
    assert len(result) == 1 and isinstance(result[0], bool), result
    return result[0]


# -- the catalog over the fixture patients -----------------------------------------------------

DEFINITIONS = load_definitions(bundled_path("profiles"))
FIXTURE_RECORDS = list(file_source(bundled_path("fixtures") / "bundles").records(lambda _: None))
CATALOG_RULES = [
    *(pytest.param(m.applies_when, id=f"module-{m.id}") for m in DEFINITIONS.catalog.modules),
    *(pytest.param(v.when, id=f"variant-{v.id}") for v in DEFINITIONS.catalog.variants),
]


@pytest.fixture(scope="module")
def fixture_profiles() -> list[tuple[PatientRecord, Any]]:
    return [(r, build_profile(r, DEFINITIONS.rules, AS_OF)) for r in FIXTURE_RECORDS]


@pytest.mark.parametrize("rule", CATALOG_RULES)
def test_catalog_expression_agrees_on_every_fixture_patient(
    rule: RuleExpr, fixture_profiles: list[tuple[PatientRecord, Any]]
) -> None:
    expression = Translator(DEFINITIONS.rules).expression(rule)
    for rec, profile in fixture_profiles:
        expected = rule.evaluate(profile).holds
        assert fhirpath_holds(expression, rec) is expected, rec.patient_id


def test_fixture_patients_exercise_both_outcomes() -> None:
    """The agreement above is only worth something if rules hold for some patients, not all."""
    profiles = [build_profile(r, DEFINITIONS.rules, AS_OF) for r in FIXTURE_RECORDS]
    modules = DEFINITIONS.catalog.modules
    holding = {m.id for m in modules if any(m.applies_when.evaluate(p).holds for p in profiles)}
    assert len(holding) >= 5
    assert all(not all(m.applies_when.evaluate(p).holds for p in profiles) for m in modules)


# -- each kind of rule, on synthetic mappings --------------------------------------------------

EXAMPLE = "http://example.org/fhir/CodeSystem"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
MEDICAL = {
    "version": "1",
    "changelog": ["test"],
    "dimension": "medical",
    "features": [
        {
            "id": "diabetes",
            "label": "Diabetes",
            "rules": [
                {
                    "id": "diabetes.icd",
                    "resource": "Condition",
                    "codes": [{"system": ICD10, "code": "E11", "prefix": True}],
                    "severity": "moderate",
                },
                {
                    "id": "diabetes.category",
                    "resource": "Condition",
                    "match": "category",
                    "codes": [{"system": EXAMPLE, "code": "diabetes"}],
                    "severity": "low",
                },
            ],
        },
        {
            "id": "hba1c_high",
            "label": "HbA1c above target",
            "current_for_days": 365,
            "rules": [
                {
                    "id": "hba1c.loinc",
                    "resource": "Observation",
                    "codes": [{"system": LOINC, "code": "4548-4"}],
                    "value": {
                        "unit": "%",
                        "conversions": [
                            {"from": "mmol/mol", "factor": 0.09148, "offset": 2.152, "source": "-"}
                        ],
                        "mislabels": [{"unit": "%{HbA1c}", "source": "-"}],
                        "bands": [
                            {"min": 9, "status": "present", "severity": "high"},
                            {"min": 7, "status": "present", "severity": "moderate"},
                            {"status": "absent"},
                        ],
                    },
                }
            ],
        },
        {
            "id": "systolic_high",
            "label": "Systolic blood pressure above target",
            "current_for_days": 365,
            "rules": [
                {
                    "id": "systolic.loinc",
                    "resource": "Observation",
                    "codes": [{"system": LOINC, "code": "8480-6"}],
                    "value": {
                        "unit": "mm[Hg]",
                        "bands": [
                            {"min": 140, "status": "present", "severity": "moderate"},
                            {"status": "absent"},
                        ],
                    },
                }
            ],
        },
        {
            "id": "egfr_low",
            "label": "Reduced eGFR",
            "current_for_days": 365,
            "rules": [
                {
                    "id": "egfr.loinc",
                    "resource": "Observation",
                    "codes": [{"system": LOINC, "code": "33914-3"}],
                    "value": {
                        "bands": [
                            {"min": 60, "status": "absent"},
                            {"min": 30, "status": "present", "severity": "moderate"},
                            {"status": "present", "severity": "high"},
                        ]
                    },
                }
            ],
        },
        {
            "id": "falls",
            "label": "Falls",
            "current_for_days": 365,
            "rules": [
                {
                    "id": "falls.snomed",
                    "resource": "Observation",
                    "codes": [{"system": SNOMED, "code": "428942009"}],
                    "severity": "moderate",
                }
            ],
        },
        {
            "id": "recent_stay",
            "label": "Recent hospital stay",
            "current_for_days": 30,
            "rules": [
                {
                    "id": "recent_stay.class",
                    "resource": "Encounter",
                    "codes": [{"system": ACT_CODE, "code": "IMP"}],
                    "severity": "moderate",
                }
            ],
        },
        {
            "id": "polypharmacy",
            "label": "Polypharmacy",
            "rules": [
                {
                    "id": "polypharmacy.count",
                    "resource": "MedicationRequest",
                    "value": {
                        "bands": [
                            {"min": 10, "status": "present", "severity": "high"},
                            {"min": 5, "status": "present", "severity": "moderate"},
                            {"status": "absent"},
                        ]
                    },
                }
            ],
        },
    ],
}
FOOD_ANSWERS = [
    {"system": LOINC, "code": "LA28397-0", "status": "present", "severity": "moderate"},
    {"system": LOINC, "code": "LA28398-8", "status": "absent"},
]
SOCIAL = {
    "version": "1",
    "changelog": ["test"],
    "dimension": "social",
    "features": [
        {
            "id": "food",
            "label": "Food insecurity",
            "current_for_days": 365,
            "rules": [
                {
                    "id": "food.hvs",
                    "resource": "Observation",
                    "codes": [{"system": LOINC, "code": "88122-7"}],
                    "answers": FOOD_ANSWERS,
                },
                {
                    "id": "food.icd",
                    "resource": "Condition",
                    "codes": [{"system": ICD10, "code": "Z59.41"}],
                    "severity": "moderate",
                },
            ],
        },
        {
            "id": "housing",
            "label": "Housing instability",
            "current_for_days": 365,
            "rules": [
                {
                    "id": "housing.ahc",
                    "resource": "Observation",
                    "codes": [{"system": LOINC, "code": "71802-3"}],
                    "answers": [
                        {"code": "LA31995-6", "status": "present", "severity": "high"},
                        {"code": "LA31994-9", "status": "present", "severity": "moderate"},
                        {"code": "LA31993-1", "status": "absent"},
                    ],
                },
                {
                    "id": "housing.icd",
                    "resource": "Condition",
                    "codes": [{"system": ICD10, "code": "Z59.0", "prefix": True}],
                    "severity": "moderate",
                },
            ],
        },
        {
            "id": "caregiver",
            "label": "Has a caregiver",
            "asset": True,
            "rules": [
                {
                    "id": "caregiver.example",
                    "resource": "Observation",
                    "codes": [{"system": EXAMPLE, "code": "caregiver"}],
                }
            ],
        },
    ],
}


def _bands(cut: float) -> dict[str, Any]:
    return {
        "bands": [{"min": cut, "status": "present", "severity": "moderate"}, {"status": "absent"}]
    }


#: Rules limited by ``applies_to`` (ages, sex) and a state whose diagnoses expire.
SCOPED = {
    "version": "1",
    "changelog": ["test"],
    "dimension": "functional",
    "features": [
        {
            "id": "weight",
            "label": "Obesity",
            "current_for_days": 365,
            "rules": [
                {
                    "id": "weight.adult_bmi",
                    "resource": "Observation",
                    "codes": [{"system": LOINC, "code": "39156-5"}],
                    "value": {"unit": "kg/m2", **_bands(30)},
                    "applies_to": {"age_at_least": 20, "source": "-"},
                },
                {
                    "id": "weight.percentile",
                    "resource": "Observation",
                    "codes": [{"system": LOINC, "code": "59576-9"}],
                    "value": {"unit": "%", **_bands(95)},
                    "applies_to": {"age_at_least": 2, "age_below": 20, "source": "-"},
                },
            ],
        },
        {
            "id": "drinking",
            "label": "Unhealthy alcohol use",
            "current_for_days": 365,
            "rules": [
                {
                    "id": "drinking.women",
                    "resource": "Observation",
                    "codes": [{"system": LOINC, "code": "75626-2"}],
                    "value": _bands(3),
                    "applies_to": {"sex": "female", "age_at_least": 18, "source": "-"},
                },
                {
                    "id": "drinking.men",
                    "resource": "Observation",
                    "codes": [{"system": LOINC, "code": "75626-2"}],
                    "value": _bands(4),
                    "applies_to": {"sex": "male", "age_at_least": 18, "source": "-"},
                },
            ],
        },
        {
            "id": "pregnant",
            "label": "Pregnancy",
            "state": True,
            "current_for_days": 294,
            "conditions_current_for_days": 294,
            "rules": [
                {
                    "id": "pregnant.condition",
                    "resource": "Condition",
                    "codes": [{"system": SNOMED, "code": "77386006"}],
                },
                {
                    "id": "pregnant.status",
                    "resource": "Observation",
                    "codes": [{"system": LOINC, "code": "82810-3"}],
                    "answers": [
                        {"system": LOINC, "code": "LA15173-0", "status": "present"},
                        {"system": LOINC, "code": "LA26683-5", "status": "absent"},
                    ],
                },
            ],
        },
        {
            "id": "child_emergency",
            "label": "Emergency visit of a child",
            "current_for_days": 30,
            "rules": [
                {
                    "id": "child_emergency.class",
                    "resource": "Encounter",
                    "codes": [{"system": ACT_CODE, "code": "EMER"}],
                    "severity": "moderate",
                    "applies_to": {"age_below": 18, "source": "-"},
                }
            ],
        },
        {
            "id": "older_polypharmacy",
            "label": "Polypharmacy in an older adult",
            "rules": [
                {
                    "id": "older_polypharmacy.count",
                    "resource": "MedicationRequest",
                    "value": _bands(5),
                    "applies_to": {"age_at_least": 65, "source": "-"},
                }
            ],
        },
    ],
}
VALUESETS = {
    v.canonical: v.members()
    for library in (DEFINITIONS.rules.index.library, code_index(MEDICAL, SOCIAL, SCOPED).library)
    for v in library
}
RULES = ProfileRules(
    code_index(MEDICAL, SOCIAL, SCOPED),
    {
        "medical": DimensionDefinition(label="Medical", description="-"),
        "social": DimensionDefinition(label="Social", description="-", escalate_at_count=2),
    },
    (
        GapDefinition.model_validate(
            {
                "id": "no_screening",
                "label": "No SDOH screening",
                "features": ["food", "housing"],
                "within_days": 365,
                "when": {"age_at_least": 18},
            }
        ),
    ),
)


def hba1c(oid: str, value: float, when: str = "2026-09-01", unit: str = "%") -> dict[str, Any]:
    return observation(oid, "4548-4", when, **quantity(value, unit))


def hunger(oid: str, code: str, when: str = "2026-09-01") -> dict[str, Any]:
    return observation(oid, "88122-7", when, **answer(code))


def questionnaire(
    qid: str,
    link_id: str,
    value: dict[str, Any],
    when: str = "2026-10-01",
    status: str = "completed",
) -> dict[str, Any]:
    """A completed form with one answered item nested in a group."""
    return {
        "resourceType": "QuestionnaireResponse",
        "id": qid,
        "status": status,
        "subject": {"reference": "Patient/p1"},
        "authored": when,
        "item": [{"linkId": "group", "item": [{"linkId": link_id, "answer": [value]}]}],
    }


def coded(code: str) -> dict[str, Any]:
    return {"valueCoding": {"system": LOINC, "code": code}}


def encounter(eid: str, end: str, status: str = "finished") -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "id": eid,
        "status": status,
        "class": {"system": ACT_CODE, "code": "IMP"},
        "subject": {"reference": "Patient/p1"},
        "period": {"start": "2026-09-20", "end": end},
    }


def medication(mid: str, rxnorm: str, intent: str = "order") -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": mid,
        "status": "active",
        "intent": intent,
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": rxnorm}]},
        "subject": {"reference": "Patient/p1"},
        "authoredOn": "2026-06-01",
    }


def no_date(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k != "effectiveDateTime"}


FIVE_MEDICINES = [medication(f"m{n}", str(1000 + n)) for n in range(5)]


def panel(pid: str, when: str | None, *members: str) -> dict[str, Any]:
    resource = {
        **observation(pid, "55454-3", when or ""),
        "hasMember": [{"reference": f"Observation/{m}"} for m in members],
    }
    return resource if when else no_date(resource)


PANEL = panel("panel", "2026-09-01", "member")


def bmi(oid: str, value: float, when: str = "2026-09-01") -> dict[str, Any]:
    return observation(oid, "39156-5", when, **quantity(value, "kg/m2"))


def percentile(oid: str, value: float, when: str = "2026-09-01") -> dict[str, Any]:
    return observation(oid, "59576-9", when, **quantity(value, "%"))


def audit_c(oid: str, score: int) -> dict[str, Any]:
    return observation(oid, "75626-2", valueInteger=score)


def emergency(eid: str) -> dict[str, Any]:
    visit = encounter(eid, "2026-11-01")
    return {**visit, "class": {"system": ACT_CODE, "code": "EMER"}}


def pregnancy(cid: str, onset: str | None, clinical: str | None = "active") -> dict[str, Any]:
    resource = condition(cid, SNOMED, "77386006", clinical=clinical)
    if onset is None:
        del resource["onsetDateTime"]
    else:
        resource["onsetDateTime"] = onset
    return resource


def status(oid: str, code: str, when: str = "2026-09-01") -> dict[str, Any]:
    return observation(oid, "82810-3", when, **answer(code))


CASES = [
    # feature: Condition rules, ICD-10-CM prefixes, statuses and category matches
    ({"feature": "diabetes"}, [condition("c1", ICD10, "E11.9")], {}, True),
    ({"feature": "diabetes"}, [condition("c1", ICD10, "e119")], {}, True),
    ({"feature": "diabetes"}, [condition("c1", ICD10, "E10.9")], {}, False),
    ({"feature": "diabetes"}, [condition("c1", ICD10, "E11.9", clinical="resolved")], {}, False),
    ({"feature": "diabetes"}, [condition("c1", ICD10, "E11.9", clinical=None)], {}, True),
    (
        {"feature": "diabetes"},
        [
            condition(
                "c1",
                ICD10,
                "E11.9",
                verificationStatus={"coding": [{"system": EXAMPLE, "code": "refuted"}]},
            )
        ],
        {},
        False,
    ),
    (
        {"feature": "diabetes", "severity_at_least": "moderate"},
        [
            condition(
                "c1", SNOMED, "x", category=[{"coding": [{"system": EXAMPLE, "code": "diabetes"}]}]
            )
        ],
        {},
        False,
    ),
    (
        {"feature": "diabetes", "severity_at_least": "low"},
        [
            condition(
                "c1", SNOMED, "x", category=[{"coding": [{"system": EXAMPLE, "code": "diabetes"}]}]
            )
        ],
        {},
        True,
    ),
    # feature with severity_at_least: value bands, latest wins, staleness, units, panels
    ({"feature": "hba1c_high", "severity_at_least": "high"}, [hba1c("o1", 9.5)], {}, True),
    ({"feature": "hba1c_high", "severity_at_least": "high"}, [hba1c("o1", 8.0)], {}, False),
    ({"feature": "hba1c_high", "severity_at_least": "moderate"}, [hba1c("o1", 8.0)], {}, True),
    ({"feature": "hba1c_high"}, [hba1c("o1", 6.5)], {}, False),
    ({"feature": "hba1c_high"}, [hba1c("o1", 9.5, "2026-01-10"), hba1c("o2", 6.5)], {}, False),
    ({"feature": "hba1c_high"}, [hba1c("o1", 6.5, "2026-01-10"), hba1c("o2", 9.5)], {}, True),
    (
        {"feature": "hba1c_high", "severity_at_least": "high"},
        [hba1c("o1", 6.5), hba1c("o2", 9.5), hba1c("o3", 8.0)],
        {},
        True,
    ),
    ({"feature": "hba1c_high"}, [hba1c("o1", 9.5, "2025-06-01")], {}, False),
    ({"feature": "hba1c_high"}, [hba1c("o1", 9.5, "2025-11-15")], {}, True),
    ({"feature": "hba1c_high"}, [hba1c("o1", 9.5, "2026-01")], {}, True),
    (  # a unit that cannot be read leaves the older reading deciding
        {"feature": "hba1c_high"},
        [hba1c("o1", 9.5, "2026-01-10"), hba1c("o2", 52, unit="mg/dL")],
        {},
        True,
    ),
    (  # a declared conversion: 52 mmol/mol is 6.91 %
        {"feature": "hba1c_high"},
        [hba1c("o1", 9.5, "2026-01-10"), hba1c("o2", 52, unit="mmol/mol")],
        {},
        False,
    ),
    (
        {"feature": "hba1c_high", "severity_at_least": "high"},
        [hba1c("o1", 75, unit="mmol/mol")],
        {},
        True,
    ),
    (
        {"feature": "hba1c_high", "severity_at_least": "high"},
        [hba1c("o1", 74, unit="mmol/mol")],
        {},
        False,
    ),
    (
        {"feature": "hba1c_high", "severity_at_least": "high"},
        [hba1c("o1", 9.5, unit="%{HbA1c}")],
        {},
        True,
    ),
    ({"feature": "hba1c_high"}, [hba1c("o1", 9.5, unit="mmHg")], {}, False),
    (
        {"feature": "systolic_high"},
        [observation("o1", "8480-6", **quantity(150, "mmHg"))],
        {},
        True,
    ),
    (
        {"feature": "hba1c_high"},
        [hba1c("o1", 9.5, "2026-01-10"), {**hba1c("o2", 6.0), "status": "entered-in-error"}],
        {},
        True,
    ),
    ({"feature": "hba1c_high"}, [no_date(hba1c("member", 9.5))], {}, False),
    (
        {"feature": "hba1c_high"},
        [no_date(hba1c("member", 9.5)), PANEL],
        {},
        True,
    ),
    (
        {"feature": "hba1c_high"},
        [
            hba1c("o2", 6.0, "2026-06-01"),
            panel("p0", None, "member"),
            panel("p1", "2026-01-01", "o2"),
            no_date(hba1c("member", 9.5)),
            panel("p2", "2026-09-01", "x", "member"),
            panel("p3", "2026-02-01", "member"),
        ],
        {},
        True,
    ),
    (
        {"feature": "hba1c_high"},
        [
            panel("p1", "2026-01-01", "member"),
            hba1c("o2", 6.0, "2026-06-01"),
            no_date(hba1c("member", 9.5)),
            panel("p2", "2026-09-01", "member"),
        ],
        {},
        False,
    ),
    (
        {"feature": "hba1c_high"},
        [
            {**no_date(hba1c("o1", 9.5)), "issued": "2026-08-01T10:00:00Z"},
            hba1c("o2", 6.0, "2026-06-01"),
        ],
        {},
        True,
    ),
    (
        {"feature": "systolic_high"},
        [
            observation(
                "bp",
                "85354-9",
                component=[
                    {
                        "code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
                        **quantity(150, "mm[Hg]"),
                    }
                ],
            )
        ],
        {},
        True,
    ),
    ({"feature": "egfr_low"}, [observation("o1", "33914-3", valueInteger=65)], {}, False),
    ({"feature": "egfr_low"}, [observation("o1", "33914-3", valueInteger=45)], {}, True),
    (
        {"feature": "egfr_low", "severity_at_least": "high"},
        [observation("o1", "33914-3", valueInteger=45)],
        {},
        False,
    ),
    (
        {"feature": "egfr_low", "severity_at_least": "high"},
        [observation("o1", "33914-3", valueQuantity={"value": 29.5})],
        {},
        True,
    ),
    (
        {"feature": "egfr_low", "severity_at_least": "high"},
        [questionnaire("q1", "33914-3", {"valueDecimal": 29.5})],
        {},
        True,
    ),
    (
        {"feature": "egfr_low"},
        [
            {
                **questionnaire("q1", "egfr", {"valueInteger": 45}),
                "item": [
                    {
                        "linkId": "egfr",
                        "definition": "http://loinc.org#33914-3",
                        "answer": [{"valueInteger": 45}],
                    }
                ],
            }
        ],
        {},
        True,
    ),
    # presence readings, negations
    (
        {"feature": "falls"},
        [{**observation("o1", "x"), "code": {"coding": [{"system": SNOMED, "code": "428942009"}]}}],
        {},
        True,
    ),
    (
        {"feature": "falls"},
        [
            {
                **observation("o1", "x", valueBoolean=False),
                "code": {"coding": [{"system": SNOMED, "code": "428942009"}]},
            }
        ],
        {},
        False,
    ),
    (
        {"feature": "falls"},
        [
            {
                **observation("o1", "x"),
                "code": {"coding": [{"system": SNOMED, "code": "428942009"}]},
                "interpretation": [{"coding": [{"system": EXAMPLE, "code": "NEG"}]}],
            }
        ],
        {},
        False,
    ),
    # answers, questionnaires, a diagnosis beside observations
    ({"feature": "food"}, [hunger("o1", "LA28397-0")], {}, True),
    ({"feature": "food"}, [hunger("o1", "LA28398-8")], {}, False),
    (
        {"feature": "food"},
        [hunger("o1", "LA28397-0", "2026-01-01"), hunger("o2", "LA28398-8")],
        {},
        False,
    ),
    (
        {"feature": "food"},
        [hunger("o1", "LA28397-0"), hunger("o2", "LA9999-9", "2026-10-01")],
        {},
        True,
    ),
    ({"feature": "food"}, [questionnaire("q1", "/88121-9/88122-7", coded("LA28397-0"))], {}, True),
    (
        {"feature": "food"},
        [questionnaire("q1", "/88121-9/88122-7", coded("LA28397-0"), status="in-progress")],
        {},
        False,
    ),
    (
        {"feature": "food"},
        [hunger("o1", "LA28397-0"), questionnaire("q1", "/88121-9/88122-7", coded("LA28398-8"))],
        {},
        False,
    ),
    (
        {"feature": "food"},
        [condition("c1", ICD10, "Z59.41"), hunger("o1", "LA28398-8")],
        {},
        True,
    ),
    (
        {"feature": "housing", "severity_at_least": "high"},
        [condition("c1", ICD10, "Z59.01"), observation("o1", "71802-3", **answer("LA31995-6"))],
        {},
        True,
    ),
    (
        {"feature": "housing", "severity_at_least": "high"},
        [
            condition("c1", ICD10, "Z59.01"),
            observation("o1", "71802-3", "2025-01-01", **answer("LA31995-6")),
        ],
        {},
        False,
    ),
    # encounters and the medication count
    ({"feature": "recent_stay"}, [encounter("e1", "2026-11-01T12:00:00Z")], {}, True),
    ({"feature": "recent_stay"}, [encounter("e1", "2026-09-30")], {}, False),
    ({"feature": "recent_stay"}, [encounter("e1", "2026-11-01", "in-progress")], {}, False),
    ({"feature": "polypharmacy"}, FIVE_MEDICINES, {}, True),
    ({"feature": "polypharmacy"}, [*FIVE_MEDICINES[:4], medication("m9", "1000")], {}, False),
    (
        {"feature": "polypharmacy"},
        [*FIVE_MEDICINES[:4], medication("m9", "2000", intent="proposal")],
        {},
        False,
    ),
    # an asset, needs and escalation
    (
        {"feature": "caregiver"},
        [
            {
                **observation("o1", "x"),
                "code": {"coding": [{"system": EXAMPLE, "code": "caregiver"}]},
            }
        ],
        {},
        True,
    ),
    (
        {"need": "social", "at_least": "low"},
        [
            {
                **observation("o1", "x"),
                "code": {"coding": [{"system": EXAMPLE, "code": "caregiver"}]},
            }
        ],
        {},
        False,
    ),
    ({"need": "social", "at_least": "moderate"}, [hunger("o1", "LA28397-0")], {}, True),
    ({"need": "social", "at_least": "high"}, [hunger("o1", "LA28397-0")], {}, False),
    (
        {"need": "social", "at_least": "high"},
        [hunger("o1", "LA28397-0"), observation("o2", "71802-3", **answer("LA31994-9"))],
        {},
        True,
    ),
    ({"need": "medical", "at_least": "none"}, [], {}, True),
    ({"need": "medical", "at_least": "moderate"}, [hba1c("o1", 8.0)], {}, True),
    # patient facts
    ({"age_at_least": 66}, [], {"birthDate": "1960-11-15"}, True),
    ({"age_at_least": 66}, [], {"birthDate": "1960-11-16"}, False),
    ({"age_below": 66}, [], {"birthDate": "1960-11-16"}, True),
    ({"age_below": 66}, [], {"birthDate": "1960"}, False),
    ({"age_below": 18}, [], {"birthDate": "2027-01-01"}, False),
    (
        {"language_not": "en"},
        [],
        {
            "communication": [
                {"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "en"}]}},
                {
                    "language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "es-MX"}]},
                    "preferred": True,
                },
            ]
        },
        True,
    ),
    (
        {"language_not": "en"},
        [],
        {
            "communication": [
                {"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "en-US"}]}}
            ]
        },
        False,
    ),
    ({"language_not": "en"}, [], {}, False),
    (
        {"contact_preference": "sms"},
        [],
        {
            "telecom": [
                {"system": "phone", "value": "1", "rank": 2},
                {"system": "sms", "value": "1", "rank": 1},
            ]
        },
        True,
    ),
    (
        {"contact_preference": "sms"},
        [],
        {
            "telecom": [
                {"system": "sms", "value": "1"},
                {"system": "phone", "value": "1", "rank": 1},
            ]
        },
        False,
    ),
    (
        {"contact_preference": "sms"},
        [],
        {
            "telecom": [
                {"system": "sms", "value": "1", "rank": 1},
                {"system": "phone", "value": "1", "rank": 1},
            ]
        },
        False,
    ),
    # data gaps, whose own rule is part of them
    ({"gap": "no_screening"}, [], {}, True),
    ({"gap": "no_screening"}, [hunger("o1", "LA28398-8")], {}, False),
    ({"gap": "no_screening"}, [hunger("o1", "LA28398-8", "2025-06-01")], {}, True),
    ({"gap": "no_screening"}, [hunger("o1", "LA9999-9")], {}, True),
    ({"gap": "no_screening"}, [], {"birthDate": "2015-01-01"}, False),
    # rules limited by applies_to: ages (known and unknown), sex, every kind of resource
    ({"feature": "weight"}, [bmi("o1", 31)], {}, True),
    ({"feature": "weight"}, [bmi("o1", 29)], {}, False),
    ({"feature": "weight"}, [bmi("o1", 31)], {"birthDate": "2017-03-01"}, False),
    ({"feature": "weight"}, [bmi("o1", 31)], {"birthDate": "2006-11-15"}, True),
    ({"feature": "weight"}, [bmi("o1", 31)], {"birthDate": "2006-11-16"}, False),
    ({"feature": "weight"}, [percentile("o1", 96)], {"birthDate": "2006-11-16"}, True),
    ({"feature": "weight"}, [percentile("o1", 96)], {"birthDate": "2006-11-15"}, False),
    ({"feature": "weight"}, [percentile("o1", 94)], {"birthDate": "2017-03-01"}, False),
    (  # the adult reading is set aside: the older percentile decides
        {"feature": "weight"},
        [percentile("o1", 97, "2026-03-01"), bmi("o2", 25)],
        {"birthDate": "2017-03-01"},
        True,
    ),
    ({"feature": "weight"}, [percentile("o1", 97)], {"birthDate": "2025-03-01"}, False),
    ({"feature": "weight"}, [bmi("o1", 31)], {"birthDate": None}, True),
    ({"feature": "weight"}, [percentile("o1", 97)], {"birthDate": None}, False),
    ({"feature": "weight"}, [percentile("o1", 97)], {"birthDate": "2027-01-01"}, False),
    ({"feature": "weight"}, [bmi("o1", 31)], {"birthDate": "2027-01-01"}, True),
    ({"feature": "drinking"}, [audit_c("o1", 3)], {}, True),
    ({"feature": "drinking"}, [audit_c("o1", 2)], {}, False),
    ({"feature": "drinking"}, [audit_c("o1", 3)], {"gender": "male"}, False),
    ({"feature": "drinking"}, [audit_c("o1", 4)], {"gender": "male"}, True),
    ({"feature": "drinking"}, [audit_c("o1", 3)], {"gender": "other"}, True),
    ({"feature": "drinking"}, [audit_c("o1", 3)], {"gender": "unknown"}, True),
    ({"feature": "drinking"}, [audit_c("o1", 3)], {"gender": None}, True),
    ({"feature": "drinking"}, [audit_c("o1", 5)], {"birthDate": "2010-01-01"}, False),
    (
        {"feature": "drinking"},
        [questionnaire("q1", "/72109-2/75626-2", {"valueInteger": 3})],
        {"gender": "male"},
        False,
    ),
    (
        {"feature": "drinking"},
        [questionnaire("q1", "/72109-2/75626-2", {"valueInteger": 3})],
        {},
        True,
    ),
    ({"feature": "child_emergency"}, [emergency("e1")], {"birthDate": "2017-03-01"}, True),
    ({"feature": "child_emergency"}, [emergency("e1")], {}, False),
    ({"feature": "older_polypharmacy"}, FIVE_MEDICINES, {"birthDate": "1980-01-01"}, False),
    ({"feature": "older_polypharmacy"}, FIVE_MEDICINES, {"birthDate": "1950-01-01"}, True),
    ({"feature": "older_polypharmacy"}, FIVE_MEDICINES[:4], {"birthDate": "1950-01-01"}, False),
    # a state whose diagnoses expire (pregnancy), and abatement
    ({"feature": "pregnant"}, [pregnancy("c1", "2026-06-01")], {}, True),
    ({"feature": "pregnant"}, [pregnancy("c1", "2026-01-25")], {}, True),
    ({"feature": "pregnant"}, [pregnancy("c1", "2026-01-24")], {}, False),
    ({"feature": "pregnant"}, [pregnancy("c1", None)], {}, True),
    (
        {"feature": "pregnant"},
        [{**pregnancy("c1", None), "recordedDate": "2025-10-01"}],
        {},
        False,
    ),
    (
        {"feature": "pregnant"},
        [{**pregnancy("c1", None), "onsetPeriod": {"start": "2026-08-01"}}],
        {},
        True,
    ),
    ({"feature": "pregnant"}, [pregnancy("c1", "2026-06-01", clinical="resolved")], {}, False),
    (
        {"feature": "pregnant"},
        [{**pregnancy("c1", "2026-06-01", clinical=None), "abatementDateTime": "2026-10-01"}],
        {},
        False,
    ),
    (
        {"feature": "pregnant"},
        [{**pregnancy("c1", "2026-06-01", clinical=None), "abatementString": "delivered"}],
        {},
        False,
    ),
    (  # active despite an abatement (con-4 broken): the status decides, as in Python
        {"feature": "pregnant"},
        [{**pregnancy("c1", "2026-06-01"), "abatementDateTime": "2026-10-01"}],
        {},
        True,
    ),
    ({"feature": "pregnant"}, [pregnancy("c1", "2025-06-01"), status("o1", "LA15173-0")], {}, True),
    (
        {"feature": "pregnant"},
        [pregnancy("c1", "2025-06-01"), status("o1", "LA26683-5")],
        {},
        False,
    ),
    ({"feature": "pregnant"}, [pregnancy("c1", "2026-06-01"), status("o1", "LA26683-5")], {}, True),
    ({"feature": "pregnant"}, [status("o1", "LA15173-0", "2026-01-20")], {}, False),
    ({"feature": "pregnant"}, [status("o1", "LA15173-0", "2026-01-25")], {}, True),
    (
        {"feature": "diabetes"},
        [{**condition("c1", ICD10, "E11.9", clinical=None), "abatementDateTime": "2025-01-01"}],
        {},
        False,
    ),
    # not, all, any
    ({"not": {"feature": "diabetes"}}, [], {}, True),
    ({"not": {"feature": "diabetes"}}, [condition("c1", ICD10, "E11.9")], {}, False),
    (
        {"all": [{"feature": "diabetes"}, {"not": {"feature": "hba1c_high"}}]},
        [condition("c1", ICD10, "E11.9"), hba1c("o1", 6.0)],
        {},
        True,
    ),
    (
        {"any": [{"gap": "no_screening"}, {"feature": "hba1c_high"}]},
        [hunger("o1", "LA28398-8"), hba1c("o2", 6.0)],
        {},
        False,
    ),
]


@pytest.mark.parametrize(("raw", "resources", "patient", "expected"), CASES)
def test_each_kind_of_rule_agrees(
    raw: dict[str, Any], resources: list[dict[str, Any]], patient: dict[str, Any], expected: bool
) -> None:
    rule = RULE.validate_python(raw)
    rec = record(*resources, **patient)
    rec = PatientRecord(
        {k: v for k, v in rec.patient.items() if v is not None}, rec.resources
    )  # ``None`` in a case's patient fields: the field is left out
    assert rule.evaluate(build_profile(rec, RULES, AS_OF)).holds is expected, "the case is wrong"
    assert fhirpath_holds(Translator(RULES).expression(rule), rec) is expected


def test_expressions_are_commented_per_feature_and_use_the_as_of_variable() -> None:
    rule = RULE.validate_python({"any": [{"feature": "hba1c_high"}, {"gap": "no_screening"}]})
    expression = Translator(RULES).expression(rule)
    assert "/* feature hba1c_high */" in expression
    assert "/* gap no_screening */" in expression
    assert "%asOf - 365 days" in expression
    assert "today()" not in expression and "now()" not in expression


def test_unknown_features_and_impossible_severities_translate_to_false() -> None:
    translator = Translator(RULES)
    assert translator.expression(RULE.validate_python({"feature": "no_such_feature"})) == "false"
    caregiver = {"feature": "caregiver", "severity_at_least": "low"}
    assert translator.expression(RULE.validate_python(caregiver)) == "false"


# -- what a feature rule asks of the finding: present, absent or recorded ----------------------


def phq2(oid: str, score: int, when: str = "2026-09-01") -> dict[str, Any]:
    return observation(oid, "55758-7", when, valueInteger=score)


def phq9(oid: str, score: int, when: str = "2026-10-01") -> dict[str, Any]:
    return observation(oid, "44261-6", when, valueInteger=score)


#: Records that tell the three statuses of the depression feature (PHQ-9 below 5 is absent,
#: current for 365 days, read from age 12) apart, each with the statuses that hold on it.
DEPRESSION_RECORDS: dict[str, tuple[list[dict[str, Any]], dict[str, Any], set[str]]] = {
    "positive PHQ-2, then negative PHQ-9": (
        [phq2("a", 4), phq9("b", 3)],
        {},
        {"absent", "recorded"},
    ),
    "no result": ([], {}, set()),
    "only a positive PHQ-2": ([phq2("a", 4)], {}, set()),
    "only a positive PHQ-9": ([phq9("b", 12)], {}, {"present", "recorded"}),
    "only a negative PHQ-9": ([phq9("b", 3)], {}, {"absent", "recorded"}),
    "negative PHQ-9, then positive": (
        [phq9("a", 2, "2026-09-01"), phq9("b", 12)],
        {},
        {"present", "recorded"},
    ),
    "positive PHQ-9, then negative": (
        [phq9("a", 12, "2026-09-01"), phq9("b", 2)],
        {},
        {"absent", "recorded"},
    ),
    "positive and negative PHQ-9 the same day": (
        [phq9("a", 12), phq9("b", 2)],
        {},
        {"present", "recorded"},
    ),
    "negative PHQ-9, then one without a score": (
        [phq9("a", 2, "2026-09-01"), observation("b", "44261-6", valueString="not done")],
        {},
        {"absent", "recorded"},
    ),
    "a diagnosis and a newer negative PHQ-9": (
        [condition("c", ICD10, "F32.1"), phq9("b", 2)],
        {},
        {"present", "recorded"},
    ),
    "a negative PHQ-9 more than a year old": ([phq9("b", 2, "2025-10-01")], {}, set()),
    "an undated negative PHQ-9": ([no_date(phq9("b", 2))], {}, set()),
    "a negative PHQ-9 of a child of 10": ([phq9("b", 2)], {"birthDate": "2016-03-01"}, set()),
}
STATUSES = ("present", "absent", "recorded")


@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize("name", DEPRESSION_RECORDS)
def test_each_status_of_a_feature_means_what_the_profile_says(name: str, status: str) -> None:
    """present: the finding is present; absent: a current readable result says absent, and
    no diagnosis says present; recorded: either, whatever the result said."""
    resources, patient, holding = DEPRESSION_RECORDS[name]
    rec = record(*resources, **patient)
    rule = RULE.validate_python({"feature": "depression", "status": status})
    expected = status in holding
    assert rule.evaluate(build_profile(rec, DEFINITIONS.rules, AS_OF)).holds is expected
    assert fhirpath_holds(Translator(DEFINITIONS.rules).expression(rule), rec) is expected


@pytest.mark.parametrize("name", DEPRESSION_RECORDS)
def test_an_absent_finding_has_no_severity(name: str) -> None:
    """With ``severity_at_least``, absent never holds and recorded is present."""
    resources, patient, _ = DEPRESSION_RECORDS[name]
    rec = record(*resources, **patient)
    profile = build_profile(rec, DEFINITIONS.rules, AS_OF)
    translator = Translator(DEFINITIONS.rules)
    moderate = {"feature": "depression", "severity_at_least": "moderate"}
    present = RULE.validate_python(moderate)
    for status in ("absent", "recorded"):
        rule = RULE.validate_python({**moderate, "status": status})
        expected = status == "recorded" and present.evaluate(profile).holds
        assert rule.evaluate(profile).holds is expected
        assert fhirpath_holds(translator.expression(rule), rec) is expected


@pytest.mark.parametrize(
    ("name", "applies"),
    [
        ("positive PHQ-2, then negative PHQ-9", False),
        ("only a positive PHQ-2", True),
        ("no result", True),
        ("only a negative PHQ-9", False),
    ],
)
def test_the_phq9_follow_up_of_a_positive_phq2_ends_with_any_phq9(name: str, applies: bool) -> None:
    """depression-screening applies after a positive PHQ-2 until a PHQ-9 is on record, negative
    or positive: its published condition says so too (it said "no PHQ-9 reads present", so a
    negative PHQ-9 left the module applying on an engine)."""
    module = next(m for m in DEFINITIONS.catalog.modules if m.id == "depression-screening")
    resources, patient, _ = DEPRESSION_RECORDS[name]
    rec = record(*resources, **patient)
    profile = build_profile(rec, DEFINITIONS.rules, AS_OF)
    assert module.applies_when.evaluate(profile).holds is applies
    expression = Translator(DEFINITIONS.rules).expression(module.applies_when)
    assert fhirpath_holds(expression, rec) is applies


def egfr(oid: str, value: float, when: str) -> dict[str, Any]:
    return observation(oid, "33914-3", when, **quantity(value, "mL/min/{1.73_m2}"))


def uacr(oid: str, value: float, when: str) -> dict[str, Any]:
    return observation(oid, "9318-7", when, **quantity(value, "mg/g"))


#: Kidney markers of ckd (``confirmed_after_days: 90``, each marker a criterion of its own): a
#: single present reading is pending, which outranks an absent one and is neither status.
CKD_RECORDS: dict[str, tuple[list[dict[str, Any]], set[str]]] = {
    "eGFR normal": ([egfr("a", 75, "2026-06-01")], {"absent", "recorded"}),
    "eGFR low for 90 days": (
        [egfr("a", 45, "2026-03-01"), egfr("b", 50, "2026-07-01")],
        {"present", "recorded"},
    ),
    "one low eGFR (pending)": ([egfr("a", 45, "2026-07-01")], set()),
    "normal, then one low eGFR": (
        [egfr("a", 75, "2026-03-01"), egfr("b", 45, "2026-07-01")],
        set(),
    ),
    "low eGFR for 90 days, then normal": (
        [egfr("a", 45, "2026-03-01"), egfr("b", 50, "2026-07-01"), egfr("c", 70, "2026-09-01")],
        {"absent", "recorded"},
    ),
    "eGFR normal, one high albuminuria (pending)": (
        [egfr("a", 75, "2026-06-01"), uacr("b", 40, "2026-07-01")],
        set(),
    ),
    "eGFR normal, albuminuria normal": (
        [egfr("a", 75, "2026-06-01"), uacr("b", 10, "2026-07-01")],
        {"absent", "recorded"},
    ),
    "eGFR normal, albuminuria for 90 days": (
        [egfr("a", 75, "2026-06-01"), uacr("b", 40, "2026-03-01"), uacr("c", 45, "2026-07-01")],
        {"present", "recorded"},
    ),
    "a diagnosis and a normal eGFR": (
        [condition("c", ICD10, "N18.31"), egfr("a", 75, "2026-06-01")],
        {"present", "recorded"},
    ),
}


@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize("name", CKD_RECORDS)
def test_each_status_of_a_feature_confirmed_over_time(name: str, status: str) -> None:
    resources, holding = CKD_RECORDS[name]
    rec = record(*resources)
    rule = RULE.validate_python({"feature": "ckd", "status": status})
    expected = status in holding
    assert rule.evaluate(build_profile(rec, DEFINITIONS.rules, AS_OF)).holds is expected
    assert fhirpath_holds(Translator(DEFINITIONS.rules).expression(rule), rec) is expected


def hvs(oid: str, code: str, when: str) -> dict[str, Any]:
    return observation(oid, "88122-7", when, **answer(code))


def pregnancy_status(oid: str, code: str, when: str) -> dict[str, Any]:
    concept = {"coding": [{"system": SNOMED, "code": code}]}
    return observation(oid, "82810-3", when, valueCodeableConcept=concept)


CHILD = {"birthDate": "2016-03-01"}
#: Results in a band or answer of status ``unknown`` ("Don't know/refused", "Possible
#: pregnancy", a child's BMI below 35, which the percentile reads): the profile passes over them,
#: as over an unreadable result, so an older result decides and no screening is on record.
UNKNOWN_RECORDS: dict[str, tuple[str, list[dict[str, Any]], dict[str, Any], set[str]]] = {
    "Often true, then Don't know": (
        "food_insecurity",
        [hvs("a", "LA28397-0", "2026-09-01"), hvs("b", "LA15775-2", "2026-10-01")],
        {},
        {"present", "recorded"},
    ),
    "Never true, then Don't know": (
        "food_insecurity",
        [hvs("a", "LA28398-8", "2026-09-01"), hvs("b", "LA15775-2", "2026-10-01")],
        {},
        {"absent", "recorded"},
    ),
    "only Don't know": ("food_insecurity", [hvs("b", "LA15775-2", "2026-10-01")], {}, set()),
    "Pregnant, then Possible pregnancy": (
        "pregnancy",
        [
            pregnancy_status("a", "77386006", "2026-09-01"),
            pregnancy_status("b", "146799005", "2026-10-01"),
        ],
        {},
        {"present", "recorded"},
    ),
    "a child's BMI percentile at 96, then a BMI of 25": (
        "obesity",
        [percentile("a", 96, "2026-06-01"), bmi("b", 25, "2026-09-01")],
        CHILD,
        {"present", "recorded"},
    ),
    "a child's BMI percentile at 50, then a BMI of 25": (
        "obesity",
        [percentile("a", 50, "2026-06-01"), bmi("b", 25, "2026-09-01")],
        CHILD,
        {"absent", "recorded"},
    ),
    "a child's BMI of 25 only": ("obesity", [bmi("b", 25, "2026-09-01")], CHILD, set()),
}


@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize("name", UNKNOWN_RECORDS)
def test_a_result_of_unknown_status_decides_nothing(name: str, status: str) -> None:
    feature, resources, patient, holding = UNKNOWN_RECORDS[name]
    rec = record(*resources, **patient)
    rule = RULE.validate_python({"feature": feature, "status": status})
    expected = status in holding
    assert rule.evaluate(build_profile(rec, DEFINITIONS.rules, AS_OF)).holds is expected
    assert fhirpath_holds(Translator(DEFINITIONS.rules).expression(rule), rec) is expected


@pytest.mark.parametrize(
    ("resources", "open_"),
    [
        ([hvs("b", "LA15775-2", "2026-10-01")], True),
        ([hvs("b", "LA28398-8", "2026-10-01")], False),
        ([hvs("a", "LA28398-8", "2025-06-01"), hvs("b", "LA15775-2", "2026-10-01")], True),
    ],
)
def test_an_answer_of_unknown_status_is_no_screening(
    resources: list[dict[str, Any]], open_: bool
) -> None:
    """A "Don't know/refused" answer leaves the SDOH screening gap open, in the profile and in
    the published condition (the gap does not close on any result)."""
    rec = record(*resources)
    rule = RULE.validate_python({"gap": "no_sdoh_screening"})
    assert rule.evaluate(build_profile(rec, DEFINITIONS.rules, AS_OF)).holds is open_
    assert fhirpath_holds(Translator(DEFINITIONS.rules).expression(rule), rec) is open_
