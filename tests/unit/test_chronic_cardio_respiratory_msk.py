"""Cardiovascular, respiratory and musculoskeletal chronic conditions: recognised as real records
code them, and planned whatever their control or age.

Every code and expected value is written out by hand from the sources the value sets and modules
cite (VSAC expansions, the ICD-10-CM tabular list FY2026, Synthea modules, the guidelines), never
read back from the YAML or JSON: a wrong code, exclusion, goal measure or target fails here. Each
group is checked with the parent SNOMED CT concept, a SNOMED CT descendant, an ICD-10-CM billable
subcode, neighbouring codes of another meaning, a resolved or refuted Condition, and the plan of a
patient whose only record is that Condition, diagnosed long ago with no recent data.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    quantity,
    record,
)

from fhir_tailor.definitions import Definitions
from fhir_tailor.plan import Plan

LOINC = "http://loinc.org"
GOAL_MEASURE = "https://fhir-tailor.dev/fhir/CodeSystem/goal-measure"
#: Diagnosed long before the as-of date: a chronic diagnosis never goes stale.
LONG_AGO = "2009-03-01"


@dataclass(frozen=True)
class Goal:
    """An expected goal: its measure and a quantity target or (part of) a text target."""

    system: str
    code: str
    comparator: str | None = None
    value: float | None = None
    unit: str | None = None
    text: str | None = None


@dataclass(frozen=True)
class Group:
    feature: str
    module: str
    #: (system, code) that must give the feature: parent, SNOMED CT descendants, ICD-10-CM subcodes
    codes: tuple[tuple[str, str], ...]
    #: (system, code) of another meaning that must not give the feature
    near_misses: tuple[tuple[str, str], ...]
    goals: dict[str, Goal]


GROUPS = [
    Group(
        "coronary_disease",
        "secondary-prevention",
        (
            (SNOMED, "53741008"),  # coronary arteriosclerosis (Synthea "Coronary Heart Disease")
            (SNOMED, "414545008"),  # ischemic heart disease
            (SNOMED, "22298006"),  # myocardial infarction (Synthea)
            (SNOMED, "401303003"),  # acute STEMI: an acute MI is coronary disease for chronic care
            (SNOMED, "399211009"),  # history of myocardial infarction (Synthea)
            (SNOMED, "233819005"),  # stable angina
            (ICD10, "I25.10"),
            (ICD10, "I25.2"),  # old myocardial infarction
            (ICD10, "I25.119"),
            (ICD10, "I21.4"),  # NSTEMI
            (ICD10, "I20.9"),
            (ICD10, "I25.85"),  # chronic coronary microvascular dysfunction (FY2025)
            (ICD10, "Z95.1"),  # aortocoronary bypass graft (VSAC CAD No MI)
        ),
        (
            (ICD10, "I21.A1"),  # type 2 (demand) myocardial infarction
            (ICD10, "I25.42"),  # coronary artery dissection
            (ICD10, "I35.0"),  # aortic valve stenosis
            (ICD10, "I51.9"),  # heart disease, unspecified
            (SNOMED, "75398000"),  # anomalous origin of coronary artery (congenital)
            (SNOMED, "457592003"),  # occlusion of coronary sinus (a vein)
        ),
        {
            "ldl-below-70": Goal(LOINC, "13457-7", "<", 70, "mg/dL"),
            "systolic-below-130": Goal(LOINC, "8480-6", "<", 130, "mm[Hg]"),
            "diastolic-below-80": Goal(LOINC, "8462-4", "<", 80, "mm[Hg]"),
        },
    ),
    Group(
        "stroke_tia",
        "secondary-prevention",
        (
            (SNOMED, "230690007"),  # stroke (Synthea)
            (SNOMED, "422504002"),  # ischemic stroke
            (SNOMED, "266257000"),  # transient ischemic attack
            (SNOMED, "275526006"),  # history of cerebrovascular accident
            (ICD10, "I63.9"),
            (ICD10, "I63.512"),
            (ICD10, "G45.9"),
            (ICD10, "G45.3"),  # amaurosis fugax: a retinal TIA
            (ICD10, "I69.351"),  # hemiplegia after cerebral infarction
            (ICD10, "Z86.73"),
        ),
        (
            (ICD10, "G45.4"),  # transient global amnesia
            (ICD10, "I61.9"),  # intracerebral hemorrhage
            (ICD10, "I69.151"),  # hemiplegia after intracerebral hemorrhage
            (ICD10, "I62.00"),  # nontraumatic subdural hemorrhage
            (ICD10, "I67.2"),  # cerebral atherosclerosis without a stroke
            (SNOMED, "62914000"),  # cerebrovascular disease, no stroke stated
            (SNOMED, "274100004"),  # cerebral hemorrhage
        ),
        {
            "ldl-below-70": Goal(LOINC, "13457-7", "<", 70, "mg/dL"),
            "systolic-below-130": Goal(LOINC, "8480-6", "<", 130, "mm[Hg]"),
            "diastolic-below-80": Goal(LOINC, "8462-4", "<", 80, "mm[Hg]"),
        },
    ),
    Group(
        "hemorrhagic_stroke",
        "hemorrhagic-stroke-care",
        (
            (SNOMED, "274100004"),  # cerebral hemorrhage
            (SNOMED, "5571000124103"),  # cerebrovascular accident with intracranial hemorrhage
            (ICD10, "I61.9"),
            (ICD10, "I60.2"),
            (ICD10, "I69.151"),
        ),
        (
            (ICD10, "I62.03"),  # nontraumatic chronic subdural hemorrhage: not a stroke
            (ICD10, "S06.5X0A"),  # traumatic subdural hemorrhage
            (ICD10, "I63.9"),
        ),
        {
            "systolic-below-130": Goal(LOINC, "8480-6", "<", 130, "mm[Hg]"),
            "diastolic-below-80": Goal(LOINC, "8462-4", "<", 80, "mm[Hg]"),
        },
    ),
    Group(
        "atrial_fibrillation",
        "atrial-fibrillation-care",
        (
            (SNOMED, "49436004"),  # atrial fibrillation (Synthea)
            (SNOMED, "282825002"),  # paroxysmal atrial fibrillation
            (SNOMED, "5370000"),  # atrial flutter
            (ICD10, "I48.91"),
            (ICD10, "I48.0"),
            (ICD10, "I48.21"),
        ),
        (
            (ICD10, "I49.01"),  # ventricular fibrillation
            (ICD10, "I47.10"),  # supraventricular tachycardia
            (ICD10, "R00.0"),  # tachycardia, unspecified
        ),
        {"stroke-risk-reviewed": Goal(GOAL_MEASURE, "af-stroke-risk-review", text="CHA2DS2-VASc")},
    ),
    Group(
        "heart_failure",
        "heart-failure",
        (
            (SNOMED, "84114007"),  # heart failure
            (SNOMED, "88805009"),  # chronic congestive heart failure (Synthea)
            (SNOMED, "42343007"),  # congestive heart failure
            (SNOMED, "703272007"),  # HFrEF
            (SNOMED, "446221000"),  # HFpEF (VSAC Advanced Illness)
            (ICD10, "I50.9"),
            (ICD10, "I50.32"),
            (ICD10, "I50.812"),  # chronic right heart failure
            (ICD10, "I11.0"),  # hypertensive heart disease with heart failure
            (ICD10, "I13.0"),
        ),
        (
            (ICD10, "I11.9"),  # hypertensive heart disease without heart failure
            (ICD10, "I51.9"),
            (ICD10, "I27.20"),  # pulmonary hypertension
            (SNOMED, "15964701000119109"),  # acute cor pulmonale of a saddle pulmonary embolus
        ),
        {"daily-weight-stable": Goal(LOINC, "29463-7", text="2 kg in 3 days")},
    ),
    Group(
        "copd",
        "chronic-lung-disease",
        (
            (SNOMED, "13645005"),  # chronic obstructive lung disease
            (SNOMED, "87433001"),  # pulmonary emphysema (Synthea)
            (SNOMED, "185086009"),  # chronic obstructive bronchitis (Synthea)
            (SNOMED, "63480004"),  # chronic bronchitis
            (SNOMED, "68328006"),  # centriacinar emphysema
            (ICD10, "J44.9"),
            (ICD10, "J44.1"),
            (ICD10, "J43.2"),
            (ICD10, "J42"),
            (ICD10, "J41.0"),
        ),
        (
            (ICD10, "J44.81"),  # bronchiolitis obliterans (syndrome)
            (ICD10, "J98.3"),  # compensatory emphysema
            (ICD10, "J20.9"),  # acute bronchitis
            (ICD10, "J45.909"),  # asthma is not COPD
            (SNOMED, "195967001"),
            (SNOMED, "33325001"),  # compensatory emphysema
        ),
        {
            "smoke-free": Goal(LOINC, "72166-2", text="LA15920-4"),
            "no-exacerbation-12-months": Goal(
                GOAL_MEASURE, "copd-exacerbations-12-months", text="no moderate or severe"
            ),
        },
    ),
    Group(
        "asthma",
        "asthma-care",
        (
            (SNOMED, "195967001"),  # asthma
            (SNOMED, "233678006"),  # childhood asthma (Synthea)
            (SNOMED, "427295004"),  # moderate persistent asthma
            (ICD10, "J45.909"),
            (ICD10, "J45.41"),
            (ICD10, "J45.991"),  # cough variant asthma
        ),
        (
            (ICD10, "J44.9"),  # COPD is not asthma
            (SNOMED, "13645005"),
            (ICD10, "J30.9"),  # allergic rhinitis
            (ICD10, "R06.2"),  # wheezing
        ),
        {"asthma-well-controlled": Goal(GOAL_MEASURE, "gina-symptom-control", text="twice a week")},
    ),
    Group(
        "osteoporosis",
        "osteoporosis-care",
        (
            (SNOMED, "64859006"),  # osteoporosis (Synthea)
            (SNOMED, "102447009"),  # postmenopausal osteoporosis
            (SNOMED, "431031001"),  # osteoporotic fracture of neck of femur
            (ICD10, "M81.0"),
            (ICD10, "M80.08XA"),  # age-related osteoporosis, current vertebral fracture
            (ICD10, "Z87.310"),  # history of healed osteoporosis fracture
        ),
        (
            (ICD10, "M81.6"),  # localized osteoporosis (Lequesne)
            (SNOMED, "240159007"),  # transient osteoporosis of hip
            (ICD10, "M85.80"),  # other disorders of bone density (osteopenia)
            (ICD10, "S72.001A"),  # femoral neck fracture, not osteoporotic
        ),
        {"bone-density-monitored": Goal(LOINC, "38267-1", text="within 2 years")},
    ),
    Group(
        "osteoarthritis",
        "osteoarthritis-care",
        (
            (SNOMED, "396275006"),  # osteoarthritis
            (SNOMED, "239873007"),  # osteoarthritis of knee (Synthea)
            (SNOMED, "239872002"),  # osteoarthritis of hip (Synthea)
            (SNOMED, "201834006"),  # localized primary osteoarthritis of the hand (Synthea)
            (ICD10, "M17.11"),
            (ICD10, "M16.0"),
            (ICD10, "M19.041"),
            (ICD10, "M15.0"),
        ),
        (
            (ICD10, "M06.9"),  # rheumatoid arthritis
            (ICD10, "M25.561"),  # pain in right knee
            (ICD10, "M1A.00X0"),  # chronic gout
            (SNOMED, "69896004"),  # rheumatoid arthritis
        ),
        {"oa-pain-function": Goal(LOINC, "72514-3", text="activity goal")},
    ),
    Group(
        "chronic_pain",
        "chronic-pain-care",
        (
            (SNOMED, "82423001"),  # chronic pain (Synthea)
            (SNOMED, "278860009"),  # chronic low back pain (Synthea records)
            (ICD10, "G89.29"),
            (ICD10, "G89.4"),  # chronic pain syndrome
            (ICD10, "G89.21"),
        ),
        (
            (ICD10, "G89.3"),  # neoplasm-related pain: outside the CDC 2022 guideline
            (ICD10, "G89.18"),  # acute postprocedural pain
            (ICD10, "M54.50"),  # low back pain, unspecified: not stated chronic
        ),
        {"pain-function-goal": Goal(GOAL_MEASURE, "pain-function-peg", text="functional goal")},
    ),
]
BY_FEATURE = {group.feature: group for group in GROUPS}


def present(definitions: Definitions, *resources: dict[str, Any]) -> set[str]:
    profile = profile_of(definitions, record(*resources))
    return {f.feature for _, f in profile.findings() if f.status == "present" and not f.stale}


def plan_for_resources(definitions: Definitions, *resources: dict[str, Any]) -> Plan:
    return plan_of(definitions, record(*resources, birthDate="1950-05-20"))


# -- recognition -------------------------------------------------------------------------------

CODES = [(g.feature, system, code) for g in GROUPS for system, code in g.codes]


@pytest.mark.parametrize(("feature", "system", "code"), CODES)
def test_code_gives_the_feature(
    definitions: Definitions, feature: str, system: str, code: str
) -> None:
    profile = profile_of(definitions, record(condition("c1", system, code)))
    finding = profile.finding(feature)
    assert finding is not None, f"{system}|{code} should give {feature}"
    assert (finding.status, finding.severity, finding.stale) == ("present", "moderate", False)
    assert finding.sources == ("Condition/c1",)


NEAR_MISSES = [(g.feature, system, code) for g in GROUPS for system, code in g.near_misses]


@pytest.mark.parametrize(("feature", "system", "code"), NEAR_MISSES)
def test_neighbouring_code_does_not_give_the_feature(
    definitions: Definitions, feature: str, system: str, code: str
) -> None:
    assert feature not in present(definitions, condition("c1", system, code))


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.feature)
def test_resolved_or_refuted_condition_does_not_count(
    definitions: Definitions, group: Group
) -> None:
    system, code = group.codes[0]
    resolved = condition("c1", system, code, clinical="resolved")
    refuted = condition(
        "c2",
        system,
        code,
        verificationStatus={"coding": [{"system": VERIFICATION, "code": "refuted"}]},
    )
    assert group.feature not in present(definitions, resolved)
    assert group.feature not in present(definitions, refuted)


def test_hypertensive_heart_disease_with_heart_failure_is_both(definitions: Definitions) -> None:
    assert {"heart_failure", "hypertension"} <= present(
        definitions, condition("c1", ICD10, "I11.0")
    )


def test_ischemic_and_hemorrhagic_stroke_are_told_apart(definitions: Definitions) -> None:
    ischemic = present(definitions, condition("c1", ICD10, "I69.351"))
    hemorrhagic = present(definitions, condition("c1", ICD10, "I69.151"))
    assert "stroke_tia" in ischemic and "hemorrhagic_stroke" not in ischemic
    assert "hemorrhagic_stroke" in hemorrhagic and "stroke_tia" not in hemorrhagic


# -- the plan: the diagnosis alone, long ago, no recent data -------------------------------------


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.feature)
def test_only_the_diagnosis_gives_the_module_and_its_goals(
    definitions: Definitions, group: Group
) -> None:
    system, code = group.codes[0]
    plan = plan_for_resources(definitions, condition("c1", system, code, onsetDateTime=LONG_AGO))
    assert group.module in [m.id for m in plan.modules]
    assert "Condition/c1" in plan.addresses
    goals = {g.key: g for g in plan.goals if g.module == group.module}
    assert set(goals) == {f"{group.module}.{goal_id}" for goal_id in group.goals}
    for goal_id, expected in group.goals.items():
        planned = goals[f"{group.module}.{goal_id}"]
        target = planned.target
        assert (target.measure.system, target.measure.code) == (expected.system, expected.code)
        assert (target.comparator, target.value, target.unit) == (
            expected.comparator,
            expected.value,
            expected.unit,
        )
        if expected.text is not None:
            assert target.text is not None and expected.text in target.text
        assert planned.addresses == ("Condition/c1",)
        assert planned.due_date > AS_OF
    activities = [a for a in plan.activities if a.module == group.module]
    assert activities and all(a.reasons for a in activities)
    assert any("follow-up-visit" in a.tags for a in activities)


def test_secondary_prevention_plan_has_one_ldl_goal(definitions: Definitions) -> None:
    """Coronary disease with a raised LDL: lipid-management (primary prevention) stays out, so
    the only LDL goal is secondary prevention's below 70 mg/dL."""
    plan = plan_for_resources(
        definitions,
        condition("c1", SNOMED, "53741008", onsetDateTime=LONG_AGO),
        observation("o1", "13457-7", when="2026-10-01", **quantity(165, "mg/dL")),
    )
    ldl = [g for g in plan.goals if g.target.measure.code == "13457-7"]
    assert [(g.key, g.target.value) for g in ldl] == [("secondary-prevention.ldl-below-70", 70)]
    assert "lipid-management" not in [m.id for m in plan.modules]


def test_hemorrhagic_stroke_gets_no_antiplatelet_plan(definitions: Definitions) -> None:
    plan = plan_for_resources(definitions, condition("c1", ICD10, "I61.9", onsetDateTime=LONG_AGO))
    modules = [m.id for m in plan.modules]
    assert "hemorrhagic-stroke-care" in modules and "secondary-prevention" not in modules


def test_asthma_and_copd_each_get_their_own_plan(definitions: Definitions) -> None:
    only_asthma = [
        m.id for m in plan_for_resources(definitions, condition("c1", ICD10, "J45.40")).modules
    ]
    assert "asthma-care" in only_asthma and "chronic-lung-disease" not in only_asthma
    both = plan_for_resources(
        definitions, condition("c1", ICD10, "J45.40"), condition("c2", SNOMED, "87433001")
    )
    assert {"asthma-care", "chronic-lung-disease"} <= {m.id for m in both.modules}
    asthma_goal = next(g for g in both.goals if g.key == "asthma-care.asthma-well-controlled")
    copd_goal = next(g for g in both.goals if g.key == "chronic-lung-disease.smoke-free")
    assert asthma_goal.addresses == ("Condition/c1",)
    assert copd_goal.addresses == ("Condition/c2",)


def test_copd_plan_confirms_obstruction_by_spirometry(definitions: Definitions) -> None:
    plan = plan_for_resources(definitions, condition("c1", ICD10, "J42"))
    spirometry = next(a for a in plan.activities if a.key == "chronic-lung-disease.copd-spirometry")
    assert spirometry.standard_code is not None
    assert (spirometry.standard_code.system, spirometry.standard_code.code) == (
        SNOMED,
        "127783003",
    )
    assert "0.70" in spirometry.description
