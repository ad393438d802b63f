"""Medical dimension, feature by feature: codes, near-miss codes, cut points, units, encounters
and medication counts.

The expected table below is written by hand from the code systems and the scoring standards
(ICD-10-CM tabular list, SNOMED CT, LOINC, KDIGO GFR categories, NCEP ATP III LDL classes,
WHO/CDC BMI classes, polypharmacy as 5+ medications); it is not derived from the YAML, so a wrong
code or cut point in ``profiles/features/medical.yaml`` fails here.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest
from builders import (
    AS_OF,
    ICD10,
    LOINC,
    SNOMED,
    condition,
    observation,
    profile_of,
    quantity,
    record,
)

from fhir_tailor.definitions import Definitions
from fhir_tailor.profile_model import Finding
from fhir_tailor.record import PatientRecord

ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
UCUM = "http://unitsofmeasure.org"
EGFR_UNIT = "mL/min/{1.73_m2}"


def finding_of(definitions: Definitions, rec: PatientRecord, feature: str) -> Finding | None:
    return profile_of(definitions, rec).finding(feature)


def days_before_as_of(days: int) -> str:
    return (AS_OF - timedelta(days=days)).isoformat()


def encounter(
    eid: str,
    code: str,
    end: str,
    status: str = "finished",
    system: str = ACT_CODE,
    pid: str = "p1",
) -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "id": eid,
        "status": status,
        "class": {"system": system, "code": code},
        "subject": {"reference": f"Patient/{pid}"},
        "period": {"start": end, "end": end},
    }


def medication_request(
    mid: str, medication: str, status: str = "active", pid: str = "p1"
) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": mid,
        "status": status,
        "intent": "order",
        "medicationReference": {"reference": f"Medication/{medication}"},
        "subject": {"reference": f"Patient/{pid}"},
        "authoredOn": "2026-06-01",
    }


def medications(active: int, stopped: int = 0) -> list[dict[str, Any]]:
    """``active`` distinct active medications, plus ``stopped`` distinct stopped ones."""
    resources = [medication_request(f"a{n}", f"drug-a{n}") for n in range(active)]
    resources += [
        medication_request(f"s{n}", f"drug-s{n}", status="stopped") for n in range(stopped)
    ]
    return resources


# -- diagnoses: a correct code gives the finding with its severity ----------------------------

CONDITIONS: list[tuple[str, str, str, str]] = [
    # (system, code, feature, severity)
    (SNOMED, "46635009", "type1_diabetes", "moderate"),
    (ICD10, "E10.9", "type1_diabetes", "moderate"),
    (ICD10, "E10.8", "type1_diabetes", "moderate"),
    (ICD10, "E10.10", "type1_diabetes", "moderate"),
    # E10.22 is also CKD: see test_chronic_cardiometabolic
    (ICD10, "E10.21", "type1_diabetes", "moderate"),
    (ICD10, "E10.319", "type1_diabetes", "moderate"),
    (ICD10, "E10.40", "type1_diabetes", "moderate"),
    (ICD10, "E10.51", "type1_diabetes", "moderate"),
    (ICD10, "E10.65", "type1_diabetes", "moderate"),
    (SNOMED, "44054006", "type2_diabetes", "moderate"),
    (ICD10, "E11.9", "type2_diabetes", "moderate"),
    (ICD10, "E11.65", "type2_diabetes", "moderate"),
    (SNOMED, "38341003", "hypertension", "moderate"),
    (ICD10, "I10", "hypertension", "moderate"),
    (ICD10, "I11.9", "hypertension", "moderate"),
    # I11.0 is also heart failure, I12.9 and I13.10 also CKD: see test_chronic_cardiometabolic
    (SNOMED, "84114007", "heart_failure", "moderate"),
    (SNOMED, "42343007", "heart_failure", "moderate"),
    (ICD10, "I50.9", "heart_failure", "moderate"),
    (ICD10, "I50.22", "heart_failure", "moderate"),
    (SNOMED, "13645005", "copd", "moderate"),
    (ICD10, "J44.9", "copd", "moderate"),
    (ICD10, "J44.1", "copd", "moderate"),
    (SNOMED, "195967001", "asthma", "moderate"),
    (ICD10, "J45.909", "asthma", "moderate"),
    (ICD10, "J45.40", "asthma", "moderate"),
    (SNOMED, "709044004", "ckd", "moderate"),
    (SNOMED, "431855005", "ckd", "moderate"),
    (SNOMED, "431856006", "ckd", "moderate"),
    (SNOMED, "433144002", "ckd", "moderate"),
    (SNOMED, "431857002", "ckd", "high"),
    (SNOMED, "433146000", "ckd", "high"),
    # 46177005 and N18.6 (end stage renal disease) also give limited_life_expectancy: see
    # test_guideline
    (ICD10, "N18.9", "ckd", "moderate"),
    (ICD10, "N18.1", "ckd", "moderate"),
    (ICD10, "N18.2", "ckd", "moderate"),
    (ICD10, "N18.30", "ckd", "moderate"),
    (ICD10, "N18.32", "ckd", "moderate"),
    (ICD10, "N18.4", "ckd", "high"),
    (ICD10, "N18.5", "ckd", "high"),
    (SNOMED, "53741008", "coronary_disease", "moderate"),
    (ICD10, "I25.10", "coronary_disease", "moderate"),
    (ICD10, "I25.2", "coronary_disease", "moderate"),
    (ICD10, "I25.9", "coronary_disease", "moderate"),
    (SNOMED, "414916001", "obesity", "moderate"),
    (ICD10, "E66.9", "obesity", "moderate"),
    (ICD10, "E66.09", "obesity", "moderate"),
    (ICD10, "E66.1", "obesity", "moderate"),
    (ICD10, "E66.811", "obesity", "moderate"),
    (ICD10, "E66.812", "obesity", "moderate"),
    (ICD10, "E66.89", "obesity", "moderate"),
    (ICD10, "E66.01", "obesity", "high"),
    (ICD10, "E66.2", "obesity", "high"),
    (ICD10, "E66.813", "obesity", "high"),
]


@pytest.mark.parametrize(("system", "code", "feature", "severity"), CONDITIONS)
def test_condition_code_gives_feature(
    definitions: Definitions, system: str, code: str, feature: str, severity: str
) -> None:
    profile = profile_of(definitions, record(condition("c1", system, code)))
    finding = profile.finding(feature)
    assert finding is not None, f"{system}|{code} should give {feature}"
    assert (finding.status, finding.severity, finding.stale) == ("present", severity, False)
    assert finding.sources == ("Condition/c1",)
    assert profile.medical.need == severity
    assert [f.feature for f in profile.medical.findings] == [feature]


# -- near-miss codes: a neighbouring code does not give the feature ---------------------------

NEAR_MISSES: list[tuple[str, str, str]] = [
    # (system, code, feature that must NOT appear)
    (ICD10, "E11.9", "type1_diabetes"),  # type 2, not type 1
    (ICD10, "E10.9", "type2_diabetes"),  # type 1, not type 2
    (ICD10, "E13.9", "type1_diabetes"),  # other specified diabetes
    (ICD10, "E13.9", "type2_diabetes"),
    (ICD10, "E10.A0", "type1_diabetes"),  # presymptomatic type 1 (autoantibodies only)
    (ICD10, "E10.A1", "type1_diabetes"),
    (ICD10, "E10.A2", "type1_diabetes"),
    (SNOMED, "44054006", "type1_diabetes"),
    (SNOMED, "46635009", "type2_diabetes"),
    (ICD10, "R03.0", "hypertension"),  # elevated reading without a diagnosis of hypertension
    (ICD10, "I51.9", "heart_failure"),  # heart disease, unspecified
    (ICD10, "I10", "heart_failure"),
    (ICD10, "J45.909", "copd"),  # asthma is not COPD ...
    (ICD10, "J44.9", "asthma"),  # ... and COPD is not asthma
    (SNOMED, "195967001", "copd"),
    (SNOMED, "13645005", "asthma"),
    (ICD10, "N17.9", "ckd"),  # acute kidney failure
    (ICD10, "I35.0", "coronary_disease"),  # aortic valve stenosis
    (ICD10, "E66.3", "obesity"),  # overweight is not obesity
    (ICD10, "Z68.30", "obesity"),  # a BMI Z code alone is not a diagnosis
]


@pytest.mark.parametrize(("system", "code", "feature"), NEAR_MISSES)
def test_near_miss_code_does_not_give_feature(
    definitions: Definitions, system: str, code: str, feature: str
) -> None:
    assert finding_of(definitions, record(condition("c1", system, code)), feature) is None


def test_condition_with_both_codings_is_one_finding(definitions: Definitions) -> None:
    ckd = condition("c1", SNOMED, "709044004")
    ckd["code"]["coding"].append({"system": ICD10, "code": "N18.4"})
    finding = finding_of(definitions, record(ckd), "ckd")
    assert finding is not None
    assert (finding.status, finding.severity, finding.sources) == (
        "present",
        "high",
        ("Condition/c1",),
    )


def test_resolved_heart_failure_does_not_count(definitions: Definitions) -> None:
    rec = record(condition("c1", SNOMED, "84114007", clinical="resolved"))
    assert finding_of(definitions, rec, "heart_failure") is None


# -- measurements: every cut point, at and just below --------------------------------------------

MEASUREMENTS: list[tuple[str, float, str, str, str, str | None]] = [
    # (LOINC, value, unit, feature, status, severity)
    # BMI (WHO/CDC adult classes: 30 obesity, 40 class 3)
    ("39156-5", 45.0, "kg/m2", "obesity", "present", "high"),
    ("39156-5", 40.0, "kg/m2", "obesity", "present", "high"),
    ("39156-5", 39.9, "kg/m2", "obesity", "present", "moderate"),
    ("39156-5", 30.0, "kg/m2", "obesity", "present", "moderate"),
    ("39156-5", 29.9, "kg/m2", "obesity", "absent", None),
    ("39156-5", 22.0, "kg/m2", "obesity", "absent", None),
    # HbA1c (7% target, 9% poor control)
    ("4548-4", 9.0, "%", "hba1c_above_target", "present", "high"),
    ("4548-4", 8.9, "%", "hba1c_above_target", "present", "moderate"),
    ("4548-4", 7.0, "%", "hba1c_above_target", "present", "moderate"),
    ("4548-4", 6.9, "%", "hba1c_above_target", "absent", None),
    ("17856-6", 9.0, "%", "hba1c_above_target", "present", "high"),
    ("17856-6", 6.9, "%", "hba1c_above_target", "absent", None),
    # blood pressure, as separate Observations: above the 130/80 goal (2025 AHA/ACC), stage 1
    # low, stage 2 (140/90) moderate, severe (180/120) high
    ("8480-6", 180, "mm[Hg]", "bp_above_target", "present", "high"),
    ("8480-6", 179, "mm[Hg]", "bp_above_target", "present", "moderate"),
    ("8480-6", 140, "mm[Hg]", "bp_above_target", "present", "moderate"),
    ("8480-6", 139, "mm[Hg]", "bp_above_target", "present", "low"),
    ("8480-6", 130, "mm[Hg]", "bp_above_target", "present", "low"),
    ("8480-6", 129, "mm[Hg]", "bp_above_target", "absent", None),
    ("8462-4", 120, "mm[Hg]", "bp_above_target", "present", "high"),
    ("8462-4", 119, "mm[Hg]", "bp_above_target", "present", "moderate"),
    ("8462-4", 90, "mm[Hg]", "bp_above_target", "present", "moderate"),
    ("8462-4", 89, "mm[Hg]", "bp_above_target", "present", "low"),
    ("8462-4", 80, "mm[Hg]", "bp_above_target", "present", "low"),
    ("8462-4", 79, "mm[Hg]", "bp_above_target", "absent", None),
    # eGFR (KDIGO: 60+ not reduced, 30-59 G3, below 30 G4-G5), each code
    *[
        (code, value, EGFR_UNIT, "egfr_reduced", status, severity)
        for code in ("33914-3", "62238-1", "98979-8", "98980-6")
        for value, status, severity in (
            (90.0, "absent", None),
            (60.0, "absent", None),
            (59.9, "present", "moderate"),
            (30.0, "present", "moderate"),
            (29.9, "present", "high"),
            (12.0, "present", "high"),
        )
    ],
    # LDL cholesterol (NCEP ATP III: 130 borderline high, 160 high, 190 very high), each code
    *[
        (code, value, "mg/dL", "ldl_above_target", status, severity)
        for code in ("18262-6", "13457-7")
        for value, status, severity in (
            (210.0, "present", "high"),
            (190.0, "present", "high"),
            (189.9, "present", "moderate"),
            (160.0, "present", "moderate"),
            (159.9, "present", "low"),
            (130.0, "present", "low"),
            (129.9, "absent", None),
            (95.0, "absent", None),
        )
    ],
]


@pytest.mark.parametrize(("code", "value", "unit", "feature", "status", "severity"), MEASUREMENTS)
def test_measurement_bands(
    definitions: Definitions,
    code: str,
    value: float,
    unit: str,
    feature: str,
    status: str,
    severity: str | None,
) -> None:
    issues: list[tuple[str, str]] = []
    rec = record(observation("o1", code, **quantity(value, unit)))
    finding = profile_of(definitions, rec, issues).finding(feature)
    assert finding is not None, f"{code} should give {feature}"
    assert (finding.status, finding.severity, finding.value, finding.stale) == (
        status,
        severity,
        value,
        False,
    )
    assert finding.effective == date(2026, 9, 1)
    assert finding.sources == ("Observation/o1",)
    assert issues == []


@pytest.mark.parametrize(
    ("systolic", "diastolic", "severity"),
    [
        (180, 70, "high"),
        (150, 70, "moderate"),
        (120, 120, "high"),
        (125, 92, "moderate"),
        (132, 70, "low"),
        (125, 84, "low"),
    ],
)
def test_bp_panel_components_at_cut_points(
    definitions: Definitions, systolic: float, diastolic: float, severity: str
) -> None:
    panel = observation(
        "bp1",
        "85354-9",
        component=[
            {
                "code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
                **quantity(systolic, "mm[Hg]"),
            },
            {
                "code": {"coding": [{"system": LOINC, "code": "8462-4"}]},
                **quantity(diastolic, "mm[Hg]"),
            },
        ],
    )
    finding = finding_of(definitions, record(panel), "bp_above_target")
    assert finding is not None and (finding.status, finding.severity) == ("present", severity)


def test_bp_panel_below_both_cut_points_is_absent(definitions: Definitions) -> None:
    panel = observation(
        "bp1",
        "85354-9",
        component=[
            {"code": {"coding": [{"system": LOINC, "code": "8480-6"}]}, **quantity(129, "mm[Hg]")},
            {"code": {"coding": [{"system": LOINC, "code": "8462-4"}]}, **quantity(79, "mm[Hg]")},
        ],
    )
    finding = finding_of(definitions, record(panel), "bp_above_target")
    assert finding is not None and finding.status == "absent"


@pytest.mark.parametrize(
    ("code", "feature"),
    [
        ("2160-0", "egfr_reduced"),  # serum creatinine is not an eGFR
        ("2093-3", "ldl_above_target"),  # total cholesterol is not LDL
        ("2085-9", "ldl_above_target"),  # HDL cholesterol is not LDL
    ],
)
def test_near_miss_observation_code(definitions: Definitions, code: str, feature: str) -> None:
    rec = record(observation("o1", code, **quantity(250, "mg/dL")))
    assert finding_of(definitions, rec, feature) is None


@pytest.mark.parametrize(
    ("code", "unit", "feature"),
    [
        ("98979-8", "mg/dL", "egfr_reduced"),
        ("98979-8", "mL/s", "egfr_reduced"),  # a clearance, not per body surface, not declared
        ("18262-6", "%", "ldl_above_target"),
        ("13457-7", "mmol/kg", "ldl_above_target"),  # per mass of what? not a concentration
        ("39156-5", "kg", "obesity"),  # a weight, not a BMI
        ("4548-4", "1", "hba1c_above_target"),  # a fraction: UCUM says x 100, nobody declared it
        ("4548-4", "mg/dL", "hba1c_above_target"),
    ],
)
def test_wrong_unit_is_unknown_and_reported(
    definitions: Definitions, code: str, unit: str, feature: str
) -> None:
    issues: list[tuple[str, str]] = []
    rec = record(observation("o1", code, **quantity(45, unit)))
    finding = profile_of(definitions, rec, issues).finding(feature)
    assert finding is not None and finding.status == "unknown"
    # other features reading the same code report their own reading
    issues = [issue for issue in issues if issue[1].endswith(f"; {feature} unknown")]
    assert len(issues) == 1 and issues[0][0] == "Observation/o1"
    assert issues[0][1].startswith(f"field valueQuantity.code: unit {unit!r} cannot be read as ")


# -- readings in other units: declared conversions and mislabels, UCUM ------------------------
# The converted value decides the band and is the finding's value, in the bands' unit.


@pytest.mark.parametrize(
    ("code", "value", "unit", "feature", "converted", "severity"),
    [
        # LDL-C mmol/L x 38.67 = mg/dL: 190 mg/dL is 4.913 mmol/L, 160 is 4.138, 130 is 3.362
        ("13457-7", 4.92, "mmol/L", "ldl_above_target", 190.2564, "high"),
        ("13457-7", 4.91, "mmol/L", "ldl_above_target", 189.8697, "moderate"),
        ("18262-6", 4.14, "mmol/L", "ldl_above_target", 160.0938, "moderate"),
        ("18262-6", 4.13, "mmol/L", "ldl_above_target", 159.7071, "low"),
        ("18262-6", 3.37, "mmol/L", "ldl_above_target", 130.3179, "low"),
        ("18262-6", 3.36, "mmol/L", "ldl_above_target", 129.9312, None),
        # HbA1c NGSP % = 0.09148 x IFCC mmol/mol + 2.152: 9% is 74.86 mmol/mol, 7% is 53.00
        ("4548-4", 75, "mmol/mol", "hba1c_above_target", 9.0130, "high"),
        ("4548-4", 74, "mmol/mol", "hba1c_above_target", 8.92152, "moderate"),
        ("17856-6", 53, "mmol/mol", "hba1c_above_target", 7.00044, "moderate"),
        ("17856-6", 52, "mmol/mol", "hba1c_above_target", 6.90896, None),
    ],
)
def test_declared_conversion_decides_the_band_and_is_reported(
    definitions: Definitions,
    code: str,
    value: float,
    unit: str,
    feature: str,
    converted: float,
    severity: str | None,
) -> None:
    issues: list[tuple[str, str]] = []
    rec = record(observation("o1", code, **quantity(value, unit)))
    finding = profile_of(definitions, rec, issues).finding(feature)
    assert finding is not None
    assert finding.value == pytest.approx(converted, abs=1e-9)
    assert (finding.status, finding.severity) == ("present" if severity else "absent", severity)
    assert finding.unit == {"mmol/L": "mg/dL", "mmol/mol": "%"}[unit]
    issues = [issue for issue in issues if issue[1].endswith(f"({feature})")]
    assert len(issues) == 1 and issues[0][0] == "Observation/o1"
    problem = issues[0][1]
    assert problem.startswith(f"field valueQuantity.code: {unit!r} converted to {finding.unit!r}")
    assert problem.endswith(f"({feature})")


@pytest.mark.parametrize(
    ("value", "status", "severity"),
    [(60.0, "absent", None), (59.0, "present", "moderate"), (29.0, "present", "high")],
)
def test_egfr_in_ml_per_min_is_read_per_body_surface_and_reported(
    definitions: Definitions, value: float, status: str, severity: str | None
) -> None:
    issues: list[tuple[str, str]] = []
    rec = record(observation("o1", "33914-3", **quantity(value, "mL/min")))
    finding = profile_of(definitions, rec, issues).finding("egfr_reduced")
    assert finding is not None
    assert (finding.status, finding.severity, finding.value, finding.unit) == (
        status,
        severity,
        value,
        EGFR_UNIT,
    )
    assert [issue for issue in issues if issue[1].endswith("(egfr_reduced)")] == [
        (
            "Observation/o1",
            f"field valueQuantity.code: 'mL/min' read as {EGFR_UNIT!r} (a declared mislabel); "
            "value kept (egfr_reduced)",
        )
    ]


@pytest.mark.parametrize(
    ("value", "unit", "converted", "severity"),
    [
        (0.5, "mL/s/{1.73_m2}", 30.0, "moderate"),  # the same annotation, another time unit
        (0.49, "mL/s/{1.73_m2}", 29.4, "high"),
    ],
)
def test_egfr_in_another_ucum_unit_is_converted_silently(
    definitions: Definitions, value: float, unit: str, converted: float, severity: str
) -> None:
    issues: list[tuple[str, str]] = []
    rec = record(observation("o1", "98979-8", **quantity(value, unit)))
    finding = profile_of(definitions, rec, issues).finding("egfr_reduced")
    assert finding is not None
    assert (finding.status, finding.severity, finding.value, finding.unit) == (
        "present",
        severity,
        converted,
        EGFR_UNIT,
    )
    assert issues == []


#: UCUM: m[Hg] = 133.3220 kPa, so 1 mm[Hg] = 0.1333220 kPa and 130 mm[Hg] = 17.332 kPa.
KPA_PER_MM_HG = 0.1333220


@pytest.mark.parametrize(("value", "status"), [(17.34, "present"), (17.33, "absent")])
def test_blood_pressure_in_kilopascal_is_converted_by_ucum(
    definitions: Definitions, value: float, status: str
) -> None:
    issues: list[tuple[str, str]] = []
    rec = record(observation("o1", "8480-6", **quantity(value, "kPa")))
    finding = profile_of(definitions, rec, issues).finding("bp_above_target")
    assert finding is not None and finding.unit == "mm[Hg]"
    # within 5 ppm: pint (under ucumvert) defines mm[Hg] as 133.322387 Pa, UCUM writes 133.3220
    assert finding.value == pytest.approx(value / KPA_PER_MM_HG, rel=5e-6)
    assert finding.status == status
    assert issues == []


def test_ucum_code_is_preferred_over_the_free_text_unit(definitions: Definitions) -> None:
    issues: list[tuple[str, str]] = []
    rec = record(
        observation(
            "code-mmol",
            "13457-7",
            when="2026-09-01",
            valueQuantity={"value": 4.92, "unit": "mg/dL", "system": UCUM, "code": "mmol/L"},
        ),
        observation(
            "code-mg",
            "18262-6",
            when="2026-08-01",
            valueQuantity={"value": 4.92, "unit": "mmol/L", "system": UCUM, "code": "mg/dL"},
        ),
    )
    profile = profile_of(definitions, rec, issues)
    ldl = profile.finding("ldl_above_target")
    assert ldl is not None and (ldl.severity, ldl.sources) == ("high", ("Observation/code-mmol",))
    assert [ref for ref, _ in issues] == ["Observation/code-mmol"]
    rec = record(
        observation(
            "code-mg",
            "18262-6",
            valueQuantity={"value": 4.92, "unit": "mmol/L", "system": UCUM, "code": "mg/dL"},
        )
    )
    ldl = profile_of(definitions, rec).finding("ldl_above_target")
    assert ldl is not None and (ldl.status, ldl.value) == ("absent", 4.92)


def test_code_of_another_system_gives_way_to_the_free_text_unit(definitions: Definitions) -> None:
    issues: list[tuple[str, str]] = []
    local = {"value": 4.92, "unit": "mmol/L", "system": "http://example.org/units", "code": "X1"}
    rec = record(observation("o1", "13457-7", valueQuantity=local))
    ldl = profile_of(definitions, rec, issues).finding("ldl_above_target")
    assert ldl is not None and (ldl.severity, ldl.value) == ("high", 190.2564)
    assert issues[0][1].startswith("field valueQuantity.unit: 'mmol/L' converted to 'mg/dL'")


@pytest.mark.parametrize("unit", ["mmHg", "mm Hg", "MM[HG]", "mm[Hg]"])
def test_free_text_blood_pressure_units_are_read_as_mm_hg(
    definitions: Definitions, unit: str
) -> None:
    issues: list[tuple[str, str]] = []
    rec = record(observation("o1", "8480-6", valueQuantity={"value": 182, "unit": unit}))
    finding = profile_of(definitions, rec, issues).finding("bp_above_target")
    assert finding is not None
    assert (finding.severity, finding.value, finding.unit) == ("high", 182, "mm[Hg]")
    assert issues == []


def test_upper_case_ucum_code_is_not_read_without_case(definitions: Definitions) -> None:
    """UCUM codes are case-sensitive: only the free-text unit is compared without case."""
    issues: list[tuple[str, str]] = []
    rec = record(observation("o1", "13457-7", **quantity(200, "MG/DL")))
    finding = profile_of(definitions, rec, issues).finding("ldl_above_target")
    assert finding is not None and finding.status == "unknown"
    assert issues[0][1].startswith("field valueQuantity.code: unit 'MG/DL' cannot be read")


@pytest.mark.parametrize(
    ("code", "unit"),
    [("39156-5", "kg/m2"), ("98979-8", EGFR_UNIT), ("13457-7", "mg/dL")],
)
def test_measurement_older_than_a_year_is_stale(
    definitions: Definitions, code: str, unit: str
) -> None:
    value = {"39156-5": 41, "98979-8": 20, "13457-7": 200}[code]
    rec = record(observation("o1", code, when="2025-06-01", **quantity(value, unit)))
    profile = profile_of(definitions, rec)
    feature = {"39156-5": "obesity", "98979-8": "egfr_reduced", "13457-7": "ldl_above_target"}
    finding = profile.finding(feature[code])
    assert finding is not None
    assert (finding.status, finding.severity, finding.stale) == ("present", "high", True)
    assert profile.medical.need == "none"


def test_obesity_diagnosis_outweighs_a_normal_bmi(definitions: Definitions) -> None:
    rec = record(
        condition("c1", ICD10, "E66.9"),
        observation("o1", "39156-5", **quantity(27.0, "kg/m2")),
    )
    finding = finding_of(definitions, rec, "obesity")
    assert finding is not None
    assert (finding.status, finding.severity, finding.sources) == (
        "present",
        "moderate",
        ("Condition/c1",),
    )


def test_newer_bmi_decides_without_a_diagnosis(definitions: Definitions) -> None:
    rec = record(
        observation("old", "39156-5", when="2026-03-01", **quantity(42.0, "kg/m2")),
        observation("new", "39156-5", when="2026-10-01", **quantity(31.5, "kg/m2")),
    )
    finding = finding_of(definitions, rec, "obesity")
    assert finding is not None
    assert (finding.status, finding.severity, finding.value) == ("present", "moderate", 31.5)
    assert finding.sources == ("Observation/new",)


# -- recent hospital discharge: finished inpatient Encounters, 30 days -------------------------


@pytest.mark.parametrize("code", ["IMP", "ACUTE", "NONAC"])
def test_inpatient_discharge_ten_days_ago_is_present(definitions: Definitions, code: str) -> None:
    profile = profile_of(definitions, record(encounter("e1", code, days_before_as_of(10))))
    finding = profile.finding("recent_hospital_discharge")
    assert finding is not None
    assert (finding.status, finding.severity, finding.stale) == ("present", "moderate", False)
    assert finding.effective == AS_OF - timedelta(days=10)
    assert finding.sources == ("Encounter/e1",)
    assert profile.medical.need == "moderate"


@pytest.mark.parametrize(("days", "stale"), [(30, False), (31, True), (60, True)])
def test_discharge_older_than_thirty_days_is_stale(
    definitions: Definitions, days: int, stale: bool
) -> None:
    profile = profile_of(definitions, record(encounter("e1", "IMP", days_before_as_of(days))))
    finding = profile.finding("recent_hospital_discharge")
    assert finding is not None and finding.status == "present"
    assert finding.stale is stale
    assert profile.medical.need == ("none" if stale else "moderate")


@pytest.mark.parametrize("code", ["AMB", "EMER", "HH", "VR", "OBSENC"])
def test_non_inpatient_encounter_gives_no_finding(definitions: Definitions, code: str) -> None:
    rec = record(encounter("e1", code, days_before_as_of(10)))
    assert finding_of(definitions, rec, "recent_hospital_discharge") is None


def test_inpatient_encounter_still_in_progress_gives_no_finding(definitions: Definitions) -> None:
    rec = record(encounter("e1", "IMP", days_before_as_of(2), status="in-progress"))
    assert finding_of(definitions, rec, "recent_hospital_discharge") is None


def test_inpatient_code_in_another_system_gives_no_finding(definitions: Definitions) -> None:
    rec = record(encounter("e1", "IMP", days_before_as_of(10), system="http://example.org/local"))
    assert finding_of(definitions, rec, "recent_hospital_discharge") is None


def test_latest_discharge_decides(definitions: Definitions) -> None:
    rec = record(
        encounter("old", "IMP", days_before_as_of(90)),
        encounter("new", "ACUTE", days_before_as_of(5)),
    )
    finding = finding_of(definitions, rec, "recent_hospital_discharge")
    assert finding is not None and not finding.stale
    assert finding.sources == ("Encounter/new",)


# -- polypharmacy: the count of distinct active MedicationRequests ------------------------------


@pytest.mark.parametrize(
    ("active", "stopped", "status", "severity"),
    [
        (0, 0, "absent", None),
        (4, 0, "absent", None),
        (5, 0, "present", "moderate"),
        (9, 0, "present", "moderate"),
        (10, 0, "present", "high"),
        (12, 0, "present", "high"),
        (4, 6, "absent", None),  # stopped ones do not count
        (5, 3, "present", "moderate"),
        (9, 4, "present", "moderate"),
    ],
)
def test_polypharmacy_counts_active_medications(
    definitions: Definitions, active: int, stopped: int, status: str, severity: str | None
) -> None:
    rec = record(*medications(active, stopped))
    profile = profile_of(definitions, rec)
    finding = profile.finding("polypharmacy")
    if active == 0 and stopped == 0:
        assert finding is None  # no MedicationRequest at all: medications unknown, nothing said
        return
    assert finding is not None
    assert (finding.status, finding.severity, finding.value) == (status, severity, float(active))
    assert finding.stale is False
    assert profile.medical.need == (severity or "none")


def test_completed_and_cancelled_requests_do_not_count(definitions: Definitions) -> None:
    rec = record(
        *medications(4),
        medication_request("x1", "drug-x1", status="completed"),
        medication_request("x2", "drug-x2", status="cancelled"),
        medication_request("x3", "drug-x3", status="on-hold"),
    )
    finding = finding_of(definitions, rec, "polypharmacy")
    assert finding is not None and (finding.status, finding.value) == ("absent", 4.0)


# -- the dimension as a whole ---------------------------------------------------------------------


def test_three_moderate_medical_findings_escalate_to_high(definitions: Definitions) -> None:
    rec = record(
        condition("c1", ICD10, "I50.9"),
        condition("c2", ICD10, "J44.9"),
        observation("o1", "98979-8", **quantity(45, EGFR_UNIT)),
    )
    profile = profile_of(definitions, rec)
    assert {f.feature for f in profile.medical.current_present()} == {
        "heart_failure",
        "copd",
        "egfr_reduced",
    }
    assert profile.medical.need == "high"
