"""Cardiometabolic conditions from the codes real records carry, and their place on the plan.

For hypertension, type 1 and type 2 diabetes, diabetes of other types, prediabetes,
hyperlipidemia, obesity and chronic kidney disease: the parent code, SNOMED CT descendants and
ICD-10-CM billable subcodes give the feature; a neighbouring code of another meaning does not; a
resolved or refuted Condition does not; and a patient with only the diagnosis (old onset, an old
controlled result or none at all) gets the module, with the Condition in ``CarePlan.addresses``
and in every goal's ``addresses``. The lab and vital-sign rules read through published LOINC
value sets, and every code they read before still reads.

The expected codes, severities and modules are written by hand from the ICD-10-CM tabular list
(FY2026), the VSAC value sets and published code lists named in ``profiles/valuesets``, and the
guidelines cited in the modules; none is read back from the YAML.
"""

from __future__ import annotations

from typing import Any

import pytest
from builders import (
    AS_OF,
    ICD10,
    LOINC,
    SNOMED,
    VERIFICATION,
    condition,
    observation,
    profile_of,
    quantity,
    record,
)

from fhir_tailor.definitions import Definitions
from fhir_tailor.pipeline import profile_and_plan
from fhir_tailor.plan import Plan
from fhir_tailor.record import PatientRecord

#: An onset long before the as-of date: a diagnosis never goes stale.
OLD_ONSET = "2009-04-01"

# -- diagnoses: (system, code, severity) that give the feature -------------------------------

PRESENT: dict[str, list[tuple[str, str, str]]] = {
    "hypertension": [
        (SNOMED, "38341003", "moderate"),  # hypertensive disorder, systemic arterial (parent)
        (SNOMED, "59621000", "moderate"),  # essential hypertension (Synthea)
        (SNOMED, "1201005", "moderate"),  # benign essential hypertension (VSAC)
        (SNOMED, "31992008", "moderate"),  # secondary hypertension
        (SNOMED, "64715009", "moderate"),  # hypertensive heart disease
        (SNOMED, "461301000124109", "moderate"),  # resistant hypertensive disorder
        (ICD10, "I10", "moderate"),
        (ICD10, "I11.9", "moderate"),
        (ICD10, "I15.0", "moderate"),  # renovascular hypertension
        (ICD10, "I1A.0", "moderate"),  # resistant hypertension
    ],
    "type2_diabetes": [
        (SNOMED, "44054006", "moderate"),  # parent
        (SNOMED, "368581000119106", "moderate"),  # neuropathy due to type 2 (Synthea, VSAC)
        (SNOMED, "90781000119102", "moderate"),  # microalbuminuria due to type 2 (Synthea)
        (SNOMED, "368051000119109", "moderate"),  # hyperglycemia due to type 2 (PRIMIS)
        (ICD10, "E11", "moderate"),
        (ICD10, "E11.9", "moderate"),
        (ICD10, "E11.65", "moderate"),
        (ICD10, "E11.3211", "moderate"),
        (ICD10, "E11.A", "moderate"),  # in remission (FY2025): still needs yearly HbA1c
        (ICD10, "O24.111", "moderate"),  # pre-existing type 2 diabetes in pregnancy
    ],
    "type1_diabetes": [
        (SNOMED, "46635009", "moderate"),  # parent
        (SNOMED, "420789003", "moderate"),  # retinopathy due to type 1 (VSAC)
        (SNOMED, "84371000119108", "moderate"),  # hypoglycemia due to type 1 (PRIMIS)
        (ICD10, "E10", "moderate"),
        (ICD10, "E10.9", "moderate"),
        (ICD10, "E10.65", "moderate"),
        (ICD10, "E10.3211", "moderate"),
    ],
    "other_diabetes": [
        (SNOMED, "8801005", "moderate"),  # secondary diabetes mellitus
        (SNOMED, "190416008", "moderate"),  # steroid-induced diabetes without complication
        (SNOMED, "427089005", "moderate"),  # diabetes due to cystic fibrosis
        (SNOMED, "609562003", "moderate"),  # MODY type 1 (monogenic, E13)
        (SNOMED, "237604008", "moderate"),  # MODY type 2
        (ICD10, "E13", "moderate"),
        (ICD10, "E13.9", "moderate"),
        (ICD10, "E09.65", "moderate"),
        (ICD10, "E08.9", "moderate"),
    ],
    "prediabetes": [
        (SNOMED, "15777000", "moderate"),  # Synthea
        (SNOMED, "714628002", "moderate"),
        (ICD10, "R73.03", "moderate"),
        (ICD10, "R73.01", "moderate"),  # impaired fasting glucose
        (ICD10, "R73.02", "moderate"),  # impaired glucose tolerance
    ],
    "hyperlipidemia": [
        (SNOMED, "55822004", "moderate"),  # parent (Synthea)
        (SNOMED, "13644009", "moderate"),  # hypercholesterolemia
        (SNOMED, "302870006", "moderate"),  # hypertriglyceridemia (Synthea)
        (SNOMED, "398036000", "moderate"),  # familial hypercholesterolemia (VSAC)
        (SNOMED, "238078005", "moderate"),  # familial hypercholesterolemia, homozygous (VSAC)
        (ICD10, "E78.5", "moderate"),
        (ICD10, "E78.00", "moderate"),
        (ICD10, "E78.010", "moderate"),  # familial hypercholesterolemia subcode (FY2025)
        (ICD10, "E78.2", "moderate"),
        (ICD10, "E78.41", "moderate"),  # elevated lipoprotein(a)
    ],
    "obesity": [
        (SNOMED, "414916001", "moderate"),  # parent
        (SNOMED, "162864005", "moderate"),  # BMI 30+ - obesity (Synthea)
        (SNOMED, "443371000124107", "moderate"),  # obese class I
        (SNOMED, "238136002", "high"),  # morbid obesity
        (SNOMED, "408512008", "high"),  # BMI 40+ - severely obese (Synthea)
        (ICD10, "E66.9", "moderate"),
        (ICD10, "E66.811", "moderate"),
        (ICD10, "E66.01", "high"),
        (ICD10, "E66.813", "high"),
    ],
    "ckd": [
        (SNOMED, "709044004", "moderate"),  # parent
        (SNOMED, "700378005", "moderate"),  # stage 3A
        (SNOMED, "700379002", "moderate"),  # stage 3B
        (SNOMED, "129171000119106", "moderate"),  # stage 3 due to hypertension
        (SNOMED, "431857002", "high"),  # stage 4
        (SNOMED, "714152005", "high"),  # stage 5 on dialysis
        (SNOMED, "236435004", "high"),  # end stage renal failure on dialysis (VSAC ESRD)
        (ICD10, "N18.30", "moderate"),
        (ICD10, "N18.31", "moderate"),
        (ICD10, "N18.32", "moderate"),
        (ICD10, "N18.9", "moderate"),
        (ICD10, "N18.4", "high"),
        (ICD10, "N18.6", "high"),
        (ICD10, "I12.0", "high"),  # hypertensive CKD with stage 5 or ESRD
    ],
}

# -- near misses: a neighbouring code of another meaning --------------------------------------

ABSENT: dict[str, list[tuple[str, str]]] = {
    "hypertension": [
        (ICD10, "R03.0"),  # elevated reading without a diagnosis of hypertension
        (SNOMED, "371622005"),  # the same, in SNOMED CT
        (ICD10, "I27.20"),  # pulmonary hypertension
        (ICD10, "I16.0"),  # hypertensive urgency: an episode
        (ICD10, "O10.011"),  # pre-existing hypertension in pregnancy: obstetric care
        (SNOMED, "72022006"),  # essential hypertension in obstetric context (VSAC, left out)
        (SNOMED, "48194001"),  # pregnancy-induced hypertension
    ],
    "type2_diabetes": [
        (ICD10, "E10.9"),
        (ICD10, "E13.9"),
        (ICD10, "E09.9"),
        (ICD10, "O24.410"),  # gestational diabetes
        (ICD10, "O24.319"),  # pre-existing diabetes of unstated type in pregnancy
        (SNOMED, "237604008"),  # MODY type 2 is monogenic, not type 2
        (SNOMED, "46635009"),
        (ICD10, "R73.03"),
    ],
    "type1_diabetes": [
        (ICD10, "E10.A1"),  # presymptomatic type 1: autoantibodies, no diabetes
        (ICD10, "E11.9"),
        (SNOMED, "609562003"),  # MODY type 1 (in VSAC Type 1 Diabetes, left out)
        (SNOMED, "44054006"),
    ],
    "other_diabetes": [(ICD10, "E11.9"), (ICD10, "E10.9"), (ICD10, "R73.03")],
    "prediabetes": [
        (ICD10, "R73.09"),  # other abnormal glucose
        (ICD10, "R73.9"),  # hyperglycemia, unspecified
        (SNOMED, "80394007"),  # hyperglycemia (Synthea)
        (ICD10, "E11.9"),
    ],
    "hyperlipidemia": [
        (ICD10, "E78.6"),  # lipoprotein deficiency (low HDL)
        (ICD10, "E78.70"),  # bile acid and cholesterol metabolism
        (ICD10, "E78.9"),
    ],
    "obesity": [
        (ICD10, "E66.3"),  # overweight
        (SNOMED, "162863004"),  # BMI 25-29 - overweight
        (ICD10, "Z68.41"),  # a BMI Z code is a secondary code
        (ICD10, "O99.210"),  # obesity complicating pregnancy
    ],
    "ckd": [(ICD10, "N17.9"), (ICD10, "N28.9"), (ICD10, "R80.9")],
}


def cases(table: dict[str, list[Any]]) -> list[tuple[Any, ...]]:
    return [(feature, *row) for feature, rows in table.items() for row in rows]


@pytest.mark.parametrize(("feature", "system", "code", "severity"), cases(PRESENT))
def test_code_gives_feature(
    definitions: Definitions, feature: str, system: str, code: str, severity: str
) -> None:
    rec = record(condition("c1", system, code, onsetDateTime=OLD_ONSET))
    finding = profile_of(definitions, rec).finding(feature)
    assert finding is not None, f"{system}|{code} should give {feature}"
    assert (finding.status, finding.severity, finding.stale) == ("present", severity, False)
    assert finding.sources == ("Condition/c1",)


@pytest.mark.parametrize(("feature", "system", "code"), cases(ABSENT))
def test_near_miss_does_not_give_feature(
    definitions: Definitions, feature: str, system: str, code: str
) -> None:
    assert profile_of(definitions, record(condition("c1", system, code))).finding(feature) is None


@pytest.mark.parametrize(
    ("system", "code", "features"),
    [
        (ICD10, "I12.9", {"hypertension": "moderate", "ckd": "moderate"}),
        (ICD10, "I13.10", {"hypertension": "moderate", "ckd": "moderate"}),
        (ICD10, "I13.11", {"hypertension": "moderate", "ckd": "high"}),
        (ICD10, "E11.22", {"type2_diabetes": "moderate", "ckd": "moderate"}),
        (ICD10, "E10.22", {"type1_diabetes": "moderate", "ckd": "moderate"}),
        (SNOMED, "731000119105", {"type2_diabetes": "moderate", "ckd": "moderate"}),
        (
            SNOMED,
            "140111000119107",
            {"type2_diabetes": "moderate", "hypertension": "moderate", "ckd": "high"},
        ),
        (SNOMED, "137931000119102", {"type2_diabetes": "moderate", "hyperlipidemia": "moderate"}),
    ],
)
def test_combination_code_gives_each_condition_it_names(
    definitions: Definitions, system: str, code: str, features: dict[str, str]
) -> None:
    """A combination code (hypertensive CKD, diabetic CKD) names two conditions: both count."""
    profile = profile_of(definitions, record(condition("c1", system, code)))
    for feature, severity in features.items():
        finding = profile.finding(feature)
        assert finding is not None, f"{code} should give {feature}"
        assert (finding.status, finding.severity) == ("present", severity)


def test_hypertensive_heart_disease_with_heart_failure_is_hypertension(
    definitions: Definitions,
) -> None:
    finding = profile_of(definitions, record(condition("c1", ICD10, "I11.0"))).finding(
        "hypertension"
    )
    assert finding is not None and finding.severity == "moderate"


FIRST_CODE = {feature: rows[0] for feature, rows in PRESENT.items()}


@pytest.mark.parametrize("feature", sorted(PRESENT))
@pytest.mark.parametrize(
    ("clinical", "verification"), [("resolved", None), ("inactive", None), ("active", "refuted")]
)
def test_resolved_or_refuted_condition_does_not_count(
    definitions: Definitions, feature: str, clinical: str, verification: str | None
) -> None:
    system, code, _ = FIRST_CODE[feature]
    extra: dict[str, Any] = {}
    if verification:
        extra["verificationStatus"] = {"coding": [{"system": VERIFICATION, "code": verification}]}
    rec = record(condition("c1", system, code, clinical=clinical, **extra))
    finding = profile_of(definitions, rec).finding(feature)
    assert finding is None or not finding.current_present


def test_types_of_diabetes_and_prediabetes_share_no_code(definitions: Definitions) -> None:
    """ADA classification and the ICD-10-CM Excludes1 notes: a code means one type only."""
    index = definitions.rules.index
    groups = ("type1_diabetes", "type2_diabetes", "other_diabetes", "prediabetes")
    codes = {
        name: {c.key for rule in index.features[name][0].rules for c in index.codes(rule)}
        for name in groups
    }
    for first in groups:
        assert set(index.features[first][0].excludes) == set(groups) - {first}
        for second in groups:
            if first < second:
                assert not codes[first] & codes[second], (first, second)


# -- the plan: a diagnosis alone, old and without recent results ------------------------------

#: feature -> (module, an old, controlled result recorded years ago, or None)
MODULE_OF: dict[str, tuple[str, dict[str, Any] | None]] = {
    "hypertension": (
        "hypertension-outpatient",
        observation("o1", "8480-6", when="2015-06-01", **quantity(124, "mm[Hg]")),
    ),
    "type2_diabetes": (
        "diabetes-outpatient",
        observation("o1", "4548-4", when="2015-06-01", **quantity(6.4, "%")),
    ),
    "type1_diabetes": ("diabetes-type1", None),
    "other_diabetes": ("diabetes-outpatient", None),
    "prediabetes": (
        "diabetes-prevention",
        observation("o1", "4548-4", when="2016-02-01", **quantity(5.9, "%")),
    ),
    "hyperlipidemia": (
        "lipid-management",
        observation("o1", "13457-7", when="2016-02-01", **quantity(92, "mg/dL")),
    ),
    "obesity": ("weight-management", None),
    "ckd": (
        "ckd-care",
        observation("o1", "98979-8", when="2014-09-01", **quantity(72, "mL/min/{1.73_m2}")),
    ),
}


def plan_from(definitions: Definitions, rec: PatientRecord) -> Plan:
    _, plan = profile_and_plan(rec, definitions, AS_OF)
    assert plan is not None
    return plan


@pytest.mark.parametrize("feature", sorted(MODULE_OF))
@pytest.mark.parametrize("with_old_result", [False, True])
def test_diagnosis_alone_puts_the_module_and_condition_on_the_plan(
    definitions: Definitions, feature: str, with_old_result: bool
) -> None:
    module_id, old_result = MODULE_OF[feature]
    system, code, _ = FIRST_CODE[feature]
    resources = [condition("c1", system, code, onsetDateTime=OLD_ONSET)]
    if with_old_result and old_result is not None:
        resources.append(old_result)
    plan = plan_from(definitions, record(*resources, birthDate="1962-03-14"))
    assert module_id in [m.id for m in plan.modules]
    assert "Condition/c1" in plan.addresses
    goals = [g for g in plan.goals if g.module == module_id]
    assert goals, f"{module_id} sets at least one measurable goal"
    for goal in goals:
        assert goal.addresses == ("Condition/c1",)
        assert goal.due_date > AS_OF
        assert goal.target.measure.system == LOINC
        assert goal.target.value is not None or goal.target.text
    activities = [a for a in plan.activities if a.module == module_id]
    assert activities and all(a.reasons for a in activities)


def test_hypertension_goal_is_below_130_over_80(definitions: Definitions) -> None:
    """2025 AHA/ACC high blood pressure guideline: below 130/80 for adults with hypertension,
    with or without diabetes or CKD."""
    plan = plan_from(definitions, record(condition("c1", SNOMED, "59621000")))
    targets = {
        g.target.measure.code: (g.target.comparator, g.target.value, g.target.unit)
        for g in plan.goals
        if g.module == "hypertension-outpatient"
    }
    assert targets == {"8480-6": ("<", 130, "mm[Hg]"), "8462-4": ("<", 80, "mm[Hg]")}


def test_diabetes_prevention_is_yearly_testing_and_a_dpp_referral(
    definitions: Definitions,
) -> None:
    """ADA 2025 recommendation 3.1 (monitor at least annually) and CDC National DPP."""
    plan = plan_from(definitions, record(condition("c1", ICD10, "R73.03")))
    monitoring = next(
        g for g in plan.goals if g.key == "diabetes-prevention.glycemic-status-yearly"
    )
    assert (monitoring.target.measure.code, (monitoring.due_date - AS_OF).days) == ("4548-4", 365)
    referral = next(
        a for a in plan.activities if a.key == "diabetes-prevention.national-dpp-referral"
    )
    assert referral.kind == "ServiceRequest" and "National Diabetes Prevention Program" in (
        referral.description
    )


@pytest.mark.parametrize("diabetes", [(ICD10, "E11.9"), (ICD10, "E10.9"), (ICD10, "E13.9")])
def test_no_prevention_plan_once_diabetes_is_diagnosed(
    definitions: Definitions, diabetes: tuple[str, str]
) -> None:
    rec = record(
        condition("c1", ICD10, "R73.03", onsetDateTime="2015-01-10"),
        condition("c2", *diabetes, onsetDateTime="2021-05-02"),
    )
    assert "diabetes-prevention" not in [m.id for m in plan_from(definitions, rec).modules]


def test_lipid_management_leaves_atherosclerotic_disease_to_secondary_prevention(
    definitions: Definitions,
) -> None:
    """One plan, one LDL goal: coronary disease has its own (below 70 mg/dL)."""
    rec = record(condition("c1", SNOMED, "55822004"), condition("c2", SNOMED, "53741008"))
    modules = [m.id for m in plan_from(definitions, rec).modules]
    assert "lipid-management" not in modules


# -- lab and vital-sign rules on published LOINC value sets ----------------------------------

#: (LOINC, value, unit, feature, severity): the codes read before the value sets were published
#: ones (first of each feature) and codes the VSAC sets add.
READINGS = [
    # VSAC HbA1c Laboratory Test
    ("4548-4", 8.0, "%", "hba1c_above_target", "moderate"),
    ("17856-6", 8.0, "%", "hba1c_above_target", "moderate"),
    ("17855-8", 9.5, "%", "hba1c_above_target", "high"),
    ("4549-2", 8.0, "%", "hba1c_above_target", "moderate"),
    ("96595-4", 8.0, "%", "hba1c_above_target", "moderate"),
    # VSAC LDL Cholesterol
    ("13457-7", 170, "mg/dL", "ldl_above_target", "moderate"),
    ("18262-6", 170, "mg/dL", "ldl_above_target", "moderate"),
    ("2089-1", 195, "mg/dL", "ldl_above_target", "high"),
    ("18261-8", 140, "mg/dL", "ldl_above_target", "low"),
    ("96259-7", 170, "mg/dL", "ldl_above_target", "moderate"),
    # VSAC Estimated Glomerular Filtration Rate, and 33914-3 beside it
    ("33914-3", 45, "mL/min/{1.73_m2}", "egfr_reduced", "moderate"),
    ("62238-1", 45, "mL/min/{1.73_m2}", "egfr_reduced", "moderate"),
    ("98979-8", 45, "mL/min/{1.73_m2}", "egfr_reduced", "moderate"),
    ("98980-6", 25, "mL/min/{1.73_m2}", "egfr_reduced", "high"),
    ("94677-2", 45, "mL/min/{1.73_m2}", "egfr_reduced", "moderate"),
    ("50210-4", 45, "mL/min/{1.73_m2}", "egfr_reduced", "moderate"),
    # VSAC Systolic Blood Pressure; diastolic stays on the project's own set
    ("8480-6", 150, "mm[Hg]", "bp_above_target", "moderate"),
    ("8459-0", 185, "mm[Hg]", "bp_above_target", "high"),
    ("8461-6", 150, "mm[Hg]", "bp_above_target", "moderate"),
    ("8462-4", 95, "mm[Hg]", "bp_above_target", "moderate"),
]


@pytest.mark.parametrize(("code", "value", "unit", "feature", "severity"), READINGS)
def test_result_code_reads_through_the_value_set(
    definitions: Definitions, code: str, value: float, unit: str, feature: str, severity: str
) -> None:
    issues: list[tuple[str, str]] = []
    rec = record(observation("o1", code, **quantity(value, unit)))
    finding = profile_of(definitions, rec, issues).finding(feature)
    assert finding is not None, f"{code} should read {feature}"
    assert (finding.status, finding.severity, finding.value) == ("present", severity, value)
    assert issues == []


@pytest.mark.parametrize(
    "code",
    [
        "86911-5",  # LDL-C goal: a target, not a result
        "91105-7",  # LDL 1 subfraction
        "90364-1",  # small dense LDL
        "55440-2",  # VAP "real" LDL (without IDL and Lp(a) cholesterol)
    ],
)
def test_ldl_codes_that_are_not_an_ldl_c_result_are_not_read(
    definitions: Definitions, code: str
) -> None:
    """VSAC LDL Cholesterol holds them; a part of LDL-C read as LDL-C would look falsely low."""
    rec = record(observation("o1", code, **quantity(40, "mg/dL")))
    assert profile_of(definitions, rec).finding("ldl_above_target") is None
