"""Profile mapping, feature by feature, on small synthetic records."""

from __future__ import annotations

from datetime import date

import pytest
from builders import (
    ICD10,
    SNOMED,
    VERIFICATION,
    answer,
    condition,
    observation,
    profile_of,
    quantity,
    record,
)

from fhir_tailor.definitions import Definitions


@pytest.mark.parametrize(
    ("system", "code"), [(SNOMED, "44054006"), (ICD10, "E11.9"), (ICD10, "e1165"), (ICD10, "E11")]
)
def test_type2_diabetes_from_snomed_and_icd10_prefix(
    definitions: Definitions, system: str, code: str
) -> None:
    profile = profile_of(definitions, record(condition("c1", system, code)))
    finding = profile.finding("type2_diabetes")
    assert finding is not None and finding.status == "present"
    assert finding.sources == ("Condition/c1",)
    assert profile.medical.need in ("low", "moderate", "high")


def test_icd10_prefix_does_not_match_a_neighbouring_code(definitions: Definitions) -> None:
    profile = profile_of(definitions, record(condition("c1", ICD10, "E10.9")))
    assert profile.finding("type2_diabetes") is None


@pytest.mark.parametrize("clinical", ["resolved", "inactive", "remission"])
def test_condition_no_longer_active_does_not_count(definitions: Definitions, clinical: str) -> None:
    profile = profile_of(
        definitions, record(condition("c1", SNOMED, "44054006", clinical=clinical))
    )
    assert profile.finding("type2_diabetes") is None
    assert profile.medical.need == "none"


def test_refuted_condition_does_not_count(definitions: Definitions) -> None:
    refuted = condition(
        "c1",
        SNOMED,
        "38341003",
        verificationStatus={"coding": [{"system": VERIFICATION, "code": "refuted"}]},
    )
    assert profile_of(definitions, record(refuted)).finding("hypertension") is None


@pytest.mark.parametrize(
    ("value", "status", "severity"),
    [(9.4, "present", "high"), (7.5, "present", "moderate"), (6.1, "absent", None)],
)
def test_hba1c_bands(
    definitions: Definitions, value: float, status: str, severity: str | None
) -> None:
    profile = profile_of(definitions, record(observation("o1", "4548-4", **quantity(value, "%"))))
    finding = profile.finding("hba1c_above_target")
    assert finding is not None
    assert (finding.status, finding.severity, finding.value, finding.unit) == (
        status,
        severity,
        value,
        "%",
    )
    assert finding.effective == date(2026, 9, 1)


def test_observation_without_value_is_unknown_and_reported(definitions: Definitions) -> None:
    issues: list[tuple[str, str]] = []
    profile = profile_of(definitions, record(observation("o1", "4548-4")), issues)
    finding = profile.finding("hba1c_above_target")
    assert finding is not None and finding.status == "unknown"
    assert issues and issues[0][0] == "Observation/o1" and "value" in issues[0][1]


def test_bp_panel_components_are_read(definitions: Definitions) -> None:
    panel = observation(
        "bp1",
        "85354-9",
        component=[
            {
                "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                **quantity(185, "mm[Hg]"),
            },
            {
                "code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
                **quantity(85, "mm[Hg]"),
            },
        ],
    )
    finding = profile_of(definitions, record(panel)).finding("bp_above_target")
    assert finding is not None
    assert (finding.status, finding.severity, finding.value) == ("present", "high", 185)
    assert finding.sources == ("Observation/bp1",)


def test_separate_diastolic_observation_is_read(definitions: Definitions) -> None:
    rec = record(observation("o1", "8462-4", **quantity(95, "mm[Hg]")))
    finding = profile_of(definitions, rec).finding("bp_above_target")
    assert finding is not None and (finding.status, finding.severity) == ("present", "moderate")


@pytest.mark.parametrize(
    ("score", "severity"), [(22, "high"), (16, "high"), (12, "moderate"), (6, "low")]
)
def test_phq9_total_bands(definitions: Definitions, score: int, severity: str) -> None:
    profile = profile_of(definitions, record(observation("o1", "44261-6", valueInteger=score)))
    finding = profile.finding("depression")
    assert finding is not None and (finding.status, finding.severity) == ("present", severity)
    assert profile.cognitive_behavioral.need == severity


def test_phq9_below_five_is_absent(definitions: Definitions) -> None:
    finding = profile_of(definitions, record(observation("o1", "44261-6", valueInteger=3))).finding(
        "depression"
    )
    assert finding is not None and finding.status == "absent"


@pytest.mark.parametrize(
    ("code", "status"), [("LA28397-0", "present"), ("LA6729-3", "present"), ("LA28398-8", "absent")]
)
@pytest.mark.parametrize("item", ["88122-7", "88123-5"])
def test_hunger_vital_sign_answers(
    definitions: Definitions, item: str, code: str, status: str
) -> None:
    profile = profile_of(definitions, record(observation("o1", item, **answer(code))))
    finding = profile.finding("food_insecurity")
    assert finding is not None and finding.status == status
    assert profile.social.need == ("none" if status == "absent" else "moderate")


def test_newer_negative_screening_overrides_older_positive(definitions: Definitions) -> None:
    rec = record(
        observation("old", "88122-7", when="2026-01-10", **answer("LA28397-0")),
        observation("new", "88122-7", when="2026-08-10", **answer("LA28398-8")),
    )
    finding = profile_of(definitions, rec).finding("food_insecurity")
    assert (
        finding is not None
        and finding.status == "absent"
        and finding.sources == ("Observation/new",)
    )


def test_active_sdoh_condition_wins_over_negative_screening(definitions: Definitions) -> None:
    rec = record(
        condition("c1", ICD10, "Z59.41"),
        observation("o1", "88122-7", when="2026-08-10", **answer("LA28398-8")),
    )
    finding = profile_of(definitions, rec).finding("food_insecurity")
    assert (
        finding is not None and finding.status == "present" and finding.sources == ("Condition/c1",)
    )


def test_stale_screening_is_kept_marked_and_opens_the_gap(definitions: Definitions) -> None:
    rec = record(observation("o1", "88122-7", when="2024-03-01", **answer("LA28397-0")))
    profile = profile_of(definitions, rec)
    finding = profile.finding("food_insecurity")
    assert finding is not None and finding.status == "present" and finding.stale
    assert profile.social.need == "none"
    assert "no_sdoh_screening" in {gap.id for gap in profile.data_gaps}


def test_recent_screening_closes_the_sdoh_gap(definitions: Definitions) -> None:
    rec = record(observation("o1", "88122-7", when="2026-10-01", **answer("LA28398-8")))
    assert "no_sdoh_screening" not in {gap.id for gap in profile_of(definitions, rec).data_gaps}


@pytest.mark.parametrize(
    ("feature", "code"),
    [
        ("transportation_insecurity", "Z59.82"),
        ("housing_instability", "Z59.01"),
        ("lives_alone", "Z60.2"),
        ("fall_history", "Z91.81"),
        ("adl_dependence", "Z74.1"),
        ("low_health_literacy", "Z55.0"),
    ],
)
def test_icd10_findings_in_each_dimension(
    definitions: Definitions, feature: str, code: str
) -> None:
    profile = profile_of(definitions, record(condition("c1", ICD10, code)))
    finding = profile.finding(feature)
    assert (
        finding is not None and finding.status == "present" and finding.sources == ("Condition/c1",)
    )


def test_findings_land_in_their_dimension(definitions: Definitions) -> None:
    rec = record(
        condition("c1", SNOMED, "44054006"),
        condition("c2", ICD10, "Z55.0"),
        condition("c3", ICD10, "Z59.82"),
        condition("c4", ICD10, "Z91.81"),
    )
    profile = profile_of(definitions, rec)
    assert [f.feature for f in profile.medical.findings] == ["type2_diabetes"]
    assert [f.feature for f in profile.cognitive_behavioral.findings] == ["low_health_literacy"]
    assert [f.feature for f in profile.social.findings] == ["transportation_insecurity"]
    assert [f.feature for f in profile.functional.findings] == ["fall_history"]


def test_patient_facts(definitions: Definitions) -> None:
    communication = [
        {"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "en"}]}},
        {"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "es"}]}, "preferred": True},
    ]
    profile = profile_of(definitions, record(birthDate="1950-11-16", communication=communication))
    assert profile.facts.age == 75  # birthday is tomorrow
    assert profile.facts.gender == "female"
    assert profile.facts.preferred_language == "es"


def test_unknown_and_malformed_elements_are_tolerated(definitions: Definitions) -> None:
    odd = observation(
        "o1", "4548-4", **quantity(8.0, "%"), foo={"bar": 1}, effectiveDateTime="2026-09"
    )
    odd["code"]["coding"].append({"system": 5, "code": None})
    finding = profile_of(definitions, record(odd)).finding("hba1c_above_target")
    assert (
        finding is not None
        and finding.severity == "moderate"
        and finding.effective == date(2026, 9, 1)
    )


@pytest.mark.parametrize(
    ("bmi", "when", "severity", "sources"),
    [
        (45.0, "2026-09-01", "high", ("Condition/c1", "Observation/o1")),
        (32.0, "2026-09-01", "moderate", ("Condition/c1",)),
        (45.0, "2024-01-10", "moderate", ("Condition/c1",)),  # stale measurement
    ],
)
def test_a_current_graver_measurement_grades_a_diagnosis(
    definitions: Definitions, bmi: float, when: str, severity: str, sources: tuple[str, ...]
) -> None:
    rec = record(
        condition("c1", ICD10, "E66.9"),
        observation("o1", "39156-5", when=when, **quantity(bmi, "kg/m2")),
    )
    finding = profile_of(definitions, rec).finding("obesity")
    assert finding is not None
    assert (finding.status, finding.severity, finding.stale) == ("present", severity, False)
    assert finding.sources == sources
