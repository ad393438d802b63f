"""Conformance of what we write to US Core 7.0.0 and the SDOH Clinical Care IG STU 2.3.0.

Each test walks one profile's mandatory and must-support elements (read from the published
StructureDefinitions: US Core CarePlan, Goal and ServiceRequest 7.0.0; SDOHCC Goal and
ServiceRequest 2.3.0). Expected systems, codes and profile canonicals are written out here on
purpose, not imported from fhir_tailor, so a wrong constant in the code cannot agree with itself.
Must-support elements we leave out are asserted absent, with the reason: must support obliges us
to send what we know, and fhir-tailor does not know them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, get_args

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.careplan import CarePlan
from fhir.resources.R4B.goal import Goal
from fhir.resources.R4B.provenance import Provenance
from fhir.resources.R4B.servicerequest import ServiceRequest
from plans import AS_OF, REFERRAL_KEY, food_plan
from pydantic import ValidationError

from fhir_tailor.catalog import ActivityTemplate, GoalTemplate, SdohCategory
from fhir_tailor.resources import PlanResources, create_transaction, to_fhir

RECORDED = datetime(2026, 11, 15, 12, 0, tzinfo=UTC)

US_CORE_CAREPLAN = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-careplan|7.0.0"
US_CORE_GOAL = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-goal|7.0.0"
US_CORE_SERVICEREQUEST = (
    "http://hl7.org/fhir/us/core/StructureDefinition/us-core-servicerequest|7.0.0"
)
SDOHCC_GOAL = "http://hl7.org/fhir/us/sdoh-clinicalcare/StructureDefinition/SDOHCC-Goal|2.3.0"
SDOHCC_SERVICEREQUEST = (
    "http://hl7.org/fhir/us/sdoh-clinicalcare/StructureDefinition/SDOHCC-ServiceRequest|2.3.0"
)
SDOHCC_CODES = "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
#: SDOHCC-ValueSetSDOHCategory, STU 2.3.0.
SDOH_CATEGORY_VALUE_SET = {
    "sdoh-category-unspecified",
    "food-insecurity",
    "housing-instability",
    "homelessness",
    "inadequate-housing",
    "transportation-insecurity",
    "financial-insecurity",
    "material-hardship",
    "educational-attainment",
    "employment-status",
    "veteran-status",
    "stress",
    "social-connection",
    "intimate-partner-violence",
    "elder-abuse",
    "personal-health-literacy",
    "health-insurance-coverage-status",
    "medical-cost-burden",
    "digital-literacy",
    "digital-access",
    "utility-insecurity",
    "incarceration-status",
    "language-access",
}
#: Code systems of US Core Procedure Codes 7.0.0 (SNOMED CT limited to procedures).
PROCEDURE_SYSTEMS = {
    SNOMED,
    LOINC,
    "http://www.ama-assn.org/go/cpt",
    "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
    "http://www.cms.gov/Medicare/Coding/ICD10",
    "http://www.ada.org/cdt",
}


@pytest.fixture
def resources() -> PlanResources:
    return to_fhir(food_plan(), RECORDED)


def codings(concepts: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(c["system"], c["code"]) for concept in concepts for c in concept["coding"]}


def goal(resources: PlanResources, text: str) -> dict[str, Any]:
    return next(g.resource for g in resources.goals if text in g.resource["description"]["text"])


def test_careplan_has_every_us_core_careplan_element(resources: PlanResources) -> None:
    careplan = resources.careplan.resource
    CarePlan.model_validate(careplan)
    assert careplan["meta"]["profile"] == [US_CORE_CAREPLAN]
    # text, text.status (generated | additional), text.div: the assessment and plan
    assert careplan["text"]["status"] == "generated"
    assert careplan["text"]["div"].startswith('<div xmlns="http://www.w3.org/1999/xhtml">')
    assert careplan["status"] == "draft"
    assert careplan["intent"] == "plan"
    # category 1..*, with exactly one AssessPlan slice
    assess_plan = ("http://hl7.org/fhir/us/core/CodeSystem/careplan-category", "assess-plan")
    assert [assess_plan in codings([c]) for c in careplan["category"]].count(True) == 1
    assert careplan["subject"] == {"reference": "Patient/p1"}
    # US Core's C-CDA guidance: Goals in CarePlan.goal, Conditions in CarePlan.addresses
    assert [g["reference"] for g in careplan["goal"]] == [g.full_url for g in resources.goals]
    assert {"reference": "Condition/c2"} in careplan["addresses"]


def test_clinical_goal_has_every_us_core_goal_element(resources: PlanResources) -> None:
    hba1c = goal(resources, "HbA1c")
    Goal.model_validate(hba1c)
    assert hba1c["meta"]["profile"] == [US_CORE_GOAL]
    # proposed, as the draft CarePlan holding it: nobody has accepted it yet
    assert hba1c["lifecycleStatus"] == "proposed"
    assert hba1c["description"] == {"text": "HbA1c below 7%"}
    assert hba1c["subject"] == {"reference": "Patient/p1"}
    assert hba1c["startDate"] == AS_OF.isoformat()
    [target] = hba1c["target"]
    assert target["dueDate"] == "2027-05-14"
    assert codings([target["measure"]]) == {(LOINC, "4548-4")}
    assert target["detailQuantity"] == {
        "value": 7.0,
        "comparator": "<",
        "unit": "%",
        "system": "http://unitsofmeasure.org",
        "code": "%",
    }
    assert codings(hba1c["category"]) == {
        ("http://terminology.hl7.org/CodeSystem/goal-category", "dietary")
    }
    assert hba1c["addresses"] == [{"reference": "Condition/c1"}]


def test_social_goal_has_every_sdohcc_goal_element(resources: PlanResources) -> None:
    food = goal(resources, "food")
    Goal.model_validate(food)
    assert food["meta"]["profile"] == [US_CORE_GOAL, SDOHCC_GOAL]
    # inherited from US Core Goal
    assert food["lifecycleStatus"] == "proposed"
    assert food["description"]["text"] == "Reliable access to enough food"
    assert food["subject"] == {"reference": "Patient/p1"}
    assert food["startDate"] == AS_OF.isoformat()
    [target] = food["target"]
    assert target["dueDate"] == "2027-02-13"
    # SDOHCC: target.measure preferably LOINC
    assert codings([target["measure"]]) == {(LOINC, "88124-3")}
    assert target["detailString"] == "No risk"
    # SDOHCC: category[SDOHCC], required binding to SDOHCC-ValueSetSDOHCategory
    sdoh = [(s, c) for s, c in codings(food["category"]) if s == SDOHCC_CODES]
    assert sdoh == [(SDOHCC_CODES, "food-insecurity")]
    # SDOHCC: addresses[SupportedAddresses], the SDOH Condition behind the goal
    assert food["addresses"] == [{"reference": "Condition/c2"}]
    # achievementStatus and outcomeReference are must support, and unknown for a proposal:
    # nobody has pursued the goal yet, so there is no progress or outcome to state
    assert "achievementStatus" not in food and "outcomeReference" not in food


def test_referral_has_every_sdohcc_servicerequest_element(resources: PlanResources) -> None:
    [entry] = resources.service_requests
    request = entry.resource
    ServiceRequest.model_validate(request)
    assert request["meta"]["profile"] == [US_CORE_SERVICEREQUEST, SDOHCC_SERVICEREQUEST]
    # a draft, with intent plan, like the CarePlan it belongs to: a proposal that authorizes
    # nothing until a clinician activates it
    assert request["status"] == "draft"
    assert request["intent"] == "plan"
    # category[us-core] from US Core ServiceRequest Category Codes, category[SDOHCC] required
    assert codings(request["category"]) == {
        (SNOMED, "410606002"),
        (SDOHCC_CODES, "food-insecurity"),
    }
    # code 1..1, required binding to US Core Procedure Codes: the SNOMED CT procedure; the
    # catalog's own code rides along
    code_systems = {c["system"] for c in request["code"]["coding"]}
    assert code_systems & PROCEDURE_SYSTEMS
    assert (SNOMED, "467771000124109") in codings([request["code"]])
    assert (
        "https://fhir-tailor.dev/fhir/CodeSystem/activity",
        "food-pantry-referral",
    ) in codings([request["code"]])
    assert request["subject"] == {"reference": "Patient/p1"}
    assert request["authoredOn"] == AS_OF.isoformat()
    # reasonReference[SupportedReasonReference]: the SDOH Conditions and Observations
    assert request["reasonReference"] == [
        {"reference": "Condition/c2"},
        {"reference": "Condition/c3"},
        {"reference": "Observation/o2"},
    ]
    # extension[pertainsToGoal] -> the SDOHCC Goal of the same module
    pertains = [
        e["valueReference"]["reference"]
        for e in request["extension"]
        if e["url"] == "http://hl7.org/fhir/StructureDefinition/resource-pertainsToGoal"
    ]
    food = next(g for g in resources.goals if "food" in g.resource["description"]["text"])
    assert pertains == [food.full_url]
    # the variation and why it applied
    notes = " ".join(note["text"] for note in request["note"])
    assert "transport-barrier" in notes and "prefer a pantry that delivers" in notes
    # prohibited by SDOHCC
    assert "specimen" not in request and "bodySite" not in request
    # must support, but not ours to state: fhir-tailor requests nothing on anyone's authority,
    # in no encounter, from no chosen performer, at no agreed time or priority, and holds no
    # consent or contact restriction
    for unknown in (
        "requester",
        "encounter",
        "performer",
        "occurrenceDateTime",
        "occurrencePeriod",
        "occurrenceTiming",
        "priority",
        "supportingInfo",
        "orderDetail",
        "basedOn",
    ):
        assert unknown not in request, unknown


def test_referral_markers_match_the_goals(resources: PlanResources) -> None:
    request = resources.service_requests[0].resource
    assert request["identifier"] == [
        {
            "system": "https://fhir-tailor.dev/fhir/id/servicerequest",
            "value": f"p1/fhir-tailor-core/2026.11.0/{REFERRAL_KEY}",
        }
    ]
    assert {"system": "https://fhir-tailor.dev/fhir/CodeSystem/tag", "code": "generated"} in (
        request["meta"]["tag"]
    )
    assert any(
        e["url"] == "https://fhir-tailor.dev/fhir/StructureDefinition/content-digest"
        for e in request["extension"]
    )


def test_careplan_references_the_referral_and_keeps_its_reasons(
    resources: PlanResources,
) -> None:
    careplan = resources.careplan.resource
    [entry] = resources.service_requests
    referenced = [a for a in careplan["activity"] if "reference" in a]
    assert referenced == [{"reference": {"reference": entry.full_url}}]
    assert "Transportation insecurity [Condition/c3]" in careplan["text"]["div"]
    provenance = resources.provenance.resource
    Provenance.model_validate(provenance)
    assert {"reference": entry.full_url} in provenance["target"]


def test_other_activities_stay_inline_with_both_codes(resources: PlanResources) -> None:
    details = [a["detail"] for a in resources.careplan.resource["activity"] if "detail" in a]
    lab = next(d for d in details if d["code"]["text"] == "diabetes-outpatient.hba1c-test")
    assert lab["kind"] == "ServiceRequest"  # no SDOH category: not a referral
    assert codings([lab["code"]]) == {
        (LOINC, "4548-4"),
        ("https://fhir-tailor.dev/fhir/CodeSystem/activity", "hba1c-test"),
    }


def test_a_referral_without_a_procedure_code_claims_no_profile() -> None:
    resources = to_fhir(food_plan(referral_code=None), RECORDED)
    [entry] = resources.service_requests
    request = entry.resource
    ServiceRequest.model_validate(request)
    assert "profile" not in request["meta"]
    assert codings([request["code"]]) == {
        ("https://fhir-tailor.dev/fhir/CodeSystem/activity", "food-pantry-referral")
    }
    # the goals and the CarePlan are unaffected
    assert resources.careplan.resource["meta"]["profile"] == [US_CORE_CAREPLAN]


def test_no_profile_claim_on_provenance(resources: PlanResources) -> None:
    assert "profile" not in resources.provenance.resource["meta"]


def test_the_transaction_is_valid_r4b(resources: PlanResources) -> None:
    bundle = create_transaction(resources)
    Bundle.model_validate(bundle)
    types = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert types == ["CarePlan", "Goal", "Goal", "ServiceRequest", "Provenance"]
    request = bundle["entry"][3]["request"]
    assert request["ifNoneExist"] == (
        "identifier=https://fhir-tailor.dev/fhir/id/servicerequest|"
        f"p1/fhir-tailor-core/2026.11.0/{REFERRAL_KEY}"
    )


def test_sdoh_categories_are_the_value_set() -> None:
    assert set(get_args(SdohCategory)) == SDOH_CATEGORY_VALUE_SET


@pytest.mark.parametrize("template", [GoalTemplate, ActivityTemplate])
def test_an_unknown_sdoh_category_fails_at_load_time(template: Any) -> None:
    fields: dict[str, Any] = {"id": "x", "description": "x", "sdoh_category": "food"}
    if template is GoalTemplate:
        fields["target"] = {
            "measure": {"system": LOINC, "code": "88124-3"},
            "text": "No risk",
            "due_in_days": 90,
        }
    else:
        fields["kind"] = "ServiceRequest"
    with pytest.raises(ValidationError, match="sdoh_category"):
        template.model_validate(fields)
