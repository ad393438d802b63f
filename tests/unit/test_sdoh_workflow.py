"""The SDOH Clinical Care IG (Gravity) workflow: screening -> assessment or Condition -> Goal ->
referral, as the plans and resources follow it (synthetic records only).

What the IG says is written out here, not read from fhir_tailor, so a wrong constant in the code
cannot agree with itself: SDOHCC Goal ``addresses`` an SDOHCC Condition or a screening
Observation; SDOHCC ServiceRequest ``reasonReference`` likewise, ``requester`` an Organization or
PractitionerRole, ``orderDetail`` contacting-subject-prohibited where contact may place the
patient at risk; the SDOH category of SDOHCC-ValueSetSDOHCategory; the example Goal's coded
target (LOINC 88124-3 = LA19983-8 "No risk").
"""

from __future__ import annotations

import json
import random
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
import yaml
from builders import (
    AS_OF,
    ICD10,
    LOINC,
    SNOMED,
    answer,
    condition,
    observation,
    plan_of,
    profile_of,
    quantity,
    record,
)
from click.testing import CliRunner
from fhir.resources.R4B.goal import Goal
from fhir.resources.R4B.servicerequest import ServiceRequest
from pydantic import ValidationError

from fhir_tailor.approval import activate, approve
from fhir_tailor.catalog import ActivityTemplate, GoalTarget
from fhir_tailor.cli import main
from fhir_tailor.client import FhirClient
from fhir_tailor.definitions import DefinitionError, Definitions, bundled_path, load_definitions
from fhir_tailor.mapping import Code
from fhir_tailor.pipeline import profile_and_plan
from fhir_tailor.plan import Plan
from fhir_tailor.record import PatientRecord
from fhir_tailor.requester import RequesterError, parse_requester
from fhir_tailor.resources import PlanResources, content_digest, to_fhir, with_digest
from fhir_tailor.sinks.server import foreign_change
from fhir_tailor.web import app as web_app
from fhir_tailor.web.launch import Grant
from fhir_tailor.web.page import plan_page

RECORDED = datetime(2026, 11, 15, 12, 0, tzinfo=UTC)
SDOHCC = "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes"
SDOHCC_SERVICEREQUEST = (
    "http://hl7.org/fhir/us/sdoh-clinicalcare/StructureDefinition/SDOHCC-ServiceRequest|2.3.0"
)
US_CORE_SERVICEREQUEST = (
    "http://hl7.org/fhir/us/core/StructureDefinition/us-core-servicerequest|7.0.0"
)
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
PROHIBITED = {"system": SDOHCC, "code": "contacting-subject-prohibited"}
FOOD_REFERRALS = ("food-security.community-meals-referral", "food-resources-referral")

# Hunger Vital Sign items (LOINC 88122-7, 88123-5) and their answers.
HVS_WORRIED, HVS_DIDNT_LAST = "88122-7", "88123-5"
OFTEN, SOMETIMES, NEVER = "LA28397-0", "LA6729-3", "LA28398-8"
# AHC HRSN / PRAPARE living situation (71802-3) answers.
NO_STEADY_PLACE, WORRIED_LOSING, STEADY_PLACE = "LA31995-6", "LA31994-9", "LA31993-1"
NO_HOUSING = "LA30190-5"


def hvs(oid: str = "hvs1", code: str = HVS_WORRIED, value: str = OFTEN, **extra: Any) -> Any:
    return observation(oid, code, **answer(value), **extra)


def sdoh_condition(cid: str, category: str, code: tuple[str, str] | None = None) -> Any:
    """An SDOHCC Condition: a health concern with its SDOH category (and a code, if given)."""
    system, value = code or (SNOMED, "160245001")  # any code: the category is what is read
    return condition(
        cid,
        system,
        value,
        category=[
            {"coding": [{"system": CONDITION_CATEGORY, "code": "health-concern"}]},
            {"coding": [{"system": SDOHCC, "code": category}]},
        ],
    )


def goal(plan: Plan, key: str) -> Any:
    return next(g for g in plan.goals if g.key == key)


def activity(plan: Plan, key: str) -> Any:
    return next(a for a in plan.activities if a.key == key)


def resource(resources: PlanResources, rtype: str, identifier_suffix: str) -> dict[str, Any]:
    entries = resources.goals if rtype == "Goal" else resources.service_requests
    return next(
        e.resource
        for e in entries
        if e.resource["identifier"][0]["value"].endswith(f"/{identifier_suffix}")
    )


def sdoh_categories(concepts: list[dict[str, Any]]) -> list[str]:
    return [c["code"] for concept in concepts for c in concept["coding"] if c["system"] == SDOHCC]


# -- Goals and referrals address what decided the need ------------------------------------------


def test_a_need_found_by_screening_alone_is_addressed_through_its_observation(
    definitions: Definitions,
) -> None:
    plan = plan_of(definitions, record(hvs()))
    assert goal(plan, "food-security.food-secure").addresses == ("Observation/hvs1",)
    resources = to_fhir(plan, RECORDED)
    food_goal = resource(resources, "Goal", "food-security.food-secure")
    assert food_goal["addresses"] == [{"reference": "Observation/hvs1"}]
    for key in FOOD_REFERRALS:
        referral = resource(resources, "ServiceRequest", key)
        assert referral["reasonReference"] == [{"reference": "Observation/hvs1"}]
    careplan = resources.careplan.resource
    # CarePlan.addresses takes Conditions only (R4): the observation supports the plan instead
    assert "addresses" not in careplan
    assert {"reference": "Observation/hvs1"} in careplan["supportingInfo"]


def test_a_negative_screen_puts_no_food_goal_in_the_plan(definitions: Definitions) -> None:
    _, plan = profile_and_plan(record(hvs(value=NEVER)), definitions, AS_OF)
    keys = {g.key for g in plan.goals} if plan else set()
    assert "food-security.food-secure" not in keys


def test_with_a_food_insecurity_condition_the_goal_and_referrals_address_the_condition(
    definitions: Definitions,
) -> None:
    rec = record(condition("c1", ICD10, "Z59.41"), hvs(value=SOMETIMES))
    plan = plan_of(definitions, rec)
    assert goal(plan, "food-security.food-secure").addresses == ("Condition/c1",)
    resources = to_fhir(plan, RECORDED)
    for key in FOOD_REFERRALS:
        referral = resource(resources, "ServiceRequest", key)
        assert referral["reasonReference"] == [{"reference": "Condition/c1"}]
    assert resources.careplan.resource["addresses"] == [{"reference": "Condition/c1"}]


def test_a_resolved_condition_leaves_the_screening_to_decide(definitions: Definitions) -> None:
    rec = record(condition("c1", SNOMED, "733423003", clinical="resolved"), hvs())
    plan = plan_of(definitions, rec)
    assert goal(plan, "food-security.food-secure").addresses == ("Observation/hvs1",)


def test_a_clinical_goal_still_addresses_conditions_only(definitions: Definitions) -> None:
    rec = record(
        condition("c1", SNOMED, "44054006"), observation("a1", "4548-4", **quantity(9.1, "%"))
    )
    plan = plan_of(definitions, rec)
    clinical = [g for g in plan.goals if g.module == "diabetes-outpatient"]
    assert clinical and all(g.addresses == ("Condition/c1",) for g in clinical)


# -- SDOH categories follow the evidence -------------------------------------------------------


@pytest.mark.parametrize(
    ("evidence", "category"),
    [
        (observation("h1", "71802-3", **answer(NO_STEADY_PLACE)), "homelessness"),
        (observation("h1", "71802-3", **answer(NO_HOUSING)), "homelessness"),
        (observation("h1", "71802-3", **answer(WORRIED_LOSING)), "housing-instability"),
        (condition("h1", ICD10, "Z59.01"), "homelessness"),
        (condition("h1", ICD10, "Z59.02"), "homelessness"),
        (condition("h1", ICD10, "Z59.811"), "housing-instability"),
        (condition("h1", SNOMED, "32911000"), "homelessness"),
        (sdoh_condition("h1", "homelessness"), "homelessness"),
        (sdoh_condition("h1", "housing-instability"), "housing-instability"),
    ],
    ids=lambda v: v if isinstance(v, str) else v["id"],
)
def test_housing_goal_and_referrals_take_the_domain_of_the_evidence(
    definitions: Definitions, evidence: dict[str, Any], category: str
) -> None:
    plan = plan_of(definitions, record(evidence))
    assert goal(plan, "housing-stability.stably-housed").sdoh_category == category
    resources = to_fhir(plan, RECORDED)
    for key in ("housing-stability.housing-assessment", "housing-resources-referral"):
        assert sdoh_categories(resource(resources, "ServiceRequest", key)["category"]) == [category]
    stably_housed = resource(resources, "Goal", "housing-stability.stably-housed")
    assert sdoh_categories(stably_housed["category"]) == [category]


def test_a_steady_place_to_live_gives_no_housing_goal(definitions: Definitions) -> None:
    profile = profile_of(definitions, record(observation("h1", "71802-3", **answer(STEADY_PLACE))))
    found = profile.finding("housing_instability")
    assert found is not None and found.status == "absent" and found.sdoh_category is None


def test_homelessness_outranks_instability_whatever_the_order(definitions: Definitions) -> None:
    resources = [
        condition("c1", ICD10, "Z59.811"),
        condition("c2", ICD10, "Z59.01"),
        sdoh_condition("c3", "housing-instability"),
    ]
    for seed in range(4):
        random.Random(seed).shuffle(resources)
        found = profile_of(definitions, record(*resources)).finding("housing_instability")
        assert found is not None and found.sdoh_category == "homelessness"


@pytest.mark.parametrize(
    ("evidence", "category"),
    [
        pytest.param(sdoh_condition("v1", "elder-abuse"), "elder-abuse", id="category-elder"),
        pytest.param(
            sdoh_condition("v1", "intimate-partner-violence"),
            "intimate-partner-violence",
            id="category-ipv",
        ),
        # an SDOHCC Condition coded with an adult maltreatment code and categorized elder abuse
        pytest.param(
            sdoh_condition("v1", "elder-abuse", (ICD10, "T74.11XA")),
            "elder-abuse",
            id="T74.11XA-categorized-elder",
        ),
        pytest.param(
            condition("v1", SNOMED, "706893006"), "intimate-partner-violence", id="706893006"
        ),
        pytest.param(condition("v1", ICD10, "Z69.11"), "intimate-partner-violence", id="Z69.11"),
        pytest.param(
            observation("v1", "76501-6", **answer("LA33-6")),
            "intimate-partner-violence",
            id="prapare-afraid-of-partner",
        ),
        # adult maltreatment codes, the AHC HITS total and feeling unsafe at home name no one
        pytest.param(
            condition("v1", ICD10, "T74.11XA"), "sdoh-category-unspecified", id="T74.11XA"
        ),
        pytest.param(
            condition("v1", ICD10, "T76.01XA"), "sdoh-category-unspecified", id="T76.01XA"
        ),
        pytest.param(
            observation("v1", "95614-4", **quantity(11, "{score}")),
            "sdoh-category-unspecified",
            id="hits-11",
        ),
        pytest.param(
            observation("v1", "93026-3", **answer("LA32-8")),
            "sdoh-category-unspecified",
            id="prapare-not-safe-at-home",
        ),
    ],
)
def test_safety_goal_and_referral_take_the_domain_of_the_evidence(
    definitions: Definitions, evidence: dict[str, Any], category: str
) -> None:
    plan = plan_of(definitions, record(evidence))
    assert goal(plan, "interpersonal-safety.hits-below-11").sdoh_category == category
    referral = activity(plan, "interpersonal-safety.safety-social-work-referral")
    assert referral.sdoh_category == category


def test_a_hits_total_below_11_puts_no_safety_module_in_the_plan(definitions: Definitions) -> None:
    rec = record(observation("v1", "95614-4", **quantity(10, "{score}")), hvs())
    assert "interpersonal-safety" not in {m.id for m in plan_of(definitions, rec).modules}


def test_a_named_domain_beats_an_unspecified_one_on_the_same_day(definitions: Definitions) -> None:
    rec = record(
        observation("v1", "95614-4", **quantity(14, "{score}")),
        observation("v2", "76501-6", **answer("LA33-6")),
    )
    found = profile_of(definitions, rec).finding("interpersonal_safety")
    assert found is not None and found.sdoh_category == "intimate-partner-violence"
    assert set(found.sources) == {"Observation/v1", "Observation/v2"}


def test_a_named_domain_beats_a_graver_unspecified_diagnosis(definitions: Definitions) -> None:
    # confirmed adult abuse (high, names no one) beside partner abuse (moderate, names a partner)
    rec = record(condition("v1", ICD10, "T74.11XA"), condition("v2", ICD10, "Z69.11"))
    found = profile_of(definitions, rec).finding("interpersonal_safety")
    assert found is not None and found.severity == "high"
    assert found.sdoh_category == "intimate-partner-violence"


def test_a_multi_domain_goal_keeps_its_own_category(definitions: Definitions) -> None:
    rec = record(hvs(), observation("h1", "71802-3", **answer(NO_STEADY_PLACE)))
    plan = plan_of(definitions, rec)
    navigator = goal(plan, "social-needs-navigation.social-needs-addressed")
    assert navigator.sdoh_category == "sdoh-category-unspecified"
    assert navigator.addresses == ("Observation/h1", "Observation/hvs1")


# -- codes, coded targets and profiles ----------------------------------------------------------


def test_food_goal_is_coded_as_the_ig_example_and_valid_r4b(definitions: Definitions) -> None:
    resources = to_fhir(plan_of(definitions, record(hvs())), RECORDED)
    food = resource(resources, "Goal", "food-security.food-secure")
    Goal.model_validate(food)
    [target] = food["target"]
    assert target["measure"]["coding"][0]["code"] == "88124-3"
    assert target["detailCodeableConcept"]["coding"] == [
        {"system": LOINC, "code": "LA19983-8", "display": "No risk"}
    ]
    assert "detailString" not in target and "detailQuantity" not in target
    assert {"system": SNOMED, "code": "1078229009", "display": "Food security"} in food[
        "description"
    ]["coding"]
    assert food["category"][-1]["coding"] == [
        {"system": SDOHCC, "code": "food-insecurity", "display": "Food Insecurity"}
    ]


@pytest.mark.parametrize(
    ("evidence", "key", "measure", "wanted"),
    [
        (
            observation("h1", "71802-3", **answer(NO_HOUSING)),
            "housing-stability.stably-housed",
            "71802-3",
            "LA30189-7",
        ),
        (
            observation("t1", "93030-5", **answer("LA33-6")),
            "transportation-access.transport-not-a-barrier",
            "93030-5",
            "LA32-8",
        ),
    ],
)
def test_social_goal_targets_are_coded_answers(
    definitions: Definitions, evidence: dict[str, Any], key: str, measure: str, wanted: str
) -> None:
    resources = to_fhir(plan_of(definitions, record(evidence)), RECORDED)
    found = resource(resources, "Goal", key)
    Goal.model_validate(found)
    [target] = found["target"]
    assert target["measure"]["coding"][0]["code"] == measure
    assert [c["code"] for c in target["detailCodeableConcept"]["coding"]] == [wanted]


def test_the_transportation_referral_is_coded_and_claims_its_profiles(
    definitions: Definitions,
) -> None:
    resources = to_fhir(
        plan_of(definitions, record(observation("t1", "93030-5", **answer("LA33-6")))), RECORDED
    )
    referral = resource(
        resources, "ServiceRequest", "transportation-access.transportation-assistance-referral"
    )
    ServiceRequest.model_validate(referral)
    assert referral["meta"]["profile"] == [US_CORE_SERVICEREQUEST, SDOHCC_SERVICEREQUEST]
    assert referral["code"]["coding"][0] == {
        "system": SNOMED,
        "code": "410365006",
        "display": "Transportation case management",
    }
    assert sdoh_categories(referral["category"]) == ["transportation-insecurity"]
    assert referral["reasonReference"] == [{"reference": "Observation/t1"}]


def test_a_target_has_exactly_one_kind_of_detail() -> None:
    measure = Code(system=LOINC, code="88124-3")
    no_risk = Code(system=LOINC, code="LA19983-8")
    GoalTarget(measure=measure, answer=no_risk, due_in_days=30)
    with pytest.raises(ValidationError, match="one of"):
        GoalTarget(measure=measure, answer=no_risk, text="No risk", due_in_days=30)
    with pytest.raises(ValidationError, match="one of"):
        GoalTarget(measure=measure, answer=no_risk, value=1, unit="1", due_in_days=30)
    with pytest.raises(ValidationError, match="comparator"):
        GoalTarget(measure=measure, answer=no_risk, comparator="<", due_in_days=30)


def test_a_variant_cannot_set_a_number_on_a_coded_target(tmp_path: Path) -> None:
    profiles = tmp_path / "profiles"
    shutil.copytree(bundled_path("profiles"), profiles)
    path = profiles / "variants.yaml"
    data = yaml.safe_load(path.read_text())
    data["variants"].append(
        {
            "id": "food-goal-number",
            "label": "x",
            "reason": "x",
            "scope": "social",
            "when": {"feature": "food_insecurity"},
            "adjust_goal": {"goal": "food-security.food-secure", "description": "x", "value": 1},
        }
    )
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(DefinitionError, match=r"food-security\.food-secure.*not a quantity"):
        load_definitions(profiles)


# -- interpersonal safety: no contact through channels others may see ---------------------------


def test_a_safety_referral_and_every_other_referral_forbid_contacting_the_patient(
    definitions: Definitions,
) -> None:
    rec = record(observation("v1", "76501-6", **answer("LA33-6")), hvs())
    plan = plan_of(definitions, rec)
    referrals = [a for a in plan.activities if a.is_referral]
    assert {a.key for a in referrals} >= {
        "interpersonal-safety.safety-social-work-referral",
        *FOOD_REFERRALS,
    }
    resources = to_fhir(plan, RECORDED)
    for entry in resources.service_requests:
        assert entry.resource["orderDetail"] == [
            {"coding": [{**PROHIBITED, "display": "Contacting Subject Prohibited"}]}
        ]
    # the food referral tells the food service nothing about the safety concern
    for key in FOOD_REFERRALS:
        food = resource(resources, "ServiceRequest", key)
        assert food["reasonReference"] == [{"reference": "Observation/hvs1"}]
        assert "76501-6" not in json.dumps(food) and "Observation/v1" not in json.dumps(food)
    safety = resource(
        resources, "ServiceRequest", "interpersonal-safety.safety-social-work-referral"
    )
    assert safety["reasonReference"] == [{"reference": "Observation/v1"}]
    assert "must not call, text, mail or message the patient" in safety["code"]["text"]


def test_without_a_safety_concern_referrals_may_contact_the_patient(
    definitions: Definitions,
) -> None:
    resources = to_fhir(plan_of(definitions, record(hvs())), RECORDED)
    assert resources.service_requests
    assert all("orderDetail" not in e.resource for e in resources.service_requests)


def test_the_safety_module_plans_a_safe_way_to_reach_the_patient(
    definitions: Definitions,
) -> None:
    plan = plan_of(definitions, record(sdoh_condition("v1", "elder-abuse")))
    contact = activity(plan, "interpersonal-safety.safe-contact-plan")
    assert contact.kind == "Task" and "in private" in contact.description


def test_removing_the_no_contact_mark_is_an_edit_fhir_tailor_respects(
    definitions: Definitions,
) -> None:
    rec = record(observation("v1", "76501-6", **answer("LA33-6")))
    referral = to_fhir(plan_of(definitions, rec), RECORDED).service_requests[0].resource
    assert foreign_change(referral) is None
    unmarked = {k: v for k, v in referral.items() if k != "orderDetail"}
    assert foreign_change(unmarked) is not None
    # a referral written without the mark keeps the digest it was written with
    plain = to_fhir(plan_of(definitions, record(hvs())), RECORDED).service_requests[0].resource
    assert with_digest(plain) == plain and content_digest(plain)


def test_contact_prohibited_is_for_referrals_only() -> None:
    with pytest.raises(ValidationError, match="contact_prohibited"):
        ActivityTemplate(id="call", kind="Task", description="x", contact_prohibited=True)
    with pytest.raises(ValidationError, match="contact_prohibited"):
        ActivityTemplate(id="lab", kind="ServiceRequest", description="x", contact_prohibited=True)


# -- the requester ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["Organization/org-1", "PractitionerRole/pr.7", " Organization/o ", f"Organization/{'a' * 64}"],
)
def test_a_requester_is_an_organization_or_a_practitioner_role(text: str) -> None:
    assert parse_requester(text) == text.strip()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("Practitioner/p1", "Organization or a PractitionerRole"),
        ("Patient/p1", "Organization or a PractitionerRole"),
        ("https://ehr.test/fhir/Organization/o1", "relative reference"),
        ("org-1", "type and id"),
        ("Organization/", "not a FHIR id"),
        ("Organization/o1/_history/2", "not a FHIR id"),
        ("Organization/o_1", "not a FHIR id"),
        (f"Organization/{'a' * 65}", "not a FHIR id"),
    ],
)
def test_a_malformed_requester_is_refused_saying_why(text: str, problem: str) -> None:
    with pytest.raises(RequesterError, match=problem):
        parse_requester(text)


def test_referrals_carry_the_requester_given_and_none_otherwise(definitions: Definitions) -> None:
    plan = plan_of(definitions, record(hvs()))
    assert plan.requester is None
    unrequested = to_fhir(plan, RECORDED)
    assert all("requester" not in e.resource for e in unrequested.service_requests)
    requested = to_fhir(plan.requested_by("PractitionerRole/pr-1"), RECORDED)
    assert requested.service_requests
    for entry in requested.service_requests:
        assert entry.resource["requester"] == {"reference": "PractitionerRole/pr-1"}
        assert entry.resource["status"] == "draft" and entry.resource["intent"] == "plan"
    # a draft written without a requester is rewritten once one is given
    assert plan.fingerprint() != plan.requested_by("PractitionerRole/pr-1").fingerprint()
    with pytest.raises(RequesterError):
        plan.requested_by("Practitioner/p1")


def write_input(folder: Path, rec: PatientRecord) -> Path:
    folder.mkdir()
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} for r in (rec.patient, *rec.resources)],
    }
    (folder / "p1.json").write_text(json.dumps(bundle))
    return folder


def sync(tmp_path: Path, *extra: str, env: dict[str, str] | None = None) -> tuple[int, str, Path]:
    source = write_input(tmp_path / "in", record(hvs()))
    out = tmp_path / "out"
    args = ["--as-of", AS_OF.isoformat(), "sync", "--input", str(source), "--out", str(out)]
    result = CliRunner().invoke(main, [*args, *extra], env=env)
    return result.exit_code, result.stderr, out


def written_referrals(out: Path) -> list[dict[str, Any]]:
    bundles = [json.loads(path.read_text()) for path in out.glob("*.json")]
    return [
        e["resource"]
        for bundle in bundles
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "ServiceRequest"
    ]


def test_sync_writes_the_requester_given(tmp_path: Path) -> None:
    code, err, out = sync(tmp_path, "--requester", "Organization/clinic-1")
    assert code == 0, err
    referrals = written_referrals(out)
    assert referrals and all(
        r["requester"] == {"reference": "Organization/clinic-1"} for r in referrals
    )


def test_sync_reads_the_requester_from_the_environment(tmp_path: Path) -> None:
    code, err, out = sync(tmp_path, env={"FHIR_TAILOR_REQUESTER": "PractitionerRole/pr-2"})
    assert code == 0, err
    assert {r["requester"]["reference"] for r in written_referrals(out)} == {
        "PractitionerRole/pr-2"
    }


def test_sync_without_a_requester_writes_referrals_without_one(tmp_path: Path) -> None:
    code, err, out = sync(tmp_path, env={"FHIR_TAILOR_REQUESTER": ""})
    assert code == 0, err
    referrals = written_referrals(out)
    assert referrals and all("requester" not in r for r in referrals)


@pytest.mark.parametrize("command", ["sync", "serve", "spark-sync"])
def test_a_malformed_requester_stops_the_command_before_it_starts(
    tmp_path: Path, command: str
) -> None:
    result = CliRunner().invoke(
        main, ["--as-of", AS_OF.isoformat(), command, "--requester", "Practitioner/p1"]
    )
    assert result.exit_code == 2
    assert "--requester" in result.stderr and "PractitionerRole" in result.stderr
    assert not list(tmp_path.iterdir())


# -- drafts until a clinician approves them ----------------------------------------------------


def test_approval_makes_referrals_active_orders_keeping_the_requester(
    definitions: Definitions,
) -> None:
    plan = plan_of(definitions, record(hvs())).requested_by("Organization/clinic-1")
    drafts = to_fhir(plan, RECORDED)
    assert {e.resource["status"] for e in drafts.service_requests} == {"draft"}
    assert {e.resource["intent"] for e in drafts.service_requests} == {"plan"}
    approved = activate(drafts)
    for entry in approved.service_requests:
        assert (entry.resource["status"], entry.resource["intent"]) == ("active", "order")
        assert entry.resource["requester"] == {"reference": "Organization/clinic-1"}
        assert foreign_change(entry.resource) is not None  # no longer ours to rewrite
        ServiceRequest.model_validate(entry.resource)


class _Server:
    """A FHIR server holding nothing yet; it keeps the transaction approval sends."""

    def __init__(self, base: str) -> None:
        self.sent: list[dict[str, Any]] = []
        self.careplans: list[dict[str, Any]] = []
        capability = {
            "resourceType": "CapabilityStatement",
            "fhirVersion": "4.0.1",
            "rest": [{"mode": "server", "resource": []}],
        }
        respx.get(f"{base}/metadata").mock(return_value=httpx.Response(200, json=capability))
        respx.get(f"{base}/CarePlan").mock(side_effect=self.search)
        respx.post(base).mock(side_effect=self.transaction)

    def search(self, request: httpx.Request) -> httpx.Response:
        entries = [{"resource": c} for c in self.careplans]
        return httpx.Response(
            200, json={"resourceType": "Bundle", "type": "searchset", "entry": entries}
        )

    def transaction(self, request: httpx.Request) -> httpx.Response:
        bundle = json.loads(request.content)
        self.sent.append(bundle)
        careplan = bundle["entry"][0]["resource"]
        self.careplans = [{**careplan, "id": "cp1", "meta": {**careplan["meta"], "versionId": "1"}}]
        return httpx.Response(200, json={"resourceType": "Bundle", "type": "transaction-response"})


@respx.mock
def test_the_app_approves_referrals_with_the_sessions_requester(
    definitions: Definitions, monkeypatch: pytest.MonkeyPatch
) -> None:
    iss = "https://ehr.test/fhir"
    rec = record(hvs(), observation("v1", "76501-6", **answer("LA33-6")))
    monkeypatch.setattr(web_app, "read_record", lambda _client, _pid: (rec, []))
    config = web_app.AppConfig(
        client_id="app", definitions=definitions, as_of=AS_OF, requester="PractitionerRole/pr-9"
    )
    grant = Grant(iss, "token", "p1", "launch", None)
    view = web_app.load_view(config, grant, "csrf")
    assert view.plan is not None and view.plan.requester == "PractitionerRole/pr-9"
    page = plan_page(view)
    assert "requested by PractitionerRole/pr-9" in page
    assert "do not contact the patient" in page
    server = _Server(iss)
    approval = approve(FhirClient(iss, sleep=lambda _: None), view.plan, set(), RECORDED)
    assert approval.outcome == "created"
    [bundle] = server.sent
    referrals = [
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "ServiceRequest"
    ]
    assert referrals
    for referral in referrals:
        assert (referral["status"], referral["intent"]) == ("active", "order")
        assert referral["requester"] == {"reference": "PractitionerRole/pr-9"}
        assert referral["orderDetail"][0]["coding"][0]["code"] == "contacting-subject-prohibited"


def test_the_page_says_when_referrals_have_no_requester(
    definitions: Definitions, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(web_app, "read_record", lambda _client, _pid: (record(hvs()), []))
    config = web_app.AppConfig(client_id="app", definitions=definitions, as_of=AS_OF)
    view = web_app.load_view(config, Grant("https://ehr.test/fhir", "t", "p1", "", None), "c")
    assert view.plan is not None and view.plan.requester is None
    assert "without a requester" in plan_page(view)
    assert "do not contact the patient" not in plan_page(view)
