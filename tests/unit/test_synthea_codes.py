"""The chronic-condition codes Synthea-generated records carry give the right feature.

Synthea is the most common source of third-party FHIR test data, and the first one fhir-tailor
was tried on. Its records code diagnoses with specific SNOMED CT concepts (essential hypertension
59621000, not 38341003), and the original mappings missed most of them. The codes below are the
active chronic-condition codes seen in Synthea R4 output (the SMART sample Bulk Data sets,
smart-on-fhir/sample-bulk-fhir-datasets, and a published code-frequency table of a 1,175-patient
Synthea run), each with the feature a clinician reads it as. Codes Synthea emits that are outside
the catalog's chronic scope are listed too, and must give no chronic feature.
"""

from __future__ import annotations

import pytest
from builders import SNOMED, condition, plan_of, profile_of, record

from fhir_tailor.definitions import Definitions

IN_SCOPE: list[tuple[str, str, str]] = [
    # (SNOMED CT code, display as Synthea writes it, feature)
    ("59621000", "Essential hypertension (disorder)", "hypertension"),
    ("44054006", "Diabetes mellitus type 2 (disorder)", "type2_diabetes"),
    (
        "90781000119102",
        "Microalbuminuria due to type 2 diabetes mellitus (disorder)",
        "type2_diabetes",
    ),
    ("157141000119108", "Proteinuria due to type 2 diabetes mellitus (disorder)", "type2_diabetes"),
    ("368581000119106", "Neuropathy due to type 2 diabetes mellitus (disorder)", "type2_diabetes"),
    (
        "1551000119108",
        "Nonproliferative diabetic retinopathy due to type II diabetes mellitus",
        "type2_diabetes",
    ),
    (
        "1501000119109",
        "Proliferative diabetic retinopathy due to type II diabetes mellitus",
        "type2_diabetes",
    ),
    (
        "97331000119101",
        "Macular edema and retinopathy due to type 2 diabetes mellitus (disorder)",
        "type2_diabetes",
    ),
    ("15777000", "Prediabetes", "prediabetes"),
    ("714628002", "Prediabetes (finding)", "prediabetes"),
    ("55822004", "Hyperlipidemia (disorder)", "hyperlipidemia"),
    ("302870006", "Hypertriglyceridemia (disorder)", "hyperlipidemia"),
    ("414545008", "Ischemic heart disease (disorder)", "coronary_disease"),
    ("399211009", "History of myocardial infarction (situation)", "coronary_disease"),
    ("399261000", "History of coronary artery bypass grafting (situation)", "coronary_disease"),
    ("22298006", "Myocardial infarction (disorder)", "coronary_disease"),
    (
        "401303003",
        "Acute ST segment elevation myocardial infarction (disorder)",
        "coronary_disease",
    ),
    (
        "401314000",
        "Acute non-ST segment elevation myocardial infarction (disorder)",
        "coronary_disease",
    ),
    ("4557003", "Preinfarction syndrome (disorder)", "coronary_disease"),
    ("230690007", "Cerebrovascular accident (disorder)", "stroke_tia"),
    ("49436004", "Atrial fibrillation (disorder)", "atrial_fibrillation"),
    ("84114007", "Heart failure (disorder)", "heart_failure"),
    ("88805009", "Chronic congestive heart failure (disorder)", "heart_failure"),
    ("431855005", "Chronic kidney disease stage 1 (disorder)", "ckd"),
    ("431856006", "Chronic kidney disease stage 2 (disorder)", "ckd"),
    ("433144002", "Chronic kidney disease stage 3 (disorder)", "ckd"),
    ("431857002", "Chronic kidney disease stage 4 (disorder)", "ckd"),
    ("46177005", "End-stage renal disease (disorder)", "ckd"),
    ("127013003", "Disorder of kidney due to diabetes mellitus (disorder)", "ckd"),
    ("87433001", "Pulmonary emphysema (disorder)", "copd"),
    ("185086009", "Chronic obstructive bronchitis (disorder)", "copd"),
    ("195967001", "Asthma (disorder)", "asthma"),
    ("233678006", "Childhood asthma (disorder)", "asthma"),
    ("162864005", "Body mass index 30+ - obesity (finding)", "obesity"),
    ("408512008", "Body mass index 40+ - severely obese (finding)", "obesity"),
    ("370143000", "Major depressive disorder (disorder)", "depression"),
    ("36923009", "Major depression, single episode (disorder)", "depression"),
    ("80583007", "Severe anxiety (panic) (finding)", "anxiety"),
    ("26929004", "Alzheimer's disease (disorder)", "cognitive_impairment"),
    ("230265002", "Familial Alzheimer's disease of early onset (disorder)", "cognitive_impairment"),
    ("7200002", "Alcoholism (disorder)", "unhealthy_alcohol_use"),
    ("10939881000119105", "Unhealthy alcohol drinking behavior (finding)", "unhealthy_alcohol_use"),
    ("5602001", "Opioid abuse", "opioid_use_disorder"),
    ("449868002", "Smokes tobacco daily (finding)", "tobacco_use"),
    ("64859006", "Osteoporosis (disorder)", "osteoporosis"),
    ("443165006", "Osteoporotic fracture of bone (disorder)", "osteoporosis"),
    ("239873007", "Osteoarthritis of knee (disorder)", "osteoarthritis"),
    ("239872002", "Osteoarthritis of hip (disorder)", "osteoarthritis"),
    ("201834006", "Localized, primary osteoarthritis of the hand (disorder)", "osteoarthritis"),
    ("82423001", "Chronic pain (finding)", "chronic_pain"),
    ("278860009", "Chronic low back pain (finding)", "chronic_pain"),
    ("1121000119107", "Chronic neck pain (finding)", "chronic_pain"),
    ("203082005", "Fibromyalgia (disorder)", "chronic_pain"),
]

#: Synthea codes outside the chronic scope: acute, resolved-by-nature, or another domain.
OUT_OF_SCOPE: list[tuple[str, str]] = [
    ("444814009", "Viral sinusitis (disorder)"),
    ("10509002", "Acute bronchitis (disorder)"),
    ("271737000", "Anemia (disorder)"),
    ("80394007", "Hyperglycemia (disorder)"),
    ("237602007", "Metabolic syndrome X (disorder)"),
    ("78275009", "Obstructive sleep apnea syndrome (disorder)"),
    ("124171000119105", "Chronic intractable migraine without aura (disorder)"),
    ("274531002", "Abnormal findings diagnostic imaging heart+coronary circulat (finding)"),
    ("72892002", "Normal pregnancy (finding)"),
    ("314529007", "Medication review due (situation)"),
]

CHRONIC_FEATURES = {feature for _, _, feature in IN_SCOPE}


@pytest.mark.parametrize(("code", "display", "feature"), IN_SCOPE, ids=lambda v: str(v)[:24])
def test_synthea_code_gives_its_feature(
    definitions: Definitions, code: str, display: str, feature: str
) -> None:
    profile = profile_of(definitions, record(condition("c1", SNOMED, code)))
    finding = profile.finding(feature)
    assert finding is not None and finding.current_present, f"{code} {display}"
    others = {f.feature for _, f in profile.findings()} & CHRONIC_FEATURES - {feature}
    assert not others, f"{code} {display} also gives {others}"


@pytest.mark.parametrize(("code", "display"), OUT_OF_SCOPE, ids=lambda v: str(v)[:24])
def test_synthea_code_outside_the_chronic_scope_gives_no_chronic_feature(
    definitions: Definitions, code: str, display: str
) -> None:
    profile = profile_of(definitions, record(condition("c1", SNOMED, code)))
    assert not {f.feature for _, f in profile.findings()} & CHRONIC_FEATURES, f"{code} {display}"


def test_every_chronic_group_of_the_scope_is_exercised() -> None:
    """The issue's scope, group by group, has at least one Synthea code here."""
    scope = {
        "hypertension", "type2_diabetes", "prediabetes", "hyperlipidemia", "coronary_disease",
        "stroke_tia", "atrial_fibrillation", "heart_failure", "ckd", "copd", "asthma", "obesity",
        "depression", "anxiety", "cognitive_impairment", "unhealthy_alcohol_use",
        "opioid_use_disorder", "tobacco_use", "osteoporosis", "osteoarthritis", "chronic_pain",
    }  # fmt: skip
    assert scope <= CHRONIC_FEATURES


# -- conditions another module takes over are still on the plan ------------------------------


@pytest.mark.parametrize(
    ("diagnosis", "beside", "module"),
    [
        ("44054006", "15777000", "diabetes-outpatient"),  # prediabetes left active beside T2DM
        ("414545008", "302870006", "secondary-prevention"),  # hypertriglyceridemia with IHD
        ("230690007", "55822004", "secondary-prevention"),  # hyperlipidemia after a stroke
    ],
)
def test_a_diagnosis_another_module_manages_is_still_addressed(
    definitions: Definitions, diagnosis: str, beside: str, module: str
) -> None:
    """Synthea keeps prediabetes active after diabetes is diagnosed, and lipid-management leaves
    patients with coronary disease or stroke to secondary prevention: both Conditions are on the
    plan, addressed by the module that manages them."""
    rec = record(condition("c1", SNOMED, diagnosis), condition("c2", SNOMED, beside))
    plan = plan_of(definitions, rec)
    assert plan is not None
    assert {"Condition/c1", "Condition/c2"} <= set(plan.addresses)
    goals = [g for g in plan.goals if g.module == module]
    assert goals and all("Condition/c2" in g.addresses for g in goals)


def test_the_module_managing_another_diagnosis_does_not_apply_on_it_alone(
    definitions: Definitions,
) -> None:
    plan = plan_of(definitions, record(condition("c1", SNOMED, "15777000")))
    assert plan is not None
    assert {m.id for m in plan.modules} & {"diabetes-outpatient", "secondary-prevention"} == set()
    assert "diabetes-prevention" in {m.id for m in plan.modules}


def test_after_a_hemorrhagic_stroke_no_default_antiplatelet(definitions: Definitions) -> None:
    """Ischemic stroke and a past intracerebral hemorrhage: secondary prevention still applies,
    but its antithrombotic review no longer says to start single antiplatelet therapy."""

    def antithrombotic(*codes: str) -> str:
        conditions = [condition(f"c{n}", SNOMED, code) for n, code in enumerate(codes)]
        plan = plan_of(definitions, record(*conditions))
        activity = next(a for a in plan.activities if a.key.endswith(".antithrombotic-review"))
        return activity.description

    assert "single antiplatelet therapy (aspirin" in antithrombotic("230690007")
    after_bleed = antithrombotic("230690007", "274100004")  # + intracerebral hemorrhage
    assert "do not start single antiplatelet therapy by default" in after_bleed
    assert "aspirin 75-100 mg" not in after_bleed
