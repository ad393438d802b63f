"""Segments and plans: module choice, warranted variations with reasons, determinism."""

from __future__ import annotations

import random

import pytest
from builders import AS_OF, ICD10, SNOMED, answer, condition, observation, quantity, record

from fhir_tailor.definitions import Definitions
from fhir_tailor.pipeline import profile_and_plan
from fhir_tailor.plan import Plan
from fhir_tailor.record import PatientRecord

SPANISH = [
    {"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "es"}]}, "preferred": True}
]


def plan_of(definitions: Definitions, rec: PatientRecord) -> Plan:
    _, plan = profile_and_plan(rec, definitions, AS_OF)
    assert plan is not None
    return plan


def diabetic_with_needs(**patient: object) -> PatientRecord:
    return record(
        condition("c1", SNOMED, "44054006"),
        condition("c2", ICD10, "Z59.82"),
        condition("c3", ICD10, "Z55.0"),
        observation("o1", "4548-4", **quantity(9.6, "%")),
        observation("o2", "88122-7", when="2026-10-01", **answer("LA28397-0")),
        **patient,
    )


def test_modules_follow_the_profile(definitions: Definitions) -> None:
    plan = plan_of(definitions, diabetic_with_needs())
    modules = [m.id for m in plan.modules]
    assert "diabetes-outpatient" in modules
    assert "social-needs-navigation" in modules
    assert "hypertension-outpatient" not in modules
    assert "sdoh-screening" not in modules  # a screening within 12 months exists
    assert {"uncontrolled_diabetes", "diabetes_with_social_needs"} <= set(plan.segments)
    assert plan.addresses == ("Condition/c1", "Condition/c2", "Condition/c3")
    assert "Observation/o1" in plan.supporting_info


def test_transportation_insecurity_turns_clinic_visits_into_telehealth(
    definitions: Definitions,
) -> None:
    plan = plan_of(definitions, diabetic_with_needs())
    visit = next(
        a for a in plan.activities if a.key == "diabetes-outpatient.diabetes-follow-up-visit"
    )
    assert "telehealth" in visit.description
    [variation] = visit.variations
    assert variation.variant == "telehealth-follow-up"
    assert variation.evidence[0].id == "transportation_insecurity"
    assert variation.evidence[0].sources == ("Condition/c2",)


def test_low_literacy_adds_teach_back_to_education(definitions: Definitions) -> None:
    plan = plan_of(definitions, diabetic_with_needs())
    education = next(a for a in plan.activities if "education" in a.tags)
    assert "teach-back" in education.description
    assert [v.variant for v in education.variations] == ["teach-back-education"]
    assert education.variations[0].evidence[0].sources == ("Condition/c3",)


def test_food_insecurity_adds_a_food_referral_with_its_source(definitions: Definitions) -> None:
    plan = plan_of(definitions, diabetic_with_needs())
    referral = next(a for a in plan.activities if a.key == "food-resources-referral")
    assert referral.kind == "ServiceRequest" and referral.module is None
    assert referral.variations[0].evidence[0].sources == ("Observation/o2",)


def test_interpreter_only_for_non_english_preference(definitions: Definitions) -> None:
    english = plan_of(definitions, diabetic_with_needs())
    spanish = plan_of(definitions, diabetic_with_needs(communication=SPANISH))
    assert "arrange-interpreter" not in [a.key for a in english.activities]
    interpreter = next(a for a in spanish.activities if a.key == "arrange-interpreter")
    assert interpreter.variations[0].evidence[0].sources == ("Patient/p1",)


def test_without_variations_the_standard_module_is_unchanged(definitions: Definitions) -> None:
    plan = plan_of(definitions, record(condition("c1", SNOMED, "44054006")))
    diabetes = [a for a in plan.activities if a.module == "diabetes-outpatient"]
    assert diabetes and all(not a.variations for a in diabetes)
    assert all(a.reasons[0].sources == ("Condition/c1",) for a in diabetes)


def test_no_module_no_plan(definitions: Definitions) -> None:
    """A screened adult under 65 with nothing found needs no plan (older adults also need fall
    risk and cognitive screening)."""
    screened = (
        observation("o1", "88122-7", when="2026-10-01", **answer("LA28398-8")),
        observation("o2", "44261-6", when="2026-10-01", valueInteger=1),
    )
    _, plan = profile_and_plan(record(*screened, birthDate="1980-05-20"), definitions, AS_OF)
    assert plan is None
    _, older = profile_and_plan(record(*screened), definitions, AS_OF)  # born 1960
    assert older is not None
    assert {m.id for m in older.modules} == {"cognitive-screening", "fall-risk-screening"}


def test_same_profile_same_plan_byte_for_byte(definitions: Definitions) -> None:
    rec = diabetic_with_needs(communication=SPANISH)
    first = plan_of(definitions, rec).model_dump_json()
    shuffled = list(rec.resources)
    random.Random(7).shuffle(shuffled)
    second = plan_of(definitions, PatientRecord(rec.patient, tuple(shuffled))).model_dump_json()
    assert first == second
    assert plan_of(definitions, rec).fingerprint() == plan_of(definitions, rec).fingerprint()


def test_plan_changes_when_the_profile_changes(definitions: Definitions) -> None:
    before = plan_of(definitions, diabetic_with_needs())
    after = plan_of(definitions, diabetic_with_needs(communication=SPANISH))
    assert before.fingerprint() != after.fingerprint()


@pytest.mark.parametrize(
    ("phq2", "phq9", "applies"),
    [
        (4, None, True),  # positive PHQ-2, no PHQ-9 yet: follow up with the PHQ-9
        (4, 3, False),  # followed by a PHQ-9 (negative): done
        (4, 12, False),  # followed by a positive PHQ-9: depression care instead
        (1, None, False),  # negative PHQ-2: screened, nothing to follow up
    ],
)
def test_positive_phq2_is_followed_by_a_phq9(
    definitions: Definitions, phq2: int, phq9: int | None, applies: bool
) -> None:
    screens = [
        observation("o1", "55758-7", when="2026-10-01", valueInteger=phq2),
        observation("o2", "88122-7", when="2026-10-01", **answer("LA28398-8")),
    ]
    if phq9 is not None:
        screens.append(observation("o3", "44261-6", when="2026-10-02", valueInteger=phq9))
    _, plan = profile_and_plan(record(*screens, birthDate="1980-05-20"), definitions, AS_OF)
    modules = {m.id for m in plan.modules} if plan else set()
    assert ("depression-screening" in modules) is applies
    assert ("depression-care" in modules) is (phq9 is not None and phq9 >= 10)
