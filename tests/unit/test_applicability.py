"""Whom rules apply to, the pregnancy state, and withheld goals and steps.

- ``applies_to`` (ages, sex) on the bundled feature rules, one test per side of each bound:
  adult and pediatric BMI (CDC), AUDIT-C by sex (USPSTF 2018), PHQ-9/PHQ-2 from 12, GAD-7 from
  13, Mini-Cog and MoCA in adults, employment from 16 and educational attainment from 18; a
  feature read only by rules that do not apply is "not assessed" (unknown), never absent.
- pregnancy: Conditions (SNOMED CT descendants, ICD-10-CM subcodes, VSAC Pregnant State) and
  pregnancy status answers, expiring after 42 weeks, ended by a resolution or an abatement.
- withhold: pregnancy and interpersonal-safety variants withhold steps and goals, which stay
  visible (plan, CarePlan ``doNotPerform`` and note, approval, SMART page).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from builders import (
    AS_OF,
    ICD10,
    LOINC,
    SNOMED,
    answer,
    condition,
    observation,
    patient,
    plan_of,
    profile_of,
    quantity,
    reading,
    record,
)

from fhir_tailor.approval import activate
from fhir_tailor.catalog import Variant, Withhold
from fhir_tailor.definitions import Definitions
from fhir_tailor.mapping import AppliesTo, Feature
from fhir_tailor.pipeline import assess
from fhir_tailor.plan import Plan
from fhir_tailor.profile_model import Finding
from fhir_tailor.record import PatientRecord
from fhir_tailor.resources import content_digest, to_fhir
from fhir_tailor.sinks.files import summarize
from fhir_tailor.web.cds_hooks import CarePlanCards
from fhir_tailor.web.page import PageView, plan_page

RECORDED = datetime(2026, 11, 15, 9, 0, tzinfo=UTC)
NULL_FLAVOR = "http://terminology.hl7.org/CodeSystem/v3-NullFlavor"


def born(age: int) -> str:
    """A birth date giving exactly ``age`` on the as-of date (a birthday that day)."""
    return AS_OF.replace(year=AS_OF.year - age).isoformat()


def finding(
    definitions: Definitions,
    feature: str,
    *resources: dict[str, Any],
    issues: list[tuple[str, str]] | None = None,
    **facts: Any,
) -> Finding | None:
    rec = record(*resources, **facts)
    if facts.get("birthDate") is None and "birthDate" in facts:
        rec = PatientRecord({k: v for k, v in rec.patient.items() if v is not None}, rec.resources)
    return profile_of(definitions, rec, issues).finding(feature)


def bmi(value: float, when: str = "2026-09-01", oid: str = "bmi") -> dict[str, Any]:
    return observation(oid, "39156-5", when, **quantity(value, "kg/m2"))


def percentile(value: float, when: str = "2026-09-01") -> dict[str, Any]:
    return observation("pct", "59576-9", when, **quantity(value, "%"))


def score(code: str, value: int) -> dict[str, Any]:
    return observation("o1", code, valueInteger=value)


# -- applies_to: the model ---------------------------------------------------------------------


def test_applies_to_reads_ages_known_and_unknown() -> None:
    child = AppliesTo(age_at_least=2, age_below=20, source="-")
    adult = AppliesTo(age_at_least=20, source="-")
    assert [child.admits(age, None) for age in (1, 2, 19, 20, None)] == [
        False,
        True,
        True,
        False,
        False,  # without a birth date a patient is read as an adult
    ]
    assert [adult.admits(age, None) for age in (19, 20, None)] == [False, True, True]
    assert child.describe() == "ages 2 to 19" and adult.describe() == "ages 20 and over"


@pytest.mark.parametrize(
    ("gender", "women", "men"),
    [("female", True, False), ("male", False, True), ("other", True, True), (None, True, True)],
)
def test_applies_to_excludes_only_the_other_recorded_sex(
    gender: str | None, women: bool, men: bool
) -> None:
    assert AppliesTo(sex="female", source="-").admits(40, gender) is women
    assert AppliesTo(sex="male", source="-").admits(40, gender) is men


@pytest.mark.parametrize(
    "raw",
    [
        {"source": "-"},
        {"age_at_least": 20, "age_below": 20, "source": "-"},
        {"age_at_least": 18},
        {"sex": "other", "source": "-"},
    ],
)
def test_applies_to_needs_a_bound_a_source_and_an_order(raw: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        AppliesTo.model_validate(raw)


def test_a_state_feature_takes_no_severity_and_is_no_asset() -> None:
    rule = {"id": "s.c", "resource": "Condition", "valuesets": ["http://x.org/vs"]}
    Feature.model_validate({"id": "s", "label": "S", "state": True, "rules": [rule]})
    with pytest.raises(ValueError, match="state feature takes no severities"):
        graded = {**rule, "severity": "low"}
        Feature.model_validate({"id": "s", "label": "S", "state": True, "rules": [graded]})
    with pytest.raises(ValueError, match="asset or a state"):
        Feature.model_validate(
            {"id": "s", "label": "S", "state": True, "asset": True, "rules": [rule]}
        )


# -- applies_to: obesity in adults and children (CDC) ------------------------------------------


@pytest.mark.parametrize(
    ("age", "value", "expected"),
    [
        (20, 30.0, ("present", "moderate")),
        (20, 29.9, ("absent", None)),
        (20, 40.0, ("present", "high")),
        (19, 31.0, ("unknown", None)),  # the adult cut point is not read at 19
        (9, 34.9, ("unknown", None)),
        (9, 35.0, ("present", "high")),  # severe obesity at 2-19 (CDC)
        (2, 35.0, ("present", "high")),
    ],
)
def test_bmi_is_read_by_the_cut_points_of_the_patients_age(
    definitions: Definitions, age: int, value: float, expected: tuple[str, str | None]
) -> None:
    found = finding(definitions, "obesity", bmi(value), birthDate=born(age))
    assert reading(found) == expected


def test_a_childs_bmi_below_35_says_to_read_the_percentile(definitions: Definitions) -> None:
    found = finding(definitions, "obesity", bmi(31), birthDate=born(9))
    assert found is not None and "percentile" in found.label


@pytest.mark.parametrize(
    ("age", "value", "expected"),
    [
        (9, 95.0, ("present", "moderate")),
        (9, 94.9, ("absent", None)),
        (19, 97.0, ("present", "moderate")),
        (2, 96.0, ("present", "moderate")),
    ],
)
def test_bmi_for_age_percentile_reads_obesity_from_2_to_19(
    definitions: Definitions, age: int, value: float, expected: tuple[str, str | None]
) -> None:
    assert reading(finding(definitions, "obesity", percentile(value), birthDate=born(age))) == (
        expected
    )


@pytest.mark.parametrize(("age", "birth"), [(20, born(20)), (1, born(1)), (None, None)])
def test_a_percentile_outside_2_to_19_is_not_assessed(
    definitions: Definitions, age: int | None, birth: str | None
) -> None:
    found = finding(definitions, "obesity", percentile(99), birthDate=birth)
    assert found is not None and found.status == "unknown"
    assert found.label.startswith("Obesity: not assessed")
    assert "obesity.bmi_percentile applies to ages 2 to 19" in found.label


def test_an_infants_bmi_is_not_assessed_rather_than_absent(definitions: Definitions) -> None:
    found = finding(definitions, "obesity", bmi(18), birthDate=born(1))
    assert found is not None and found.status == "unknown" and found.severity is None
    assert "not assessed" in found.label and "ages 20 and over" in found.label
    assert found.sources == ("Observation/bmi",)


def test_without_a_birth_date_the_adult_cut_points_read(definitions: Definitions) -> None:
    assert reading(finding(definitions, "obesity", bmi(31), birthDate=None)) == (
        "present",
        "moderate",
    )


def test_a_newer_percentile_decides_over_a_childs_bmi(definitions: Definitions) -> None:
    resources = (bmi(31, "2026-09-01"), percentile(80, "2026-10-01"))
    assert reading(finding(definitions, "obesity", *resources, birthDate=born(9))) == (
        "absent",
        None,
    )


def test_a_rule_that_does_not_apply_reports_no_data_issue(definitions: Definitions) -> None:
    weight = observation("w", "39156-5", **quantity(31, "kg"))  # a weight, not a BMI
    child: list[tuple[str, str]] = []
    finding(definitions, "obesity", weight, issues=child, birthDate=born(9))
    adult: list[tuple[str, str]] = []
    finding(definitions, "obesity", weight, issues=adult, birthDate=born(40))
    assert len(child) == 1 and len(adult) == 1  # the one rule that applies, not both


def test_not_assessed_raises_no_need(definitions: Definitions) -> None:
    profile = profile_of(definitions, record(bmi(50), birthDate=born(1)))
    assert profile.medical.need == "none"


# -- applies_to: screening instruments ---------------------------------------------------------


@pytest.mark.parametrize(
    ("gender", "value", "status"),
    [
        ("female", 3, "present"),
        ("female", 2, "absent"),
        ("male", 4, "present"),
        ("male", 3, "absent"),
        ("other", 3, "present"),  # both rules read: the lower cut point wins
        ("unknown", 3, "present"),
        (None, 3, "present"),
        ("unknown", 2, "absent"),
    ],
)
def test_audit_c_cut_point_by_sex(
    definitions: Definitions, gender: str | None, value: int, status: str
) -> None:
    rec = record(score("75626-2", value), gender=gender)
    if gender is None:
        rec = PatientRecord({k: v for k, v in rec.patient.items() if k != "gender"}, rec.resources)
    found = profile_of(definitions, rec).finding("unhealthy_alcohol_use")
    assert found is not None and found.status == status


@pytest.mark.parametrize(
    ("code", "feature", "value", "adult_from"),
    [
        ("75626-2", "unhealthy_alcohol_use", 9, 18),
        ("44261-6", "depression", 12, 12),
        ("55758-7", "depression_screen_positive", 4, 12),
        ("70274-6", "anxiety", 12, 13),
        ("72233-0", "cognitive_impairment", 1, 18),
        ("72172-0", "cognitive_impairment", 15, 18),
    ],
)
def test_instruments_are_read_from_their_age(
    definitions: Definitions, code: str, feature: str, value: int, adult_from: int
) -> None:
    at_age = finding(definitions, feature, score(code, value), birthDate=born(adult_from))
    assert at_age is not None and at_age.status == "present"
    younger = finding(definitions, feature, score(code, value), birthDate=born(adult_from - 1))
    assert younger is not None and younger.status == "unknown"
    assert "not assessed" in younger.label


@pytest.mark.parametrize(("age", "status"), [(13, "present"), (12, "unknown")])
def test_adult_bp_cut_points_are_read_from_13(
    definitions: Definitions, age: int, status: str
) -> None:
    systolic = observation("bp", "8480-6", **quantity(150, "mm[Hg]"))
    found = finding(definitions, "bp_above_target", systolic, birthDate=born(age))
    assert found is not None and found.status == status


@pytest.mark.parametrize(
    ("code", "answer_code", "feature", "from_age"),
    [
        ("67875-5", "LA17956-6", "unemployment", 16),
        ("82589-3", "LA30191-3", "low_education", 18),
    ],
)
def test_adult_social_items_are_read_from_their_age(
    definitions: Definitions, code: str, answer_code: str, feature: str, from_age: int
) -> None:
    item = observation("o1", code, **answer(answer_code))
    at_age = finding(definitions, feature, item, birthDate=born(from_age))
    assert at_age is not None and at_age.status == "present"
    younger = finding(definitions, feature, item, birthDate=born(from_age - 1))
    assert younger is not None and younger.status == "unknown"


def test_household_needs_are_read_for_a_child(definitions: Definitions) -> None:
    hunger = observation("o1", "88122-7", **answer("LA28397-0"))  # answered by a parent
    assert reading(finding(definitions, "food_insecurity", hunger, birthDate=born(9))) == (
        "present",
        "moderate",
    )


# -- children's plans --------------------------------------------------------------------------


def child_with_obesity(age: int) -> PatientRecord:
    return record(percentile(97), birthDate=born(age), gender="male")


def test_a_child_with_obesity_gets_pediatric_weight_management(definitions: Definitions) -> None:
    modules = [m.id for m in plan_of(definitions, child_with_obesity(9)).modules]
    assert "pediatric-weight-management" in modules and "weight-management" not in modules


def test_an_adult_with_obesity_gets_adult_weight_management(definitions: Definitions) -> None:
    rec = record(condition("c1", ICD10, "E66.9"), birthDate=born(18))
    modules = [m.id for m in plan_of(definitions, rec).modules]
    assert "weight-management" in modules and "pediatric-weight-management" not in modules


def test_diabetes_prevention_is_for_adults(definitions: Definitions) -> None:
    prediabetes = condition("c1", ICD10, "R73.03")
    adult = plan_of(definitions, record(prediabetes, birthDate=born(18)))
    assert "diabetes-prevention" in [m.id for m in adult.modules]
    _, child = assess_plan(definitions, record(prediabetes, birthDate=born(17)))
    assert child is None or "diabetes-prevention" not in [m.id for m in child.modules]


def assess_plan(definitions: Definitions, rec: PatientRecord) -> tuple[Any, Plan | None]:
    profile, _, plan = assess(rec, definitions, AS_OF)
    return profile, plan


# -- pregnancy ---------------------------------------------------------------------------------


def pregnant(
    code: str = "72892002", system: str = SNOMED, onset: str = "2026-08-01", **extra: Any
) -> dict[str, Any]:
    resource = condition("preg", system, code, **extra)
    resource["onsetDateTime"] = onset
    return resource


def status(
    value: str, system: str = SNOMED, when: str = "2026-09-01", oid: str = "ps"
) -> dict[str, Any]:
    return observation(
        oid, "82810-3", when, valueCodeableConcept={"coding": [{"system": system, "code": value}]}
    )


@pytest.mark.parametrize(
    ("system", "code"),
    [
        (SNOMED, "77386006"),
        (SNOMED, "72892002"),  # normal pregnancy (Synthea)
        (SNOMED, "16356006"),
        (SNOMED, "255409004"),  # VSAC Pregnant State
        (ICD10, "Z33.1"),
        (ICD10, "Z34.02"),
        (ICD10, "Z3A.20"),
        (ICD10, "O09.513"),
        (ICD10, "O24.113"),
        (ICD10, "O99.212"),
    ],
)
def test_pregnancy_from_the_problem_list(definitions: Definitions, system: str, code: str) -> None:
    found = finding(definitions, "pregnancy", pregnant(code, system))
    assert found is not None and found.status == "present" and found.severity is None


@pytest.mark.parametrize(
    ("system", "code"),
    [
        (ICD10, "O24.13"),  # puerperium: the pregnancy has ended
        (ICD10, "O99.214"),  # childbirth
        (ICD10, "Z39.2"),  # postpartum follow-up
    ],
)
def test_ended_pregnancy_codes_are_not_pregnancy(
    definitions: Definitions, system: str, code: str
) -> None:
    assert finding(definitions, "pregnancy", pregnant(code, system)) is None


@pytest.mark.parametrize(("onset", "current"), [("2026-01-25", True), ("2026-01-24", False)])
def test_a_pregnancy_diagnosis_expires_after_42_weeks(
    definitions: Definitions, onset: str, current: bool
) -> None:
    found = finding(definitions, "pregnancy", pregnant(onset=onset))
    assert found is not None and found.status == "present"
    assert found.stale is not current


@pytest.mark.parametrize(
    "ended",
    [
        {"clinical": "resolved"},
        {"clinical": None, "abatementDateTime": "2026-10-20"},
        {"clinical": None, "abatementString": "delivered"},
    ],
)
def test_a_resolved_or_abated_pregnancy_is_not_active(
    definitions: Definitions, ended: dict[str, Any]
) -> None:
    assert finding(definitions, "pregnancy", pregnant(**ended)) is None


def test_an_active_pregnancy_beside_an_abatement_is_reported(definitions: Definitions) -> None:
    issues: list[tuple[str, str]] = []
    resource = {**pregnant(), "abatementDateTime": "2026-10-20"}
    found = finding(definitions, "pregnancy", resource, issues=issues)
    assert found is not None and found.status == "present"
    assert any("abatement" in problem for _, problem in issues)


@pytest.mark.parametrize(
    ("system", "code", "expected"),
    [
        (SNOMED, "77386006", "present"),
        (SNOMED, "60001007", "absent"),
        (SNOMED, "146799005", "unknown"),  # possible pregnancy: a test decides
        (SNOMED, "261665006", "unknown"),
        (NULL_FLAVOR, "UNK", "unknown"),
        (LOINC, "LA15173-0", "present"),
        (LOINC, "LA26683-5", "absent"),
    ],
)
def test_pregnancy_status_answers(
    definitions: Definitions, system: str, code: str, expected: str
) -> None:
    found = finding(definitions, "pregnancy", status(code, system))
    assert found is not None and found.status == expected


def test_a_newer_not_pregnant_answer_ends_an_answered_pregnancy(definitions: Definitions) -> None:
    answers = (status("77386006", when="2026-03-01", oid="a"), status("60001007", oid="b"))
    assert reading(finding(definitions, "pregnancy", *answers)) == ("absent", None)


def test_an_expired_diagnosis_leaves_a_newer_answer_to_decide(definitions: Definitions) -> None:
    resources = (pregnant(onset="2025-06-01"), status("60001007"))
    assert reading(finding(definitions, "pregnancy", *resources)) == ("absent", None)


def test_pregnancy_status_by_11449_6(definitions: Definitions) -> None:
    item = observation(
        "o1", "11449-6", valueCodeableConcept={"coding": [{"system": SNOMED, "code": "77386006"}]}
    )
    assert reading(finding(definitions, "pregnancy", item)) == ("present", None)


def test_pregnancy_raises_no_need(definitions: Definitions) -> None:
    assert profile_of(definitions, record(pregnant())).medical.need == "none"


# -- withholding in pregnancy ------------------------------------------------------------------


def pregnant_with_cardiometabolic_disease() -> PatientRecord:
    return record(
        pregnant("Z3A.20", ICD10, onset="2026-09-20"),
        condition("dm", ICD10, "E11.9"),
        condition("htn", ICD10, "I10"),
        condition("lip", ICD10, "E78.5"),
        birthDate="1992-04-02",
    )


@pytest.fixture(scope="module")
def pregnancy_plan(definitions: Definitions) -> Plan:
    return plan_of(definitions, pregnant_with_cardiometabolic_disease())


def test_pregnancy_withholds_the_ldl_goal_and_statin_steps(pregnancy_plan: Plan) -> None:
    withheld_goals = {g.key: g.withheld_by for g in pregnancy_plan.withheld_goals}
    assert withheld_goals == {"lipid-management.ldl-below-100": ("pregnancy-withhold-statin",)}
    assert "lipid-management.ldl-below-100" not in [g.key for g in pregnancy_plan.goals]
    withheld = {a.key: a for a in pregnancy_plan.activities if a.withheld}
    assert {"lipid-management.lipid-follow-up-visit", "lipid-management.lipid-panel"} <= set(
        withheld
    )
    statin_steps = {"statin-review", "lipid-therapy-monitoring"}
    assert all(statin_steps & set(a.tags) for a in withheld.values())
    kept = {a.key for a in pregnancy_plan.activities if not a.withheld}
    assert "lipid-management.heart-healthy-lifestyle-education" in kept


def test_pregnancy_adds_its_own_steps_and_goal(pregnancy_plan: Plan) -> None:
    added = {a.key for a in pregnancy_plan.activities if a.module is None}
    assert {"pregnancy-lipid-medicine-review", "pregnancy-medicine-safety-review"} <= added
    hba1c = next(g for g in pregnancy_plan.goals if g.key == "diabetes-outpatient.hba1c-below-7")
    assert (hba1c.target.comparator, hba1c.target.value) == ("<", 6)
    assert "pregnancy-hba1c-goal" in [v.variant for v in hba1c.variations]


def test_withheld_items_carry_the_pregnancy_evidence(pregnancy_plan: Plan) -> None:
    goal = pregnancy_plan.withheld_goals[0]
    variation = next(v for v in goal.variations if v.variant in goal.withheld_by)
    assert "FDA 2021" in variation.reason
    assert [e.id for e in variation.evidence] == ["pregnancy"]
    assert "Condition/preg" in pregnancy_plan.addresses


def test_without_pregnancy_nothing_is_withheld(definitions: Definitions) -> None:
    rec = pregnant_with_cardiometabolic_disease()
    rec = PatientRecord(rec.patient, rec.resources[1:])
    plan = plan_of(definitions, rec)
    assert not plan.withheld_goals and not any(a.withheld for a in plan.activities)
    assert "lipid-management.ldl-below-100" in [g.key for g in plan.goals]


def test_an_expired_pregnancy_withholds_nothing(definitions: Definitions) -> None:
    rec = pregnant_with_cardiometabolic_disease()
    old = {**rec.resources[0], "onsetDateTime": "2025-12-01"}
    plan = plan_of(definitions, PatientRecord(rec.patient, (old, *rec.resources[1:])))
    assert not plan.withheld_goals


def test_pregnancy_withholds_weight_loss(definitions: Definitions) -> None:
    rec = record(pregnant(), condition("ob", ICD10, "E66.9"), birthDate="1995-01-01")
    plan = plan_of(definitions, rec)
    assert [g.key for g in plan.withheld_goals] == ["weight-management.weight-loss-5-percent"]
    program = next(a for a in plan.activities if a.key.endswith("program-referral"))
    assert program.withheld_by == ("pregnancy-withhold-weight-loss",)
    dietitian = next(a for a in plan.activities if a.key.endswith("dietitian-referral"))
    assert not dietitian.withheld  # a dietitian helps with weight gain in pregnancy too
    assert "gestational-weight-gain-counseling" in [a.key for a in plan.activities]


# -- rendering: the CarePlan, approval, the SMART page -----------------------------------------


def careplan_of(plan: Plan) -> dict[str, Any]:
    return to_fhir(plan, RECORDED).careplan.resource


def test_withheld_activities_are_do_not_perform_details(pregnancy_plan: Plan) -> None:
    careplan = careplan_of(pregnancy_plan)
    details = [a["detail"] for a in careplan["activity"] if "detail" in a]
    withheld = [d for d in details if d.get("doNotPerform")]
    expected = {a.key for a in pregnancy_plan.activities if a.withheld}
    assert {d["code"]["text"] for d in withheld} == expected
    assert "lipid-management.lipid-panel" in expected
    for detail in withheld:
        assert detail["statusReason"]["text"].startswith("Withheld.")
        assert "statins are stopped in most pregnant patients" in detail["statusReason"]["text"]
        assert any("pregnancy-withhold-statin" in r["text"] for r in detail["reasonCode"])
    assert all("doNotPerform" not in d for d in details if d not in withheld)


def test_withheld_goals_are_notes_not_goals(pregnancy_plan: Plan) -> None:
    resources = to_fhir(pregnancy_plan, RECORDED)
    goals = [g.resource["description"]["text"] for g in resources.goals]
    assert "LDL cholesterol below 100 mg/dL" not in goals
    notes = [n["text"] for n in resources.careplan.resource["note"]]
    assert len(notes) == 1 and notes[0].startswith("Goal withheld, not set: LDL cholesterol")
    assert "pregnancy-withhold-statin" in notes[0] and "Condition/preg" in notes[0]
    assert "Goals withheld" in resources.careplan.resource["text"]["div"]
    assert "Withheld, do not do:" in resources.careplan.resource["text"]["div"]


def test_a_plan_decided_without_a_type_says_so_before_its_withheld_goals(
    pregnancy_plan: Plan,
) -> None:
    """The note on types not read qualifies the whole plan: it comes first, and the withheld
    goals' notes and narrative stay as they were."""
    careplan = careplan_of(pregnancy_plan.decided_without(("QuestionnaireResponse",)))
    notes = [n["text"] for n in careplan["note"]]
    assert notes[0].startswith("Drafted without the patient's QuestionnaireResponse resources")
    assert notes[1:] == [n["text"] for n in careplan_of(pregnancy_plan)["note"]]
    assert "Goals withheld" in careplan["text"]["div"]
    assert "Incomplete record." in careplan["text"]["div"]


def test_editing_a_withheld_mark_changes_the_digest(pregnancy_plan: Plan) -> None:
    careplan = careplan_of(pregnancy_plan)
    edited = {**careplan, "activity": [dict(a) for a in careplan["activity"]]}
    for entry in edited["activity"]:
        if entry.get("detail", {}).get("doNotPerform"):
            entry["detail"] = {k: v for k, v in entry["detail"].items() if k != "doNotPerform"}
            break
    assert content_digest(edited) != content_digest(careplan)
    unnoted = {k: v for k, v in careplan.items() if k != "note"}
    assert content_digest(unnoted) != content_digest(careplan)


def test_a_plan_without_withholding_digests_as_before(definitions: Definitions) -> None:
    plan = plan_of(definitions, record(condition("htn", ICD10, "I10")))
    careplan = careplan_of(plan)
    assert "note" not in careplan
    assert all("doNotPerform" not in a.get("detail", {}) for a in careplan["activity"])


def test_approval_keeps_what_was_withheld(pregnancy_plan: Plan) -> None:
    approved = activate(to_fhir(pregnancy_plan, RECORDED)).careplan.resource
    assert approved["status"] == "active"
    withheld = sum(a.withheld for a in pregnancy_plan.activities)
    assert withheld >= 2
    assert (
        sum(1 for a in approved["activity"] if a.get("detail", {}).get("doNotPerform")) == withheld
    )
    assert approved["note"] == careplan_of(pregnancy_plan)["note"]


def test_withheld_activities_cannot_be_dropped(pregnancy_plan: Plan) -> None:
    with pytest.raises(ValueError, match="withheld activities cannot be dropped"):
        pregnancy_plan.without_activities({"lipid-management.lipid-panel"})
    kept = pregnancy_plan.without_activities({"diabetes-outpatient.hba1c-test"})
    assert sum(a.withheld for a in kept.activities) == sum(
        a.withheld for a in pregnancy_plan.activities
    )


def test_a_withheld_referral_is_not_sent(definitions: Definitions) -> None:
    plan = plan_of(definitions, record(condition("c1", ICD10, "Z59.41")))
    referral = next(a for a in plan.activities if a.is_referral)
    held = referral.model_copy(update={"withheld_by": ("some-variant",)})
    plan = plan.model_copy(
        update={"activities": tuple(held if a is referral else a for a in plan.activities)}
    )
    assert not held.is_referral
    resources = to_fhir(plan, RECORDED)
    assert referral.key not in [
        sr.resource["identifier"][0]["value"].rsplit("/", 1)[-1]
        for sr in resources.service_requests
    ]
    details = [a["detail"] for a in resources.careplan.resource["activity"] if "detail" in a]
    assert any(d["code"]["text"] == referral.key and d["doNotPerform"] for d in details)


def test_the_smart_page_lists_what_was_withheld_without_a_checkbox(
    definitions: Definitions,
) -> None:
    rec = pregnant_with_cardiometabolic_disease()
    profile, segments, plan = assess(rec, definitions, AS_OF)
    labels = {name: d.label for name, d in definitions.rules.dimensions.items()}
    page = plan_page(PageView(rec.patient, profile, labels, segments, plan, "https://x", "t"))
    assert "<h3>Withheld</h3>" in page
    assert "Goal not set: LDL cholesterol below 100 mg/dL" in page
    assert 'value="lipid-management.lipid-panel"' not in page  # no drop checkbox
    assert 'value="diabetes-outpatient.hba1c-test"' in page


def test_the_cds_card_names_what_was_withheld_and_why(definitions: Definitions) -> None:
    rec = pregnant_with_cardiometabolic_disease()
    profile, _, plan = assess(rec, definitions, AS_OF)
    assert plan is not None
    detail = CarePlanCards(definitions, "https://app.example/launch").detail(profile, plan)
    line = next(x for x in detail.splitlines() if x.startswith("**Withheld**"))
    assert "No statin start or intensification in pregnancy" in line
    assert "LDL cholesterol below 100 mg/dL" in line and "lipid panel" in line
    without = plan_of(definitions, PatientRecord(rec.patient, rec.resources[1:]))
    other = CarePlanCards(definitions, "https://app.example/launch").detail(profile, without)
    assert "**Withheld**" not in other


def test_the_text_summary_says_what_is_withheld(pregnancy_plan: Plan) -> None:
    text = summarize(pregnancy_plan)
    assert "goal WITHHELD, not set: LDL cholesterol below 100 mg/dL" in text
    assert "- WITHHELD, do not: Fasting or non-fasting lipid panel" in text
    assert "withheld by pregnancy-withhold-statin" in text


# -- withholding for interpersonal safety ------------------------------------------------------


def reminders_plan(definitions: Definitions, system: str, *extra: dict[str, Any]) -> Plan:
    rec = record(
        condition("htn", ICD10, "I10"),
        *extra,
        telecom=[{"system": system, "value": "+15550100", "rank": 1}],
    )
    return plan_of(definitions, rec)


UNSAFE = observation("ipv", "95614-4", valueInteger=14)  # HITS total 11+


@pytest.mark.parametrize(
    ("system", "key"), [("sms", "sms-reminders"), ("phone", "phone-reminders")]
)
def test_reminders_follow_the_contact_preference(
    definitions: Definitions, system: str, key: str
) -> None:
    reminder = next(a for a in reminders_plan(definitions, system).activities if a.key == key)
    assert not reminder.withheld and reminder.kind == "CommunicationRequest"


@pytest.mark.parametrize(
    ("system", "key"), [("sms", "sms-reminders"), ("phone", "phone-reminders")]
)
def test_reminders_are_withheld_when_the_patient_may_not_be_safe(
    definitions: Definitions, system: str, key: str
) -> None:
    plan = reminders_plan(definitions, system, UNSAFE)
    reminder = next(a for a in plan.activities if a.key == key)
    assert reminder.withheld_by == ("ipv-withhold-remote-reminders",)
    detail = next(
        a["detail"]
        for a in careplan_of(plan)["activity"]
        if a.get("detail", {}).get("code", {}).get("text") == key
    )
    assert detail["doNotPerform"] is True
    assert "person causing harm" in detail["statusReason"]["text"]


def test_a_negative_safety_screen_withholds_nothing(definitions: Definitions) -> None:
    safe = observation("ipv", "95614-4", valueInteger=6)
    plan = reminders_plan(definitions, "sms", safe)
    assert not any(a.withheld for a in plan.activities)


# -- the variant model -------------------------------------------------------------------------


def test_withhold_names_something_and_is_a_variant_change_of_its_own() -> None:
    with pytest.raises(ValueError, match="activity_tags or goal_tags"):
        Withhold()
    base = {"id": "v", "label": "V", "reason": "r", "scope": "medical", "when": {"age_below": 1}}
    Variant.model_validate({**base, "withhold": {"activity_tags": ["x"]}})
    with pytest.raises(ValueError, match="exactly one of"):
        Variant.model_validate(
            {**base, "withhold": {"goal_tags": ["x"]}, "annotate": {"tag": "x", "append": "y"}}
        )


def test_every_withheld_tag_names_something_in_the_catalog(definitions: Definitions) -> None:
    activity_tags = {t for m in definitions.catalog.modules for a in m.activities for t in a.tags}
    activity_tags |= {
        t for v in definitions.catalog.variants if v.add_activity for t in v.add_activity.tags
    }
    goal_tags = {t for m in definitions.catalog.modules for g in m.goals for t in g.tags}
    for variant in definitions.catalog.variants:
        if variant.withhold is not None:
            assert set(variant.withhold.activity_tags) <= activity_tags, variant.id
            assert set(variant.withhold.goal_tags) <= goal_tags, variant.id
            assert variant.source, variant.id


def test_patient_builder_default_is_an_adult_woman() -> None:
    """The fixtures above lean on it: the default patient is 66 and female."""
    assert patient()["gender"] == "female" and patient()["birthDate"] == "1960-05-20"


@pytest.mark.parametrize(("age", "with_reading"), [(12, True), (12, False), (13, True)])
def test_a_childs_unclassified_reading_closes_the_blood_pressure_gap(
    definitions: Definitions, age: int, with_reading: bool
) -> None:
    """Under 13 a reading is not assessed by adult cut points, but it was taken (AAP 2017)."""
    hypertension = condition("c1", ICD10, "I10")
    reading = observation("bp", "8480-6", **quantity(118, "mm[Hg]"))
    resources = (hypertension, reading) if with_reading else (hypertension,)
    profile = profile_of(definitions, record(*resources, birthDate=born(age)))
    assert ("no_recent_bp" in [g.id for g in profile.data_gaps]) is not with_reading
