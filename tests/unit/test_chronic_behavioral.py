"""Chronic behavioral conditions from the codes real records carry, and their place on the plan.

Depression, anxiety, dementia and cognitive impairment, alcohol use disorder, opioid use disorder
and tobacco use: each group is recognised from its SNOMED CT parent, the specific SNOMED CT
descendants records carry (Synthea, VSAC expansions) and ICD-10-CM billable subcodes; a
neighbouring code of another meaning, a remission code, or a resolved or refuted Condition gives
nothing. A patient whose only problem is one of these diagnoses (controlled, onset years ago, no
recent data) gets the group's care module, and the Condition is in ``CarePlan.addresses`` and in
the goals' ``addresses``.

The expected features, severities and modules are written out by hand from the code systems
(SNOMED CT fully specified names, ICD-10-CM tabular list FY2026), the VSAC value set titles and
the guidelines the modules cite, never read back from ``profiles/``.
"""

from __future__ import annotations

from typing import Any

import pytest
from builders import (
    AS_OF,
    ICD10,
    SNOMED,
    VERIFICATION,
    condition,
    observation,
    plan_of,
    profile_of,
    reading,
    record,
)

from fhir_tailor.definitions import Definitions
from fhir_tailor.pipeline import profile_and_plan
from fhir_tailor.plan import Plan

#: (system, code, feature, severity): codes that must give the feature.
RECOGNISED: list[tuple[str, str, str, str]] = [
    # -- depression: SNOMED CT 35489007 |Depressive disorder| and descendants, F32/F33 ----------
    (SNOMED, "35489007", "depression", "moderate"),  # parent
    (SNOMED, "370143000", "depression", "moderate"),  # major depressive disorder (Synthea)
    (SNOMED, "36923009", "depression", "moderate"),  # major depression, single episode
    (SNOMED, "66344007", "depression", "moderate"),  # recurrent major depression
    (SNOMED, "18818009", "depression", "moderate"),  # moderate recurrent major depression
    (SNOMED, "30605009", "depression", "moderate"),  # major depression in partial remission
    (SNOMED, "192080009", "depression", "moderate"),  # chronic depression
    (SNOMED, "58703003", "depression", "moderate"),  # postpartum depression
    (SNOMED, "78667006", "depression", "moderate"),  # dysthymia
    (SNOMED, "1153575004", "depression", "moderate"),  # persistent depressive disorder
    (SNOMED, "450714000", "depression", "high"),  # severe major depression
    (SNOMED, "73867007", "depression", "high"),  # severe major depression, psychotic features
    (SNOMED, "720452006", "depression", "high"),  # moderately severe recurrent (PHQ-9 15-19)
    (ICD10, "F32.1", "depression", "moderate"),
    (ICD10, "F33.1", "depression", "moderate"),
    (ICD10, "F32.A", "depression", "moderate"),
    (ICD10, "F34.1", "depression", "moderate"),  # dysthymic disorder
    (ICD10, "F53.0", "depression", "moderate"),  # postpartum depression
    (ICD10, "F33.2", "depression", "high"),
    (ICD10, "F32.3", "depression", "high"),
    # -- anxiety: SNOMED CT 197480006 |Anxiety disorder| and descendants, F40-F41 ---------------
    (SNOMED, "197480006", "anxiety", "moderate"),  # parent
    (SNOMED, "21897009", "anxiety", "moderate"),  # generalized anxiety disorder
    (SNOMED, "371631005", "anxiety", "moderate"),  # panic disorder
    (SNOMED, "25501002", "anxiety", "moderate"),  # social phobia
    (ICD10, "F41.1", "anxiety", "moderate"),
    (ICD10, "F41.0", "anxiety", "moderate"),
    (ICD10, "F41.9", "anxiety", "moderate"),
    (ICD10, "F40.10", "anxiety", "moderate"),  # social phobia, unspecified
    (ICD10, "F40.01", "anxiety", "moderate"),  # agoraphobia with panic disorder
    # -- dementia and cognitive impairment --------------------------------------------------
    (SNOMED, "52448006", "cognitive_impairment", "moderate"),  # dementia (parent)
    (SNOMED, "26929004", "cognitive_impairment", "moderate"),  # Alzheimer's disease (Synthea)
    (SNOMED, "230265002", "cognitive_impairment", "moderate"),  # familial early-onset (Synthea)
    (SNOMED, "429998004", "cognitive_impairment", "moderate"),  # vascular dementia
    (SNOMED, "312991009", "cognitive_impairment", "moderate"),  # senile dementia, Lewy body type
    (SNOMED, "428351000124105", "cognitive_impairment", "high"),  # severe dementia
    (ICD10, "F03.90", "cognitive_impairment", "moderate"),
    (ICD10, "G30.1", "cognitive_impairment", "moderate"),
    (ICD10, "G31.09", "cognitive_impairment", "moderate"),  # other frontotemporal
    (ICD10, "F02.C11", "cognitive_impairment", "high"),  # severe, with agitation
    (ICD10, "G31.84", "cognitive_impairment", "low"),  # mild cognitive impairment
    # -- alcohol use disorder: SNOMED CT 7200002 |Alcoholism| and descendants, F10.1/F10.2 -------
    (SNOMED, "7200002", "unhealthy_alcohol_use", "high"),  # alcoholism (parent)
    (SNOMED, "66590003", "unhealthy_alcohol_use", "high"),  # alcohol dependence
    (SNOMED, "713862009", "unhealthy_alcohol_use", "high"),  # severe alcohol dependence
    (SNOMED, "15167005", "unhealthy_alcohol_use", "moderate"),  # alcohol abuse
    (ICD10, "F10.20", "unhealthy_alcohol_use", "high"),
    (ICD10, "F10.239", "unhealthy_alcohol_use", "high"),
    (ICD10, "F10.10", "unhealthy_alcohol_use", "moderate"),
    # -- opioid use disorder: 5602001 |Opioid abuse|, 75544000 |Opioid dependence|, F11.1/F11.2 --
    (SNOMED, "5602001", "opioid_use_disorder", "moderate"),  # opioid abuse (parent)
    (SNOMED, "191909007", "opioid_use_disorder", "moderate"),  # nondependent opioid abuse
    (SNOMED, "75544000", "opioid_use_disorder", "high"),  # opioid dependence (parent)
    (SNOMED, "1081000119105", "opioid_use_disorder", "high"),  # on agonist therapy
    (SNOMED, "426001001", "opioid_use_disorder", "high"),  # fentanyl dependence
    (ICD10, "F11.20", "opioid_use_disorder", "high"),
    (ICD10, "F11.23", "opioid_use_disorder", "high"),
    (ICD10, "F11.10", "opioid_use_disorder", "moderate"),
    (ICD10, "F11.122", "opioid_use_disorder", "moderate"),
    # -- tobacco use: smoker findings (VSAC Tobacco User), F17.2, Z72.0 --------------------------
    (SNOMED, "77176002", "tobacco_use", "moderate"),  # smoker
    (SNOMED, "65568007", "tobacco_use", "moderate"),  # cigarette smoker
    (SNOMED, "449868002", "tobacco_use", "moderate"),  # smokes tobacco daily
    (SNOMED, "230063004", "tobacco_use", "moderate"),  # heavy cigarette smoker
    (ICD10, "F17.210", "tobacco_use", "moderate"),
    (ICD10, "Z72.0", "tobacco_use", "moderate"),
]


@pytest.mark.parametrize(("system", "code", "feature", "severity"), RECOGNISED)
def test_code_gives_the_feature(
    definitions: Definitions, system: str, code: str, feature: str, severity: str
) -> None:
    found = profile_of(definitions, record(condition("c1", system, code))).finding(feature)
    assert reading(found) == ("present", severity), f"{system}|{code}"
    assert found is not None and found.sources == ("Condition/c1",)
    assert not found.stale


#: (system, code, feature): neighbouring codes of another meaning, and remission codes.
NOT_RECOGNISED: list[tuple[str, str, str]] = [
    (ICD10, "F32.5", "depression"),  # single episode, full remission
    (SNOMED, "19527009", "depression"),  # single episode of major depression in full remission
    (SNOMED, "46244001", "depression"),  # recurrent major depression in full remission
    (SNOMED, "67002003", "depression"),  # bipolar II (held by VSAC MDD Active, excluded)
    (SNOMED, "191627008", "depression"),  # bipolar affective disorder, current episode depression
    (ICD10, "F31.30", "depression"),  # bipolar disorder, current episode depressed
    (SNOMED, "57194009", "depression"),  # adjustment disorder with depressed mood
    (ICD10, "F34.0", "depression"),  # cyclothymic disorder
    (SNOMED, "47505003", "anxiety"),  # PTSD (held by VSAC GAD, excluded: F43)
    (SNOMED, "191736004", "anxiety"),  # obsessive-compulsive disorder (excluded: F42)
    (SNOMED, "82494000", "anxiety"),  # panic disorder, attacks in full remission
    (ICD10, "F43.10", "anxiety"),
    (ICD10, "F42.2", "anxiety"),
    (ICD10, "F05", "cognitive_impairment"),  # delirium (held by VSAC, excluded)
    (ICD10, "G31.85", "cognitive_impairment"),  # corticobasal degeneration (excluded)
    (ICD10, "R41.81", "cognitive_impairment"),  # age-related cognitive decline
    (SNOMED, "698949001", "cognitive_impairment"),  # dementia in remission
    (ICD10, "F10.21", "unhealthy_alcohol_use"),  # alcohol dependence, in remission
    (SNOMED, "191813001", "unhealthy_alcohol_use"),  # chronic alcoholism in remission
    (ICD10, "F10.90", "unhealthy_alcohol_use"),  # alcohol use, unspecified
    (ICD10, "F11.21", "opioid_use_disorder"),  # opioid dependence, in remission
    (ICD10, "F11.11", "opioid_use_disorder"),  # opioid abuse, in remission
    (ICD10, "F11.90", "opioid_use_disorder"),  # opioid use, unspecified
    (ICD10, "F10.20", "opioid_use_disorder"),  # alcohol dependence
    (ICD10, "F11.20", "unhealthy_alcohol_use"),  # opioid dependence
    (SNOMED, "8517006", "tobacco_use"),  # ex-smoker
    (SNOMED, "266919005", "tobacco_use"),  # never smoked tobacco
    (ICD10, "F17.211", "tobacco_use"),  # nicotine dependence, cigarettes, in remission
    (ICD10, "Z87.891", "tobacco_use"),  # personal history of nicotine dependence
]


@pytest.mark.parametrize(("system", "code", "feature"), NOT_RECOGNISED)
def test_near_miss_gives_nothing(
    definitions: Definitions, system: str, code: str, feature: str
) -> None:
    profile = profile_of(definitions, record(condition("c1", system, code)))
    assert profile.finding(feature) is None, f"{system}|{code}"


def test_major_depression_with_anxiety_is_both(definitions: Definitions) -> None:
    # 16264901000119109 |Recurrent moderate major depressive disorder co-occurrent with anxiety|
    profile = profile_of(definitions, record(condition("c1", SNOMED, "16264901000119109")))
    assert reading(profile.finding("depression")) == ("present", "moderate")
    assert reading(profile.finding("anxiety")) == ("present", "moderate")


def test_dementia_with_depression_is_dementia_only(definitions: Definitions) -> None:
    # 191459006 |Senile dementia with depression|: a dementia code, not a depressive disorder
    profile = profile_of(definitions, record(condition("c1", SNOMED, "191459006")))
    assert reading(profile.finding("cognitive_impairment")) == ("present", "moderate")
    assert profile.finding("depression") is None


@pytest.mark.parametrize(
    ("system", "code", "feature"),
    [
        (SNOMED, "370143000", "depression"),
        (SNOMED, "21897009", "anxiety"),
        (SNOMED, "26929004", "cognitive_impairment"),
        (SNOMED, "7200002", "unhealthy_alcohol_use"),
        (ICD10, "F11.20", "opioid_use_disorder"),
        (SNOMED, "449868002", "tobacco_use"),
    ],
)
@pytest.mark.parametrize("state", ["resolved", "inactive", "remission", "refuted"])
def test_ended_or_refuted_condition_gives_nothing(
    definitions: Definitions, system: str, code: str, feature: str, state: str
) -> None:
    if state == "refuted":
        verification = {"coding": [{"system": VERIFICATION, "code": "refuted"}]}
        resource = condition("c1", system, code, verificationStatus=verification)
    else:
        resource = condition("c1", system, code, clinical=state)
    assert profile_of(definitions, record(resource)).finding(feature) is None


# -- the plan of a patient with only that diagnosis ------------------------------------------

#: (system, code, module, goal ids): a controlled diagnosis, onset years ago, no recent data.
ON_THE_PLAN: list[tuple[str, str, str, tuple[str, ...]]] = [
    (SNOMED, "370143000", "depression-care", ("phq9-below-10", "phq9-remission-12-months")),
    (ICD10, "F33.1", "depression-care", ("phq9-below-10", "phq9-remission-12-months")),
    (SNOMED, "78667006", "depression-care", ("phq9-below-10", "phq9-remission-12-months")),
    (SNOMED, "21897009", "anxiety-care", ("gad7-below-10",)),
    (ICD10, "F41.9", "anxiety-care", ("gad7-below-10",)),
    (SNOMED, "26929004", "cognitive-impairment-support", ("care-plan-with-care-partner",)),
    (ICD10, "G30.1", "cognitive-impairment-support", ("care-plan-with-care-partner",)),
    (SNOMED, "7200002", "alcohol-use", ("audit-c-below-3",)),
    (ICD10, "F10.20", "alcohol-use", ("audit-c-below-3",)),
    (
        SNOMED,
        "75544000",
        "opioid-use-disorder",
        ("moud-continuous-180-days", "naloxone-in-hand"),
    ),
    (ICD10, "F11.10", "opioid-use-disorder", ("moud-continuous-180-days", "naloxone-in-hand")),
    (SNOMED, "65568007", "tobacco-cessation", ("tobacco-free",)),
    (ICD10, "F17.210", "tobacco-cessation", ("tobacco-free",)),
]


def plan_for_resources(definitions: Definitions, *resources: dict[str, Any]) -> Plan:
    return plan_of(definitions, record(*resources))


@pytest.mark.parametrize(("system", "code", "module", "goals"), ON_THE_PLAN)
def test_an_old_controlled_diagnosis_is_on_the_plan(
    definitions: Definitions, system: str, code: str, module: str, goals: tuple[str, ...]
) -> None:
    old = condition("c1", system, code, onsetDateTime="2012-03-01")
    plan = plan_for_resources(definitions, old)
    assert module in [m.id for m in plan.modules]
    assert "Condition/c1" in plan.addresses
    planned = {g.key: g for g in plan.goals if g.module == module}
    assert set(planned) == {f"{module}.{goal}" for goal in goals}
    for goal in planned.values():
        assert goal.addresses == ("Condition/c1",)
        assert goal.due_date > AS_OF


def test_major_depression_gives_care_not_only_screening(definitions: Definitions) -> None:
    """370143000 alone: collaborative care with its PHQ-9 goals, the PHQ-9 still to be done."""
    plan = plan_for_resources(definitions, condition("c1", SNOMED, "370143000"))
    modules = [m.id for m in plan.modules]
    assert "depression-care" in modules
    assert "depression-screening" in modules  # no PHQ-9 on record: the baseline is still due
    referral = next(
        a for a in plan.activities if a.key == "depression-care.behavioral-health-referral"
    )
    assert referral.reasons[0].sources == ("Condition/c1",)


def test_a_diagnosis_keeps_depression_care_when_the_phq9_is_low(
    definitions: Definitions,
) -> None:
    """Controlled (a recent PHQ-9 of 3): the diagnosis stays on the plan, whatever its control."""
    diagnosis = condition("c1", SNOMED, "370143000", onsetDateTime="2015-06-01")
    phq9 = observation("o1", "44261-6", when="2026-10-01", valueInteger=3)
    plan = plan_for_resources(definitions, diagnosis, phq9)
    assert "depression-care" in [m.id for m in plan.modules]
    assert "Condition/c1" in plan.addresses


def test_a_remitted_depression_gets_no_depression_care(definitions: Definitions) -> None:
    remitted = condition("c1", SNOMED, "46244001", onsetDateTime="2015-06-01")
    phq9 = observation("o1", "44261-6", when="2026-10-01", valueInteger=2)
    _, plan = profile_and_plan(record(remitted, phq9), definitions, AS_OF)
    assert plan is None or "depression-care" not in [m.id for m in plan.modules]


def test_opioid_use_disorder_plan_offers_medication_and_naloxone(
    definitions: Definitions,
) -> None:
    plan = plan_for_resources(definitions, condition("c1", ICD10, "F11.20"))
    activities = {a.key: a for a in plan.activities if a.module == "opioid-use-disorder"}
    assert activities["opioid-use-disorder.offer-moud"].kind == "ServiceRequest"
    assert activities["opioid-use-disorder.naloxone-prescription"].kind == "MedicationRequest"
    goal = next(g for g in plan.goals if g.key == "opioid-use-disorder.moud-continuous-180-days")
    assert (goal.target.comparator, goal.target.value, goal.target.unit) == (">=", 180, "d")
