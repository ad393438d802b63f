"""How resources are read into findings, on a small mapping written here (not profiles/).

Covers the reading paths independent of the bundled mappings: category rules, questionnaire
items, panel members, interpretations, encounters, medication counts, assets and patient facts.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
import yaml
from builders import (
    AS_OF,
    LOINC,
    SNOMED,
    answer,
    code_index,
    condition,
    observation,
    patient,
    record,
)

from fhir_tailor.profile import ProfileRules, bears_on, build_profile
from fhir_tailor.profile_model import Profile
from fhir_tailor.questionnaire import item_code
from fhir_tailor.record import PatientRecord
from fhir_tailor.shape import has_shape_problems, shape_problems

SDOHCC = "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes"
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"

MAPPING = f"""
version: "1"
changelog: ["1: test"]
dimension: social
features:
  - id: hungry
    label: Hungry
    current_for_days: 365
    rules:
      - id: hungry.item
        resource: Observation
        codes: [{{system: "{LOINC}", code: 88122-7}}]
        answers:
          - {{system: "{LOINC}", code: LA28397-0, status: present, severity: moderate}}
          - {{system: "{LOINC}", code: LA28398-8, status: absent}}
      - id: hungry.category
        resource: Condition
        match: category
        codes: [{{system: "{SDOHCC}", code: food-insecurity}}]
        severity: high
  - id: scored
    label: Scored
    rules:
      - id: scored.total
        resource: Observation
        codes: [{{system: "{LOINC}", code: 44261-6}}]
        value:
          bands:
            - {{min: 10, status: present, severity: moderate}}
            - {{status: absent}}
  - id: flagged
    label: Flagged
    rules:
      - id: flagged.obs
        resource: Observation
        codes: [{{system: "{SNOMED}", code: "105529008"}}]
        severity: low
  - id: discharged
    label: Discharged
    current_for_days: 30
    rules:
      - id: discharged.inpatient
        resource: Encounter
        codes: [{{system: "{ACT}", code: IMP}}]
        severity: moderate
  - id: many_meds
    label: Many medications
    rules:
      - id: many_meds.count
        resource: MedicationRequest
        value:
          bands:
            - {{min: 5, status: present, severity: moderate}}
            - {{status: absent}}
  - id: helper
    label: Has a helper
    asset: true
    rules:
      - id: helper.obs
        resource: Observation
        codes: [{{system: "{SNOMED}", code: "999999"}}]
"""


@pytest.fixture(scope="module")
def rules() -> ProfileRules:
    index = code_index(yaml.safe_load(MAPPING))
    return ProfileRules(index, {}, ())


def profile(rules: ProfileRules, *resources: dict[str, Any], **facts: Any) -> Profile:
    return build_profile(record(*resources, **facts), rules, AS_OF)


def status(prof: Profile, feature: str) -> tuple[str, str | None] | None:
    finding = prof.finding(feature)
    return None if finding is None else (finding.status, finding.severity)


def questionnaire(items: list[dict[str, Any]], status: str = "completed") -> dict[str, Any]:
    return {
        "resourceType": "QuestionnaireResponse",
        "id": "qr1",
        "status": status,
        "subject": {"reference": "Patient/p1"},
        "authored": "2026-10-01T10:00:00Z",
        "item": items,
    }


def coded(code: str) -> dict[str, Any]:
    return {"valueCoding": {"system": LOINC, "code": code}}


def test_condition_matched_by_category_not_by_code(rules: ProfileRules) -> None:
    concern = condition(
        "c1",
        SNOMED,
        "0000",
        category=[{"coding": [{"system": SDOHCC, "code": "food-insecurity"}]}],
    )
    assert status(profile(rules, concern), "hungry") == ("present", "high")
    # The category code used as a diagnosis code means nothing.
    assert profile(rules, condition("c2", SDOHCC, "food-insecurity")).finding("hungry") is None


@pytest.mark.parametrize(
    "link_id", ["/88122-7", "88122-7", "/93043-8/88122-7", "/88121-9/88122-7/"]
)
def test_questionnaire_item_named_by_loinc_link_id(rules: ProfileRules, link_id: str) -> None:
    qr = questionnaire([{"linkId": link_id, "answer": [coded("LA28397-0")]}])
    prof = profile(rules, qr)
    finding = prof.finding("hungry")
    assert finding is not None
    assert (finding.status, finding.severity, finding.sources) == (
        "present",
        "moderate",
        ("QuestionnaireResponse/qr1",),
    )
    assert finding.effective == date(2026, 10, 1)


def test_questionnaire_nested_items_definition_and_numbers(rules: ProfileRules) -> None:
    qr = questionnaire(
        [
            {
                "linkId": "panel",
                "item": [
                    {
                        "linkId": "q1",
                        "definition": "http://loinc.org/rdf#88122-7",
                        "answer": [coded("LA28398-8")],
                    },
                    {"linkId": "/44261-6", "answer": [{"valueInteger": 12}]},
                ],
            }
        ]
    )
    prof = profile(rules, qr)
    assert status(prof, "hungry") == ("absent", None)
    assert status(prof, "scored") == ("present", "moderate")


def test_questionnaire_in_progress_is_not_read(rules: ProfileRules) -> None:
    qr = questionnaire([{"linkId": "/88122-7", "answer": [coded("LA28397-0")]}], "in-progress")
    assert profile(rules, qr).finding("hungry") is None


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ({"linkId": "1.2"}, None),
        ({"linkId": "/q/88122-7"}, "88122-7"),
        ({"linkId": "x", "definition": "http://loinc.org/88123-5"}, "88123-5"),
        ({"linkId": "LA28397-0"}, None),
    ],
)
def test_item_code(item: dict[str, Any], expected: str | None) -> None:
    assert item_code(item) == expected


def test_newer_questionnaire_overrides_older_observation(rules: ProfileRules) -> None:
    old = observation("o1", "88122-7", when="2026-03-01", **answer("LA28397-0"))
    qr = questionnaire([{"linkId": "/88122-7", "answer": [coded("LA28398-8")]}])
    assert status(profile(rules, old, qr), "hungry") == ("absent", None)


def test_panel_member_without_date_takes_the_panel_date(rules: ProfileRules) -> None:
    member = observation("m1", "88122-7", **answer("LA28397-0"))
    del member["effectiveDateTime"]
    panel = observation("panel", "88121-9", hasMember=[{"reference": "Observation/m1"}])
    finding = profile(rules, panel, member).finding("hungry")
    assert finding is not None and finding.effective == date(2026, 9, 1)
    assert not finding.stale
    alone = profile(rules, member).finding("hungry")
    assert alone is not None and alone.stale  # no date at all: cannot be current


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({}, ("present", "low")),
        ({"valueBoolean": False}, ("absent", None)),
        (
            {"interpretation": [{"coding": [{"system": INTERPRETATION, "code": "NEG"}]}]},
            ("absent", None),
        ),
        (
            {"interpretation": [{"coding": [{"system": INTERPRETATION, "code": "POS"}]}]},
            ("present", "low"),
        ),
    ],
)
def test_presence_observation_read_with_value_and_interpretation(
    rules: ProfileRules, extra: dict[str, Any], expected: tuple[str, str | None]
) -> None:
    obs = observation("o1", "105529008", **extra)
    obs["code"]["coding"][0]["system"] = SNOMED
    assert status(profile(rules, obs), "flagged") == expected


def encounter(eid: str, code: str, end: str, state: str = "finished") -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "id": eid,
        "status": state,
        "class": {"system": ACT, "code": code},
        "subject": {"reference": "Patient/p1"},
        "period": {"start": "2026-10-20", "end": end},
    }


def test_recent_inpatient_discharge_is_current_then_stale(rules: ProfileRules) -> None:
    recent = profile(rules, encounter("e1", "IMP", "2026-11-05")).finding("discharged")
    assert recent is not None and recent.current_present
    assert recent.effective == date(2026, 11, 5)
    old = profile(rules, encounter("e1", "IMP", "2026-09-01")).finding("discharged")
    assert old is not None and old.stale
    assert profile(rules, encounter("e1", "AMB", "2026-11-05")).finding("discharged") is None
    unfinished = encounter("e1", "IMP", "2026-11-05", state="in-progress")
    assert profile(rules, unfinished).finding("discharged") is None


def medication(mid: str, code: str, state: str = "active") -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": mid,
        "status": state,
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "authoredOn": "2026-06-01",
        "medicationCodeableConcept": {
            "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": code}]
        },
    }


def test_medication_count_counts_distinct_active_medicines(rules: ProfileRules) -> None:
    four = [medication(f"m{n}", str(n)) for n in range(4)]
    assert status(profile(rules, *four), "many_meds") == ("absent", None)
    duplicate = medication("m9", "0")  # same medicine ordered twice
    stopped = medication("m8", "8", state="stopped")
    assert status(profile(rules, *four, duplicate, stopped), "many_meds") == ("absent", None)
    five = profile(rules, *four, medication("m4", "4")).finding("many_meds")
    assert five is not None and (five.status, five.value) == ("present", 5.0)
    assert len(five.sources) == 5
    assert profile(rules).finding("many_meds") is None  # no medication data: nothing said


def test_asset_is_present_without_severity_and_no_need(rules: ProfileRules) -> None:
    obs = observation("o1", "999999")
    obs["code"]["coding"][0]["system"] = SNOMED
    prof = profile(rules, obs)
    assert status(prof, "helper") == ("present", None)
    assert prof.social.need == "none"


def test_asset_feature_rejects_severities() -> None:
    bad = yaml.safe_load(MAPPING)
    bad["features"][-1]["rules"][0]["severity"] = "low"
    with pytest.raises(ValueError, match="asset feature takes no severities"):
        code_index(bad)


@pytest.mark.parametrize(
    ("telecom", "expected"),
    [
        ([{"system": "phone", "rank": 2}, {"system": "sms", "rank": 1}], "sms"),
        ([{"system": "email", "rank": 1}], "email"),
        ([{"system": "phone"}, {"system": "email"}], None),
        ([{"system": "phone", "rank": "1"}], None),
    ],
)
def test_contact_preference_from_ranked_telecom(
    rules: ProfileRules, telecom: list[dict[str, Any]], expected: str | None
) -> None:
    rec = PatientRecord(patient(telecom=telecom), ())
    assert build_profile(rec, rules, AS_OF).facts.contact_preference == expected


def test_every_answer_of_a_multi_select_item_is_read(rules: ProfileRules) -> None:
    qr = questionnaire([{"linkId": "/88122-7", "answer": [coded("LA28398-8"), coded("LA28397-0")]}])
    assert status(profile(rules, qr), "hungry") == ("present", "moderate")


def test_a_grouping_panel_without_value_is_not_reported(rules: ProfileRules) -> None:
    issues: list[tuple[str, str]] = []
    member = observation("m1", "44261-6", valueInteger=3)
    panel = observation("panel", "44261-6", hasMember=[{"reference": "Observation/m1"}])
    rec = record(panel, member)
    prof = build_profile(rec, rules, AS_OF, lambda ref, problem: issues.append((ref, problem)))
    assert status(prof, "scored") == ("absent", None)
    assert issues == []
    del panel["hasMember"]
    build_profile(rec, rules, AS_OF, lambda ref, problem: issues.append((ref, problem)))
    assert [ref for ref, _ in issues] == ["Observation/panel"]


def test_observation_category_rule_is_read_only_where_one_exists(rules: ProfileRules) -> None:
    """Reading Observation categories is skipped unless some rule matches them; a mapping that
    has such a rule still finds them."""
    assert "Observation" not in rules.index.category_types
    mapping = yaml.safe_load(MAPPING)
    mapping["features"][2]["rules"].append(
        {
            "id": "flagged.survey",
            "resource": "Observation",
            "match": "category",
            "codes": [{"system": SURVEY, "code": "survey"}],
            "severity": "moderate",
        }
    )
    index = code_index(mapping)
    assert index.category_types == {"Condition", "Observation"}
    surveyed = observation(
        "o1", "1-8", category=[{"coding": [{"system": SURVEY, "code": "survey"}]}]
    )
    prof = build_profile(record(surveyed), ProfileRules(index, {}, ()), AS_OF)
    assert status(prof, "flagged") == ("present", "moderate")
    assert profile(rules, surveyed).finding("flagged") is None


SURVEY = "http://terminology.hl7.org/CodeSystem/observation-category"


@pytest.mark.parametrize(
    ("resource", "problems"),
    [
        (observation("o1", "1-8"), []),
        (
            observation(
                "o1", "1-8", status=5, issued="2026-13-45", category={}, interpretation="H"
            ),
            [
                "field status: not a code (a string)",
                "field issued: not a FHIR date",
                "field category: not a list",
                "field interpretation: not a list",
            ],
        ),
        (
            {**observation("o1", "1-8"), "code": {"coding": [{"system": LOINC, "code": " "}]}},
            ["field code: missing or without a usable coding (system and code strings)"],
        ),
        (
            {"resourceType": "Encounter", "id": "e1", "status": "finished", "type": {}},
            ["field type: not a list"],
        ),
        ({"resourceType": "Condition", "id": "c1", "type": {}, "item": 1}, []),
        (
            {"resourceType": "QuestionnaireResponse", "id": "q1", "authored": 7, "item": {}},
            ["field authored: not a FHIR date", "field item: not a list"],
        ),
        (patient(gender="woman"), ["field gender: not male, female, other or unknown"]),
        (patient(), []),
    ],
)
def test_each_misshapen_element_is_named_in_order(
    resource: dict[str, Any], problems: list[str]
) -> None:
    """Every element read with the wrong kind of JSON is named, in the same order whatever else
    the resource holds, and a sound resource (most of a record) is named for nothing."""
    assert list(shape_problems(resource)) == problems
    assert list(shape_problems(dict(reversed(resource.items())))) == problems
    assert has_shape_problems(resource) is bool(problems)


TEMPERATURE = {"valueQuantity": {"value": 37.1, "unit": "Cel"}}
HUNGRY = {"system": LOINC, "code": "88122-7"}


@pytest.mark.parametrize(
    ("resource", "bears"),
    [
        (observation("o1", "8310-5", **TEMPERATURE), False),  # no rule reads body temperature
        (observation("o1", "8310-5", status="entered-in-error", **TEMPERATURE), False),
        (observation("o1", "88122-7", status="entered-in-error", **answer("LA28397-0")), False),
        (observation("o1", "88122-7", **answer("LA28397-0")), True),  # a rule reads it
        (observation("o1", "88122-7", **answer("LA99999-9")), True),  # unread: reported
        (observation("o1", "8310-5", status=5, **TEMPERATURE), True),  # a shape to report
        ({**observation("o1", "8310-5"), "code": {"text": "temp"}}, True),  # no coding: said
        (observation("o1", "8310-5", hasMember=[{"reference": "Observation/m1"}]), True),
        (
            observation("o1", "8310-5", component=[{"code": {"coding": [HUNGRY]}}]),
            True,  # a component a rule reads
        ),
        (condition("c1", SNOMED, "0000"), True),  # Conditions are read whatever their code
        ({"resourceType": "MedicationRequest", "id": "m1", "status": "active"}, True),
    ],
)
def test_what_bears_on_no_profile_changes_nothing_when_left_out(
    rules: ProfileRules, resource: dict[str, Any], bears: bool
) -> None:
    """``bears_on`` says no only of what a profile does not read: left out of the record, the
    profile and its data issues are the same (a member's panel comes with it)."""
    assert bears_on(resource, rules.index) is bears
    member = observation("m1", "88122-7", **answer("LA28397-0"))
    del member["effectiveDateTime"]

    def built(*resources: dict[str, Any]) -> tuple[Profile, list[tuple[str, str]]]:
        issues: list[tuple[str, str]] = []
        made = build_profile(
            record(*resources), rules, AS_OF, lambda ref, problem: issues.append((ref, problem))
        )
        return made, issues

    if not bears:
        assert built(member, resource) == built(member)
        assert built(resource, member) == built(member)
