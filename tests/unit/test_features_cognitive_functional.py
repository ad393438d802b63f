"""Cognitive/behavioral and functional mappings, checked against an independent table of readings.

The expected features, statuses and severities below are written out by hand from the code
systems and the instruments' published scoring (PHQ-9 and PHQ-2, GAD-7, AUDIT-C, US Core and IPS
smoking status value sets, ICD-10-CM tabular list, Mini-Cog, MoCA, Morse Fall Scale and its LOINC
risk levels, CDC STEADI Timed Up and Go, the ACS disability questions), not read from
``profiles/features/cognitive_behavioral.yaml`` or ``functional.yaml``: a wrong or missing code,
answer or cut point there fails here.
"""

from __future__ import annotations

from typing import Any

import pytest
from builders import (
    ICD10,
    LOINC,
    SNOMED,
    condition,
    finding_of,
    observation,
    profile_of,
    quantity,
    reading,
    record,
)

from fhir_tailor.definitions import Definitions

SDOHCC = "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes"
US_CORE_CATEGORY = "http://hl7.org/fhir/us/core/CodeSystem/us-core-category"
CONDITION_CATEGORY = "http://hl7.org/fhir/us/core/CodeSystem/condition-category"
LOCAL = "http://example.org/fhir/CodeSystem/local-problems"

COGNITIVE_BEHAVIORAL_FEATURES = (
    "depression",
    "depression_screen_positive",
    "anxiety",
    "unhealthy_alcohol_use",
    "tobacco_use",
    "cognitive_impairment",
    "low_health_literacy",
)
FUNCTIONAL_FEATURES = (
    "fall_history",
    "fall_risk",
    "adl_dependence",
    "iadl_dependence",
    "mobility_limitation",
    "disability",
    "assistive_device",
)


# -- helpers -----------------------------------------------------------------------------------


def score(value: float) -> dict[str, Any]:
    """A score as US Core examples send it: a quantity without a unit."""
    return {"valueQuantity": {"value": value}}


def coded(system: str, code: str) -> dict[str, Any]:
    return {"valueCodeableConcept": {"coding": [{"system": system, "code": code}]}}


def category_condition(cid: str, system: str, code: str) -> dict[str, Any]:
    """A Condition whose code maps to nothing: only its category can match."""
    return condition(
        cid,
        LOCAL,
        "local-problem-1",
        category=[
            {"coding": [{"system": CONDITION_CATEGORY, "code": "health-concern"}]},
            {"coding": [{"system": system, "code": code}]},
        ],
    )


# -- the definitions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("feature", "dimension"),
    [(f, "cognitive_behavioral") for f in COGNITIVE_BEHAVIORAL_FEATURES]
    + [(f, "functional") for f in FUNCTIONAL_FEATURES],
)
def test_feature_is_defined_in_its_dimension(
    definitions: Definitions, feature: str, dimension: str
) -> None:
    features = definitions.rules.index.features
    assert feature in features, feature
    assert features[feature][1] == dimension


# -- diagnoses: a correct code gives the finding with its severity ----------------------------

CONDITIONS: list[tuple[str, str, str, str]] = [
    # (system, code, feature, severity)
    # depression: any active episode moderate, severe episodes high
    (SNOMED, "35489007", "depression", "moderate"),
    (ICD10, "F32.0", "depression", "moderate"),
    (ICD10, "F32.1", "depression", "moderate"),
    (ICD10, "F32.2", "depression", "high"),
    (ICD10, "F32.3", "depression", "high"),
    (ICD10, "F32.4", "depression", "moderate"),
    (ICD10, "F32.81", "depression", "moderate"),
    (ICD10, "F32.89", "depression", "moderate"),
    (ICD10, "F32.9", "depression", "moderate"),
    (ICD10, "F32.A", "depression", "moderate"),
    (ICD10, "F33.0", "depression", "moderate"),
    (ICD10, "F33.1", "depression", "moderate"),
    (ICD10, "F33.2", "depression", "high"),
    (ICD10, "F33.3", "depression", "high"),
    (ICD10, "F33.41", "depression", "moderate"),
    (ICD10, "F33.8", "depression", "moderate"),
    (ICD10, "F33.9", "depression", "moderate"),
    # dysthymic disorder: persistent depressive disorder (VSAC Dysthymia, CMS159 index diagnosis)
    (ICD10, "F34.1", "depression", "moderate"),
    # anxiety disorders F40-F41
    (ICD10, "F41.1", "anxiety", "moderate"),
    (ICD10, "F41.0", "anxiety", "moderate"),
    (ICD10, "F41.9", "anxiety", "moderate"),
    # alcohol: abuse moderate, dependence high, in-remission codes excluded (near misses)
    (ICD10, "F10.10", "unhealthy_alcohol_use", "moderate"),
    (ICD10, "F10.120", "unhealthy_alcohol_use", "moderate"),
    (ICD10, "F10.129", "unhealthy_alcohol_use", "moderate"),
    (ICD10, "F10.130", "unhealthy_alcohol_use", "moderate"),
    (ICD10, "F10.14", "unhealthy_alcohol_use", "moderate"),
    (ICD10, "F10.159", "unhealthy_alcohol_use", "moderate"),
    (ICD10, "F10.182", "unhealthy_alcohol_use", "moderate"),
    (ICD10, "F10.19", "unhealthy_alcohol_use", "moderate"),
    (ICD10, "F10.20", "unhealthy_alcohol_use", "high"),
    (ICD10, "F10.220", "unhealthy_alcohol_use", "high"),
    (ICD10, "F10.239", "unhealthy_alcohol_use", "high"),
    (ICD10, "F10.24", "unhealthy_alcohol_use", "high"),
    (ICD10, "F10.251", "unhealthy_alcohol_use", "high"),
    (ICD10, "F10.26", "unhealthy_alcohol_use", "high"),
    (ICD10, "F10.27", "unhealthy_alcohol_use", "high"),
    (ICD10, "F10.288", "unhealthy_alcohol_use", "high"),
    (ICD10, "F10.29", "unhealthy_alcohol_use", "high"),
    # tobacco: nicotine dependence (not in remission) and tobacco use
    (ICD10, "F17.200", "tobacco_use", "moderate"),
    (ICD10, "F17.203", "tobacco_use", "moderate"),
    (ICD10, "F17.208", "tobacco_use", "moderate"),
    (ICD10, "F17.209", "tobacco_use", "moderate"),
    (ICD10, "F17.210", "tobacco_use", "moderate"),
    (ICD10, "F17.213", "tobacco_use", "moderate"),
    (ICD10, "F17.218", "tobacco_use", "moderate"),
    (ICD10, "F17.219", "tobacco_use", "moderate"),
    (ICD10, "F17.220", "tobacco_use", "moderate"),
    (ICD10, "F17.223", "tobacco_use", "moderate"),
    (ICD10, "F17.228", "tobacco_use", "moderate"),
    (ICD10, "F17.229", "tobacco_use", "moderate"),
    (ICD10, "F17.290", "tobacco_use", "moderate"),
    (ICD10, "F17.293", "tobacco_use", "moderate"),
    (ICD10, "F17.298", "tobacco_use", "moderate"),
    (ICD10, "F17.299", "tobacco_use", "moderate"),
    (ICD10, "Z72.0", "tobacco_use", "moderate"),
    # cognition: dementia moderate, severe-stage dementia high, mild impairment low
    (SNOMED, "52448006", "cognitive_impairment", "moderate"),
    (ICD10, "F01.50", "cognitive_impairment", "moderate"),
    (ICD10, "F01.A0", "cognitive_impairment", "moderate"),
    (ICD10, "F01.C0", "cognitive_impairment", "high"),
    (ICD10, "F02.80", "cognitive_impairment", "moderate"),
    (ICD10, "F02.B0", "cognitive_impairment", "moderate"),
    (ICD10, "F02.C11", "cognitive_impairment", "high"),
    (ICD10, "F03.90", "cognitive_impairment", "moderate"),
    (ICD10, "F03.A0", "cognitive_impairment", "moderate"),
    (ICD10, "F03.B0", "cognitive_impairment", "moderate"),
    (ICD10, "F03.C0", "cognitive_impairment", "high"),
    (ICD10, "F03.C4", "cognitive_impairment", "high"),
    (ICD10, "G30.0", "cognitive_impairment", "moderate"),
    (ICD10, "G30.1", "cognitive_impairment", "moderate"),
    (ICD10, "G30.8", "cognitive_impairment", "moderate"),
    (ICD10, "G30.9", "cognitive_impairment", "moderate"),
    (ICD10, "G31.84", "cognitive_impairment", "low"),
    # G31.83: inclusion term "dementia with Lewy bodies" (VSAC Dementia and Mental Degenerations)
    (ICD10, "G31.83", "cognitive_impairment", "moderate"),
    (ICD10, "F06.70", "cognitive_impairment", "low"),
    (ICD10, "F06.71", "cognitive_impairment", "low"),
    # health literacy
    (ICD10, "Z55.0", "low_health_literacy", "moderate"),
    (ICD10, "Z55.6", "low_health_literacy", "moderate"),
    # functional
    (ICD10, "Z91.81", "fall_history", "moderate"),
    (ICD10, "R29.6", "fall_history", "high"),
    (SNOMED, "428942009", "fall_history", "moderate"),
    (ICD10, "Z74.1", "adl_dependence", "moderate"),
    # Z74.2: no household member able to give the care needed (a caregiving gap, not an IADL)
    (ICD10, "Z74.2", "no_household_caregiver", "moderate"),
    (ICD10, "Z74.09", "mobility_limitation", "moderate"),
    (ICD10, "Z74.01", "mobility_limitation", "high"),
    (ICD10, "Z99.3", "assistive_device", "moderate"),
]


@pytest.mark.parametrize(("system", "code", "feature", "severity"), CONDITIONS)
def test_condition_code_gives_feature(
    definitions: Definitions, system: str, code: str, feature: str, severity: str
) -> None:
    profile = profile_of(definitions, record(condition("c1", system, code)))
    found = profile.finding(feature)
    assert found is not None, f"{system}|{code} should give {feature}"
    assert (found.status, found.severity, found.stale) == ("present", severity, False)
    assert found.sources == ("Condition/c1",)
    mine = {f.feature for _, f in profile.findings()}
    # 69861-3 is the only code shared between features; Conditions never are.
    assert mine == {feature}, mine


# -- near-miss codes: a neighbouring code does not give the feature ---------------------------

NEAR_MISSES: list[tuple[str, str, str]] = [
    # (system, code, feature that must NOT appear)
    (ICD10, "F32.5", "depression"),  # single episode, full remission
    (ICD10, "F33.40", "depression"),  # recurrent, in remission, unspecified
    (ICD10, "F33.42", "depression"),  # recurrent, full remission
    (ICD10, "F34.0", "depression"),  # cyclothymic disorder
    (ICD10, "F31.30", "depression"),  # bipolar disorder, current episode depressed
    (ICD10, "F43.21", "depression"),  # adjustment disorder with depressed mood
    (ICD10, "F42.2", "anxiety"),  # mixed obsessional thoughts and acts (F42, not F40-F41)
    (ICD10, "F43.10", "anxiety"),  # post-traumatic stress disorder (F43)
    (ICD10, "F41.1", "depression"),
    (ICD10, "F10.11", "unhealthy_alcohol_use"),  # alcohol abuse, in remission
    (ICD10, "F10.21", "unhealthy_alcohol_use"),  # alcohol dependence, in remission
    (ICD10, "F10.90", "unhealthy_alcohol_use"),  # alcohol use, unspecified
    (ICD10, "F11.20", "unhealthy_alcohol_use"),  # opioid dependence
    (ICD10, "F17.201", "tobacco_use"),  # nicotine dependence in remission
    (ICD10, "F17.211", "tobacco_use"),
    (ICD10, "F17.221", "tobacco_use"),
    (ICD10, "F17.291", "tobacco_use"),
    (ICD10, "Z87.891", "tobacco_use"),  # personal history of nicotine dependence
    (ICD10, "Z72.4", "tobacco_use"),  # inappropriate diet and eating habits
    (ICD10, "F05", "cognitive_impairment"),  # delirium
    (ICD10, "R41.81", "cognitive_impairment"),  # age-related cognitive decline
    (ICD10, "G31.1", "cognitive_impairment"),  # senile degeneration of brain NEC
    (ICD10, "Z55.1", "low_health_literacy"),  # schooling unavailable: social, not literacy
    (ICD10, "Z91.89", "fall_history"),  # other specified personal risk factors
    (ICD10, "R26.81", "fall_history"),  # unsteadiness on feet
    (ICD10, "Z74.09", "adl_dependence"),  # reduced mobility is not ADL dependence
    (ICD10, "Z74.01", "adl_dependence"),
    (ICD10, "Z74.3", "adl_dependence"),  # need for continuous supervision
    (ICD10, "Z74.1", "mobility_limitation"),
    (ICD10, "Z74.8", "iadl_dependence"),  # other problems related to care provider dependency
    (ICD10, "Z99.81", "assistive_device"),  # supplemental oxygen
    (ICD10, "Z99.89", "assistive_device"),
    (ICD10, "Z99.2", "assistive_device"),  # renal dialysis
]


@pytest.mark.parametrize(("system", "code", "feature"), NEAR_MISSES)
def test_near_miss_code_does_not_give_feature(
    definitions: Definitions, system: str, code: str, feature: str
) -> None:
    assert finding_of(definitions, feature, condition("c1", system, code)) is None


def test_resolved_diagnosis_gives_no_finding(definitions: Definitions) -> None:
    resolved = condition("c1", ICD10, "F33.1", clinical="resolved")
    assert finding_of(definitions, "depression", resolved) is None


# -- scores: each band boundary on both sides --------------------------------------------------

SCORES: list[tuple[str, float, str, str, str | None]] = [
    # (LOINC code, value, feature, status, severity)
    # PHQ-9 44261-6: 0-4 none, 5-9 mild, 10-14 moderate, 15-19 moderately severe, 20-27 severe
    ("44261-6", 0, "depression", "absent", None),
    ("44261-6", 4, "depression", "absent", None),
    ("44261-6", 5, "depression", "present", "low"),
    ("44261-6", 9, "depression", "present", "low"),
    ("44261-6", 10, "depression", "present", "moderate"),
    ("44261-6", 14, "depression", "present", "moderate"),
    ("44261-6", 15, "depression", "present", "high"),
    ("44261-6", 19, "depression", "present", "high"),
    ("44261-6", 20, "depression", "present", "high"),
    ("44261-6", 27, "depression", "present", "high"),
    # PHQ-2 55758-7: 3+ positive
    ("55758-7", 0, "depression_screen_positive", "absent", None),
    ("55758-7", 2, "depression_screen_positive", "absent", None),
    ("55758-7", 3, "depression_screen_positive", "present", "moderate"),
    ("55758-7", 6, "depression_screen_positive", "present", "moderate"),
    # GAD-7 70274-6: 5 mild, 10 moderate, 15 severe
    ("70274-6", 0, "anxiety", "absent", None),
    ("70274-6", 4, "anxiety", "absent", None),
    ("70274-6", 5, "anxiety", "present", "low"),
    ("70274-6", 9, "anxiety", "present", "low"),
    ("70274-6", 10, "anxiety", "present", "moderate"),
    ("70274-6", 14, "anxiety", "present", "moderate"),
    ("70274-6", 15, "anxiety", "present", "high"),
    ("70274-6", 21, "anxiety", "present", "high"),
    # AUDIT-C 75626-2 (the default patient is a woman: cut point 3, 8+ high; men: cut point 4
    # in tests/unit/test_applicability.py)
    ("75626-2", 0, "unhealthy_alcohol_use", "absent", None),
    ("75626-2", 2, "unhealthy_alcohol_use", "absent", None),
    ("75626-2", 3, "unhealthy_alcohol_use", "present", "moderate"),
    ("75626-2", 4, "unhealthy_alcohol_use", "present", "moderate"),
    ("75626-2", 7, "unhealthy_alcohol_use", "present", "moderate"),
    ("75626-2", 8, "unhealthy_alcohol_use", "present", "high"),
    ("75626-2", 12, "unhealthy_alcohol_use", "present", "high"),
    # Mini-Cog 72233-0 (0-5): below 3 positive
    ("72233-0", 0, "cognitive_impairment", "present", "moderate"),
    ("72233-0", 2, "cognitive_impairment", "present", "moderate"),
    ("72233-0", 3, "cognitive_impairment", "absent", None),
    ("72233-0", 5, "cognitive_impairment", "absent", None),
    # MoCA 72172-0 (0-30): 26+ normal, 18-25 mild, 10-17 moderate, below 10 severe
    ("72172-0", 30, "cognitive_impairment", "absent", None),
    ("72172-0", 26, "cognitive_impairment", "absent", None),
    ("72172-0", 25, "cognitive_impairment", "present", "low"),
    ("72172-0", 18, "cognitive_impairment", "present", "low"),
    ("72172-0", 17, "cognitive_impairment", "present", "moderate"),
    ("72172-0", 10, "cognitive_impairment", "present", "moderate"),
    ("72172-0", 9, "cognitive_impairment", "present", "high"),
    ("72172-0", 0, "cognitive_impairment", "present", "high"),
    # The Morse Fall Scale (an inpatient tool) is not read: CDC STEADI screens outpatients.
    # Number of falls in the past 12 months 75856-5
    ("75856-5", 0, "fall_history", "absent", None),
    ("75856-5", 1, "fall_history", "present", "moderate"),
    ("75856-5", 4, "fall_history", "present", "moderate"),
]


@pytest.mark.parametrize(("code", "value", "feature", "status", "severity"), SCORES)
def test_score_band(
    definitions: Definitions,
    code: str,
    value: float,
    feature: str,
    status: str,
    severity: str | None,
) -> None:
    found = finding_of(definitions, feature, observation("o1", code, **score(value)))
    assert reading(found) == (status, severity), f"{code} = {value}"
    assert found is not None and found.value == value


@pytest.mark.parametrize(
    ("code", "value", "feature", "status"),
    [
        ("44261-6", 12, "depression", "present"),
        ("55758-7", 1, "depression_screen_positive", "absent"),
        ("70274-6", 11, "anxiety", "present"),
        ("75626-2", 5, "unhealthy_alcohol_use", "present"),
        ("72233-0", 4, "cognitive_impairment", "absent"),
        ("72172-0", 21, "cognitive_impairment", "present"),
    ],
)
def test_score_as_value_integer(
    definitions: Definitions, code: str, value: int, feature: str, status: str
) -> None:
    """Screening totals also arrive as valueInteger (the fixtures' PHQ-9 shape)."""
    found = finding_of(definitions, feature, observation("o1", code, valueInteger=value))
    assert found is not None and found.status == status


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(8.0, ("absent", None)), (11.9, ("absent", None)), (12.0, ("present", "moderate"))],
)
def test_timed_up_and_go_cut_point(
    definitions: Definitions, seconds: float, expected: tuple[str, str | None]
) -> None:
    tug = observation("o1", "89423-8", **quantity(seconds, "s"))
    assert reading(finding_of(definitions, "fall_risk", tug)) == expected


@pytest.mark.parametrize(
    ("minutes", "expected"), [(0.2, ("present", "moderate")), (0.19, ("absent", None))]
)
def test_timed_up_and_go_in_minutes_is_read_in_seconds(
    definitions: Definitions, minutes: float, expected: tuple[str, str | None]
) -> None:
    issues: list[tuple[str, str]] = []
    tug = observation("o1", "89423-8", **quantity(minutes, "min"))
    found = profile_of(definitions, record(tug), issues).finding("fall_risk")
    assert reading(found) == expected
    assert found is not None and (found.value, found.unit) == (round(minutes * 60, 9), "s")
    assert issues == []


def test_timed_up_and_go_in_a_unit_of_no_time_is_unknown(definitions: Definitions) -> None:
    issues: list[tuple[str, str]] = []
    tug = observation("o1", "89423-8", **quantity(3, "m"))
    found = profile_of(definitions, record(tug), issues).finding("fall_risk")
    assert reading(found) == ("unknown", None)
    assert issues and "unit 'm' cannot be read as 's'" in issues[0][1]


# -- coded answers -----------------------------------------------------------------------------

ANSWERS: list[tuple[str, str, str, str, str, str | None]] = [
    # (LOINC question, answer system, answer code, feature, status, severity)
    # tobacco smoking status 72166-2, SNOMED CT answers (US Core smoking status value set)
    ("72166-2", SNOMED, "449868002", "tobacco_use", "present", "moderate"),
    ("72166-2", SNOMED, "428041000124106", "tobacco_use", "present", "moderate"),
    ("72166-2", SNOMED, "77176002", "tobacco_use", "present", "moderate"),
    ("72166-2", SNOMED, "428071000124103", "tobacco_use", "present", "high"),
    ("72166-2", SNOMED, "428061000124105", "tobacco_use", "present", "moderate"),
    ("72166-2", SNOMED, "8517006", "tobacco_use", "absent", None),
    ("72166-2", SNOMED, "266919005", "tobacco_use", "absent", None),
    ("72166-2", SNOMED, "266927001", "tobacco_use", "unknown", None),
    # the same statuses as LOINC answers (IPS current smoking status value set)
    ("72166-2", LOINC, "LA18976-3", "tobacco_use", "present", "moderate"),
    ("72166-2", LOINC, "LA18977-1", "tobacco_use", "present", "moderate"),
    ("72166-2", LOINC, "LA18979-7", "tobacco_use", "present", "moderate"),
    ("72166-2", LOINC, "LA18981-3", "tobacco_use", "present", "high"),
    ("72166-2", LOINC, "LA18982-1", "tobacco_use", "present", "moderate"),
    ("72166-2", LOINC, "LA15920-4", "tobacco_use", "absent", None),
    ("72166-2", LOINC, "LA18978-9", "tobacco_use", "absent", None),
    ("72166-2", LOINC, "LA18980-5", "tobacco_use", "unknown", None),
    # Single Item Literacy Screener 93157-6: sometimes or more often is limited literacy
    ("93157-6", LOINC, "LA9933-8", "low_health_literacy", "present", "high"),
    ("93157-6", LOINC, "LA10044-8", "low_health_literacy", "present", "moderate"),
    ("93157-6", LOINC, "LA10082-8", "low_health_literacy", "present", "moderate"),
    ("93157-6", LOINC, "LA10066-1", "low_health_literacy", "absent", None),
    ("93157-6", LOINC, "LA6270-8", "low_health_literacy", "absent", None),
    # CDC STEADI key questions: a yes to any is a positive screen
    ("100257-5", LOINC, "LA33-6", "fall_risk", "present", "moderate"),
    ("100257-5", LOINC, "LA32-8", "fall_risk", "absent", None),
    ("97878-3", LOINC, "LA33-6", "fall_risk", "present", "moderate"),
    ("97878-3", LOINC, "LA32-8", "fall_risk", "absent", None),
    ("52552-7", LOINC, "LA33-6", "fall_history", "present", "moderate"),
    ("52552-7", LOINC, "LA32-8", "fall_history", "absent", None),
    # a recorded fall risk assessment 73830-2 at risk (SNOMED CT 129839007)
    ("73830-2", SNOMED, "129839007", "fall_risk", "present", "moderate"),
    # ACS disability questions: Yes is a disability, No is not
    ("69856-3", LOINC, "LA33-6", "disability", "present", "moderate"),
    ("69856-3", LOINC, "LA32-8", "disability", "absent", None),
    ("69857-1", LOINC, "LA33-6", "disability", "present", "moderate"),
    ("69857-1", LOINC, "LA32-8", "disability", "absent", None),
    ("69858-9", LOINC, "LA33-6", "disability", "present", "moderate"),
    ("69858-9", LOINC, "LA32-8", "disability", "absent", None),
    ("69859-7", LOINC, "LA33-6", "disability", "present", "moderate"),
    ("69859-7", LOINC, "LA32-8", "disability", "absent", None),
    ("69860-5", LOINC, "LA33-6", "disability", "present", "moderate"),
    ("69860-5", LOINC, "LA32-8", "disability", "absent", None),
    ("69861-3", LOINC, "LA33-6", "disability", "present", "moderate"),
    ("69861-3", LOINC, "LA32-8", "disability", "absent", None),
    # errands alone is also an instrumental activity of daily living
    ("69861-3", LOINC, "LA33-6", "iadl_dependence", "present", "moderate"),
    ("69861-3", LOINC, "LA32-8", "iadl_dependence", "absent", None),
]


@pytest.mark.parametrize(("question", "system", "answer", "feature", "status", "severity"), ANSWERS)
def test_answer_reading(
    definitions: Definitions,
    question: str,
    system: str,
    answer: str,
    feature: str,
    status: str,
    severity: str | None,
) -> None:
    found = finding_of(definitions, feature, observation("o1", question, **coded(system, answer)))
    assert reading(found) == (status, severity), f"{question} = {system}|{answer}"


def test_smoking_answer_in_the_wrong_system_is_unknown(definitions: Definitions) -> None:
    issues: list[tuple[str, str]] = []
    wrong = observation("o1", "72166-2", **coded(LOINC, "449868002"))
    found = profile_of(definitions, record(wrong), issues).finding("tobacco_use")
    assert reading(found) == ("unknown", None)
    assert issues


def test_one_yes_among_the_acs_questions_is_a_disability(definitions: Definitions) -> None:
    answers = {
        "69856-3": "LA32-8",
        "69857-1": "LA32-8",
        "69858-9": "LA32-8",
        "69859-7": "LA33-6",
        "69860-5": "LA32-8",
        "69861-3": "LA32-8",
    }
    items = [
        observation(f"o{n}", code, **coded(LOINC, value))
        for n, (code, value) in enumerate(answers.items())
    ]
    found = finding_of(definitions, "disability", *items)
    assert reading(found) == ("present", "moderate")
    assert found is not None and found.sources == ("Observation/o3",)


def test_newer_negative_phq9_overrides_older_positive(definitions: Definitions) -> None:
    older = observation("o1", "44261-6", when="2026-03-01", valueInteger=16)
    newer = observation("o2", "44261-6", when="2026-10-01", valueInteger=3)
    assert reading(finding_of(definitions, "depression", older, newer)) == ("absent", None)


def test_current_phq9_grades_a_diagnosis_higher(definitions: Definitions) -> None:
    diagnosis = condition("c1", ICD10, "F33.1")
    phq9 = observation("o1", "44261-6", when="2026-10-01", valueInteger=22)
    found = finding_of(definitions, "depression", diagnosis, phq9)
    assert reading(found) == ("present", "high")


def test_remitted_diagnosis_leaves_the_screen_to_decide(definitions: Definitions) -> None:
    remitted = condition("c1", ICD10, "F33.42")
    phq9 = observation("o1", "44261-6", when="2026-10-01", valueInteger=3)
    assert reading(finding_of(definitions, "depression", remitted, phq9)) == ("absent", None)


def test_old_screen_is_stale(definitions: Definitions) -> None:
    old = observation("o1", "70274-6", when="2025-01-10", **score(12))
    found = finding_of(definitions, "anxiety", old)
    assert found is not None and (found.status, found.stale) == ("present", True)


def test_bed_confinement_outranks_reduced_mobility(definitions: Definitions) -> None:
    found = finding_of(
        definitions,
        "mobility_limitation",
        condition("c1", ICD10, "Z74.09"),
        condition("c2", ICD10, "Z74.01"),
    )
    assert reading(found) == ("present", "high")


def test_phq2_in_a_questionnaire_response(definitions: Definitions) -> None:
    response = {
        "resourceType": "QuestionnaireResponse",
        "id": "q1",
        "status": "completed",
        "subject": {"reference": "Patient/p1"},
        "authored": "2026-09-01T10:00:00Z",
        "item": [{"linkId": "/55758-7", "answer": [{"valueInteger": 4}]}],
    }
    found = finding_of(definitions, "depression_screen_positive", response)
    assert reading(found) == ("present", "moderate")


# -- categories --------------------------------------------------------------------------------


def test_health_literacy_category_on_a_condition(definitions: Definitions) -> None:
    found = finding_of(
        definitions,
        "low_health_literacy",
        category_condition("c1", SDOHCC, "personal-health-literacy"),
    )
    assert reading(found) == ("present", "moderate")


def test_health_literacy_category_on_an_observation_is_not_mapped(
    definitions: Definitions,
) -> None:
    obs = observation(
        "o1",
        "99999-9",
        category=[{"coding": [{"system": SDOHCC, "code": "personal-health-literacy"}]}],
        valueBoolean=True,
    )
    assert finding_of(definitions, "low_health_literacy", obs) is None


@pytest.mark.parametrize("category", ["cognitive-status", "functional-status", "disability-status"])
def test_us_core_status_categories_alone_give_nothing(
    definitions: Definitions, category: str
) -> None:
    obs = observation(
        "o1",
        "99999-9",
        category=[{"coding": [{"system": US_CORE_CATEGORY, "code": category}]}],
        valueBoolean=True,
    )
    profile = profile_of(definitions, record(obs))
    assert profile.cognitive_behavioral.findings == ()
    assert profile.functional.findings == ()


def test_category_code_is_not_read_as_a_condition_code(definitions: Definitions) -> None:
    wrong_place = condition("c1", SDOHCC, "personal-health-literacy")
    assert finding_of(definitions, "low_health_literacy", wrong_place) is None
