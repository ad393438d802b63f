"""Social dimension (SDOH) mappings, checked against an independent table of expected readings.

The expected features, statuses and severities below are written out by hand from the
instruments' published scoring (Hunger Vital Sign, AHC HRSN core and supplemental, PRAPARE),
the ICD-10-CM tabular list and the HL7 SDOH Clinical Care IG domain codes, not read from
``profiles/features/social.yaml``: a wrong or missing code, answer or cut-off there fails here.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from builders import (
    ICD10,
    LOINC,
    SNOMED,
    answer,
    condition,
    finding_of,
    observation,
    profile_of,
    reading,
    record,
)

from fhir_tailor.definitions import Definitions
from fhir_tailor.profile_model import Profile

SDOHCC = "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes"
US_CORE_CATEGORY = "http://hl7.org/fhir/us/core/CodeSystem/us-core-category"
CONDITION_CATEGORY = "http://hl7.org/fhir/us/core/CodeSystem/condition-category"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
LOCAL = "http://example.org/fhir/CodeSystem/local-problems"

SOCIAL_FEATURES = (
    "food_insecurity",
    "housing_instability",
    "inadequate_housing",
    "transportation_insecurity",
    "utility_insecurity",
    "financial_strain",
    "unemployment",
    "low_education",
    "social_isolation",
    "interpersonal_safety",
    "stress",
    "lives_alone",
    "caregiver_present",
)


# -- helpers -----------------------------------------------------------------------------------


def social_findings(profile: Profile) -> dict[str, tuple[str, str | None]]:
    return {f.feature: (f.status, f.severity) for f in profile.social.findings}


def category_condition(
    cid: str, code: str, system: str = SDOHCC, clinical: str | None = "active"
) -> dict[str, Any]:
    """An SDOH Condition whose code maps to nothing: only its category can match."""
    return condition(
        cid,
        LOCAL,
        "local-problem-1",
        clinical=clinical,
        category=[
            {"coding": [{"system": CONDITION_CATEGORY, "code": "health-concern"}]},
            {"coding": [{"system": system, "code": code}]},
        ],
    )


def score(value: float) -> dict[str, Any]:
    """A score as the US Core AHC HRSN example sends it: a quantity without unit."""
    return {"valueQuantity": {"value": value}}


def coding(code: str) -> dict[str, Any]:
    return {"valueCoding": {"system": LOINC, "code": code}}


def qr_item(link_id: str, value: dict[str, Any]) -> dict[str, Any]:
    return {"linkId": link_id, "answer": [value]}


def questionnaire_response(
    qid: str,
    *items: dict[str, Any],
    authored: str = "2026-09-01T10:00:00Z",
    status: str = "completed",
) -> dict[str, Any]:
    return {
        "resourceType": "QuestionnaireResponse",
        "id": qid,
        "status": status,
        "subject": {"reference": "Patient/p1"},
        "authored": authored,
        "item": list(items),
    }


# -- the definitions ---------------------------------------------------------------------------


def test_every_social_feature_is_defined_in_the_social_dimension(definitions: Definitions) -> None:
    features = definitions.rules.index.features
    for feature in SOCIAL_FEATURES:
        assert feature in features, feature
        assert features[feature][1] == "social", feature
    assert features["caregiver_present"][0].asset is True
    assert all(not features[f][0].asset for f in SOCIAL_FEATURES if f != "caregiver_present")


# -- screening answers: (item, answer, feature, status, severity) --------------------------------

ANSWER_CASES: list[tuple[str, str, str, str, str | None]] = [
    # Hunger Vital Sign: often/sometimes true to either item is positive.
    ("88122-7", "LA28397-0", "food_insecurity", "present", "moderate"),
    ("88122-7", "LA6729-3", "food_insecurity", "present", "moderate"),
    ("88122-7", "LA28398-8", "food_insecurity", "absent", None),
    ("88122-7", "LA15775-2", "food_insecurity", "unknown", None),
    ("88123-5", "LA28397-0", "food_insecurity", "present", "moderate"),
    ("88123-5", "LA6729-3", "food_insecurity", "present", "moderate"),
    ("88123-5", "LA28398-8", "food_insecurity", "absent", None),
    ("88124-3", "LA19952-3", "food_insecurity", "present", "moderate"),
    ("88124-3", "LA19983-8", "food_insecurity", "absent", None),
    # PRAPARE material security: "Food" only; other goods say nothing about food.
    ("93031-3", "LA30125-1", "food_insecurity", "present", "moderate"),
    ("93031-3", "LA30126-9", "food_insecurity", "unknown", None),
    # Living situation: AHC HRSN and PRAPARE answers to the same item.
    ("71802-3", "LA31995-6", "housing_instability", "present", "high"),
    ("71802-3", "LA31994-9", "housing_instability", "present", "moderate"),
    ("71802-3", "LA31993-1", "housing_instability", "absent", None),
    ("71802-3", "LA30190-5", "housing_instability", "present", "high"),
    ("71802-3", "LA30189-7", "housing_instability", "absent", None),
    ("71802-3", "LA30122-8", "housing_instability", "unknown", None),
    ("93033-9", "LA33-6", "housing_instability", "present", "moderate"),
    ("93033-9", "LA32-8", "housing_instability", "absent", None),
    # AHC HRSN housing problems: every problem positive, "None of the above" negative.
    ("96778-6", "LA31996-4", "inadequate_housing", "present", "moderate"),
    ("96778-6", "LA28580-1", "inadequate_housing", "present", "moderate"),
    ("96778-6", "LA31997-2", "inadequate_housing", "present", "moderate"),
    ("96778-6", "LA31998-0", "inadequate_housing", "present", "moderate"),
    ("96778-6", "LA31999-8", "inadequate_housing", "present", "moderate"),
    ("96778-6", "LA32000-4", "inadequate_housing", "present", "moderate"),
    ("96778-6", "LA32001-2", "inadequate_housing", "present", "moderate"),
    ("96778-6", "LA9-3", "inadequate_housing", "absent", None),
    # Transportation (AHC Yes/No and PRAPARE two "Yes, ..." answers).
    ("93030-5", "LA33-6", "transportation_insecurity", "present", "moderate"),
    ("93030-5", "LA30133-5", "transportation_insecurity", "present", "moderate"),
    ("93030-5", "LA30134-3", "transportation_insecurity", "present", "moderate"),
    ("93030-5", "LA32-8", "transportation_insecurity", "absent", None),
    ("93030-5", "LA30257-2", "transportation_insecurity", "unknown", None),
    # Utilities: already shut off is worse than a threat.
    ("96779-4", "LA32002-0", "utility_insecurity", "present", "high"),
    ("96779-4", "LA33-6", "utility_insecurity", "present", "moderate"),
    ("96779-4", "LA32-8", "utility_insecurity", "absent", None),
    ("93031-3", "LA30124-4", "utility_insecurity", "present", "moderate"),
    ("93031-3", "LA30125-1", "utility_insecurity", "unknown", None),
    # Financial strain: any "hard" answer positive.
    ("76513-1", "LA15832-1", "financial_strain", "present", "moderate"),
    ("76513-1", "LA14745-6", "financial_strain", "present", "moderate"),
    ("76513-1", "LA22683-9", "financial_strain", "present", "moderate"),
    ("76513-1", "LA31980-8", "financial_strain", "absent", None),
    ("76513-1", "LA22682-1", "financial_strain", "absent", None),
    # Employment: unemployed (seeking) only; not in labor force is not unemployment.
    ("67875-5", "LA17956-6", "unemployment", "present", "moderate"),
    ("67875-5", "LA30138-4", "unemployment", "absent", None),
    ("67875-5", "LA30136-8", "unemployment", "absent", None),
    ("67875-5", "LA30137-6", "unemployment", "absent", None),
    ("67875-5", "LA30122-8", "unemployment", "unknown", None),
    ("96780-2", "LA31981-6", "unemployment", "present", "moderate"),
    ("96780-2", "LA31982-4", "unemployment", "present", "low"),
    ("96780-2", "LA31983-2", "unemployment", "absent", None),
    # Education: less than high school; AHC wish for help is a weak signal, its "No" is silent.
    ("82589-3", "LA30191-3", "low_education", "present", "moderate"),
    ("82589-3", "LA30192-1", "low_education", "absent", None),
    ("82589-3", "LA30193-9", "low_education", "absent", None),
    ("82589-3", "LA30122-8", "low_education", "unknown", None),
    ("96782-8", "LA33-6", "low_education", "present", "low"),
    ("96782-8", "LA32-8", "low_education", "unknown", None),
    # Loneliness: "Often" and "Always" positive, "Sometimes" the highest negative.
    ("93159-2", "LA9933-8", "social_isolation", "present", "moderate"),
    ("93159-2", "LA10044-8", "social_isolation", "present", "moderate"),
    ("93159-2", "LA10082-8", "social_isolation", "absent", None),
    ("93159-2", "LA10066-1", "social_isolation", "absent", None),
    ("93159-2", "LA6270-8", "social_isolation", "absent", None),
    # Help with daily activities: needing more help positive.
    ("96781-0", "LA31979-0", "social_isolation", "present", "moderate"),
    ("96781-0", "LA31978-2", "social_isolation", "present", "low"),
    ("96781-0", "LA31977-4", "social_isolation", "absent", None),
    ("96781-0", "LA31976-6", "social_isolation", "absent", None),
    # PRAPARE social contact: weekly or more is enough contact.
    ("93029-7", "LA27722-0", "social_isolation", "present", "moderate"),
    ("93029-7", "LA30130-1", "social_isolation", "present", "low"),
    ("93029-7", "LA30131-9", "social_isolation", "absent", None),
    ("93029-7", "LA30132-7", "social_isolation", "absent", None),
    ("93029-7", "LA30122-8", "social_isolation", "unknown", None),
    # Safety (PRAPARE): not safe and fear of a partner are high.
    ("93026-3", "LA32-8", "interpersonal_safety", "present", "high"),
    ("93026-3", "LA33-6", "interpersonal_safety", "absent", None),
    ("93026-3", "LA14072-5", "interpersonal_safety", "unknown", None),
    ("76501-6", "LA33-6", "interpersonal_safety", "present", "high"),
    ("76501-6", "LA32-8", "interpersonal_safety", "absent", None),
    # HITS items do not decide on their own (the total does).
    ("95618-5", "LA6482-9", "interpersonal_safety", "unknown", None),
    ("95618-5", "LA6270-8", "interpersonal_safety", "unknown", None),
    ("95617-7", "LA16644-9", "interpersonal_safety", "unknown", None),
    ("95617-7", "LA6270-8", "interpersonal_safety", "unknown", None),
    ("95616-9", "LA10082-8", "interpersonal_safety", "unknown", None),
    ("95616-9", "LA6270-8", "interpersonal_safety", "unknown", None),
    ("95615-1", "LA10066-1", "interpersonal_safety", "unknown", None),
    ("95615-1", "LA6270-8", "interpersonal_safety", "unknown", None),
    # Stress: every answer but "Not at all" positive; the mild ones low.
    ("93038-8", "LA13914-9", "stress", "present", "moderate"),
    ("93038-8", "LA13902-4", "stress", "present", "moderate"),
    ("93038-8", "LA13909-9", "stress", "present", "low"),
    ("93038-8", "LA13863-8", "stress", "present", "low"),
    ("93038-8", "LA6568-5", "stress", "absent", None),
    ("93038-8", "LA30122-8", "stress", "unknown", None),
    # CMS living arrangement: lives alone (01-05) ...
    ("85950-4", "LA27650-3", "lives_alone", "present", "low"),
    ("85950-4", "LA27654-5", "lives_alone", "present", "low"),
    ("85950-4", "LA27655-2", "lives_alone", "absent", None),
    ("85950-4", "LA27664-4", "lives_alone", "absent", None),
    # ... and availability of assistance (a strength: no severity).
    ("85950-4", "LA27650-3", "caregiver_present", "present", None),
    ("85950-4", "LA27653-7", "caregiver_present", "present", None),
    ("85950-4", "LA27654-5", "caregiver_present", "absent", None),
    ("85950-4", "LA27655-2", "caregiver_present", "present", None),
    ("85950-4", "LA27659-4", "caregiver_present", "absent", None),
    ("85950-4", "LA27663-6", "caregiver_present", "present", None),
    ("85950-4", "LA27664-4", "caregiver_present", "absent", None),
    ("96781-0", "LA31977-4", "caregiver_present", "present", None),
    ("96781-0", "LA31979-0", "caregiver_present", "unknown", None),
    ("96781-0", "LA31976-6", "caregiver_present", "unknown", None),
]


@pytest.mark.parametrize(
    ("item", "code", "feature", "status", "severity"),
    ANSWER_CASES,
    ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in ANSWER_CASES],
)
def test_screening_answer(
    definitions: Definitions, item: str, code: str, feature: str, status: str, severity: str | None
) -> None:
    found = finding_of(definitions, feature, observation("o1", item, **answer(code)))
    assert reading(found) == (status, severity)
    assert found is not None and found.sources == ("Observation/o1",)


def test_answer_outside_the_table_is_unknown_and_reported(definitions: Definitions) -> None:
    issues: list[tuple[str, str]] = []
    rec = record(observation("o1", "93038-8", **answer("LA9999-9")))
    found = profile_of(definitions, rec, issues).finding("stress")
    assert reading(found) == ("unknown", None)
    assert issues and issues[0][0] == "Observation/o1"


# -- HITS total score: 11 or more is positive -------------------------------------------------


@pytest.mark.parametrize(
    ("value", "status", "severity"),
    [(20, "present", "high"), (11, "present", "high"), (10, "absent", None), (4, "absent", None)],
)
def test_hits_total_score_cut_off(
    definitions: Definitions, value: float, status: str, severity: str | None
) -> None:
    found = finding_of(
        definitions, "interpersonal_safety", observation("o1", "95614-4", **score(value))
    )
    assert reading(found) == (status, severity)
    assert found is not None and found.value == value


def test_hits_total_as_integer_and_items_on_the_same_day(definitions: Definitions) -> None:
    items = [
        observation(f"i{n}", code, **answer("LA6482-9"))
        for n, code in enumerate(("95618-5", "95617-7", "95616-9"))
    ]
    total = observation("t", "95614-4", valueInteger=16)
    assert reading(finding_of(definitions, "interpersonal_safety", *items, total)) == (
        "present",
        "high",
    )
    low_total = observation("t", "95614-4", valueInteger=10)
    assert reading(finding_of(definitions, "interpersonal_safety", *items, low_total)) == (
        "absent",
        None,
    )


# -- SDOH Conditions: ICD-10-CM (incl. children of prefixes) and SNOMED CT --------------------

CONDITION_CASES: list[tuple[str, str, str, str]] = [
    (ICD10, "Z59.4", "food_insecurity", "moderate"),
    (ICD10, "Z59.41", "food_insecurity", "moderate"),
    (ICD10, "Z59.48", "food_insecurity", "moderate"),
    (ICD10, "Z59.0", "housing_instability", "high"),
    (ICD10, "Z59.01", "housing_instability", "high"),
    (ICD10, "Z59.02", "housing_instability", "high"),
    (ICD10, "Z59.811", "housing_instability", "moderate"),
    (ICD10, "Z59.819", "housing_instability", "moderate"),
    (ICD10, "Z59.1", "inadequate_housing", "moderate"),
    (ICD10, "Z59.10", "inadequate_housing", "moderate"),
    (ICD10, "Z59.11", "inadequate_housing", "moderate"),
    (ICD10, "Z59.19", "inadequate_housing", "moderate"),
    (ICD10, "Z59.82", "transportation_insecurity", "moderate"),
    (ICD10, "Z59.12", "utility_insecurity", "moderate"),
    (ICD10, "Z59.861", "utility_insecurity", "moderate"),
    (ICD10, "Z59.86", "financial_strain", "moderate"),
    (ICD10, "Z59.861", "financial_strain", "moderate"),
    (ICD10, "Z59.868", "financial_strain", "moderate"),
    (ICD10, "Z59.869", "financial_strain", "moderate"),
    (ICD10, "Z59.5", "financial_strain", "moderate"),
    (ICD10, "Z59.6", "financial_strain", "low"),
    (ICD10, "Z59.7", "financial_strain", "low"),
    (ICD10, "Z59.72", "financial_strain", "low"),
    (ICD10, "Z56.0", "unemployment", "moderate"),
    (ICD10, "Z56.2", "unemployment", "low"),
    (ICD10, "Z55.5", "low_education", "moderate"),
    (ICD10, "Z55.1", "low_education", "low"),
    (ICD10, "Z60.4", "social_isolation", "moderate"),
    (ICD10, "Z60.8", "social_isolation", "low"),
    (ICD10, "Z60.2", "lives_alone", "moderate"),
    (ICD10, "T74.11XA", "interpersonal_safety", "high"),
    (ICD10, "T74.01XD", "interpersonal_safety", "high"),
    (ICD10, "T74.21XA", "interpersonal_safety", "high"),
    (ICD10, "T74.31XS", "interpersonal_safety", "high"),
    (ICD10, "T74.91XA", "interpersonal_safety", "high"),
    (ICD10, "T76.01XA", "interpersonal_safety", "moderate"),
    (ICD10, "T76.11XA", "interpersonal_safety", "moderate"),
    (ICD10, "T76.21XD", "interpersonal_safety", "moderate"),
    (ICD10, "T76.31XA", "interpersonal_safety", "moderate"),
    (ICD10, "T76.91XS", "interpersonal_safety", "moderate"),
    (ICD10, "Z69.11", "interpersonal_safety", "moderate"),
    (ICD10, "Z73.3", "stress", "moderate"),
    (SNOMED, "733423003", "food_insecurity", "moderate"),
    (SNOMED, "32911000", "housing_instability", "high"),
    (SNOMED, "105531004", "inadequate_housing", "moderate"),
    (SNOMED, "713458007", "transportation_insecurity", "moderate"),
    (SNOMED, "266934004", "transportation_insecurity", "moderate"),
    (SNOMED, "73438004", "unemployment", "moderate"),
    (SNOMED, "224295006", "low_education", "moderate"),
    (SNOMED, "422650009", "social_isolation", "moderate"),
    (SNOMED, "423315002", "social_isolation", "low"),
    (SNOMED, "706893006", "interpersonal_safety", "high"),
    (SNOMED, "424393004", "interpersonal_safety", "moderate"),
    (SNOMED, "73595000", "stress", "moderate"),
    (SNOMED, "105529008", "lives_alone", "low"),
]


@pytest.mark.parametrize(
    ("system", "code", "feature", "severity"),
    CONDITION_CASES,
    ids=[f"{c[1]}-{c[2]}" for c in CONDITION_CASES],
)
def test_sdoh_condition(
    definitions: Definitions, system: str, code: str, feature: str, severity: str
) -> None:
    found = finding_of(definitions, feature, condition("c1", system, code))
    assert reading(found) == ("present", severity)
    assert found is not None and found.sources == ("Condition/c1",)


def test_difficulty_paying_for_utilities_is_both_utility_and_financial(
    definitions: Definitions,
) -> None:
    findings = social_findings(profile_of(definitions, record(condition("c1", ICD10, "Z59.861"))))
    assert findings == {
        "utility_insecurity": ("present", "moderate"),
        "financial_strain": ("present", "moderate"),
    }


# Neighbouring codes: (system, code, feature that must not be found). None means: no social
# finding at all.
NEIGHBOUR_CASES: list[tuple[str, str, str | None]] = [
    (ICD10, "Z59.2", None),  # discord with neighbors, lodgers and landlord
    (ICD10, "Z59.3", None),  # living in residential institution
    (ICD10, "Z59.89", None),  # other problems related to housing and economic circumstances
    (ICD10, "Z59.12", "inadequate_housing"),  # utilities belong to utility_insecurity
    (ICD10, "Z59.1", "utility_insecurity"),
    (ICD10, "Z59.71", "financial_strain"),  # health insurance coverage, another domain
    (ICD10, "Z59.87", None),  # material hardship, not mapped
    (ICD10, "Z56.1", None),  # change of job
    (ICD10, "Z56.3", None),  # stressful work schedule
    (ICD10, "Z55.0", "low_education"),  # literacy belongs to cognitive_behavioral
    (ICD10, "Z55.6", "low_education"),  # health literacy belongs to cognitive_behavioral
    (ICD10, "Z55.2", None),  # failed school examinations
    (ICD10, "Z55.9", None),  # academic problems NOS
    (ICD10, "Z60.0", None),  # life-cycle transitions
    (ICD10, "Z60.3", None),  # acculturation difficulty
    (ICD10, "Z60.9", None),  # social environment problem, unspecified
    (ICD10, "T74.12XA", None),  # child physical abuse
    (ICD10, "T76.12XA", None),  # child physical abuse, suspected
    (ICD10, "T74.4XXA", None),  # shaken infant syndrome
    (ICD10, "Z69.12", None),  # perpetrator of spousal or partner abuse
    (ICD10, "Z63.0", None),  # relationship problems with partner
    (ICD10, "Z73.0", None),  # burn-out
    (SNOMED, "741062008", None),  # not in labor force
    (SNOMED, "160903007", None),  # full-time employment
    (SNOMED, "473461003", None),  # educated to high school level
]


@pytest.mark.parametrize(
    ("system", "code", "feature"),
    NEIGHBOUR_CASES,
    ids=[f"{c[1]}-not-{c[2] or 'social'}" for c in NEIGHBOUR_CASES],
)
def test_neighbouring_code_does_not_match(
    definitions: Definitions, system: str, code: str, feature: str | None
) -> None:
    profile = profile_of(definitions, record(condition("c1", system, code)))
    if feature is None:
        assert social_findings(profile) == {}
    else:
        assert profile.finding(feature) is None


# -- SDOH IG domain category on a Condition (match: category) ---------------------------------

CATEGORY_CASES: list[tuple[str, str, str]] = [
    ("food-insecurity", "food_insecurity", "moderate"),
    ("housing-instability", "housing_instability", "moderate"),
    ("homelessness", "housing_instability", "high"),
    ("inadequate-housing", "inadequate_housing", "moderate"),
    ("transportation-insecurity", "transportation_insecurity", "moderate"),
    ("utility-insecurity", "utility_insecurity", "moderate"),
    ("financial-insecurity", "financial_strain", "moderate"),
    ("employment-status", "unemployment", "moderate"),
    ("educational-attainment", "low_education", "moderate"),
    ("social-connection", "social_isolation", "moderate"),
    ("stress", "stress", "moderate"),
    ("intimate-partner-violence", "interpersonal_safety", "high"),
    ("elder-abuse", "interpersonal_safety", "high"),
]


@pytest.mark.parametrize(("category", "feature", "severity"), CATEGORY_CASES)
def test_sdoh_domain_category_on_condition(
    definitions: Definitions, category: str, feature: str, severity: str
) -> None:
    profile = profile_of(definitions, record(category_condition("c1", category)))
    assert social_findings(profile) == {feature: ("present", severity)}
    found = profile.finding(feature)
    assert found is not None and found.sources == ("Condition/c1",)


@pytest.mark.parametrize(
    ("system", "code"),
    [
        (SDOHCC, "material-hardship"),
        (SDOHCC, "sdoh-category-unspecified"),
        (SDOHCC, "protective-factor"),
        (US_CORE_CATEGORY, "sdoh"),
        (OBSERVATION_CATEGORY, "food-insecurity"),  # right code, wrong system
    ],
)
def test_other_categories_do_not_match(definitions: Definitions, system: str, code: str) -> None:
    profile = profile_of(definitions, record(category_condition("c1", code, system=system)))
    assert social_findings(profile) == {}


def test_category_on_a_resolved_condition_does_not_count(definitions: Definitions) -> None:
    rec = record(category_condition("c1", "homelessness", clinical="resolved"))
    assert profile_of(definitions, rec).finding("housing_instability") is None


def test_category_is_not_read_on_observations(definitions: Definitions) -> None:
    # A negative screening answer carries the domain category too; it stays negative.
    negative = observation(
        "o1",
        "88122-7",
        category=[{"coding": [{"system": SDOHCC, "code": "food-insecurity"}]}],
        **answer("LA28398-8"),
    )
    assert reading(finding_of(definitions, "food_insecurity", negative)) == ("absent", None)


# -- QuestionnaireResponse items --------------------------------------------------------------


def test_questionnaire_response_item_by_link_id(definitions: Definitions) -> None:
    qr = questionnaire_response("q1", qr_item("/88122-7", coding("LA28397-0")))
    found = finding_of(definitions, "food_insecurity", qr)
    assert reading(found) == ("present", "moderate")
    assert found is not None and found.effective == date(2026, 9, 1)
    assert found.sources == ("QuestionnaireResponse/q1",)


def test_questionnaire_response_nested_prapare_items(definitions: Definitions) -> None:
    qr = questionnaire_response(
        "q1",
        {
            "linkId": "/93025-5",
            "item": [
                {
                    "linkId": "/93042-0",
                    "item": [
                        qr_item("/93042-0/71802-3", coding("LA30190-5")),
                        qr_item("/93042-0/93033-9", coding("LA32-8")),
                    ],
                },
                {"linkId": "/93040-4", "item": [qr_item("/93040-4/93038-8", coding("LA13902-4"))]},
            ],
        },
    )
    findings = social_findings(profile_of(definitions, record(qr)))
    assert findings["housing_instability"] == ("present", "high")
    assert findings["stress"] == ("present", "moderate")


@pytest.mark.parametrize(("total", "status"), [(12, "present"), (10, "absent")])
def test_questionnaire_response_ahc_safety_total(
    definitions: Definitions, total: float, status: str
) -> None:
    qr = questionnaire_response(
        "q1",
        qr_item("/95618-5", coding("LA16644-9")),
        qr_item("/95617-7", coding("LA16644-9")),
        qr_item("/95614-4", {"valueDecimal": total}),
    )
    found = finding_of(definitions, "interpersonal_safety", qr)
    assert found is not None and found.status == status and found.value == total


def test_questionnaire_response_in_progress_is_not_read(definitions: Definitions) -> None:
    qr = questionnaire_response(
        "q1", qr_item("/88122-7", coding("LA28397-0")), status="in-progress"
    )
    assert finding_of(definitions, "food_insecurity", qr) is None


# -- merging evidence ---------------------------------------------------------------------------


def test_hunger_vital_sign_either_item_positive(definitions: Definitions) -> None:
    never = observation("o1", "88122-7", **answer("LA28398-8"))
    sometimes = observation("o2", "88123-5", **answer("LA6729-3"))
    found = finding_of(definitions, "food_insecurity", never, sometimes)
    assert reading(found) == ("present", "moderate")
    assert found is not None and found.sources == ("Observation/o2",)


def test_newer_negative_screen_overrides_older_positive(definitions: Definitions) -> None:
    older = observation("o1", "96779-4", when="2025-12-01", **answer("LA33-6"))
    newer = observation("o2", "96779-4", when="2026-09-01", **answer("LA32-8"))
    assert reading(finding_of(definitions, "utility_insecurity", older, newer)) == ("absent", None)


def test_active_condition_outranks_a_newer_negative_screen(definitions: Definitions) -> None:
    negative = observation("o1", "71802-3", **answer("LA31993-1"))
    homeless = condition("c1", ICD10, "Z59.01")
    assert reading(finding_of(definitions, "housing_instability", negative, homeless)) == (
        "present",
        "high",
    )


def test_prapare_housed_but_worried_is_instability(definitions: Definitions) -> None:
    housed = observation("o1", "71802-3", **answer("LA30189-7"))
    worried = observation("o2", "93033-9", **answer("LA33-6"))
    assert reading(finding_of(definitions, "housing_instability", housed, worried)) == (
        "present",
        "moderate",
    )


def test_ahc_no_help_with_school_does_not_overrule_attainment(definitions: Definitions) -> None:
    less_than_hs = observation("o1", "82589-3", when="2025-06-01", **answer("LA30191-3"))
    no_help = observation("o2", "96782-8", when="2026-09-01", **answer("LA32-8"))
    assert reading(finding_of(definitions, "low_education", less_than_hs, no_help)) == (
        "present",
        "moderate",
    )


@pytest.mark.parametrize(
    ("feature", "item", "code", "when", "stale"),
    [
        ("food_insecurity", "88122-7", "LA28397-0", "2025-11-15", False),  # 365 days
        ("food_insecurity", "88122-7", "LA28397-0", "2025-11-14", True),  # 366 days
        ("low_education", "82589-3", "LA30191-3", "2021-11-16", False),  # 1825 days
        ("low_education", "82589-3", "LA30191-3", "2021-11-15", True),  # 1826 days
    ],
)
def test_staleness(
    definitions: Definitions, feature: str, item: str, code: str, when: str, stale: bool
) -> None:
    found = finding_of(definitions, feature, observation("o1", item, when=when, **answer(code)))
    assert found is not None and found.status == "present" and found.stale is stale


# -- need levels --------------------------------------------------------------------------------


def test_homelessness_is_a_high_social_need(definitions: Definitions) -> None:
    profile = profile_of(definitions, record(condition("c1", ICD10, "Z59.02")))
    assert profile.social.need == "high"


def test_caregiver_present_is_a_strength_not_a_need(definitions: Definitions) -> None:
    profile = profile_of(definitions, record(observation("o1", "85950-4", **answer("LA27655-2"))))
    assert social_findings(profile) == {
        "lives_alone": ("absent", None),
        "caregiver_present": ("present", None),
    }
    assert profile.social.need == "none"


def test_lives_alone_without_assistance(definitions: Definitions) -> None:
    profile = profile_of(definitions, record(observation("o1", "85950-4", **answer("LA27654-5"))))
    assert social_findings(profile) == {
        "lives_alone": ("present", "low"),
        "caregiver_present": ("absent", None),
    }
    assert profile.social.need == "low"


def test_lives_alone_snomed_observation(definitions: Definitions) -> None:
    obs = observation("o1", "x")
    obs["code"] = {"coding": [{"system": SNOMED, "code": "105529008"}]}
    assert reading(finding_of(definitions, "lives_alone", obs)) == ("present", "low")


def test_three_moderate_social_needs_escalate(definitions: Definitions) -> None:
    rec = record(
        observation("o1", "88122-7", **answer("LA28397-0")),
        observation("o2", "93030-5", **answer("LA33-6")),
        observation("o3", "76513-1", **answer("LA15832-1")),
    )
    assert profile_of(definitions, rec).social.need == "high"
