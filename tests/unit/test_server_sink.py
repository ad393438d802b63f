"""Write-back decisions of the server sink, against a respx-mocked server."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import respx
from builders import SNOMED, condition, observation, quantity, record
from conftest import AS_OF

from fhir_tailor.client import FhirClient
from fhir_tailor.definitions import Definitions
from fhir_tailor.pipeline import profile_and_plan
from fhir_tailor.plan import Plan
from fhir_tailor.resources import PlanResources, to_fhir
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


def capability_statement(*goal_params: str) -> dict[str, Any]:
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
    assert [g["reference"] for g in first["resource"]["goal"]] == ["Goal/g0"]
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
