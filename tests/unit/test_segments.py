"""Population segments: each with a profile that belongs to it and one that does not.

The expected segments are written out here from the segment definitions' intent (clinical and
non-clinical factors combined), never read back from profiles/segments.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from test_catalog_modules import make_profile

from fhir_tailor.definitions import Definitions
from fhir_tailor.profile_model import Profile
from fhir_tailor.segments import segment


@dataclass(frozen=True)
class SegmentCase:
    id: str
    member: Profile
    non_member: Profile
    #: feature, need, fact or gap ids expected in the member's evidence
    evidence: tuple[str, ...]


CASES = [
    SegmentCase(
        "diabetes_with_social_needs",
        make_profile("type2_diabetes", "food_insecurity"),
        make_profile("type2_diabetes", ("lives_alone", "low")),
        ("type2_diabetes", "social"),
    ),
    SegmentCase(
        "uncontrolled_diabetes",
        make_profile("type2_diabetes", ("hba1c_above_target", "high")),
        make_profile("type2_diabetes", ("hba1c_above_target", "moderate")),
        ("type2_diabetes", "hba1c_above_target"),
    ),
    SegmentCase(
        "uncontrolled_hypertension",
        make_profile("hypertension", "bp_above_target"),
        make_profile("bp_above_target"),
        ("hypertension", "bp_above_target"),
    ),
    SegmentCase(
        "frail_living_alone",
        make_profile(("lives_alone", "low"), "adl_dependence"),
        make_profile(("lives_alone", "low"), "mobility_limitation"),
        ("lives_alone", "adl_dependence"),
    ),
    SegmentCase(
        "behavioral_health_need",
        make_profile(("depression", "moderate")),
        make_profile(("depression", "low")),
        ("cognitive_behavioral",),
    ),
    SegmentCase(
        "social_needs_unscreened",
        make_profile(gaps=("no_sdoh_screening",)),
        make_profile(gaps=("no_depression_screening",)),
        ("no_sdoh_screening",),
    ),
    SegmentCase(
        "language_access",
        make_profile(language="vi"),
        make_profile(language="en-GB"),
        ("preferred_language",),
    ),
    SegmentCase(
        "uncontrolled_diabetes_food_insecurity",
        make_profile("type1_diabetes", ("hba1c_above_target", "high"), "food_insecurity"),
        make_profile("type2_diabetes", ("hba1c_above_target", "high"), "housing_instability"),
        ("type1_diabetes", "hba1c_above_target", "food_insecurity"),
    ),
    SegmentCase(
        "multimorbidity_polypharmacy",
        make_profile("polypharmacy", ("heart_failure", "high")),
        make_profile("polypharmacy", "hypertension"),
        ("polypharmacy", "medical"),
    ),
    SegmentCase(
        "behavioral_health_social_needs",
        make_profile(("anxiety", "moderate"), "housing_instability"),
        make_profile(("anxiety", "moderate"), ("lives_alone", "low")),
        ("cognitive_behavioral", "social"),
    ),
    SegmentCase(
        "older_cognitive_impairment_no_caregiver",
        make_profile("cognitive_impairment", age=81),
        make_profile("cognitive_impairment", "caregiver_present", age=81),
        ("age", "cognitive_impairment"),
    ),
    SegmentCase(
        "recent_discharge_transportation",
        make_profile("recent_hospital_discharge", "transportation_insecurity"),
        make_profile("transportation_insecurity", stale=("recent_hospital_discharge",)),
        ("recent_hospital_discharge", "transportation_insecurity"),
    ),
    SegmentCase(
        "rising_risk_unscreened",
        make_profile("hypertension", gaps=("no_depression_screening",)),
        make_profile(gaps=("no_depression_screening",)),
        ("medical", "no_depression_screening"),
    ),
    SegmentCase(
        "older_adult_fall_risk",
        make_profile("fall_risk", age=70),
        make_profile("fall_risk", age=64),
        ("age", "fall_risk"),
    ),
]


def ids(profile: Profile, definitions: Definitions) -> list[str]:
    return [match.id for match in segment(profile, definitions.segments)]


def test_every_segment_is_covered(definitions: Definitions) -> None:
    assert len(CASES) >= 8
    assert [s.id for s in definitions.segments] == [case.id for case in CASES]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_member(definitions: Definitions, case: SegmentCase) -> None:
    match = next(m for m in segment(case.member, definitions.segments) if m.id == case.id)
    assert set(case.evidence) <= {e.id for e in match.evidence}
    assert match.label


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_non_member(definitions: Definitions, case: SegmentCase) -> None:
    assert case.id not in ids(case.non_member, definitions)


def test_cognitive_impairment_without_caregiver_needs_age_65(definitions: Definitions) -> None:
    younger = make_profile("cognitive_impairment", age=64)
    assert "older_cognitive_impairment_no_caregiver" not in ids(younger, definitions)


def test_segments_come_in_definition_order(definitions: Definitions) -> None:
    profile = make_profile(
        "type2_diabetes",
        ("hba1c_above_target", "high"),
        "food_insecurity",
        "transportation_insecurity",
        "recent_hospital_discharge",
        age=70,
        language="es",
    )
    assert ids(profile, definitions) == [
        "diabetes_with_social_needs",
        "uncontrolled_diabetes",
        "language_access",
        "uncontrolled_diabetes_food_insecurity",
        "recent_discharge_transportation",
    ]


def test_rising_risk_counts_the_blood_pressure_and_egfr_gaps(definitions: Definitions) -> None:
    for gap in ("no_recent_bp", "no_recent_egfr"):
        profile = make_profile("hypertension", gaps=(gap,))
        assert "rising_risk_unscreened" in ids(profile, definitions)
