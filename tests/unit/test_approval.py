"""Approval write-back decisions against a respx-mocked FHIR server."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import respx
from plans import REFERRAL_KEY, food_plan

from fhir_tailor.approval import ApprovalError, activate, approve
from fhir_tailor.client import FhirClient
from fhir_tailor.plan import Plan
from fhir_tailor.resources import content_digest, to_fhir
from fhir_tailor.sinks.server import foreign_change

BASE = "http://fhir.test/fhir"
RECORDED = datetime(2026, 11, 15, tzinfo=UTC)
KEPT_KEY = "diabetes-outpatient.hba1c-test"


def searchset(*resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r} for r in resources],
    }


def capability_statement() -> dict[str, Any]:
    identifier = [{"name": "identifier", "type": "token"}]
    return {
        "resourceType": "CapabilityStatement",
        "fhirVersion": "4.0.1",
        "rest": [
            {
                "mode": "server",
                "resource": [
                    {"type": t, "searchParam": identifier}
                    for t in ("CarePlan", "Goal", "ServiceRequest")
                ],
            }
        ],
    }


def stored(resource: dict[str, Any], rid: str, version: str = "1") -> dict[str, Any]:
    return {**resource, "id": rid, "meta": {**resource["meta"], "versionId": version}}


class FakeServer:
    """Holds CarePlans by id; the transaction handler applies the CarePlan entry it is sent."""

    def __init__(self, *careplans: dict[str, Any]) -> None:
        self.careplans = {c["id"]: c for c in careplans}
        self.sent: list[dict[str, Any]] = []
        respx.get(f"{BASE}/metadata").mock(
            return_value=httpx.Response(200, json=capability_statement())
        )
        respx.get(f"{BASE}/CarePlan").mock(side_effect=self.search)
        self.post = respx.post(BASE).mock(side_effect=self.transaction)

    def search(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=searchset(*self.careplans.values()))

    def transaction(self, request: httpx.Request) -> httpx.Response:
        bundle = json.loads(request.content)
        self.sent.append(bundle)
        entry = bundle["entry"][0]
        rid = entry["resource"].get("id", "new1")
        self.careplans[rid] = stored(entry["resource"], rid, "9")
        return httpx.Response(
            200,
            json={
                "resourceType": "Bundle",
                "type": "transaction-response",
                "entry": [{"response": {"status": "200 OK", "location": f"CarePlan/{rid}"}}],
            },
        )


@pytest.fixture
def client() -> FhirClient:
    return FhirClient(BASE, sleep=lambda _: None)


@pytest.fixture
def plan() -> Plan:
    plan = food_plan()
    assert {REFERRAL_KEY, KEPT_KEY} <= {a.key for a in plan.activities}
    return plan


def by_type(bundle: dict[str, Any], rtype: str) -> list[dict[str, Any]]:
    return [e for e in bundle["entry"] if e["resource"]["resourceType"] == rtype]


@respx.mock
def test_first_approval_creates_an_active_plan_without_the_dropped_activity(
    client: FhirClient, plan: Plan
) -> None:
    server = FakeServer()
    result = approve(client, plan, {REFERRAL_KEY}, RECORDED)
    assert (result.outcome, result.careplan) == ("created", "CarePlan/new1")
    assert result.activities == len(plan.activities) - 1
    (sent,) = server.sent
    (careplan,) = by_type(sent, "CarePlan")
    assert careplan["resource"]["status"] == "active"
    assert careplan["request"]["ifNoneExist"].startswith("identifier=")
    assert len(careplan["resource"]["activity"]) == len(plan.activities) - 1
    assert not by_type(sent, "ServiceRequest")  # the dropped referral is not written at all
    assert {g["resource"]["lifecycleStatus"] for g in by_type(sent, "Goal")} == {"active"}


@respx.mock
def test_our_draft_is_replaced_with_if_match_and_the_dropped_referral_revoked(
    client: FhirClient, plan: Plan
) -> None:
    draft = to_fhir(plan, RECORDED)
    referral = stored(draft.service_requests[0].resource, "sr1", "2")
    goals = [stored(g.resource, f"g{n}") for n, g in enumerate(draft.goals)]
    careplan = stored(draft.careplan.resource, "cp1", "3")
    careplan["goal"] = [{"reference": f"Goal/{g['id']}"} for g in goals]
    careplan["activity"] = [
        {"reference": {"reference": "ServiceRequest/sr1"}} if "reference" in a else a
        for a in careplan["activity"]
    ]
    server = FakeServer(careplan)
    for goal in goals:
        respx.get(f"{BASE}/Goal/{goal['id']}").mock(return_value=httpx.Response(200, json=goal))
    respx.get(f"{BASE}/ServiceRequest/sr1").mock(return_value=httpx.Response(200, json=referral))

    result = approve(client, plan, {REFERRAL_KEY}, RECORDED)

    assert (result.outcome, result.careplan) == ("updated", "CarePlan/cp1")
    (sent,) = server.sent
    first = sent["entry"][0]
    assert first["request"] == {"method": "PUT", "url": "CarePlan/cp1", "ifMatch": 'W/"3"'}
    assert first["resource"]["status"] == "active"
    (withdrawn,) = by_type(sent, "ServiceRequest")
    assert withdrawn["request"]["url"] == "ServiceRequest/sr1"
    assert withdrawn["resource"]["status"] == "revoked"


@respx.mock
def test_a_plan_edited_by_someone_else_is_refused_untouched(client: FhirClient, plan: Plan) -> None:
    careplan = stored(to_fhir(plan, RECORDED).careplan.resource, "cp1")
    careplan["title"] = "Edited by Dr. Example"
    server = FakeServer(careplan)
    with pytest.raises(ApprovalError, match=r"CarePlan/cp1 .*edited since"):
        approve(client, plan, set(), RECORDED)
    assert not server.post.called


@respx.mock
def test_approving_the_same_choice_twice_writes_once(client: FhirClient, plan: Plan) -> None:
    server = FakeServer()
    approve(client, plan, {KEPT_KEY}, RECORDED)
    again = approve(client, plan, {KEPT_KEY}, RECORDED)
    assert again.outcome == "unchanged"
    assert server.post.call_count == 1


@respx.mock
def test_an_approved_plan_is_not_overwritten_by_other_choices(
    client: FhirClient, plan: Plan
) -> None:
    server = FakeServer()
    approve(client, plan, {KEPT_KEY}, RECORDED)
    with pytest.raises(ApprovalError, match="no longer 'draft'"):
        approve(client, plan, set(), RECORDED)
    assert server.post.call_count == 1


@pytest.mark.parametrize("status", [412, 409])  # 409: HAPI FHIR's answer to a stale If-Match
@respx.mock
def test_a_version_conflict_says_to_reload(client: FhirClient, plan: Plan, status: int) -> None:
    server = FakeServer(stored(to_fhir(plan, RECORDED).careplan.resource, "cp1"))
    server.post.mock(
        side_effect=None,
        return_value=httpx.Response(status, json={"resourceType": "OperationOutcome"}),
    )
    with pytest.raises(ApprovalError, match="reload"):
        approve(client, plan, set(), RECORDED)


def test_an_unknown_activity_is_refused(client: FhirClient, plan: Plan) -> None:
    with pytest.raises(ApprovalError, match="no such activity"):
        approve(client, plan, {"not-an-activity"}, RECORDED)


def test_activated_resources_carry_fresh_digests(plan: Plan) -> None:
    resources = activate(to_fhir(plan, RECORDED))
    for entry in (resources.careplan, *resources.parts):
        digest = next(
            e["valueString"] for e in entry.resource["extension"] if "content-digest" in e["url"]
        )
        assert digest == content_digest(entry.resource)
    assert resources.service_requests[0].resource["status"] == "active"


APPROVER = "PractitionerRole/role-7"


def test_the_approver_authors_the_careplan_and_is_named_in_the_provenance(plan: Plan) -> None:
    resources = activate(to_fhir(plan, RECORDED), approver=APPROVER)
    careplan = resources.careplan.resource
    assert careplan["author"] == {"reference": APPROVER}
    agents = resources.provenance.resource["agent"]
    assert [a["type"]["coding"][0]["code"] for a in agents] == ["assembler", "author"]
    assert agents[1]["who"] == {"reference": APPROVER}
    assert agents[1]["type"]["coding"][0]["system"] == (
        "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
    )
    # without an approver, nothing claims one
    anonymous = activate(to_fhir(plan, RECORDED))
    assert "author" not in anonymous.careplan.resource
    assert len(anonymous.provenance.resource["agent"]) == 1


@respx.mock
def test_an_authored_approval_stays_ours_unedited_and_approving_again_writes_nothing(
    client: FhirClient, plan: Plan
) -> None:
    server = FakeServer()
    approve(client, plan, {KEPT_KEY}, RECORDED, approver=APPROVER)
    (provenance,) = by_type(server.sent[0], "Provenance")
    assert provenance["resource"]["agent"][-1]["who"] == {"reference": APPROVER}
    stored_plan = server.careplans["new1"]
    # the digest covers the author: the stored plan is ours and unedited, only no longer draft
    assert foreign_change(stored_plan) == "status is 'active', no longer 'draft'"
    # another clinician approving the same choice finds it approved already
    again = approve(client, plan, {KEPT_KEY}, RECORDED, approver="Practitioner/other")
    assert again.outcome == "unchanged"
    assert server.post.call_count == 1
    # changing the author afterwards is an edit like any other
    edited = {**stored_plan, "author": {"reference": "Practitioner/other"}}
    assert content_digest(edited) != content_digest(stored_plan)
