"""FHIR output: valid R4 (strict R4B models), US Core shape, idempotence markers."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, date, datetime
from html import unescape

import pytest
from builders import AS_OF, ICD10, SNOMED, answer, condition, observation, quantity, record
from fhir.resources.R4B.careplan import CarePlan
from fhir.resources.R4B.goal import Goal
from fhir.resources.R4B.provenance import Provenance

from fhir_tailor.definitions import Definitions
from fhir_tailor.pipeline import profile_and_plan
from fhir_tailor.plan import Plan
from fhir_tailor.resources import (
    CAREPLAN_ID_SYSTEM,
    GENERATED_TAG,
    PlanResources,
    content_digest,
    create_transaction,
    numbers_as_floats,
    to_fhir,
)
from fhir_tailor.sinks.server import foreign_change
from fhir_tailor.validation import InvalidOutputError, validate

RECORDED = datetime(2026, 11, 15, 12, 0, tzinfo=UTC)


@pytest.fixture
def resources(definitions: Definitions) -> PlanResources:
    rec = record(
        condition("c1", SNOMED, "44054006"),
        condition("c2", ICD10, "Z59.82"),
        observation("o1", "4548-4", **quantity(9.6, "%")),
        observation("o2", "88122-7", when="2026-10-01", **answer("LA28397-0")),
    )
    _, plan = profile_and_plan(rec, definitions, AS_OF)
    assert plan is not None
    return to_fhir(plan, RECORDED)


def test_careplan_is_valid_us_core_shaped(
    resources: PlanResources, definitions: Definitions
) -> None:
    careplan = resources.careplan.resource
    CarePlan.model_validate(careplan)
    assert careplan["status"] == "draft" and careplan["intent"] == "plan"
    assert careplan["category"][0]["coding"][0] == {
        "system": "http://hl7.org/fhir/us/core/CodeSystem/careplan-category",
        "code": "assess-plan",
    }
    assert careplan["subject"] == {"reference": "Patient/p1"}
    assert careplan["text"]["status"] == "generated"
    assert careplan["text"]["div"].startswith('<div xmlns="http://www.w3.org/1999/xhtml">')
    assert {"reference": "Condition/c1"} in careplan["addresses"]
    assert {"reference": "Observation/o1"} in careplan["supportingInfo"]
    assert [g["reference"] for g in careplan["goal"]] == [g.full_url for g in resources.goals]
    diabetes = next(m for m in definitions.catalog.modules if m.id == "diabetes-outpatient")
    assert (
        f"https://fhir-tailor.dev/fhir/PlanDefinition/diabetes-outpatient|{diabetes.version}"
        in careplan["instantiatesCanonical"]
    )
    version = definitions.catalog.info.version
    assert careplan["identifier"][0] == {
        "system": CAREPLAN_ID_SYSTEM,
        "value": f"p1/fhir-tailor-core/{version}",
    }
    assert GENERATED_TAG in careplan["meta"]["tag"]


def test_every_activity_carries_its_reason(resources: PlanResources) -> None:
    details = [a["detail"] for a in resources.careplan.resource["activity"] if "detail" in a]
    for detail in details:
        assert detail["status"] == "not-started" and detail["description"]
        assert detail["reasonCode"], detail
    for referral in resources.service_requests:  # referrals carry theirs on the ServiceRequest
        assert referral.resource["note"] and referral.resource["reasonReference"]
    telehealth = next(d for d in details if "telehealth" in d["description"])
    assert any("telehealth-follow-up" in r["text"] for r in telehealth["reasonCode"])
    assert {"reference": "Condition/c2"} in telehealth["reasonReference"]


def test_goals_and_provenance_are_valid(resources: PlanResources) -> None:
    assert resources.goals
    for goal in resources.goals:
        Goal.model_validate(goal.resource)
        assert goal.resource["lifecycleStatus"] == "proposed"
        due = goal.resource["target"][0].get("dueDate")
        assert due is None or date.fromisoformat(due) > AS_OF
    hba1c = next(
        g.resource for g in resources.goals if "HbA1c" in g.resource["description"]["text"]
    )
    assert hba1c["target"][0]["detailQuantity"] == {
        "value": 7.0,
        "unit": "%",
        "system": "http://unitsofmeasure.org",
        "code": "%",
        "comparator": "<",
    }
    assert date.fromisoformat(hba1c["target"][0]["dueDate"]) > AS_OF
    provenance = resources.provenance.resource
    Provenance.model_validate(provenance)
    targets = [t["reference"] for t in provenance["target"]]
    assert targets == [resources.careplan.full_url, *(p.full_url for p in resources.parts)]
    assert provenance["agent"][0]["who"]["display"].startswith("fhir-tailor ")
    entities = {e["what"]["reference"] for e in provenance["entity"]}
    assert {"Patient/p1", "Condition/c1", "Observation/o1"} <= entities


def test_transaction_is_conditional_on_identifier(
    resources: PlanResources, definitions: Definitions
) -> None:
    bundle = create_transaction(resources)
    first = bundle["entry"][0]
    version = definitions.catalog.info.version
    assert first["request"] == {
        "method": "POST",
        "url": "CarePlan",
        "ifNoneExist": f"identifier={CAREPLAN_ID_SYSTEM}|p1/fhir-tailor-core/{version}",
    }
    assert all(e["fullUrl"].startswith("urn:uuid:") for e in bundle["entry"])


def test_output_is_deterministic(definitions: Definitions, resources: PlanResources) -> None:
    rec = record(
        condition("c1", SNOMED, "44054006"),
        condition("c2", ICD10, "Z59.82"),
        observation("o1", "4548-4", **quantity(9.6, "%")),
        observation("o2", "88122-7", when="2026-10-01", **answer("LA28397-0")),
    )
    _, plan = profile_and_plan(rec, definitions, AS_OF)
    assert plan is not None
    again = to_fhir(plan, RECORDED)
    assert create_transaction(again) == create_transaction(resources)


def test_our_untouched_resource_is_ours(resources: PlanResources) -> None:
    stored = {
        **resources.careplan.resource,
        "id": "42",
        "meta": {"versionId": "1", "tag": [GENERATED_TAG]},
    }
    assert foreign_change(stored) is None


def test_clinician_edits_are_detected(resources: PlanResources) -> None:
    stored = {**resources.careplan.resource, "id": "42"}
    edited_activity = [dict(a) for a in stored["activity"]]
    edited_activity[0] = {
        "detail": {**edited_activity[0]["detail"], "description": "Changed by Dr. X"}
    }
    assert "edited" in (foreign_change({**stored, "activity": edited_activity}) or "")
    assert "no longer 'draft'" in (foreign_change({**stored, "status": "active"}) or "")
    assert "no fhir-tailor tag" in (foreign_change({**stored, "meta": {}}) or "")


def test_digest_ignores_server_managed_fields(resources: PlanResources) -> None:
    stored = {
        **resources.careplan.resource,
        "id": "42",
        "meta": {"versionId": "7", "lastUpdated": "2026-11-15"},
    }
    assert content_digest(stored) == content_digest(resources.careplan.resource)


def test_invalid_output_is_a_loud_error() -> None:
    with pytest.raises(InvalidOutputError, match="CarePlan"):
        validate(
            {"resourceType": "CarePlan", "intent": "plan", "subject": {"reference": "Patient/p1"}}
        )


def test_digest_compares_numbers_by_value(resources: PlanResources) -> None:
    goal = next(
        g.resource
        for g in resources.goals
        if g.resource["identifier"][0]["value"].endswith("diabetes-outpatient.hba1c-below-7")
    )
    text = json.dumps(goal)
    as_stored = json.loads(text.replace('"value": 7.0', '"value": 7'))
    assert json.dumps(as_stored) != text  # the server wrote the decimal differently
    assert foreign_change({**as_stored, "meta": {"tag": [GENERATED_TAG]}}) is None


def test_numbers_are_digested_as_floats_and_nothing_else_changes() -> None:
    content = {"a": ["x", 7, True, None, {"b": 8.1, "c": [0, -2]}], "d": False}
    digested = numbers_as_floats(content)
    assert digested == {"a": ["x", 7.0, True, None, {"b": 8.1, "c": [0.0, -2.0]}], "d": False}
    assert json.dumps(digested) == (
        '{"a": ["x", 7.0, true, null, {"b": 8.1, "c": [0.0, -2.0]}], "d": false}'
    )


UNREAD = (
    "Drafted without the patient's QuestionnaireResponse and Encounter resources: the server "
    "offers no way to read them for a patient"
)


def test_a_plan_decided_without_a_type_says_so_in_its_note_and_narrative(
    definitions: Definitions,
) -> None:
    """Issue 15 leftover: the clinician reviewing the draft learns what the run report and exit
    code 5 tell the operator, and nothing else about the CarePlan changes."""
    whole = record(
        condition("c1", SNOMED, "44054006"), observation("o1", "4548-4", **quantity(9.6, "%"))
    )
    lacking = replace(whole, unread_types=("QuestionnaireResponse", "Encounter"))
    _, plan = profile_and_plan(lacking, definitions, AS_OF)
    _, complete = profile_and_plan(whole, definitions, AS_OF)
    assert plan is not None and complete is not None
    assert plan.unread_types == ("QuestionnaireResponse", "Encounter")
    careplan = to_fhir(plan, RECORDED).careplan.resource
    CarePlan.model_validate(careplan)
    (note,) = careplan["note"]
    assert set(note) == {"text"} and note["text"].startswith(UNREAD)
    assert UNREAD in unescape(careplan["text"]["div"])
    # the note is digested: changing it is a person's edit of our draft
    assert "edited" in (foreign_change({**careplan, "id": "42", "note": [{"text": "x"}]}) or "")
    plain = to_fhir(complete, RECORDED).careplan.resource
    assert "note" not in plain and "Drafted without" not in plain["text"]["div"]
    # a later run that can read the types rewrites the draft, whatever it then reads
    assert plan.fingerprint() != complete.fingerprint()
    rest = ("note", "text", "extension")
    assert {k: v for k, v in careplan.items() if k not in rest} == {
        k: v for k, v in plain.items() if k not in rest
    }


def test_a_plan_from_a_whole_record_keeps_its_json_and_fingerprint(
    resources: PlanResources, definitions: Definitions
) -> None:
    """``unread_types`` is in a plan's JSON (and so its fingerprint) only when there are some:
    drafts written before it existed are not seen as changed, and both kinds read back."""
    _, plan = profile_and_plan(record(condition("c1", SNOMED, "44054006")), definitions, AS_OF)
    assert plan is not None and plan.unread_types == ()
    assert plan.decided_without(()) is plan
    assert "unread_types" not in json.loads(plan.model_dump_json())
    assert Plan.model_validate_json(plan.model_dump_json()) == plan
    lacking = plan.decided_without(("QuestionnaireResponse",))
    assert json.loads(lacking.model_dump_json())["unread_types"] == ["QuestionnaireResponse"]
    assert Plan.model_validate_json(lacking.model_dump_json()) == lacking
    assert "note" not in resources.careplan.resource
