"""Write-back decisions of the server sink, against a respx-mocked server."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import respx
from builders import AS_OF, SNOMED, condition, observation, quantity, record
from plans import food_plan

from fhir_tailor.client import FhirClient
from fhir_tailor.definitions import Definitions
from fhir_tailor.errors import FhirTailorError
from fhir_tailor.pipeline import profile_and_plan
from fhir_tailor.plan import Plan
from fhir_tailor.resources import PlanResources, content_digest, to_fhir
from fhir_tailor.sinks.server import ServerSink

BASE = "http://fhir.test/fhir"
RECORDED = datetime(2026, 11, 15, tzinfo=UTC)


def searchset(*resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r} for r in resources],
    }


def plan_and_resources(definitions: Definitions, hba1c: float = 9.6) -> tuple[Plan, PlanResources]:
    rec = record(
        condition("c1", SNOMED, "44054006"), observation("o1", "4548-4", **quantity(hba1c, "%"))
    )
    _, plan = profile_and_plan(rec, definitions, AS_OF)
    assert plan is not None
    return plan, to_fhir(plan, RECORDED)


def stored(resource: dict[str, Any], rid: str, version: str = "1") -> dict[str, Any]:
    return {**resource, "id": rid, "meta": {**resource["meta"], "versionId": version}}


def stored_with_goals(resources: PlanResources) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    goals = [stored(g.resource, f"g{n}") for n, g in enumerate(resources.goals)]
    careplan = stored(resources.careplan.resource, "cp1", "3")
    careplan["goal"] = [{"reference": f"Goal/{g['id']}"} for g in goals]
    return careplan, goals


def capability_statement(
    *goal_params: str, servicerequest_params: tuple[str, ...] = ()
) -> dict[str, Any]:
    return {
        "resourceType": "CapabilityStatement",
        "fhirVersion": "4.0.1",
        "rest": [
            {
                "mode": "server",
                "resource": [
                    {"type": "CarePlan", "searchParam": [{"name": "identifier", "type": "token"}]},
                    {
                        "type": "Goal",
                        "searchParam": [{"name": p, "type": "token"} for p in goal_params],
                    },
                    {
                        "type": "ServiceRequest",
                        "searchParam": [
                            {"name": p, "type": "token"} for p in servicerequest_params
                        ],
                    },
                ],
            }
        ],
    }


@pytest.fixture
def client() -> FhirClient:
    return FhirClient(BASE, sleep=lambda _: None)


@respx.mock
@pytest.mark.parametrize("goal_params", [("identifier", "patient"), ()])
def test_first_sync_creates_in_one_transaction(
    definitions: Definitions, client: FhirClient, goal_params: tuple[str, ...]
) -> None:
    plan, resources = plan_and_resources(definitions)
    respx.get(f"{BASE}/metadata").mock(
        return_value=httpx.Response(200, json=capability_statement(*goal_params))
    )
    respx.get(f"{BASE}/CarePlan").mock(return_value=httpx.Response(200, json=searchset()))
    post = respx.post(BASE).mock(
        return_value=httpx.Response(
            200,
            json={
                "resourceType": "Bundle",
                "type": "transaction-response",
                "entry": [
                    {"response": {"status": "201 Created", "location": "CarePlan/77/_history/1"}}
                ],
            },
        )
    )
    outcome = ServerSink(client).write(plan, resources)
    assert (outcome.outcome, outcome.careplan) == ("created", "CarePlan/77")
    sent = json.loads(post.calls[0].request.content)
    assert [e["request"]["method"] for e in sent["entry"]] == ["POST"] * len(sent["entry"])
    assert sent["entry"][0]["request"]["ifNoneExist"].startswith("identifier=")
    goals = [e for e in sent["entry"] if e["resource"]["resourceType"] == "Goal"]
    assert goals
    # conditional on identifier only where the server declares Goal's identifier search
    assert all(("ifNoneExist" in g["request"]) == bool(goal_params) for g in goals)


@respx.mock
def test_unchanged_plan_writes_nothing(definitions: Definitions, client: FhirClient) -> None:
    plan, resources = plan_and_resources(definitions)
    careplan, goals = stored_with_goals(resources)
    respx.get(f"{BASE}/CarePlan").mock(return_value=httpx.Response(200, json=searchset(careplan)))
    for goal in goals:
        respx.get(f"{BASE}/Goal/{goal['id']}").mock(return_value=httpx.Response(200, json=goal))
    post = respx.post(BASE)
    outcome = ServerSink(client).write(plan, resources)
    assert outcome.outcome == "unchanged" and not post.called


APPLIED_ANSWERS = {
    # the server applied the transaction, then its answer was cut short or not a Bundle
    "truncated": httpx.Response(
        200, content=b'{"resourceType": "Bundle", "type": "transaction-response", "entry": [{"re'
    ),
    "operation-outcome": httpx.Response(
        200,
        json={
            "resourceType": "OperationOutcome",
            "issue": [
                {
                    "severity": "information",
                    "code": "informational",
                    "diagnostics": "Created CarePlan for Jane Doe (1961-02-03)",
                }
            ],
        },
    ),
    "reset": httpx.RemoteProtocolError("peer closed connection without sending complete body"),
}


@respx.mock
@pytest.mark.parametrize("answer", list(APPLIED_ANSWERS))
def test_a_transaction_without_a_readable_answer_may_have_been_applied_and_is_reconciled(
    definitions: Definitions, client: FhirClient, answer: str
) -> None:
    """The patient fails with a message saying the server may have applied the plan; the next
    run finds the CarePlan the server did store and has nothing to write."""
    plan, resources = plan_and_resources(definitions)
    careplan, goals = stored_with_goals(resources)
    respx.get(f"{BASE}/metadata").mock(
        return_value=httpx.Response(200, json=capability_statement("identifier"))
    )
    respx.get(f"{BASE}/CarePlan").mock(
        side_effect=[
            httpx.Response(200, json=searchset()),
            httpx.Response(200, json=searchset(careplan)),
        ]
    )
    for goal in goals:
        respx.get(f"{BASE}/Goal/{goal['id']}").mock(return_value=httpx.Response(200, json=goal))
    post = respx.post(BASE).mock(side_effect=[APPLIED_ANSWERS[answer]])

    with pytest.raises(FhirTailorError) as info:
        ServerSink(client).write(plan, resources)
    message = str(info.value)
    assert "the server may have applied the transaction" in message
    assert "the next run finds what it wrote and reconciles" in message
    assert "POST /fhir" in message
    assert "Jane" not in message and "1961" not in message, "no server free text"

    again = ServerSink(client).write(plan, resources)
    assert again.outcome == "unchanged"
    assert post.call_count == 1, "nothing written twice"


@respx.mock
def test_changed_plan_updates_under_if_match(definitions: Definitions, client: FhirClient) -> None:
    _, old = plan_and_resources(definitions, hba1c=9.6)
    careplan, goals = stored_with_goals(old)
    plan, new = plan_and_resources(definitions, hba1c=7.5)
    assert plan.fingerprint() != careplan["extension"][0]["valueString"]
    respx.get(f"{BASE}/CarePlan").mock(return_value=httpx.Response(200, json=searchset(careplan)))
    for goal in goals:
        respx.get(f"{BASE}/Goal/{goal['id']}").mock(return_value=httpx.Response(200, json=goal))
    post = respx.post(BASE).mock(
        return_value=httpx.Response(
            200, json={"resourceType": "Bundle", "type": "transaction-response", "entry": []}
        )
    )
    outcome = ServerSink(client).write(plan, new)
    assert outcome.outcome == "updated"
    sent = json.loads(post.calls[0].request.content)
    first = sent["entry"][0]
    assert first["request"] == {"method": "PUT", "url": "CarePlan/cp1", "ifMatch": 'W/"3"'}
    # Existing goals are referenced by their server ids, never re-created.
    assert [g["reference"] for g in first["resource"]["goal"]] == [
        f"Goal/g{n}" for n in range(len(goals))
    ]
    provenance = sent["entry"][-1]["resource"]
    assert provenance["target"][0] == {"reference": "CarePlan/cp1"}


@respx.mock
def test_clinician_edited_careplan_is_left_alone(
    definitions: Definitions, client: FhirClient
) -> None:
    plan, resources = plan_and_resources(definitions)
    careplan, _ = stored_with_goals(resources)
    careplan["status"] = "active"
    respx.get(f"{BASE}/CarePlan").mock(return_value=httpx.Response(200, json=searchset(careplan)))
    post = respx.post(BASE)
    outcome = ServerSink(client).write(plan, resources)
    assert outcome.outcome == "skipped-edited" and "status" in (outcome.detail or "")
    assert not post.called


@respx.mock
def test_dry_run_shows_a_diff_and_writes_nothing(
    definitions: Definitions, client: FhirClient
) -> None:
    _, old = plan_and_resources(definitions, hba1c=9.6)
    careplan, goals = stored_with_goals(old)
    plan, new = plan_and_resources(definitions, hba1c=7.5)
    respx.get(f"{BASE}/CarePlan").mock(return_value=httpx.Response(200, json=searchset(careplan)))
    for goal in goals:
        respx.get(f"{BASE}/Goal/{goal['id']}").mock(return_value=httpx.Response(200, json=goal))
    post = respx.post(BASE)
    shown: list[str] = []
    outcome = ServerSink(client, dry_run=True, echo=shown.append).write(plan, new)
    assert outcome.outcome == "would-update" and not post.called
    assert "--- CarePlan/cp1 (server)" in shown[0] and "+++ CarePlan/cp1 (new plan)" in shown[0]


# Social-care referrals: ServiceRequests written, compared and protected like Goals.


def stored_plan(resources: PlanResources) -> dict[str, dict[str, Any]]:
    """The plan's resources as a server keeps them: ids assigned, our urn:uuid references
    rewritten to them. Keyed by ``Type/id``; the CarePlan is ``CarePlan/cp1``, version 3."""
    ids = {resources.careplan.full_url: "CarePlan/cp1"}
    ids |= {g.full_url: f"Goal/g{n}" for n, g in enumerate(resources.goals)}
    ids |= {r.full_url: f"ServiceRequest/sr{n}" for n, r in enumerate(resources.service_requests)}

    def rewrite(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: ids.get(v, v) if isinstance(v, str) else rewrite(v) for k, v in value.items()
            }
        if isinstance(value, list):
            return [rewrite(item) for item in value]
        return value

    result = {}
    for entry in (resources.careplan, *resources.parts):
        rid = ids[entry.full_url]
        version = "3" if rid.startswith("CarePlan/") else "1"
        result[rid] = stored(rewrite(entry.resource), rid.split("/")[1], version)
    return result


def serve(server: dict[str, dict[str, Any]]) -> None:
    careplan = server["CarePlan/cp1"]
    respx.get(f"{BASE}/CarePlan").mock(return_value=httpx.Response(200, json=searchset(careplan)))
    for rid, resource in server.items():
        respx.get(f"{BASE}/{rid}").mock(return_value=httpx.Response(200, json=resource))


def transaction_response() -> httpx.Response:
    return httpx.Response(
        200, json={"resourceType": "Bundle", "type": "transaction-response", "entry": []}
    )


def sent_entries(post: respx.Route) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = json.loads(post.calls[0].request.content)["entry"]
    return entries


@respx.mock
@pytest.mark.parametrize("servicerequest_params", [("identifier",), ()])
def test_first_sync_creates_the_referral_in_the_same_transaction(
    client: FhirClient, servicerequest_params: tuple[str, ...]
) -> None:
    plan = food_plan()
    resources = to_fhir(plan, RECORDED)
    statement = capability_statement(servicerequest_params=servicerequest_params)
    respx.get(f"{BASE}/metadata").mock(return_value=httpx.Response(200, json=statement))
    respx.get(f"{BASE}/CarePlan").mock(return_value=httpx.Response(200, json=searchset()))
    post = respx.post(BASE).mock(return_value=transaction_response())
    assert ServerSink(client).write(plan, resources).outcome == "created"
    [referral] = [
        e for e in sent_entries(post) if e["resource"]["resourceType"] == "ServiceRequest"
    ]
    assert referral["fullUrl"] == resources.service_requests[0].full_url
    # conditional on identifier only where the server declares ServiceRequest's identifier search
    assert ("ifNoneExist" in referral["request"]) == bool(servicerequest_params)
    provenance = sent_entries(post)[-1]["resource"]
    assert {"reference": referral["fullUrl"]} in provenance["target"]


@respx.mock
def test_unchanged_plan_with_a_referral_writes_nothing(client: FhirClient) -> None:
    plan = food_plan()
    resources = to_fhir(plan, RECORDED)
    server = stored_plan(resources)
    serve(server)
    post = respx.post(BASE)
    outcome = ServerSink(client).write(plan, resources)
    assert outcome.outcome == "unchanged" and not post.called
    read = [call.request.url.path for call in respx.calls][1:]  # after the CarePlan search
    assert read == ["/fhir/Goal/g0", "/fhir/Goal/g1", "/fhir/ServiceRequest/sr0"]


@respx.mock
@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ({"status": "active"}, "status is 'active'"),
        ({"performer": [{"reference": "Organization/food-bank"}]}, "content digest differs"),
        ({"note": [{"text": "Patient prefers the Tuesday pantry"}]}, "content digest differs"),
        ({"meta": {"versionId": "2"}}, "no fhir-tailor tag"),
    ],
)
def test_clinician_edited_referral_is_left_alone(
    client: FhirClient, edit: dict[str, Any], expected: str
) -> None:
    server = stored_plan(to_fhir(food_plan(), RECORDED))
    server["ServiceRequest/sr0"] = {**server["ServiceRequest/sr0"], **edit}
    serve(server)
    post = respx.post(BASE)
    plan = food_plan(hba1c=8.0)  # a changed plan would otherwise be written
    outcome = ServerSink(client).write(plan, to_fhir(plan, RECORDED))
    assert outcome.outcome == "skipped-edited", outcome
    assert (outcome.detail or "").startswith("ServiceRequest/sr0 of CarePlan/cp1")
    assert expected in (outcome.detail or "")
    assert not post.called


@respx.mock
def test_changed_plan_updates_the_referral_under_if_match(client: FhirClient) -> None:
    server = stored_plan(to_fhir(food_plan(hba1c=7.0), RECORDED))
    serve(server)
    post = respx.post(BASE).mock(return_value=transaction_response())
    plan = food_plan(hba1c=8.0)
    assert ServerSink(client).write(plan, to_fhir(plan, RECORDED)).outcome == "updated"
    entries = sent_entries(post)
    requests = {e["request"]["url"]: e for e in entries if e["request"]["method"] == "PUT"}
    referral = requests["ServiceRequest/sr0"]
    assert referral["request"]["ifMatch"] == 'W/"1"'
    assert referral["resource"]["id"] == "sr0"
    pertains = referral["resource"]["extension"][0]["valueReference"]
    assert pertains == {"reference": "Goal/g1"}  # the stored SDOH goal, not a new urn
    careplan = requests["CarePlan/cp1"]["resource"]
    assert {"reference": {"reference": "ServiceRequest/sr0"}} in careplan["activity"]
    assert {"reference": "ServiceRequest/sr0"} in entries[-1]["resource"]["target"]
    assert [e["request"]["url"] for e in entries if e["request"]["method"] == "POST"] == [
        "Provenance"
    ]


@respx.mock
def test_a_new_referral_is_created_and_a_dropped_one_revoked(client: FhirClient) -> None:
    server = stored_plan(to_fhir(food_plan(with_referral=False), RECORDED))
    serve(server)
    post = respx.post(BASE).mock(return_value=transaction_response())
    plan = food_plan()
    assert ServerSink(client).write(plan, to_fhir(plan, RECORDED)).outcome == "updated"
    [created] = [
        e for e in sent_entries(post) if e["request"] == {"method": "POST", "url": "ServiceRequest"}
    ]
    pertains = created["resource"]["extension"][0]["valueReference"]
    assert pertains == {"reference": "Goal/g1"}  # an existing goal, rewritten to its id

    respx.reset()
    server = stored_plan(to_fhir(food_plan(), RECORDED))
    serve(server)
    post = respx.post(BASE).mock(return_value=transaction_response())
    plan = food_plan(with_referral=False)
    assert ServerSink(client).write(plan, to_fhir(plan, RECORDED)).outcome == "updated"
    [revoked] = [e for e in sent_entries(post) if e["request"]["url"] == "ServiceRequest/sr0"]
    assert revoked["request"]["ifMatch"] == 'W/"1"'
    resource = revoked["resource"]
    assert resource["status"] == "revoked"
    digest = next(e for e in resource["extension"] if e["url"].endswith("content-digest"))
    assert digest["valueString"] == content_digest(resource)  # still ours on the next run


@respx.mock
def test_dry_run_diffs_show_the_referral(client: FhirClient) -> None:
    server = stored_plan(to_fhir(food_plan(with_referral=False), RECORDED))
    serve(server)
    post = respx.post(BASE)
    shown: list[str] = []
    plan = food_plan()
    sink = ServerSink(client, dry_run=True, echo=shown.append)
    assert sink.write(plan, to_fhir(plan, RECORDED)).outcome == "would-update"
    assert not post.called
    assert shown[0].startswith("--- CarePlan/cp1 (server)")
    [referral] = [text for text in shown if "+++ ServiceRequest urn:uuid:" in text]
    assert referral.startswith("--- /dev/null") and "467771000124109" in referral
