"""Finding statements: what was found, in words a clinician reads without decoding a status.

A finding's fields are for programs; side by side they read as double negatives ("HbA1c below
7% | absent | 5.4 %"). The statement says the value or answer read and what it means. The
expected sentences below are written out by hand from the shipped definitions' words and the
cut points they cite (ADA 2025 HbA1c below 7%, adult BMI 30, BP 130/80, KDIGO eGFR 60): a
reading on each side of a threshold.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from builders import (
    AS_OF,
    ICD10,
    LOINC,
    answer,
    code_index,
    condition,
    finding_of,
    observation,
    patient,
    plan_of,
    profile_of,
    quantity,
    record,
)
from click.testing import CliRunner

from fhir_tailor.cli import main
from fhir_tailor.definitions import Definitions
from fhir_tailor.mapping import FeatureFile
from fhir_tailor.profile import ProfileRules, build_profile
from fhir_tailor.terminology.units import display
from fhir_tailor.web.cds_hooks import CarePlanCards
from fhir_tailor.web.page import PageView, plan_page

EGFR = "mL/min/{1.73_m2}"


@pytest.mark.parametrize(
    ("feature", "resource", "said"),
    [
        ("hba1c_above_target", observation("o1", "4548-4", **quantity(5.4, "%")),
         "HbA1c 5.4%: at target (below 7%)"),
        ("hba1c_above_target", observation("o1", "4548-4", **quantity(7, "%")),
         "HbA1c 7%: above target (7-8.9%)"),
        ("hba1c_above_target", observation("o1", "4548-4", **quantity(9.2, "%")),
         "HbA1c 9.2%: well above target (9% or above)"),
        ("obesity", observation("o1", "39156-5", **quantity(31.2, "kg/m2")),
         "BMI 31.2 kg/m2: obesity class 1-2 (30-39.9)"),
        ("obesity", observation("o1", "39156-5", **quantity(29.9, "kg/m2")),
         "BMI 29.9 kg/m2: no obesity (below 30)"),
        ("bp_above_target", observation("o1", "8480-6", **quantity(128, "mm[Hg]")),
         "Systolic blood pressure 128 mmHg: at goal (below 130)"),
        ("bp_above_target", observation("o1", "8480-6", **quantity(130, "mm[Hg]")),
         "Systolic blood pressure 130 mmHg: above target, stage 1 range (130-139)"),
        ("egfr_reduced", observation("o1", "98979-8", **quantity(61, EGFR)),
         "eGFR 61 mL/min/1.73 m2: not in the reduced range (60 or above)"),
        ("egfr_reduced", observation("o1", "98979-8", **quantity(59, EGFR)),
         "eGFR 59 mL/min/1.73 m2: reduced, KDIGO G3a-G3b (30-59)"),
        ("food_insecurity", observation("o1", "88122-7", **answer("LA28398-8")),
         'Hunger Vital Sign, worried food would run out "Never true": No food insecurity'),
        ("food_insecurity", observation("o1", "88122-7", **answer("LA28397-0")),
         'Hunger Vital Sign, worried food would run out "Often true": Food insecurity'),
        ("hypertension", condition("c1", ICD10, "I10"), "Hypertension: diagnosis on record"),
    ],
)  # fmt: skip
def test_a_finding_says_what_was_found(
    definitions: Definitions, feature: str, resource: dict[str, Any], said: str
) -> None:
    found = finding_of(definitions, feature, resource)
    assert found is not None
    assert found.statement == said
    # the status is the program's word: a statement never needs it to be read
    assert not re.search(r"\b(absent|present)\b", found.statement)


def test_an_unreadable_result_says_so(definitions: Definitions) -> None:
    text = observation("o1", "4548-4", valueString="see report")
    found = finding_of(definitions, "hba1c_above_target", text)
    assert found is not None and found.status == "unknown"
    assert found.statement == "HbA1c: result could not be read"


def test_a_reading_for_other_ages_says_whom_the_rule_reads(definitions: Definitions) -> None:
    # a year old: neither the adult cut points (from 20) nor the child ones (2 to 19) apply
    toddler = record(observation("o1", "39156-5", **quantity(18, "kg/m2")), birthDate="2025-09-01")
    found = profile_of(definitions, toddler).finding("obesity")
    assert found is not None and found.status == "unknown"
    assert found.statement == (
        "BMI 18 kg/m2: not assessed (read for ages 2 to 19 or ages 20 and over)"
    )


def test_an_unconfirmed_measurement_says_it_does_not_count_yet(definitions: Definitions) -> None:
    once = observation("o1", "98979-8", **quantity(45, EGFR))
    found = finding_of(definitions, "ckd", once)
    assert found is not None and found.status == "unknown"
    assert found.statement.startswith(
        "eGFR 45 mL/min/1.73 m2: chronic kidney disease range, KDIGO G3a-G3b (30-59), "
        "not confirmed (no earlier result in this range at least 90 days before"
    )


def test_every_shipped_reading_is_worded(definitions: Definitions) -> None:
    """What is optional in the format (a folder written before statements still loads) is
    required of the shipped definitions: a measure for each value and answer rule, a meaning
    for each band, an absent label where an answer or a negative observation reads absent."""
    unworded = []
    for feature, _ in definitions.rules.index.features.values():
        if any(rule.reads_absent for rule in feature.rules) and feature.absent_label is None:
            unworded.append(f"{feature.id}: absent_label")
        for rule in feature.rules:
            if (rule.value or rule.answers) and rule.measure is None:
                unworded.append(f"{rule.id}: measure")
            bands = rule.value.bands if rule.value else []
            unworded += [
                f"{rule.id} band {n}: meaning" for n, b in enumerate(bands) if not b.meaning
            ]
    assert unworded == []


def test_a_folder_without_the_words_still_says_what_was_found() -> None:
    """Definitions written before statements: the matched code (its display, here none) names
    what was read, a band's label says what it means, an absent answer says the feature was not
    found."""
    index = code_index(
        {
            "version": "1",
            "changelog": ["1"],
            "dimension": "medical",
            "features": [
                {
                    "id": "glucose_high",
                    "label": "Glucose high",
                    "rules": [
                        {
                            "id": "glucose_high.value",
                            "resource": "Observation",
                            "codes": [{"system": LOINC, "code": "2345-7"}],
                            "value": {
                                "unit": "mg/dL",
                                "bands": [
                                    {"min": 126, "status": "present", "severity": "moderate"},
                                    {"status": "absent", "label": "Glucose below 126 mg/dL"},
                                ],
                            },
                        },
                        {
                            "id": "glucose_high.answer",
                            "resource": "Observation",
                            "codes": [{"system": LOINC, "code": "99999-9"}],
                            "answers": [{"code": "LA32-8", "status": "absent"}],
                        },
                    ],
                }
            ],
        }
    )
    rules = ProfileRules(index, {}, ())

    def said(resource: dict[str, Any]) -> str | None:
        profile = build_profile(record(resource), rules, AS_OF)
        found = profile.finding("glucose_high")
        return found.statement if found else None

    low = said(observation("o1", "2345-7", **quantity(90, "mg/dL")))
    assert low == "2345-7 90 mg/dL: Glucose below 126 mg/dL"
    assert said(observation("o1", "2345-7", **quantity(130, "mg/dL"))) == (
        "2345-7 130 mg/dL: Glucose high"
    )
    assert said(observation("o1", "99999-9", **answer("LA32-8"))) == (
        '99999-9 "LA32-8": Glucose high not found'
    )


def test_words_that_are_never_said_are_refused() -> None:
    feature: dict[str, Any] = {
        "id": "x",
        "label": "X",
        "absent_label": "No X",
        "rules": [
            {"id": "x.c", "resource": "Condition", "valuesets": ["http://x/vs"], "severity": "low"}
        ],
    }
    file = {"version": "1", "changelog": ["1"], "dimension": "medical", "features": [feature]}
    with pytest.raises(ValueError, match="absent_label"):
        FeatureFile.model_validate(file)
    feature.pop("absent_label")
    feature["rules"][0]["measure"] = "X test"
    with pytest.raises(ValueError, match="measure"):
        FeatureFile.model_validate(file)


@pytest.mark.parametrize(
    ("ucum", "shown"),
    [("mm[Hg]", "mmHg"), ("mL/min/{1.73_m2}", "mL/min/1.73 m2"), ("kg/m2", "kg/m2"), ("%", "%")],
)
def test_units_are_shown_as_people_write_them(ucum: str, shown: str) -> None:
    assert display(ucum) == shown


# -- where clinicians read findings ----------------------------------------------------------


def test_profile_json_adds_the_statement_and_keeps_every_field() -> None:
    result = CliRunner().invoke(
        main, ["--as-of", "2026-11-15", "profile", "--patient", "ft-01", "--json"]
    )
    assert result.exit_code == 0, result.output
    findings = [
        f for name in ("medical", "social") for f in json.loads(result.stdout)[name]["findings"]
    ]
    assert findings
    for found in findings:
        assert {"feature", "label", "status", "severity", "value", "unit", "answer", "effective",
                "stale", "code", "rule", "sources", "statement"} <= set(found)  # fmt: skip
        assert found["statement"]


def hba1c_profile(definitions: Definitions) -> Any:
    rec = record(
        condition("c1", ICD10, "E11.9"),
        observation("o1", "4548-4", **quantity(5.4, "%")),
        observation("o2", "8480-6", when="2024-01-10", **quantity(150, "mm[Hg]")),
    )
    return profile_of(definitions, rec)


def test_the_smart_page_shows_statements_not_label_and_status(definitions: Definitions) -> None:
    profile = hba1c_profile(definitions)
    page = plan_page(
        PageView(
            patient=patient(),
            profile=profile,
            dimension_labels={},
            segments=[],
            plan=None,
            fhir_base="https://fhir.example.org",
            csrf="t",
        )
    )
    assert '<th scope="row">HbA1c 5.4%: at target (below 7%)</th>' in page
    assert "HbA1c below 7%" not in page
    assert '<th scope="col">Status</th>' not in page and "<td>absent</td>" not in page
    # a finding too old to count says so beside what it found
    assert "Systolic blood pressure 150 mmHg: above target, stage 2 range (140-179) " in page
    assert "(out of date, not counted)" in page


def test_the_cds_card_lists_needs_as_statements(definitions: Definitions) -> None:
    rec = record(condition("c1", ICD10, "E11.9"), observation("o1", "4548-4", **quantity(8.1, "%")))
    profile, plan = profile_of(definitions, rec), plan_of(definitions, rec)
    cards = CarePlanCards(definitions, "https://app.example.org/launch")
    detail = cards.detail(profile, plan)
    assert "- **HbA1c 8.1%: above target (7-8.9%)**: Medical, moderate" in detail


def test_the_profile_table_prints_statements() -> None:
    result = CliRunner().invoke(main, ["--as-of", "2026-11-15", "profile", "--patient", "ft-01"])
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()[1:]
    assert "status" not in header.split() and header.endswith("finding [source]")
    hba1c = next(row for row in rows if row.split()[2:3] == ["hba1c_above_target"])
    assert hba1c.endswith("HbA1c 9.4%: well above target (9% or above) [Observation/ft-01-o1]")
