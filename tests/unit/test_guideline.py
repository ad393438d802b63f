"""Guideline-correct content (issue 13, item 3) and the mechanisms it needs, tested at each rule's
boundaries on records shaped like real ones.

- Medicines read from MedicationRequests by value set (insulin, sulfonylureas, meglitinides), and
  glycemic goals by health status (ADA Standards of Care in Diabetes 2025, sections 6 and 13,
  Table 13.1), with a deintensification review.
- One BP standard (2025 AHA/ACC, below 130/80): bp_above_target flags from 130 or 80, graded by
  the guideline's categories; goals relaxed for older adults with diabetes in very complex or
  poor health (ADA Table 13.1).
- CKD from a diagnosis or from kidney markers persisting 90 days (KDIGO 2024 chapter 1.1:
  ``confirmed_after_days``), albuminuria in KDIGO categories, medicines review and referral.
- STEADI fall screening (three key questions, LOINC 73830-2 closing the screening gap).
- Module steps: suicide risk (NPSG.15.01.01), alcohol withdrawal and medication, heart failure
  follow-up within 7 days of discharge, statins in diabetes.
- The codes Z74.2 and SNOMED CT 224295006 read for what they mean.

Every rule that the published PlanDefinitions translate is also checked against its FHIRPath
expression (``fhirpath_holds``, the evaluator of test_fhirpath), on the same records.
"""

from __future__ import annotations

import json
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
    plan_of,
    profile_of,
    quantity,
    reading,
    record,
)
from pydantic import TypeAdapter, ValidationError
from test_fhirpath import fhirpath_holds

from fhir_tailor.catalog import AdjustGoal
from fhir_tailor.definitions import Definitions, bundled_path
from fhir_tailor.fhirpath import Translator
from fhir_tailor.mapping import Feature, Rule
from fhir_tailor.plan import Plan
from fhir_tailor.profile import GapDefinition, ProfileRules, build_profile
from fhir_tailor.record import PatientRecord
from fhir_tailor.rules import RuleExpr

RULE = TypeAdapter(RuleExpr)
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
#: RxNorm codes as records carry them (branded and clinical drugs of VSAC Diabetes Medications).
HUMULIN_70_30 = "106892"  # insulin isophane/regular 70/30 [Humulin], Synthea's insulin
GLIPIZIDE_5 = "310490"  # glipizide 5 MG Oral Tablet
REPAGLINIDE_1 = "200256"  # repaglinide 1 MG Oral Tablet
METFORMIN_ER_500 = "860975"  # 24 HR metformin 500 MG (Synthea's metformin)
LISINOPRIL_10 = "314076"  # lisinopril: not a diabetes medicine at all

#: Birth dates for an age on the as-of date (2026-11-15).
AGE_65 = "1961-11-15"
AGE_64 = "1961-11-16"


def med(mid: str, code: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": mid,
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": code}]},
        "subject": {"reference": "Patient/p1"},
        "authoredOn": "2026-06-01",
        **extra,
    }


def egfr(oid: str, value: float, when: str, unit: str = "mL/min/{1.73_m2}") -> dict[str, Any]:
    return observation(oid, "98979-8", when, **quantity(value, unit))


def uacr(oid: str, value: float, when: str, unit: str = "mg/g", code: str = "9318-7") -> dict:
    return observation(oid, code, when, **quantity(value, unit))


def bp(oid: str, systolic: float, diastolic: float, when: str = "2026-10-01") -> dict[str, Any]:
    """A Vital Signs blood pressure panel (85354-9) with its two components."""
    return observation(
        oid,
        "85354-9",
        when,
        component=[
            {
                "code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
                **quantity(systolic, "mm[Hg]"),
            },
            {
                "code": {"coding": [{"system": LOINC, "code": "8462-4"}]},
                **quantity(diastolic, "mm[Hg]"),
            },
        ],
    )


def agrees(definitions: Definitions, raw: dict[str, Any] | Any, rec: PatientRecord) -> bool:
    """The rule's verdict on the record (a rule, or its YAML form), asserted equal in Python and
    in FHIRPath."""
    rule = RULE.validate_python(raw) if isinstance(raw, dict) else raw
    held = rule.evaluate(profile_of(definitions, rec)).holds
    expression = Translator(definitions.rules).expression(rule)
    assert fhirpath_holds(expression, rec) is held, raw
    return held


def goal(plan: Plan, key: str) -> tuple[str | None, float | None, str | None]:
    found = next(g for g in plan.goals if g.key == key)
    return found.target.comparator, found.target.value, found.target.text


def activity_keys(plan: Plan) -> set[str]:
    return {a.key for a in plan.activities}


def variant_when(definitions: Definitions, variant_id: str) -> Any:
    return next(v.when for v in definitions.catalog.variants if v.id == variant_id)


TYPE2 = condition("dm", ICD10, "E11.65")  # type 2 diabetes with hyperglycemia: a subcode
TYPE1 = condition("dm1", SNOMED, "46635009")  # type 1 diabetes mellitus


# -- medicines read by value set ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (med("m1", HUMULIN_70_30), ("present", "low")),  # branded insulin (SBD)
        (med("m1", GLIPIZIDE_5), ("present", "low")),  # sulfonylurea
        (med("m1", REPAGLINIDE_1), ("present", "low")),  # meglitinide
        (med("m1", METFORMIN_ER_500), None),  # low hypoglycemia risk: excluded from the set
        (med("m1", LISINOPRIL_10), None),
        (med("m1", HUMULIN_70_30, status="stopped"), None),
        (med("m1", HUMULIN_70_30, status="completed"), None),
        (med("m1", HUMULIN_70_30, intent="proposal"), None),
        (med("m1", HUMULIN_70_30, intent="plan"), ("present", "low")),
    ],
    ids=[
        "insulin",
        "sulfonylurea",
        "meglitinide",
        "metformin",
        "lisinopril",
        "stopped",
        "completed",
        "proposal",
        "plan",
    ],
)
def test_hypoglycemia_risk_medicine_is_an_active_request_in_the_value_set(
    definitions: Definitions, request_: dict[str, Any], expected: tuple[str, str] | None
) -> None:
    rec = record(request_)
    assert reading(profile_of(definitions, rec).finding("hypoglycemia_risk_medicine")) == expected
    assert agrees(definitions, {"feature": "hypoglycemia_risk_medicine"}, rec) is bool(expected)


def contained_insulin(reference: str) -> dict[str, Any]:
    request = med("m1", HUMULIN_70_30)
    del request["medicationCodeableConcept"]
    request["medicationReference"] = {"reference": reference}
    request["contained"] = [
        {
            "resourceType": "Medication",
            "id": "ins",
            "code": {"coding": [{"system": RXNORM, "code": HUMULIN_70_30}]},
        }
    ]
    return request


def test_a_contained_medication_is_read_through_its_local_reference(
    definitions: Definitions,
) -> None:
    rec = record(contained_insulin("#ins"))
    assert reading(profile_of(definitions, rec).finding("hypoglycemia_risk_medicine")) == (
        "present",
        "low",
    )
    assert agrees(definitions, {"feature": "hypoglycemia_risk_medicine"}, rec)


def test_a_medication_outside_the_record_is_reported_not_guessed(
    definitions: Definitions,
) -> None:
    request = contained_insulin("Medication/ins")
    del request["contained"]
    issues: list[tuple[str, str]] = []
    rec = record(request)
    assert profile_of(definitions, rec, issues).finding("hypoglycemia_risk_medicine") is None
    assert any(
        ref == "MedicationRequest/m1" and "field medicationReference" in problem
        for ref, problem in issues
    )
    assert not agrees(definitions, {"feature": "hypoglycemia_risk_medicine"}, rec)


def test_medication_rules_either_count_or_read_a_value_set() -> None:
    canonical = "http://example.org/fhir/ValueSet/x"
    presence = {"id": "r", "resource": "MedicationRequest", "valuesets": [canonical]}
    assert Rule.model_validate({**presence, "severity": "low"}).reads_presence
    bands = {"bands": [{"status": "absent"}]}
    with pytest.raises(ValidationError, match="either counts"):
        Rule.model_validate({**presence, "value": bands})
    with pytest.raises(ValidationError, match="either counts"):
        Rule.model_validate({"id": "r", "resource": "MedicationRequest"})
    answers = [{"code": "x", "status": "present"}]
    with pytest.raises(ValidationError, match="either counts"):
        Rule.model_validate({**presence, "answers": answers})


# -- glycemic goals by health status (ADA 2025 sections 6 and 13) ---------------------------------

HBA1C_GOAL = "diabetes-outpatient.hba1c-below-7"
#: Three of the chronic illnesses ADA Table 13.1's footnote names: hypertension (SNOMED CT
#: descendant), osteoarthritis of the knee, COPD (ICD-10-CM subcode).
THREE_ILLNESSES = (
    condition("htn", SNOMED, "59621000"),
    condition("oa", ICD10, "M17.11"),
    condition("copd", ICD10, "J44.9"),
)


@pytest.mark.parametrize(
    ("birth", "illnesses", "expected"),
    [
        (AGE_65, THREE_ILLNESSES, ("<", 8.0, None)),  # complex: three coexisting illnesses
        (AGE_65, THREE_ILLNESSES[:2], ("<", 7.0, None)),  # two: healthy
        (AGE_64, THREE_ILLNESSES, ("<", 7.0, None)),  # under 65: section 13 does not apply
    ],
    ids=["65-three-illnesses", "65-two-illnesses", "64-three-illnesses"],
)
def test_multiple_chronic_illnesses_make_an_older_adults_goal_below_8(
    definitions: Definitions,
    birth: str,
    illnesses: tuple[dict[str, Any], ...],
    expected: tuple[str, float, None],
) -> None:
    plan = plan_of(definitions, record(TYPE2, *illnesses, birthDate=birth))
    assert goal(plan, HBA1C_GOAL) == expected


@pytest.mark.parametrize(
    ("finding", "expected"),
    [
        (condition("mci", ICD10, "G31.84"), ("<", 8.0, None)),  # mild cognitive impairment
        (condition("adl", ICD10, "Z74.1"), ("<", 8.0, None)),  # needs help with personal care
        (observation("o1", "69861-3", **answer("LA33-6")), ("<", 8.0, None)),  # errands: IADL
        (observation("o1", "69861-3", **answer("LA32-8")), ("<", 7.0, None)),
    ],
    ids=["mci", "adl-z74.1", "iadl-yes", "iadl-no"],
)
def test_cognitive_or_functional_impairment_is_complex_health(
    definitions: Definitions, finding: dict[str, Any], expected: tuple[str, float, None]
) -> None:
    plan = plan_of(definitions, record(TYPE2, finding, birthDate=AGE_65))
    assert goal(plan, HBA1C_GOAL) == expected


VERY_COMPLEX_TEXT = (
    "no hypoglycemia and no symptomatic hyperglycemia; fasting or preprandial glucose "
    "100-180 mg/dL, bedtime glucose 110-200 mg/dL"
)


def barthel(value: int) -> dict[str, Any]:
    return observation("bi", "96761-2", **quantity(value, "{score}"))


@pytest.mark.parametrize(
    ("finding", "otherwise"),
    [
        (condition("pal", ICD10, "Z51.5"), None),  # VSAC Palliative Care Diagnosis
        (condition("hos", SNOMED, "170935008"), None),  # full care by hospice
        (condition("esrd", ICD10, "N18.6"), None),  # end stage renal disease
        (condition("esrd", SNOMED, "236436003"), 7.0),  # ESRD with a working transplant
        (condition("o2", ICD10, "Z99.81"), None),  # oxygen dependence
        (condition("hf", ICD10, "I50.84"), None),  # end stage heart failure
        (condition("hf", ICD10, "I50.22"), 7.0),  # chronic systolic heart failure: one illness
        (condition("dem", ICD10, "F03.C0"), None),  # severe dementia
        (condition("dem", ICD10, "F03.A0"), 8.0),  # mild dementia: complex, not very complex
        (barthel(60), None),  # severe dependency in basic ADL
        (barthel(61), 8.0),  # moderate dependency: complex
    ],
    ids=[
        "palliative",
        "hospice",
        "esrd",
        "transplant",
        "oxygen",
        "end-stage-hf",
        "chronic-hf",
        "severe-dementia",
        "mild-dementia",
        "barthel-60",
        "barthel-61",
    ],
)
def test_very_complex_or_poor_health_replaces_the_hba1c_goal(
    definitions: Definitions, finding: dict[str, Any], otherwise: float | None
) -> None:
    """``otherwise``: the goal when the finding is not very complex health (None: it is)."""
    plan = plan_of(definitions, record(TYPE2, finding, birthDate=AGE_65))
    target = next(g for g in plan.goals if g.key == HBA1C_GOAL).target
    if otherwise is None:
        assert (target.value, target.text) == (None, VERY_COMPLEX_TEXT)
        assert (target.measure.system, target.measure.code) == (LOINC, "2339-0")
        test = next(a for a in plan.activities if a.key == "diabetes-outpatient.hba1c-test")
        assert "Do not base treatment decisions on HbA1c" in test.description
    else:
        assert (target.value, target.text) == (otherwise, None)


@pytest.mark.parametrize(("system", "code"), [(SNOMED, "46177005"), (ICD10, "N18.6")])
def test_end_stage_renal_disease_is_ckd_and_limits_life_expectancy(
    definitions: Definitions, system: str, code: str
) -> None:
    profile = profile_of(definitions, record(condition("esrd", system, code)))
    assert reading(profile.finding("ckd")) == ("present", "high")
    assert reading(profile.finding("limited_life_expectancy")) == ("present", "high")


def test_the_tiers_exclude_each_other(definitions: Definitions) -> None:
    """A very complex patient also meets complex health: only the very complex change applies."""
    rec = record(TYPE2, *THREE_ILLNESSES, condition("pal", ICD10, "Z51.5"), birthDate=AGE_65)
    changes = next(g for g in plan_of(definitions, rec).goals if g.key == HBA1C_GOAL).variations
    assert [v.variant for v in changes] == ["hba1c-goal-older-very-complex"]
    for variant in ("hba1c-goal-older-complex", "hba1c-goal-older-very-complex"):
        held = agrees(definitions, variant_when(definitions, variant), rec)
        assert held is variant.endswith("very-complex")


@pytest.mark.parametrize(
    ("medicine", "expected"),
    [(med("m1", HUMULIN_70_30), ("<", 7.5, None)), (med("m1", METFORMIN_ER_500), ("<", 7.0, None))],
    ids=["insulin", "metformin"],
)
def test_a_healthy_older_adult_on_insulin_aims_below_7_5(
    definitions: Definitions, medicine: dict[str, Any], expected: tuple[str, float, None]
) -> None:
    plan = plan_of(definitions, record(TYPE2, medicine, birthDate=AGE_65))
    assert goal(plan, HBA1C_GOAL) == expected


@pytest.mark.parametrize(
    ("birth", "expected"),
    [(AGE_64, ("<", 8.0, None)), ("1990-01-01", ("<", 8.0, None))],
    ids=["64", "36"],
)
def test_limited_life_expectancy_below_65_relaxes_the_goal_to_8(
    definitions: Definitions, birth: str, expected: tuple[str, float, None]
) -> None:
    rec = record(TYPE2, condition("pal", ICD10, "Z51.5"), birthDate=birth)
    assert goal(plan_of(definitions, rec), HBA1C_GOAL) == expected
    assert goal(plan_of(definitions, record(TYPE2, birthDate=birth)), HBA1C_GOAL) == (
        "<",
        7.0,
        None,
    )


def test_type1_goals_follow_the_same_tiers(definitions: Definitions) -> None:
    rec = record(TYPE1, *THREE_ILLNESSES, birthDate=AGE_65)
    assert goal(plan_of(definitions, rec), "diabetes-type1.hba1c-below-7") == ("<", 8.0, None)


DEINTENSIFY = "deintensify-hypoglycemia-risk-medicines"


@pytest.mark.parametrize(
    ("birth", "medicine", "extra", "added"),
    [
        (AGE_65, med("m1", GLIPIZIDE_5), THREE_ILLNESSES, True),
        (AGE_65, med("m1", HUMULIN_70_30), (condition("pal", ICD10, "Z51.5"),), True),
        (AGE_65, med("m1", METFORMIN_ER_500), THREE_ILLNESSES, False),  # no such medicine
        (AGE_65, med("m1", GLIPIZIDE_5), THREE_ILLNESSES[:2], False),  # healthy
        (AGE_64, med("m1", GLIPIZIDE_5), THREE_ILLNESSES, False),  # not an older adult
        (AGE_65, med("m1", GLIPIZIDE_5, status="stopped"), THREE_ILLNESSES, False),
    ],
    ids=["sulfonylurea", "insulin-palliative", "metformin", "healthy", "64", "stopped"],
)
def test_deintensification_review_for_frail_older_adults_on_insulin_or_secretagogues(
    definitions: Definitions,
    birth: str,
    medicine: dict[str, Any],
    extra: tuple[dict[str, Any], ...],
    added: bool,
) -> None:
    rec = record(TYPE2, medicine, *extra, birthDate=birth)
    assert (DEINTENSIFY in activity_keys(plan_of(definitions, rec))) is added
    assert agrees(definitions, variant_when(definitions, DEINTENSIFY), rec) is added


# -- blood pressure: one standard, below 130/80 -------------------------------------------------


@pytest.mark.parametrize(
    ("systolic", "diastolic", "expected"),
    [
        (129, 79, ("absent", None)),
        (130, 79, ("present", "low")),
        (129, 80, ("present", "low")),
        (139, 89, ("present", "low")),
        (140, 70, ("present", "moderate")),
        (120, 90, ("present", "moderate")),
        (179, 119, ("present", "moderate")),
        (180, 70, ("present", "high")),
        (120, 120, ("present", "high")),
    ],
)
def test_bp_above_target_from_130_or_80_graded_by_the_guideline_categories(
    definitions: Definitions, systolic: int, diastolic: int, expected: tuple[str, str | None]
) -> None:
    rec = record(bp("bp", systolic, diastolic))
    assert reading(profile_of(definitions, rec).finding("bp_above_target")) == expected
    assert agrees(definitions, {"feature": "bp_above_target"}, rec) is (expected[0] == "present")


def test_every_bp_goal_is_below_130_over_80(definitions: Definitions) -> None:
    """The one standard: each module with a BP goal has both, at 130 and 80."""
    by_measure = {"8480-6": 130.0, "8462-4": 80.0}
    modules = {}
    for module in definitions.catalog.modules:
        bp_goals = {
            g.target.measure.code: g.target.value
            for g in module.goals
            if g.target.measure.code in by_measure and g.target.value is not None
        }
        if bp_goals:
            modules[module.id] = bp_goals
    assert set(modules) == {
        "hypertension-outpatient",
        "ckd-care",
        "secondary-prevention",
        "hemorrhagic-stroke-care",
    }
    assert all(goals == by_measure for goals in modules.values())


HTN = condition("htn", ICD10, "I10")
BP_GOALS = (
    "hypertension-outpatient.systolic-below-130",
    "hypertension-outpatient.diastolic-below-80",
)


@pytest.mark.parametrize(
    ("birth", "diabetes", "expected"),
    [
        (AGE_65, True, (140.0, 90.0)),
        (AGE_64, True, (130.0, 80.0)),
        (AGE_65, False, (130.0, 80.0)),  # the ADA table is for diabetes; AHA/ACC sets no number
    ],
    ids=["65-diabetes", "64-diabetes", "65-no-diabetes"],
)
def test_bp_goals_relax_to_140_over_90_in_very_complex_health_with_diabetes(
    definitions: Definitions, birth: str, diabetes: bool, expected: tuple[float, float]
) -> None:
    resources = [HTN, condition("pal", ICD10, "Z51.5"), *([TYPE2] if diabetes else [])]
    plan = plan_of(definitions, record(*resources, birthDate=birth))
    assert tuple(goal(plan, key)[1] for key in BP_GOALS) == expected
    review = next(a for a in plan.activities if a.key.endswith("hypertension-follow-up-visit"))
    individualized = "with the patient and caregiver" in review.description
    assert individualized is (birth == AGE_65)


def test_a_relaxed_bp_goal_changes_every_modules_bp_goal(definitions: Definitions) -> None:
    rec = record(
        HTN,
        TYPE2,
        condition("ckd", ICD10, "N18.32"),
        condition("cad", ICD10, "I25.10"),
        condition("pal", ICD10, "Z51.5"),
        birthDate=AGE_65,
    )
    plan = plan_of(definitions, rec)
    systolic = {g.key: g.target.value for g in plan.goals if g.key.endswith(".systolic-below-130")}
    diastolic = {g.key: g.target.value for g in plan.goals if g.key.endswith(".diastolic-below-80")}
    modules = {"hypertension-outpatient", "ckd-care", "secondary-prevention"}
    assert (
        {key.split(".")[0] for key in systolic} == modules == {k.split(".")[0] for k in diastolic}
    )
    assert set(systolic.values()) == {140.0}
    assert set(diastolic.values()) == {90.0}


# -- CKD: a diagnosis, or markers persisting 90 days (KDIGO 2024 chapter 1.1) -------------------


def ckd(rec: PatientRecord, definitions: Definitions) -> tuple[str, str | None] | None:
    return reading(profile_of(definitions, rec).finding("ckd"))


@pytest.mark.parametrize(
    ("results", "expected"),
    [
        ([egfr("a", 45, "2026-08-01")], ("unknown", None)),  # one result: may be AKI
        ([egfr("a", 45, "2026-05-01"), egfr("b", 52, "2026-07-30")], ("present", "moderate")),
        ([egfr("a", 45, "2026-05-01"), egfr("b", 52, "2026-07-29")], ("unknown", None)),  # 89 d
        ([egfr("a", 55, "2025-11-01"), egfr("b", 25, "2026-09-01")], ("present", "high")),
        (  # a normal result between breaks the run
            [egfr("a", 45, "2026-01-10"), egfr("b", 70, "2026-03-01"), egfr("c", 50, "2026-05-01")],
            ("unknown", None),
        ),
        (
            [egfr("a", 45, "2026-01-10"), egfr("b", 50, "2026-05-01"), egfr("c", 61, "2026-09-01")],
            ("absent", None),
        ),
        (
            [egfr("a", 45, "2026-01-10", "mL/min"), egfr("b", 50, "2026-05-01")],
            ("present", "moderate"),
        ),
        (
            [uacr("a", 45, "2026-03-01"), uacr("b", 60, "2026-06-01", code="14959-1")],
            ("present", "moderate"),
        ),
        ([uacr("a", 45, "2026-03-01"), uacr("b", 350, "2026-06-01")], ("present", "high")),
        ([uacr("a", 45, "2026-03-01"), uacr("b", 29, "2026-06-01")], ("absent", None)),
    ],
    ids=[
        "one-egfr",
        "90-days",
        "89-days",
        "g4",
        "normal-between",
        "normal-now",
        "egfr-ml-min",
        "uacr-a2",
        "uacr-a3",
        "uacr-a1-now",
    ],
)
def test_ckd_from_kidney_markers_needs_90_days(
    definitions: Definitions, results: list[dict[str, Any]], expected: tuple[str, str | None]
) -> None:
    rec = record(*results)
    assert ckd(rec, definitions) == expected
    for severity in ("moderate", "high"):
        raw = {"feature": "ckd", "severity_at_least": severity}
        held = expected[0] == "present" and (severity == "moderate" or expected[1] == "high")
        assert agrees(definitions, raw, rec) is held


def test_each_kidney_marker_is_a_criterion_of_its_own(definitions: Definitions) -> None:
    """A confirmed low eGFR is CKD whatever a newer, single albuminuria result says."""
    confirmed = [egfr("a", 45, "2026-01-10"), egfr("b", 50, "2026-05-01")]
    for newer in (uacr("u", 20, "2026-09-01"), uacr("u", 50, "2026-09-01")):
        rec = record(*confirmed, newer)
        assert ckd(rec, definitions) == ("present", "moderate")
        assert agrees(definitions, {"feature": "ckd"}, rec)


def test_a_diagnosis_still_makes_ckd_and_a_pending_result_does_not_grade_it(
    definitions: Definitions,
) -> None:
    rec = record(condition("ckd", ICD10, "N18.31"), egfr("a", 25, "2026-10-01"))
    assert ckd(rec, definitions) == ("present", "moderate")
    assert not agrees(definitions, {"feature": "ckd", "severity_at_least": "high"}, rec)
    assert agrees(definitions, {"feature": "ckd"}, rec)


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        (29, "mg/g", ("absent", None)),
        (30, "mg/g", ("present", "moderate")),
        (299, "mg/g", ("present", "moderate")),
        (300, "mg/g", ("present", "high")),
        (2.9, "mg/mmol", ("absent", None)),  # KDIGO: A1 below 3 mg/mmol
        (3.0, "mg/mmol", ("present", "moderate")),  # A2 from 3 mg/mmol
        (30, "mg/mmol", ("present", "high")),  # A3 from 30 mg/mmol
        (45, "mg/g{creat}", ("present", "moderate")),
        # UCUM is not trusted between dimensionless units (docs/mapping-format.md): unread.
        (0.05, "g/g", ("unknown", None)),
    ],
)
def test_albuminuria_in_kdigo_categories_whatever_the_unit(
    definitions: Definitions, value: float, unit: str, expected: tuple[str, str | None]
) -> None:
    rec = record(uacr("u", value, "2026-09-01", unit))
    assert reading(profile_of(definitions, rec).finding("albuminuria")) == expected
    assert agrees(definitions, {"feature": "albuminuria"}, rec) is (expected[0] == "present")


def test_ckd_care_starts_on_persisting_markers_or_a_diagnosis_not_on_one_result(
    definitions: Definitions,
) -> None:
    single = plan_of(definitions, record(TYPE2, egfr("a", 45, "2026-09-01")))
    assert "ckd-care" not in {m.id for m in single.modules}
    assert "ckd-confirmation-tests" in activity_keys(single)
    persisting = plan_of(
        definitions, record(egfr("a", 45, "2026-05-01"), egfr("b", 48, "2026-09-01"))
    )
    assert "ckd-care" in {m.id for m in persisting.modules}
    assert "ckd-confirmation-tests" not in activity_keys(persisting)
    review = next(
        a for a in persisting.activities if a.key == "ckd-care.kidney-protective-medicines-review"
    )
    assert "ACE inhibitor or ARB" in review.description and "SGLT2 inhibitor" in review.description
    assert "raas-inhibitor-review" in review.tags
    assert goal(persisting, "ckd-care.diastolic-below-80") == ("<", 80.0, None)
    diagnosed = plan_of(definitions, record(condition("ckd", SNOMED, "700379002")))
    assert "ckd-care" in {m.id for m in diagnosed.modules}


@pytest.mark.parametrize(
    ("resources", "referred"),
    [
        ([egfr("a", 29, "2026-09-01")], True),  # a first eGFR below 30: AKI or G4-G5
        ([egfr("a", 30, "2026-09-01")], False),
        ([condition("ckd", ICD10, "N18.4")], True),
        ([condition("ckd", ICD10, "N18.32"), egfr("a", 40, "2026-09-01")], False),
        ([uacr("a", 320, "2026-03-01"), uacr("b", 410, "2026-07-01")], True),  # persistent A3
        ([uacr("a", 320, "2026-06-01")], False),  # a single A3 result
    ],
    ids=["egfr-29", "egfr-30", "n18.4", "n18.32", "a3-persisting", "a3-once"],
)
def test_nephrology_referral_where_kdigo_advises_it(
    definitions: Definitions, resources: list[dict[str, Any]], referred: bool
) -> None:
    rec = record(HTN, *resources)
    assert ("nephrology-referral" in activity_keys(plan_of(definitions, rec))) is referred
    assert agrees(definitions, variant_when(definitions, "nephrology-referral"), rec) is referred


def test_confirmation_is_for_measurements_only() -> None:
    rule = {
        "id": "f.count",
        "resource": "MedicationRequest",
        "value": {"bands": [{"status": "absent"}]},
    }
    with pytest.raises(ValidationError, match="confirmed_after_days"):
        Feature.model_validate(
            {"id": "f", "label": "F", "confirmed_after_days": 90, "rules": [rule]}
        )


# -- STEADI fall screening ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "feature", "answer_code", "expected"),
    [
        ("100257-5", "fall_risk", "LA33-6", ("present", "moderate")),  # feels unsteady
        ("100257-5", "fall_risk", "LA32-8", ("absent", None)),
        ("97878-3", "fall_risk", "LA33-6", ("present", "moderate")),  # worries about falling
        ("97878-3", "fall_risk", "LA32-8", ("absent", None)),
        ("52552-7", "fall_history", "LA33-6", ("present", "moderate")),  # fallen in past year
        ("52552-7", "fall_history", "LA32-8", ("absent", None)),
    ],
)
def test_the_steadi_key_questions(
    definitions: Definitions, code: str, feature: str, answer_code: str, expected: tuple
) -> None:
    rec = record(observation("q", code, **answer(answer_code)), birthDate="1950-03-01")
    profile = profile_of(definitions, rec)
    assert reading(profile.finding(feature)) == expected
    assert "no_fall_risk_screening" not in {g.id for g in profile.data_gaps}
    assert agrees(definitions, {"feature": feature}, rec) is (expected[0] == "present")


def test_a_yes_to_any_key_question_on_the_day_is_a_positive_screen(
    definitions: Definitions,
) -> None:
    rec = record(
        observation("q1", "100257-5", **answer("LA32-8")),
        observation("q2", "97878-3", **answer("LA33-6")),
    )
    assert reading(profile_of(definitions, rec).finding("fall_risk")) == ("present", "moderate")
    assert agrees(definitions, {"feature": "fall_risk"}, rec)


def risk_assessment(value: dict[str, Any], when: str = "2026-09-01") -> dict[str, Any]:
    return observation("fra", "73830-2", when, **value)


@pytest.mark.parametrize(
    ("value", "expected", "gap_open"),
    [
        (
            {"valueCodeableConcept": {"coding": [{"system": SNOMED, "code": "129839007"}]}},
            ("present", "moderate"),
            False,
        ),
        ({"valueString": "Low risk"}, ("unknown", None), False),  # done, result unread
        ({"valueQuantity": {"value": 15, "unit": "{score}"}}, ("unknown", None), False),
    ],
    ids=["at-risk", "free-text", "score"],
)
def test_a_recorded_fall_risk_assessment_closes_the_screening_gap(
    definitions: Definitions, value: dict[str, Any], expected: tuple, gap_open: bool
) -> None:
    rec = record(risk_assessment(value), birthDate="1950-03-01")
    profile = profile_of(definitions, rec)
    assert reading(profile.finding("fall_risk")) == expected
    assert ("no_fall_risk_screening" in {g.id for g in profile.data_gaps}) is gap_open
    assert agrees(definitions, {"gap": "no_fall_risk_screening"}, rec) is gap_open


def test_an_old_assessment_leaves_the_gap_open(definitions: Definitions) -> None:
    rec = record(risk_assessment({"valueString": "Low risk"}, "2025-11-14"), birthDate="1950-03-01")
    assert "no_fall_risk_screening" in {g.id for g in profile_of(definitions, rec).data_gaps}
    assert agrees(definitions, {"gap": "no_fall_risk_screening"}, rec)


def test_an_unread_result_closes_only_a_gap_that_says_so() -> None:
    """Without ``any_result_closes`` an unreadable answer is no screening (as before)."""
    social = {
        "version": "1",
        "changelog": ["test"],
        "dimension": "social",
        "features": [
            {
                "id": "food",
                "label": "Food",
                "current_for_days": 365,
                "rules": [
                    {
                        "id": "food.hvs",
                        "resource": "Observation",
                        "codes": [{"system": LOINC, "code": "88122-7"}],
                        "answers": [
                            {"code": "LA28397-0", "status": "present", "severity": "moderate"}
                        ],
                    }
                ],
            }
        ],
    }
    index = code_index(social)
    rec = record(observation("o1", "88122-7", **answer("LA9999-9")))
    for closes in (False, True):
        gap = GapDefinition(
            id="g", label="G", features=["food"], within_days=365, any_result_closes=closes
        )
        rules = ProfileRules(index, {}, (gap,))
        gaps = build_profile(rec, rules, AS_OF).data_gaps
        assert bool(gaps) is not closes
        assert fhirpath_holds(
            Translator(rules).expression(RULE.validate_python({"gap": "g"})), rec
        ) is (not closes)


def test_the_inpatient_morse_fall_scale_no_longer_screens(definitions: Definitions) -> None:
    rec = record(observation("m", "59460-6", **quantity(55, "{score}")), birthDate="1950-03-01")
    profile = profile_of(definitions, rec)
    assert profile.finding("fall_risk") is None
    assert "no_fall_risk_screening" in {g.id for g in profile.data_gaps}
    # an Observation no fall rule matches is no screening, whatever value it carries
    assert agrees(definitions, {"gap": "no_fall_risk_screening"}, rec)


# -- module steps ---------------------------------------------------------------------------------


def test_depression_care_assesses_suicide_risk(definitions: Definitions) -> None:
    plan = plan_of(definitions, record(condition("mdd", SNOMED, "370143000")))
    step = next(a for a in plan.activities if a.key == "depression-care.suicide-risk-assessment")
    assert step.standard_code is not None and step.standard_code.code == "225337009"
    assert "C-SSRS" in step.description and "safety plan" in step.description


ALCOHOL_STEPS = {"alcohol-withdrawal-risk-check", "alcohol-use-disorder-medication"}


@pytest.mark.parametrize(
    ("resources", "steps"),
    [
        ([condition("aud", ICD10, "F10.20")], True),  # alcohol dependence: moderate-severe AUD
        ([condition("aud", SNOMED, "7200002")], True),  # alcoholism
        ([condition("aud", ICD10, "F10.10")], False),  # alcohol abuse: mild
        ([observation("a", "75626-2", **quantity(8, "{score}"))], True),  # AUDIT-C 8
        ([observation("a", "75626-2", **quantity(7, "{score}"))], False),
    ],
    ids=["f10.20", "7200002", "f10.10", "audit-c-8", "audit-c-7"],
)
def test_alcohol_use_disorder_gets_withdrawal_risk_and_medication_steps(
    definitions: Definitions, resources: list[dict[str, Any]], steps: bool
) -> None:
    rec = record(*resources)
    keys = activity_keys(plan_of(definitions, rec))
    assert (keys >= ALCOHOL_STEPS) is steps
    assert not steps or "alcohol-use.alcohol-brief-intervention" in keys
    raw = {"feature": "unhealthy_alcohol_use", "severity_at_least": "high"}
    assert agrees(definitions, raw, rec) is steps


def inpatient_stay(end: str) -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "id": "stay",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        "subject": {"reference": "Patient/p1"},
        "period": {"start": "2026-10-20", "end": end},
    }


@pytest.mark.parametrize(
    ("discharge", "seven_days"),
    [("2026-11-05", True), ("2026-10-16", True), ("2026-10-15", False)],
    ids=["10-days-ago", "30-days-ago", "31-days-ago"],
)
def test_heart_failure_follow_up_within_7_days_of_a_discharge(
    definitions: Definitions, discharge: str, seven_days: bool
) -> None:
    rec = record(condition("hf", SNOMED, "88805009"), inpatient_stay(discharge))
    visit = next(
        a
        for a in plan_of(definitions, rec).activities
        if a.key == "heart-failure.heart-failure-follow-up-visit"
    )
    assert ("within 7 days of the hospital discharge" in visit.description) is seven_days


@pytest.mark.parametrize("diabetes", [TYPE2, TYPE1], ids=["type2", "type1"])
def test_diabetes_care_has_a_statin_step(
    definitions: Definitions, diabetes: dict[str, Any]
) -> None:
    plan = plan_of(definitions, record(diabetes, birthDate="1970-01-01"))
    step = next(a for a in plan.activities if "statin-review" in a.tags)
    assert "moderate-intensity statin" in step.description and "40 to 75" in step.description


# -- codes read for what they mean ---------------------------------------------------------------


def test_z74_2_is_no_household_caregiver_not_iadl_dependence(definitions: Definitions) -> None:
    rec = record(condition("z742", ICD10, "Z74.2"))
    profile = profile_of(definitions, rec)
    assert reading(profile.finding("no_household_caregiver")) == ("present", "moderate")
    assert profile.finding("iadl_dependence") is None
    assert "daily-living-support" in {m.id for m in plan_of(definitions, rec).modules}


def test_primary_school_only_is_low_education_and_described_as_such(
    definitions: Definitions,
) -> None:
    rec = record(condition("edu", SNOMED, "224295006"))
    assert reading(profile_of(definitions, rec).finding("low_education")) == ("present", "moderate")
    path = bundled_path("profiles") / "valuesets" / "low-education-snomed.json"
    valueset = json.loads(path.read_text())
    (concept,) = valueset["compose"]["include"][0]["concept"]
    assert concept["display"] == "Only received primary school education"
    source = concept["extension"][0]["valueString"]
    assert "ended after primary school" in source and "wider" in source


# -- the rule and goal constructs -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [(THREE_ILLNESSES, True), (THREE_ILLNESSES[:2], False), ((), False)],
    ids=["three", "two", "none"],
)
def test_count_at_least(definitions: Definitions, conditions: tuple, expected: bool) -> None:
    raw = {
        "count_at_least": 3,
        "of": [
            {"feature": "hypertension"},
            {"feature": "osteoarthritis"},
            {"feature": "copd"},
            {"feature": "heart_failure"},
        ],
    }
    rec = record(*conditions)
    assert agrees(definitions, raw, rec) is expected


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ({"count_at_least": 3, "of": [{"feature": "a"}, {"feature": "b"}]}, "exceeds"),
        ({"count_at_least": 0, "of": [{"feature": "a"}]}, "greater than or equal to 1"),
    ],
)
def test_count_at_least_must_be_reachable(raw: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        RULE.validate_python(raw)


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ({"value": 8, "text": "t"}, "either 'value' or 'text'"),
        ({}, "either 'value' or 'text'"),
        ({"text": "t", "comparator": "<"}, "compares a 'value'"),
        ({"value": 8, "measure": {"system": LOINC, "code": "2339-0"}}, "goes with a 'text'"),
    ],
)
def test_an_adjusted_goal_is_a_value_or_a_text(raw: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        AdjustGoal.model_validate({"goal": "m.g", "description": "d", **raw})


def test_an_adjusted_goal_may_name_several_goals() -> None:
    change = AdjustGoal.model_validate(
        {"goal": ["a.b", "c.d"], "description": "d", "comparator": "<", "value": 8}
    )
    assert change.goals == ("a.b", "c.d")
    assert AdjustGoal.model_validate({"goal": "a.b", "description": "d", "value": 8}).goals == (
        "a.b",
    )
