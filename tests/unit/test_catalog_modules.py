"""The bundled catalog, module by module and variant by variant.

Every expected value here (module ids, care paths, goal measures, comparators, thresholds,
standard codes, SDOH categories, variant reasons) is written out by hand from the published
sources cited in the YAML, never read back from the YAML: a wrong code, threshold or rule makes
a test fail. Profiles are built directly (findings, facts and data gaps), so the module and
variant rules are tested independently of the feature mappings; a few end-to-end cases build
FHIR records with ``builders`` to check the whole path.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from builders import AS_OF, ICD10, SNOMED, answer, condition, observation, quantity, record

from fhir_tailor.definitions import Definitions
from fhir_tailor.mapping import SEVERITY_RANK
from fhir_tailor.pipeline import profile_and_plan
from fhir_tailor.plan import Plan, PlannedActivity, PlannedGoal, plan_for
from fhir_tailor.profile_model import (
    Coding,
    DataGap,
    DimensionProfile,
    Finding,
    PatientFacts,
    Profile,
)
from fhir_tailor.record import PatientRecord
from fhir_tailor.segments import segment

LOINC = "http://loinc.org"
LOCAL = "https://fhir-tailor.dev/fhir/CodeSystem/goal-measure"
V3 = "http://terminology.hl7.org/CodeSystem/v3-ActCode"

#: The dimension of every feature (profiles/features/*.yaml, per the feature list of the brief).
DIMENSION = {
    **dict.fromkeys(
        [
            "type1_diabetes",
            "type2_diabetes",
            "other_diabetes",
            "prediabetes",
            "hypertension",
            "hyperlipidemia",
            "heart_failure",
            "copd",
            "asthma",
            "ckd",
            "nephrology_care",
            "coronary_disease",
            "obesity",
            "hba1c_above_target",
            "bp_above_target",
            "egfr_reduced",
            "ldl_above_target",
            "polypharmacy",
            "recent_hospital_discharge",
            "stroke_tia",
            "hemorrhagic_stroke",
            "atrial_fibrillation",
            "osteoporosis",
            "osteoarthritis",
            "chronic_pain",
            "pregnancy",
            "albuminuria",
            "hypoglycemia_risk_medicine",
            "limited_life_expectancy",
        ],
        "medical",
    ),
    **dict.fromkeys(
        [
            "depression",
            "depression_screen_positive",
            "anxiety",
            "unhealthy_alcohol_use",
            "tobacco_use",
            "cognitive_impairment",
            "low_health_literacy",
            "opioid_use_disorder",
        ],
        "cognitive_behavioral",
    ),
    **dict.fromkeys(
        [
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
            "no_household_caregiver",
        ],
        "social",
    ),
    **dict.fromkeys(
        [
            "fall_history",
            "fall_risk",
            "adl_dependence",
            "iadl_dependence",
            "mobility_limitation",
            "disability",
            "assistive_device",
            "vision_impairment",
            "hearing_impairment",
            "incontinence",
        ],
        "functional",
    ),
}
ASSETS = {"caregiver_present", "nephrology_care"}
#: Features that are states (pregnancy): present without a severity, as assets.
STATES = {"pregnancy"}
PREGNANT = "pregnancy"
NEEDS = ("none", "low", "moderate", "high")


def source(feature: str) -> str:
    return f"Condition/{feature.replace('_', '-')}"


def make_profile(
    *features: str | tuple[str, str],
    age: int | None = 50,
    gaps: tuple[str, ...] = (),
    language: str | None = None,
    contact: str | None = None,
    stale: tuple[str, ...] = (),
) -> Profile:
    """A profile with the given current findings (``"feature"`` or ``("feature", severity)``;
    moderate by default, none for assets). A dimension's need is its highest severity."""
    by_dimension: dict[str, list[Finding]] = {d: [] for d in ("medical", "cognitive_behavioral")}
    by_dimension.update(social=[], functional=[])
    for item in (*features, *stale):
        name, severity = item if isinstance(item, tuple) else (item, "moderate")
        by_dimension[DIMENSION[name]].append(
            Finding(
                feature=name,
                label=name.replace("_", " "),
                statement=f"{name.replace('_', ' ')}: diagnosis on record",
                status="present",
                severity=None if name in ASSETS | STATES else severity,  # type: ignore[arg-type]
                stale=item in stale,
                code=Coding(system="urn:test", code=name),
                rule=f"{name}.test",
                sources=(source(name),),
            )
        )
    for findings in by_dimension.values():
        findings.sort(key=lambda f: f.feature)  # as build_profile orders them
    dimensions = {
        name: DimensionProfile(
            need=NEEDS[
                max(
                    (SEVERITY_RANK[f.severity] for f in findings if not f.stale),
                    default=0,
                )
            ],
            findings=tuple(findings),
        )
        for name, findings in by_dimension.items()
    }
    return Profile(
        patient="Patient/p1",
        as_of=AS_OF,
        facts=PatientFacts(age=age, preferred_language=language, contact_preference=contact),
        data_gaps=tuple(DataGap(id=g, label=g) for g in gaps),
        **dimensions,
    )


def plan_of(definitions: Definitions, profile: Profile) -> Plan | None:
    return plan_for(profile, segment(profile, definitions.segments), definitions.catalog)


def modules_of(definitions: Definitions, profile: Profile) -> list[str]:
    plan = plan_of(definitions, profile)
    return [m.id for m in plan.modules] if plan else []


def goal(plan: Plan, key: str) -> PlannedGoal:
    return next(g for g in plan.goals if g.key == key)


def activity(plan: Plan, key: str) -> PlannedActivity:
    return next(a for a in plan.activities if a.key == key)


# -- modules ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """An expected goal target: the measure, and a quantity, a coded answer or (part of) a text."""

    system: str
    code: str
    comparator: str | None = None
    value: float | None = None
    unit: str | None = None
    text: str | None = None
    answer: str | None = None
    category: str | None = None
    sdoh: str | None = None


@dataclass(frozen=True)
class ModuleCase:
    id: str
    care_path: str
    dimensions: tuple[str, ...]
    triggers: tuple[dict[str, Any], ...]
    not_triggered: dict[str, Any]
    goals: dict[str, Target]
    #: activity id -> (SNOMED CT code or None, SDOH category or None)
    activities: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)


def p(*features: str | tuple[str, str], **facts: Any) -> dict[str, Any]:
    return {"features": features, **facts}


MODULES = [
    ModuleCase(
        "diabetes-outpatient",
        "chronic-care",
        ("medical",),
        (p("type2_diabetes"), p("other_diabetes")),
        p("type1_diabetes"),
        {"hba1c-below-7": Target(LOINC, "4548-4", "<", 7, "%")},
        {"hba1c-test": ("43396009", None)},
    ),
    ModuleCase(
        "diabetes-type1",
        "chronic-care",
        ("medical",),
        (p("type1_diabetes"),),
        p("type2_diabetes"),
        {"hba1c-below-7": Target(LOINC, "4548-4", "<", 7, "%")},
        {"type1-hba1c-test": ("43396009", None)},
    ),
    ModuleCase(
        "hypertension-outpatient",
        "chronic-care",
        ("medical",),
        (p("hypertension"),),
        p("bp_above_target"),
        # 2025 AHA/ACC high blood pressure guideline: below 130/80 for adults with hypertension
        {
            "systolic-below-130": Target(LOINC, "8480-6", "<", 130, "mm[Hg]"),
            "diastolic-below-80": Target(LOINC, "8462-4", "<", 80, "mm[Hg]"),
        },
    ),
    ModuleCase(
        "heart-failure",
        "chronic-care",
        ("medical", "functional"),
        (p("heart_failure"),),
        p("coronary_disease"),
        {"daily-weight-stable": Target(LOINC, "29463-7", text="2 kg in 3 days")},
        {
            "cardiac-rehabilitation-referral": (None, None),
            "heart-failure-medication-review": (None, None),
        },
    ),
    ModuleCase(
        "chronic-lung-disease",
        "chronic-care",
        ("medical",),
        (p("copd"),),
        # asthma has its own plan (GINA), not the COPD one
        p("asthma", "tobacco_use"),
        {
            "smoke-free": Target(LOINC, "72166-2", text="LA15920-4"),
            # GOLD 2026: low disease-activity state, no exacerbations
            "no-exacerbation-12-months": Target(LOCAL, "copd-exacerbations-12-months", text="no"),
        },
        # SNOMED CT 15081005 pulmonary rehabilitation, 127783003 spirometry (Synthea COPD module)
        {"pulmonary-rehabilitation": ("15081005", None), "copd-spirometry": ("127783003", None)},
    ),
    ModuleCase(
        "asthma-care",
        "chronic-care",
        ("medical",),
        (p("asthma"),),
        p("copd"),
        # GINA 2025 assessment of symptom control (past 4 weeks)
        {"asthma-well-controlled": Target(LOCAL, "gina-symptom-control", text="no night waking")},
        {"written-asthma-action-plan": (None, None)},
    ),
    ModuleCase(
        "secondary-prevention",
        "chronic-care",
        ("medical",),
        (p("coronary_disease"), p("stroke_tia")),
        # hemorrhagic stroke: antiplatelet and statin are individual decisions (2022 AHA/ASA ICH)
        p("hemorrhagic_stroke", "hypertension"),
        {
            # 2018 AHA/ACC cholesterol and 2021 AHA/ASA stroke guidelines: LDL-C below 70 mg/dL
            "ldl-below-70": Target(LOINC, "13457-7", "<", 70, "mg/dL"),
            # 2023 AHA/ACC chronic coronary disease 4.2.7, 2021 AHA/ASA: below 130/80
            "systolic-below-130": Target(LOINC, "8480-6", "<", 130, "mm[Hg]"),
            "diastolic-below-80": Target(LOINC, "8462-4", "<", 80, "mm[Hg]"),
        },
        {"antithrombotic-review": (None, None), "statin-review": (None, None)},
    ),
    ModuleCase(
        "hemorrhagic-stroke-care",
        "chronic-care",
        ("medical", "functional"),
        (p("hemorrhagic_stroke"),),
        p("stroke_tia"),
        # 2022 AHA/ASA spontaneous ICH guideline: long-term BP below 130/80
        {
            "systolic-below-130": Target(LOINC, "8480-6", "<", 130, "mm[Hg]"),
            "diastolic-below-80": Target(LOINC, "8462-4", "<", 80, "mm[Hg]"),
        },
        {"hemorrhagic-stroke-rehabilitation": (None, None)},
    ),
    ModuleCase(
        "atrial-fibrillation-care",
        "chronic-care",
        ("medical",),
        (p("atrial_fibrillation"),),
        p("heart_failure"),
        # 2023 ACC/AHA/ACCP/HRS AF guideline section 6: CHA2DS2-VASc, anticoagulation decision
        {"stroke-risk-reviewed": Target(LOCAL, "af-stroke-risk-review", text="CHA2DS2-VASc")},
        {"af-anticoagulation-review": (None, None)},
    ),
    ModuleCase(
        "osteoporosis-care",
        "chronic-care",
        ("medical", "functional"),
        (p("osteoporosis"),),
        p("osteoarthritis"),
        # BHOF 2022: DXA 1-2 years after starting or changing treatment (LOINC 38267-1)
        {"bone-density-monitored": Target(LOINC, "38267-1", text="2 years")},
        {"osteoporosis-treatment-review": (None, None)},
    ),
    ModuleCase(
        "osteoarthritis-care",
        "chronic-care",
        ("medical", "functional"),
        (p("osteoarthritis"),),
        p("osteoporosis"),
        # ACR/AF 2019: function and pain; LOINC 72514-3 pain severity 0-10
        {
            "oa-pain-function": Target(
                LOINC, "72514-3", text="activity goal", category="physiotherapy"
            )
        },
        {"oa-exercise-program": (None, None)},
    ),
    ModuleCase(
        "chronic-pain-care",
        "chronic-care",
        ("medical", "functional"),
        (p("chronic_pain"),),
        p("osteoarthritis"),
        # CDC 2022 recommendations 2 and 7: functional goals followed with the PEG scale
        {
            "pain-function-goal": Target(
                LOCAL, "pain-function-peg", text="functional goal", category="physiotherapy"
            )
        },
        {"nonopioid-therapy-plan": (None, None)},
    ),
    ModuleCase(
        "ckd-care",
        "chronic-care",
        ("medical",),
        # CKD (a diagnosis, or markers persisting 90 days: KDIGO 2024 1.1); one low eGFR is not
        (p("ckd"), p(("ckd", "high"))),
        p("hypertension", ("egfr_reduced", "high"), "albuminuria"),
        {
            "systolic-below-130": Target(LOINC, "8480-6", "<", 130, "mm[Hg]"),
            "diastolic-below-80": Target(LOINC, "8462-4", "<", 80, "mm[Hg]"),
            "egfr-monitored": Target(LOINC, "98979-8", text="6 months"),
        },
        {"kidney-protective-medicines-review": (None, None)},
    ),
    ModuleCase(
        "lipid-management",
        "chronic-care",
        ("medical",),
        (p("hyperlipidemia"), p(("ldl_above_target", "low")), p(("ldl_above_target", "high"))),
        # coronary disease: its LDL goal (below 70) is secondary-prevention's, not a second one
        p("hyperlipidemia", "coronary_disease"),
        {"ldl-below-100": Target(LOINC, "13457-7", "<", 100, "mg/dL")},
    ),
    ModuleCase(
        "diabetes-prevention",
        "chronic-care",
        ("medical",),
        (p("prediabetes"),),
        # ADA 2025 section 3 and CDC National DPP: prevention is for people without diabetes
        p("prediabetes", "type2_diabetes"),
        {
            # ADA 2025 recommendation 3.1: monitor at least annually
            "glycemic-status-yearly": Target(LOINC, "4548-4", text="12 months"),
            # CDC Diabetes Prevention Recognition Program: 5% weight loss
            "weight-loss-5-percent": Target(LOINC, "29463-7", text="5%", category="dietary"),
        },
        {"prediabetes-glycemic-test": ("43396009", None), "national-dpp-referral": (None, None)},
    ),
    ModuleCase(
        "pediatric-weight-management",
        "chronic-care",
        ("medical",),
        (p("obesity", age=9), p("obesity", age=17)),
        p("obesity", age=18),
        {"bmi-for-age-followed": Target(LOINC, "59576-9", text="BMI-for-age")},
        {"pediatric-ihblt-referral": ("408289007", None)},
    ),
    ModuleCase(
        "weight-management",
        "chronic-care",
        ("medical",),
        (p("obesity"),),
        p("type2_diabetes"),
        {"weight-loss-5-percent": Target(LOINC, "29463-7", text="5% below baseline")},
        {
            "weight-management-program-referral": ("408289007", None),
            "dietitian-referral": ("103699006", None),
        },
    ),
    ModuleCase(
        "post-discharge-follow-up",
        "post-discharge",
        ("medical",),
        (p("recent_hospital_discharge"),),
        p(stale=("recent_hospital_discharge",)),
        {"no-readmission-30-days": Target(LOCAL, "readmission-30-days", text="no unplanned")},
        {
            "discharge-follow-up-call": ("386473003", None),
            "post-discharge-visit": (None, None),
            "medication-reconciliation": ("430193006", None),
        },
    ),
    ModuleCase(
        "depression-care",
        "behavioral-health",
        ("cognitive_behavioral",),
        (p(("depression", "moderate")), p(("depression", "high"))),
        p(("depression", "low")),
        {
            "phq9-below-10": Target(LOINC, "44261-6", "<", 10, "{score}", category="behavioral"),
            # CMS159 / NQF 0710 Depression Remission at Twelve Months: PHQ-9 below 5
            "phq9-remission-12-months": Target(
                LOINC, "44261-6", "<", 5, "{score}", category="behavioral"
            ),
        },
        {"behavioral-health-referral": ("390866009", None)},
    ),
    ModuleCase(
        "anxiety-care",
        "behavioral-health",
        ("cognitive_behavioral",),
        (p(("anxiety", "moderate")), p(("anxiety", "high"))),
        p(("anxiety", "low")),
        {"gad7-below-10": Target(LOINC, "70274-6", "<", 10, "{score}", category="behavioral")},
        {"anxiety-behavioral-health-referral": ("390866009", None)},
    ),
    ModuleCase(
        "alcohol-use",
        "behavioral-health",
        ("cognitive_behavioral",),
        (p("unhealthy_alcohol_use"),),
        p("tobacco_use"),
        {"audit-c-below-3": Target(LOINC, "75626-2", "<", 3, "{score}", category="behavioral")},
        {"alcohol-brief-intervention": ("281078001", None)},
    ),
    ModuleCase(
        "tobacco-cessation",
        "behavioral-health",
        ("cognitive_behavioral", "medical"),
        (p("tobacco_use"),),
        p("unhealthy_alcohol_use"),
        {"tobacco-free": Target(LOINC, "72166-2", text="LA15920-4", category="behavioral")},
        {
            "cessation-counseling": ("225323000", None),
            "quitline-referral": ("449871000124100", None),
        },
    ),
    ModuleCase(
        "cognitive-impairment-support",
        "chronic-care",
        ("cognitive_behavioral", "functional"),
        (p("cognitive_impairment"),),
        p(("depression", "moderate")),
        {
            "care-plan-with-care-partner": Target(
                LOCAL, "dementia-care-plan", text="care partner", category="safety"
            )
        },
        {
            "cognitive-care-planning-visit": ("113024001", None),
            "home-safety-occupational-therapy": ("306166004", None),
        },
    ),
    ModuleCase(
        "social-needs-navigation",
        "social-care",
        ("social",),
        (p("transportation_insecurity"), p(("interpersonal_safety", "high"))),
        p(("lives_alone", "low")),
        {
            "social-needs-addressed": Target(
                LOCAL,
                "social-needs-connected",
                text="accepted referral",
                sdoh="sdoh-category-unspecified",
            )
        },
        {"navigator-referral": ("464021000124104", "sdoh-category-unspecified")},
    ),
    ModuleCase(
        "food-security",
        "social-care",
        ("social",),
        (p("food_insecurity"),),
        p("housing_instability"),
        {
            "food-secure": Target(
                LOINC, "88124-3", answer="LA19983-8", category="dietary", sdoh="food-insecurity"
            )
        },
        {
            "community-meals-referral": ("713109004", "food-insecurity"),
            "budget-nutrition-counseling": ("103699006", None),
        },
    ),
    ModuleCase(
        "housing-stability",
        "social-care",
        ("social",),
        (p("housing_instability"), p(("housing_instability", "high"))),
        p("inadequate_housing"),
        {"stably-housed": Target(LOINC, "71802-3", answer="LA30189-7", sdoh="housing-instability")},
        {"housing-assessment": ("225340009", "housing-instability")},
    ),
    ModuleCase(
        "interpersonal-safety",
        "social-care",
        ("social",),
        (p(("interpersonal_safety", "high")),),
        p("stress"),
        {
            "hits-below-11": Target(
                LOINC,
                "95614-4",
                "<",
                11,
                "{score}",
                category="safety",
                sdoh="sdoh-category-unspecified",
            )
        },
        {
            "safety-social-work-referral": ("308440001", "sdoh-category-unspecified"),
            "safe-contact-plan": (None, None),
        },
    ),
    ModuleCase(
        "transportation-access",
        "social-care",
        ("social",),
        (p("transportation_insecurity"),),
        p("food_insecurity"),
        {
            "transport-not-a-barrier": Target(
                LOINC, "93030-5", answer="LA32-8", sdoh="transportation-insecurity"
            )
        },
        {"transportation-assistance-referral": ("410365006", "transportation-insecurity")},
    ),
    ModuleCase(
        "fall-prevention",
        "functional-support",
        ("functional",),
        (
            p("fall_history"),
            p("fall_risk"),
            p("adl_dependence"),
            # CDC STEADI: gait and mobility problems, use of a cane or walker
            p("mobility_limitation"),
            p("assistive_device"),
        ),
        p("hearing_impairment"),
        {"no-falls-6-months": Target(LOCAL, "falls-count", text="zero falls", category="safety")},
        {
            "fall-risk-assessment": ("414191008", None),
            "home-safety-evaluation": ("306166004", None),
            "strength-balance-program": ("306170007", None),
        },
    ),
    ModuleCase(
        "daily-living-support",
        "functional-support",
        ("functional",),
        (p("adl_dependence"), p("iadl_dependence")),
        p("fall_history"),
        {
            "daily-needs-covered": Target(
                LOCAL, "adl-needs-covered", text="daily-living needs", category="nursing"
            )
        },
        {"functional-assessment": ("306166004", None), "home-health-referral": ("417511005", None)},
    ),
    ModuleCase(
        "opioid-use-disorder",
        "behavioral-health",
        ("cognitive_behavioral", "medical"),
        (p("opioid_use_disorder"), p(("opioid_use_disorder", "high"))),
        p("unhealthy_alcohol_use"),
        {
            # NQF 3175 continuity of pharmacotherapy for OUD: 180 days
            "moud-continuous-180-days": Target(
                LOCAL, "moud-continuous-days", ">=", 180, "d", category="behavioral"
            ),
            # ASAM 2020 / CDC 2022 recommendation 8: naloxone
            "naloxone-in-hand": Target(
                LOCAL, "naloxone-dispensed", text="naloxone dispensed", category="safety"
            ),
        },
        {
            "offer-moud": ("792901003", None),
            "naloxone-prescription": (None, None),
            "psychosocial-treatment-referral": ("401266006", None),
        },
    ),
    ModuleCase(
        "hearing-impairment-support",
        "functional-support",
        ("functional",),
        (p("hearing_impairment"),),
        p("vision_impairment"),
        {"amplification-offered": Target(LOCAL, "hearing-amplification-offered", text="audiogram")},
        {"audiology-referral": ("308456006", None)},
    ),
    ModuleCase(
        "vision-impairment-support",
        "functional-support",
        ("functional",),
        (p("vision_impairment"),),
        p("hearing_impairment"),
        {
            "vision-rehabilitation-assessed": Target(
                LOCAL, "vision-rehabilitation-assessed", text="rehabilitation", category="safety"
            )
        },
        {
            "eye-care-referral": ("308479007", None),
            "vision-rehabilitation-referral": ("308453003", None),
        },
    ),
    ModuleCase(
        "continence-care",
        "functional-support",
        ("functional", "medical"),
        (p("incontinence"),),
        p("mobility_limitation"),
        {
            "continence-plan-agreed": Target(
                LOCAL, "continence-plan-agreed", text="3-day diary", category="nursing"
            )
        },
        {"pelvic-floor-training-referral": ("308447003", None)},
    ),
    ModuleCase(
        "sdoh-screening",
        "screening",
        ("social",),
        (p(gaps=("no_sdoh_screening",)),),
        p(gaps=("no_depression_screening",)),
        {"sdoh-screen-recorded": Target(LOINC, "96777-8", text="completed")},
        {"complete-sdoh-screening": ("710824005", None)},
    ),
    ModuleCase(
        "depression-screening",
        "screening",
        ("cognitive_behavioral",),
        (p(gaps=("no_depression_screening",)),),
        p(gaps=("no_sdoh_screening",)),
        {"phq9-recorded": Target(LOINC, "44261-6", text="PHQ-9 completed")},
        {"complete-phq9": ("171207006", None)},
    ),
    ModuleCase(
        "hba1c-monitoring",
        "screening",
        ("medical",),
        (p(gaps=("no_recent_hba1c",)),),
        p(gaps=("no_sdoh_screening",)),
        {"hba1c-recorded": Target(LOINC, "4548-4", text="6 months")},
        {"order-hba1c": ("43396009", None)},
    ),
    ModuleCase(
        "bp-measurement",
        "screening",
        ("medical",),
        (p(gaps=("no_recent_bp",)),),
        p(gaps=("no_recent_egfr",)),
        {"bp-recorded": Target(LOINC, "8480-6", text="blood pressure recorded")},
        {"measure-blood-pressure": (None, None)},
    ),
    ModuleCase(
        "egfr-monitoring",
        "screening",
        ("medical",),
        (p(gaps=("no_recent_egfr",)),),
        p(gaps=("no_recent_bp",)),
        {"egfr-recorded": Target(LOINC, "98979-8", text="12 months")},
        {"order-egfr": (None, None)},
    ),
    ModuleCase(
        "fall-risk-screening",
        "screening",
        ("functional",),
        (p(gaps=("no_fall_risk_screening",)),),
        p(gaps=("no_cognitive_screening",)),
        {"fall-risk-recorded": Target(LOINC, "73830-2", text="completed", category="safety")},
        {"complete-fall-risk-screen": ("414191008", None)},
    ),
    ModuleCase(
        "cognitive-screening",
        "screening",
        ("cognitive_behavioral",),
        (p(gaps=("no_cognitive_screening",)),),
        p(gaps=("no_fall_risk_screening",)),
        {"cognitive-screen-recorded": Target(LOINC, "72233-0", text="Mini-Cog")},
        {"complete-cognitive-screen": ("113024001", None)},
    ),
]


def build(spec: dict[str, Any]) -> Profile:
    spec = dict(spec)
    return make_profile(*spec.pop("features", ()), **spec)


def test_every_module_is_covered(definitions: Definitions) -> None:
    assert len(MODULES) >= 16
    assert {m.id for m in definitions.catalog.modules} == {case.id for case in MODULES}


@pytest.mark.parametrize("case", MODULES, ids=lambda c: c.id)
def test_module_metadata(definitions: Definitions, case: ModuleCase) -> None:
    module = next(m for m in definitions.catalog.modules if m.id == case.id)
    assert module.care_path == case.care_path
    assert module.dimensions == case.dimensions
    assert {g.id for g in module.goals} == set(case.goals)
    assert set(case.activities) <= {a.id for a in module.activities}


@pytest.mark.parametrize("case", MODULES, ids=lambda c: c.id)
def test_module_is_chosen_with_its_goals(definitions: Definitions, case: ModuleCase) -> None:
    for trigger in case.triggers:
        plan = plan_of(definitions, build(trigger))
        assert plan is not None and case.id in [m.id for m in plan.modules], trigger
        chosen = next(m for m in plan.modules if m.id == case.id)
        assert chosen.evidence, "a chosen module records why it applies"
        for goal_id, expected in case.goals.items():
            target = goal(plan, f"{case.id}.{goal_id}").target
            planned = goal(plan, f"{case.id}.{goal_id}")
            assert (target.measure.system, target.measure.code) == (expected.system, expected.code)
            assert target.comparator == expected.comparator
            assert target.value == expected.value
            assert target.unit == expected.unit
            if expected.text is None:
                assert target.text is None
            else:
                assert target.text is not None and expected.text in target.text
            assert (target.answer.code if target.answer else None) == expected.answer
            assert planned.category == expected.category
            assert planned.sdoh_category == expected.sdoh
            # a due date only where the catalog gives one (with its source)
            expected_due = (
                AS_OF + timedelta(days=target.due_in_days) if target.due_in_days else None
            )
            assert planned.due_date == expected_due
        for activity_id, (code, sdoh) in case.activities.items():
            planned_activity = activity(plan, f"{case.id}.{activity_id}")
            if code is None:
                assert planned_activity.standard_code is None
            else:
                assert planned_activity.standard_code is not None
                assert planned_activity.standard_code.system == SNOMED
                assert planned_activity.standard_code.code == code
            assert planned_activity.sdoh_category == sdoh
            assert planned_activity.reasons == chosen.evidence


@pytest.mark.parametrize("case", MODULES, ids=lambda c: c.id)
def test_module_is_not_chosen_otherwise(definitions: Definitions, case: ModuleCase) -> None:
    assert case.id not in modules_of(definitions, build(case.not_triggered))


def test_post_discharge_timing_is_in_the_activities(definitions: Definitions) -> None:
    plan = plan_of(definitions, make_profile("recent_hospital_discharge"))
    assert plan is not None
    call = activity(plan, "post-discharge-follow-up.discharge-follow-up-call")
    visit = activity(plan, "post-discharge-follow-up.post-discharge-visit")
    assert "2 business days" in call.description and "follow-up-call" in call.tags
    assert "7 days" in visit.description and "14 days" in visit.description
    assert visit.kind == "Appointment" and "follow-up-visit" in visit.tags
    readmission = goal(plan, "post-discharge-follow-up.no-readmission-30-days")
    assert (readmission.due_date - AS_OF).days == 30


def test_social_referrals_are_service_requests_with_a_domain(definitions: Definitions) -> None:
    plan = plan_of(
        definitions,
        make_profile("food_insecurity", "housing_instability", ("interpersonal_safety", "high")),
    )
    assert plan is not None
    referrals = {a.key: a.sdoh_category for a in plan.activities if a.is_referral}
    assert referrals == {
        "food-security.community-meals-referral": "food-insecurity",
        "housing-stability.housing-assessment": "housing-instability",
        "interpersonal-safety.safety-social-work-referral": "sdoh-category-unspecified",
        "social-needs-navigation.navigator-referral": "sdoh-category-unspecified",
        "food-resources-referral": "food-insecurity",
        "housing-resources-referral": "housing-instability",
    }


# -- end to end, from FHIR records -----------------------------------------------------------


def encounter(eid: str, end: str) -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "id": eid,
        "status": "finished",
        "class": {"system": V3, "code": "IMP"},
        "subject": {"reference": "Patient/p1"},
        "period": {"start": "2026-11-01", "end": end},
    }


def modules_from(definitions: Definitions, rec: PatientRecord) -> list[str]:
    _, plan = profile_and_plan(rec, definitions, AS_OF)
    return [m.id for m in plan.modules] if plan else []


def test_a_recent_inpatient_stay_starts_transitional_care(definitions: Definitions) -> None:
    recent = record(encounter("e1", "2026-11-10"), birthDate="1980-01-01")
    assert "post-discharge-follow-up" in modules_from(definitions, recent)
    old = record(encounter("e1", "2026-08-01"), birthDate="1980-01-01")
    assert "post-discharge-follow-up" not in modules_from(definitions, old)


def test_older_adults_without_screening_get_fall_and_cognitive_screening(
    definitions: Definitions,
) -> None:
    older = modules_from(definitions, record(birthDate="1950-03-01"))
    assert {"fall-risk-screening", "cognitive-screening"} <= set(older)
    younger = modules_from(definitions, record(birthDate="1990-03-01"))
    assert not {"fall-risk-screening", "cognitive-screening"} & set(younger)


def test_type2_diagnosis_gives_diabetes_care_and_hba1c_order(definitions: Definitions) -> None:
    chosen = modules_from(definitions, record(condition("c1", SNOMED, "44054006")))
    assert {"diabetes-outpatient", "hba1c-monitoring"} <= set(chosen)
    assert "diabetes-type1" not in chosen


# -- variants --------------------------------------------------------------------------------


@dataclass(frozen=True)
class VariantCase:
    id: str
    scope: str
    applies: Profile
    not_applies: Profile
    #: the goal or activity key the variant changes or adds
    key: str
    #: text expected in the changed description (or the adjusted goal value)
    change: str | float
    #: feature or fact ids expected among the evidence
    evidence: tuple[str, ...]


VARIANTS = [
    VariantCase(
        "antithrombotic-after-hemorrhagic-stroke",
        "medical",
        make_profile("stroke_tia", "hemorrhagic_stroke"),
        make_profile("stroke_tia"),
        "secondary-prevention.antithrombotic-review",
        "do not start single antiplatelet therapy by default",
        ("hemorrhagic_stroke", "stroke_tia"),
    ),
    VariantCase(
        "statin-after-hemorrhagic-stroke",
        "medical",
        make_profile("coronary_disease", "hemorrhagic_stroke"),
        make_profile("coronary_disease"),
        "secondary-prevention.statin-review",
        "decide on the statin and its intensity with the stroke specialist",
        ("hemorrhagic_stroke", "coronary_disease"),
    ),
    # ADA Standards of Care 2025, section 13 Table 13.1 and section 6 (goals by health status)
    VariantCase(
        "hba1c-goal-older-healthy-hypoglycemia-risk",
        "medical",
        make_profile("type2_diabetes", ("hypoglycemia_risk_medicine", "low"), age=70),
        make_profile("type2_diabetes", ("hypoglycemia_risk_medicine", "low"), age=64),
        "diabetes-outpatient.hba1c-below-7",
        7.5,
        ("age", "hypoglycemia_risk_medicine"),
    ),
    VariantCase(
        "hba1c-goal-older-complex",
        "medical",
        make_profile("type2_diabetes", "cognitive_impairment", age=72),
        make_profile("type2_diabetes", "cognitive_impairment", age=60),
        "diabetes-outpatient.hba1c-below-7",
        8,
        ("age", "cognitive_impairment"),
    ),
    VariantCase(
        "hba1c-goal-older-very-complex",
        "medical",
        make_profile("type1_diabetes", "limited_life_expectancy", age=80),
        make_profile("type1_diabetes", age=80),
        "diabetes-type1.hba1c-below-7",
        "no hypoglycemia and no symptomatic hyperglycemia",
        ("age", "type1_diabetes", "limited_life_expectancy"),
    ),
    VariantCase(
        "hba1c-test-not-relied-on",
        "medical",
        make_profile("type2_diabetes", ("adl_dependence", "high"), age=75),
        make_profile("type2_diabetes", "adl_dependence", age=75),
        "diabetes-outpatient.hba1c-test",
        "Do not base treatment decisions on HbA1c",
        ("age", "adl_dependence"),
    ),
    VariantCase(
        "hba1c-goal-limited-life-expectancy",
        "medical",
        make_profile("type2_diabetes", "limited_life_expectancy", age=50),
        make_profile("type2_diabetes", age=50),
        "diabetes-outpatient.hba1c-below-7",
        8,
        ("limited_life_expectancy",),
    ),
    VariantCase(
        "deintensify-hypoglycemia-risk-medicines",
        "medical",
        make_profile(
            "type2_diabetes", ("hypoglycemia_risk_medicine", "low"), "iadl_dependence", age=70
        ),
        make_profile("type2_diabetes", "iadl_dependence", age=70),
        "deintensify-hypoglycemia-risk-medicines",
        "Deintensification review",
        ("age", "hypoglycemia_risk_medicine", "iadl_dependence"),
    ),
    # ADA 2025 Table 13.1 (below 140/90 in very complex health); 2025 AHA/ACC older adults
    VariantCase(
        "bp-goal-older-very-complex-systolic",
        "medical",
        make_profile("hypertension", "type2_diabetes", "limited_life_expectancy", age=70),
        make_profile("hypertension", "type2_diabetes", age=70),
        "hypertension-outpatient.systolic-below-130",
        140,
        ("age", "type2_diabetes", "limited_life_expectancy"),
    ),
    VariantCase(
        "bp-goal-older-very-complex-diastolic",
        "medical",
        make_profile("hypertension", "type2_diabetes", ("cognitive_impairment", "high"), age=70),
        make_profile("hypertension", "type2_diabetes", "cognitive_impairment", age=70),
        "hypertension-outpatient.diastolic-below-80",
        90,
        ("age", "cognitive_impairment"),
    ),
    VariantCase(
        "bp-review-older-limited-life-expectancy",
        "medical",
        make_profile("hypertension", ("cognitive_impairment", "high"), age=80),
        make_profile("hypertension", "cognitive_impairment", age=80),
        "hypertension-outpatient.hypertension-follow-up-visit",
        "with the patient and caregiver",
        ("age", "cognitive_impairment"),
    ),
    # KDIGO 2024 chapter 1.1 (more than 3 months) and recommendation 5.1.1 (referral)
    VariantCase(
        "ckd-confirmation-tests",
        "medical",
        make_profile("hypertension", "egfr_reduced"),
        make_profile("hypertension", "egfr_reduced", "ckd"),
        "ckd-confirmation-tests",
        "to confirm chronic kidney disease",
        ("egfr_reduced",),
    ),
    VariantCase(
        "nephrology-referral",
        "medical",
        make_profile(("ckd", "high")),
        make_profile("ckd"),
        "nephrology-referral",
        "Referral to nephrology",
        ("ckd",),
    ),
    # 2022 AHA/ACC/HFSA section 9.6: follow-up within 7 days of discharge
    VariantCase(
        "heart-failure-follow-up-after-discharge",
        "medical",
        make_profile("heart_failure", "recent_hospital_discharge"),
        make_profile("heart_failure"),
        "heart-failure.heart-failure-follow-up-visit",
        "within 7 days of the hospital discharge",
        ("heart_failure", "recent_hospital_discharge"),
    ),
    VariantCase(
        "pharmacist-medication-review",
        "medical",
        make_profile("hypertension", "polypharmacy"),
        make_profile("hypertension"),
        "pharmacist-medication-review",
        "clinical pharmacist",
        ("polypharmacy",),
    ),
    # ASAM 2020 alcohol withdrawal management; APA 2018 AUD pharmacotherapy
    VariantCase(
        "alcohol-withdrawal-risk-check",
        "cognitive_behavioral",
        make_profile(("unhealthy_alcohol_use", "high")),
        make_profile("unhealthy_alcohol_use"),
        "alcohol-withdrawal-risk-check",
        "CIWA-Ar",
        ("unhealthy_alcohol_use",),
    ),
    VariantCase(
        "alcohol-use-disorder-medication",
        "cognitive_behavioral",
        make_profile(("unhealthy_alcohol_use", "high")),
        make_profile("unhealthy_alcohol_use"),
        "alcohol-use-disorder-medication",
        "naltrexone or acamprosate",
        ("unhealthy_alcohol_use",),
    ),
    VariantCase(
        "teach-back-education",
        "cognitive_behavioral",
        make_profile("type2_diabetes", "low_health_literacy"),
        make_profile("type2_diabetes", "low_education"),
        "diabetes-outpatient.diabetes-self-management-education",
        "teach-back",
        ("low_health_literacy",),
    ),
    VariantCase(
        "caregiver-in-education",
        "cognitive_behavioral",
        make_profile("cognitive_impairment", "caregiver_present"),
        make_profile("cognitive_impairment"),
        "cognitive-impairment-support.dementia-education",
        "Invite the caregiver",
        ("cognitive_impairment", "caregiver_present"),
    ),
    VariantCase(
        "large-print-plain-language",
        "cognitive_behavioral",
        make_profile("cognitive_impairment", "hypertension"),
        make_profile("hypertension", "low_education"),
        "hypertension-outpatient.lifestyle-education",
        "large-print",
        ("cognitive_impairment",),
    ),
    VariantCase(
        "telehealth-follow-up",
        "social",
        make_profile("hypertension", "transportation_insecurity"),
        make_profile("hypertension", "transportation_insecurity", "mobility_limitation"),
        "hypertension-outpatient.hypertension-follow-up-visit",
        "telehealth",
        ("transportation_insecurity",),
    ),
    VariantCase(
        "food-resources-referral",
        "social",
        make_profile("food_insecurity"),
        make_profile("housing_instability"),
        "food-resources-referral",
        "food bank",
        ("food_insecurity",),
    ),
    VariantCase(
        "housing-resources-referral",
        "social",
        make_profile(("housing_instability", "high")),
        make_profile("inadequate_housing"),
        "housing-resources-referral",
        "housing assistance",
        ("housing_instability",),
    ),
    VariantCase(
        "medications-by-mail",
        "social",
        make_profile("hypertension", "transportation_insecurity"),
        make_profile("hypertension", "food_insecurity"),
        "medications-by-mail",
        "mail-order pharmacy",
        ("transportation_insecurity",),
    ),
    VariantCase(
        "home-visit-limited-mobility",
        "functional",
        make_profile("hypertension", "mobility_limitation"),
        make_profile("hypertension", "fall_history"),
        "hypertension-outpatient.hypertension-follow-up-visit",
        "home visit",
        ("mobility_limitation",),
    ),
    VariantCase(
        "caregiver-check-in",
        "functional",
        make_profile(("lives_alone", "low"), "fall_history"),
        make_profile(("lives_alone", "low"), "hypertension"),
        "check-in-call",
        "Regular check-in calls",
        ("lives_alone", "fall_history"),
    ),
    VariantCase(
        "interpreter",
        "preference",
        make_profile("hypertension", language="es"),
        make_profile("hypertension", language="en-US"),
        "arrange-interpreter",
        "interpreter",
        ("preferred_language",),
    ),
    VariantCase(
        "sms-reminders",
        "preference",
        make_profile("hypertension", contact="sms"),
        make_profile("hypertension", contact="phone"),
        "sms-reminders",
        "text message (SMS)",
        ("contact_preference",),
    ),
    VariantCase(
        "phone-outreach",
        "preference",
        make_profile("hypertension", contact="phone"),
        make_profile("hypertension", contact="sms"),
        "phone-reminders",
        "by phone call",
        ("contact_preference",),
    ),
    VariantCase(
        "ipv-withhold-remote-reminders",
        "social",
        make_profile("hypertension", ("interpersonal_safety", "high"), contact="sms"),
        make_profile("hypertension", contact="sms"),
        "sms-reminders",
        "text message (SMS)",
        ("interpersonal_safety",),
    ),
    # pregnancy: withheld goals and steps (the change is text the withheld item keeps), and
    # the pregnancy steps and goals that take their place
    VariantCase(
        "ipv-safe-refill-reminders",
        "social",
        make_profile("transportation_insecurity", ("interpersonal_safety", "high")),
        make_profile("transportation_insecurity"),
        "medications-by-mail",
        "only the safe way agreed",
        ("interpersonal_safety",),
    ),
    VariantCase(
        "pregnancy-withhold-weight-loss",
        "medical",
        make_profile("obesity", PREGNANT, age=30),
        make_profile("obesity", age=30),
        "weight-management.weight-loss-5-percent",
        "5% below",
        ("pregnancy",),
    ),
    VariantCase(
        "pregnancy-gestational-weight-gain",
        "medical",
        make_profile("obesity", PREGNANT, age=30),
        make_profile("obesity", age=30),
        "gestational-weight-gain-counseling",
        "gestational weight gain",
        ("pregnancy", "obesity"),
    ),
    VariantCase(
        "pregnancy-withhold-statin",
        "medical",
        make_profile("coronary_disease", PREGNANT, age=35),
        make_profile("coronary_disease", age=35),
        "secondary-prevention.statin-review",
        "high-intensity statin",
        ("pregnancy",),
    ),
    VariantCase(
        "pregnancy-lipid-medicines",
        "medical",
        make_profile("hyperlipidemia", PREGNANT, age=35),
        make_profile("hyperlipidemia", age=35),
        "pregnancy-lipid-medicine-review",
        "stop the statin",
        ("pregnancy", "hyperlipidemia"),
    ),
    VariantCase(
        "pregnancy-withhold-raas-inhibitors",
        "medical",
        make_profile("heart_failure", PREGNANT, age=35),
        make_profile("heart_failure", age=35),
        "heart-failure.heart-failure-medication-review",
        "ARNi",
        ("pregnancy",),
    ),
    VariantCase(
        "pregnancy-medicine-review",
        "medical",
        make_profile("hypertension", PREGNANT, age=35),
        make_profile("hypertension", age=35),
        "pregnancy-medicine-safety-review",
        "labetalol",
        ("pregnancy", "hypertension"),
    ),
    VariantCase(
        "pregnancy-tobacco-cessation",
        "medical",
        make_profile("tobacco_use", PREGNANT, age=30),
        make_profile("tobacco_use", age=30),
        "tobacco-cessation.cessation-pharmacotherapy",
        "behavioral cessation counseling",
        ("pregnancy",),
    ),
    VariantCase(
        "pregnancy-anticoagulation",
        "medical",
        make_profile("atrial_fibrillation", PREGNANT, age=38),
        make_profile("atrial_fibrillation", age=38),
        "atrial-fibrillation-care.af-anticoagulation-review",
        "no DOAC",
        ("pregnancy",),
    ),
    VariantCase(
        "pregnancy-withhold-osteoporosis-medicine",
        "medical",
        make_profile("osteoporosis", PREGNANT, age=35),
        make_profile("osteoporosis", age=35),
        "osteoporosis-care.osteoporosis-treatment-review",
        "Fracture-prevention medicine review",
        ("pregnancy",),
    ),
    VariantCase(
        "pregnancy-hba1c-goal",
        "medical",
        make_profile("type2_diabetes", PREGNANT, age=35),
        make_profile("type2_diabetes", age=35),
        "diabetes-outpatient.hba1c-below-7",
        6.0,
        ("pregnancy", "type2_diabetes"),
    ),
    VariantCase(
        "pregnancy-hba1c-goal-type1",
        "medical",
        make_profile("type1_diabetes", PREGNANT, age=35),
        make_profile("type1_diabetes", age=35),
        "diabetes-type1.hba1c-below-7",
        6.0,
        ("pregnancy", "type1_diabetes"),
    ),
    VariantCase(
        "pregnancy-diabetes-insulin",
        "medical",
        make_profile("type2_diabetes", PREGNANT, age=35),
        make_profile("type2_diabetes", age=35),
        "pregnancy-diabetes-medicine-review",
        "insulin is the preferred medicine",
        ("pregnancy", "type2_diabetes"),
    ),
    VariantCase(
        "pregnancy-bp-goal-systolic",
        "medical",
        make_profile("hypertension", PREGNANT, age=35),
        make_profile("hypertension", age=35),
        "hypertension-outpatient.systolic-below-130",
        140.0,
        ("pregnancy",),
    ),
    VariantCase(
        "pregnancy-bp-goal-diastolic",
        "medical",
        make_profile("hypertension", PREGNANT, age=35),
        make_profile("hypertension", age=35),
        "hypertension-outpatient.diastolic-below-80",
        90.0,
        ("pregnancy",),
    ),
    VariantCase(
        "pregnancy-bp-lifestyle",
        "medical",
        make_profile("hypertension", PREGNANT, age=35),
        make_profile("hypertension", age=35),
        "hypertension-outpatient.lifestyle-education",
        "no weight loss",
        ("pregnancy",),
    ),
    VariantCase(
        "safe-contact",
        "social",
        make_profile(("interpersonal_safety", "high")),
        make_profile("transportation_insecurity"),
        "social-needs-navigation.navigator-follow-up",
        "safe number",
        ("interpersonal_safety",),
    ),
]

#: The reason each variant states, in words a clinician would check (a part of it).
REASONS = {
    "antithrombotic-after-hemorrhagic-stroke": "individual decision with the stroke specialist",
    "statin-after-hemorrhagic-stroke": "individual decision with the stroke specialist",
    "hba1c-goal-older-healthy-hypoglycemia-risk": "below 7.0-7.5%",
    "hba1c-goal-older-complex": "below 8.0%",
    "hba1c-goal-older-very-complex": "avoid reliance on HbA1c",
    "hba1c-test-not-relied-on": "not on HbA1c",
    "hba1c-goal-limited-life-expectancy": "below 8%",
    "deintensify-hypoglycemia-risk-medicines": "hypoglycemia harms more",
    "bp-goal-older-very-complex-systolic": "below 140/90",
    "bp-goal-older-very-complex-diastolic": "below 140/90",
    "bp-review-older-limited-life-expectancy": "shared decision",
    "ckd-confirmation-tests": "more than 3 months",
    "nephrology-referral": "specialist kidney care",
    "heart-failure-follow-up-after-discharge": "within 7 days of discharge",
    "alcohol-withdrawal-risk-check": "withdrawal",
    "alcohol-use-disorder-medication": "moderate to severe alcohol use disorder",
    "pharmacist-medication-review": "five or more",
    "teach-back-education": "low health literacy",
    "caregiver-in-education": "cognitive impairment",
    "large-print-plain-language": "cognitive impairment",
    "telehealth-follow-up": "transportation insecurity",
    "food-resources-referral": "food insecurity",
    "housing-resources-referral": "housing instability",
    "medications-by-mail": "transportation insecurity",
    "home-visit-limited-mobility": "wheelchair",
    "caregiver-check-in": "lives alone",
    "interpreter": "language other than English",
    "sms-reminders": "SMS",
    "phone-outreach": "phone",
    "ipv-withhold-remote-reminders": "may be seen or heard by the person causing harm",
    "ipv-safe-refill-reminders": "delivery notices",
    "pregnancy-withhold-weight-loss": "weight loss is not a goal in pregnancy",
    "pregnancy-gestational-weight-gain": "healthy weight gain",
    "pregnancy-withhold-statin": "statins are stopped in most pregnant patients",
    "pregnancy-lipid-medicines": "stop the statin",
    "pregnancy-withhold-raas-inhibitors": "fetal injury and death",
    "pregnancy-medicine-review": "safe in pregnancy",
    "pregnancy-tobacco-cessation": "insufficient",
    "pregnancy-anticoagulation": "DOACs are not recommended in pregnancy",
    "pregnancy-withhold-osteoporosis-medicine": "denosumab is contraindicated",
    "pregnancy-hba1c-goal": "below 6%",
    "pregnancy-hba1c-goal-type1": "below 6%",
    "pregnancy-diabetes-insulin": "insulin is the preferred medicine",
    "pregnancy-bp-goal-systolic": "treated at 140/90",
    "pregnancy-bp-goal-diastolic": "treated at 140/90",
    "pregnancy-bp-lifestyle": "no alcohol",
    "safe-contact": "interpersonal violence",
}


def test_every_variant_is_covered(definitions: Definitions) -> None:
    assert len(VARIANTS) >= 12
    assert {v.id for v in definitions.catalog.variants} == {case.id for case in VARIANTS}
    scopes = {v.id: v.scope for v in definitions.catalog.variants}
    assert scopes == {case.id: case.scope for case in VARIANTS}
    assert set(scopes.values()) == {
        "medical",
        "cognitive_behavioral",
        "social",
        "functional",
        "preference",
    }


#: Variants that withhold: the item stays (an activity) or moves aside (a goal), unchanged.
WITHHOLDING = {v for v in REASONS if "withhold" in v}


def changed(plan: Plan, key: str) -> PlannedGoal | PlannedActivity | None:
    items: list[PlannedGoal | PlannedActivity] = [*plan.goals, *plan.activities]
    items += plan.withheld_goals
    return next((item for item in items if item.key == key), None)


@pytest.mark.parametrize("case", VARIANTS, ids=lambda c: c.id)
def test_variant_applies_with_reason_and_evidence(
    definitions: Definitions, case: VariantCase
) -> None:
    plan = plan_of(definitions, case.applies)
    assert plan is not None
    item = changed(plan, case.key)
    assert item is not None, case.key
    variation = next(v for v in item.variations if v.variant == case.id)
    assert REASONS[case.id] in variation.reason
    assert set(case.evidence) <= {e.id for e in variation.evidence}
    assert all(e.sources for e in variation.evidence)
    if case.id in WITHHOLDING:
        assert case.id in item.withheld_by
        assert isinstance(case.change, str) and case.change in item.description
        if isinstance(item, PlannedGoal):
            assert item in plan.withheld_goals and item not in plan.goals
    elif isinstance(item, PlannedGoal) and isinstance(case.change, str):
        assert item.target.value is None and case.change in (item.target.text or "")
    elif isinstance(item, PlannedGoal):
        assert item.target.value == case.change
        assert item.target.comparator == "<"
        assert f"{case.change:g}" in item.description
    else:
        assert isinstance(case.change, str) and case.change in item.description


@pytest.mark.parametrize("case", VARIANTS, ids=lambda c: c.id)
def test_variant_does_not_apply_otherwise(definitions: Definitions, case: VariantCase) -> None:
    plan = plan_of(definitions, case.not_applies)
    assert plan is not None
    assert all(case.id not in [v.variant for v in g.variations] for g in plan.goals)
    assert all(case.id not in [v.variant for v in a.variations] for a in plan.activities)
    item = changed(plan, case.key)
    if case.id in WITHHOLDING:
        assert item is not None and not item.withheld_by
    elif isinstance(item, PlannedGoal):
        standard = {
            "diabetes-outpatient.hba1c-below-7": 7,
            "diabetes-type1.hba1c-below-7": 7,
            "lipid-management.ldl-below-100": 100,
            "hypertension-outpatient.systolic-below-130": 130,
            "hypertension-outpatient.diastolic-below-80": 80,
        }
        assert item.target.value == standard[case.key]
    elif item is not None:
        assert isinstance(case.change, str) and case.change not in item.description


def test_variations_compose_on_one_activity(definitions: Definitions) -> None:
    profile = make_profile("hypertension", "low_health_literacy", "cognitive_impairment")
    plan = plan_of(definitions, profile)
    assert plan is not None
    education = activity(plan, "hypertension-outpatient.lifestyle-education")
    variants = [v.variant for v in education.variations]
    assert variants == ["teach-back-education", "large-print-plain-language"]
    assert "teach-back" in education.description and "large-print" in education.description


def test_home_visit_replaces_telehealth_when_mobility_is_limited(
    definitions: Definitions,
) -> None:
    profile = make_profile("hypertension", "transportation_insecurity", "assistive_device")
    plan = plan_of(definitions, profile)
    assert plan is not None
    visit = activity(plan, "hypertension-outpatient.hypertension-follow-up-visit")
    assert [v.variant for v in visit.variations] == ["home-visit-limited-mobility"]
    assert "home-visit" in visit.tags and "telehealth" not in visit.tags


def test_no_sms_reminders_when_interpersonal_violence_is_reported(
    definitions: Definitions,
) -> None:
    profile = make_profile("hypertension", ("interpersonal_safety", "high"), contact="sms")
    plan = plan_of(definitions, profile)
    assert plan is not None
    reminders = activity(plan, "sms-reminders")
    assert reminders.withheld_by == ("ipv-withhold-remote-reminders",)
    assert all("sms" not in a.tags for a in plan.activities if not a.withheld)
    calls = [a for a in plan.activities if "follow-up-call" in a.tags]
    assert calls and all("safe-contact" in [v.variant for v in a.variations] for a in calls)


def test_stale_findings_trigger_no_variant(definitions: Definitions) -> None:
    profile = make_profile("type2_diabetes", age=75, stale=("cognitive_impairment",))
    plan = plan_of(definitions, profile)
    assert plan is not None
    assert goal(plan, "diabetes-outpatient.hba1c-below-7").target.value == 7


# -- determinism -----------------------------------------------------------------------------


def test_same_profile_same_plan(definitions: Definitions) -> None:
    features = (
        "type2_diabetes",
        "hypertension",
        "ckd",
        "cognitive_impairment",
        "caregiver_present",
        "food_insecurity",
        "transportation_insecurity",
        "fall_history",
        ("lives_alone", "low"),
    )
    kwargs: dict[str, Any] = {
        "age": 78,
        "gaps": ("no_depression_screening",),
        "language": "es",
        "contact": "phone",
    }
    first = plan_of(definitions, make_profile(*features, **kwargs))
    shuffled = list(features)
    random.Random(3).shuffle(shuffled)
    second = plan_of(definitions, make_profile(*shuffled, **kwargs))
    assert first is not None and second is not None
    assert first.model_dump_json() == second.model_dump_json()
    assert first.fingerprint() == second.fingerprint()


def test_same_record_same_plan_whatever_the_resource_order(definitions: Definitions) -> None:
    rec = record(
        condition("c1", SNOMED, "44054006"),
        condition("c2", ICD10, "Z59.82"),
        condition("c3", ICD10, "I10"),
        observation("o1", "4548-4", **quantity(9.4, "%")),
        observation("o2", "88122-7", when="2026-10-01", **answer("LA28397-0")),
        encounter("e1", "2026-11-10"),
        birthDate="1948-02-02",
        communication=[{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "es"}]}}],
        telecom=[{"system": "sms", "value": "+15550100", "rank": 1}],
    )
    _, first = profile_and_plan(rec, definitions, AS_OF)
    shuffled = list(rec.resources)
    random.Random(11).shuffle(shuffled)
    _, second = profile_and_plan(PatientRecord(rec.patient, tuple(shuffled)), definitions, AS_OF)
    assert first is not None and second is not None
    assert first.model_dump_json() == second.model_dump_json()
    assert {"diabetes-outpatient", "hypertension-outpatient", "post-discharge-follow-up"} <= {
        m.id for m in first.modules
    }


def test_hypertension_without_a_reading_gets_a_blood_pressure_check(
    definitions: Definitions,
) -> None:
    unmeasured = record(condition("c1", ICD10, "I10"), birthDate="1980-01-01")
    assert "bp-measurement" in modules_from(definitions, unmeasured)
    measured = record(
        condition("c1", ICD10, "I10"),
        observation("o1", "8480-6", when="2026-10-01", **quantity(128, "mm[Hg]")),
        birthDate="1980-01-01",
    )
    assert "bp-measurement" not in modules_from(definitions, measured)


def test_no_second_nephrology_referral_under_nephrology_care(definitions: Definitions) -> None:
    """KDIGO 5.1.1 asks for specialist kidney care once: a patient already under it (a referral
    made, dialysis, a transplant) gets no new referral from the variant."""
    referred = plan_of(definitions, make_profile(("ckd", "high"), "nephrology_care"))
    assert referred is not None
    assert "nephrology-referral" not in [a.key for a in referred.activities]
    not_referred = plan_of(definitions, make_profile(("ckd", "high")))
    assert not_referred is not None
    assert "nephrology-referral" in [a.key for a in not_referred.activities]
