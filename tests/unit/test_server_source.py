"""The server source: which searches it runs per patient (respx; the real server is in
tests/integration)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import respx

from fhir_tailor.client import FhirClient
from fhir_tailor.errors import FhirServerError
from fhir_tailor.record import ReadIssue
from fhir_tailor.report import RunReport
from fhir_tailor.sources.server import PatientSelection, ServerSource

BASE = "https://fhir.example.org/r4"


def capabilities(*types: str) -> dict[str, Any]:
    return {
        "resourceType": "CapabilityStatement",
        "fhirVersion": "4.0.1",
        "rest": [
            {
                "mode": "server",
                "resource": [
                    {"type": t, "searchParam": [{"name": "patient", "type": "reference"}]}
                    for t in types
                ],
            }
        ],
    }


def bundle(*resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r} for r in resources],
    }


def about(rtype: str, rid: str) -> dict[str, Any]:
    return {"resourceType": rtype, "id": rid, "subject": {"reference": "Patient/p1"}}


def read_one(declared: tuple[str, ...], router: respx.MockRouter) -> tuple[Any, list[ReadIssue]]:
    router.get(f"{BASE}/metadata").respond(json=capabilities(*declared))
    router.get(f"{BASE}/Patient/p1").respond(json={"resourceType": "Patient", "id": "p1"})
    for rtype in ("Condition", "Observation", "QuestionnaireResponse", "Encounter"):
        router.get(f"{BASE}/{rtype}", params={"patient": "p1"}).respond(
            json=bundle(about(rtype, f"{rtype[:3].lower()}1"))
        )
    router.get(f"{BASE}/MedicationRequest", params={"patient": "p1"}).respond(
        403, json={"resourceType": "OperationOutcome", "issue": [{"code": "forbidden"}]}
    )
    issues: list[ReadIssue] = []
    with FhirClient(BASE) as client:
        source = ServerSource(client, PatientSelection(ids=("p1",)))
        records = list(source.records(issues.append))
    return records, issues


@respx.mock(assert_all_called=False)
def test_optional_types_are_read_only_where_declared(
    respx_mock: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        records, issues = read_one(("Condition", "Observation"), respx_mock)
    assert "Encounter, MedicationRequest, QuestionnaireResponse" in caplog.text
    assert [r["resourceType"] for r in records[0].resources] == ["Condition", "Observation"]
    assert issues == []
    searched = {call.request.url.path for call in respx_mock.calls}
    assert "/r4/QuestionnaireResponse" not in searched


@respx.mock(assert_all_called=False)
def test_a_failing_optional_type_is_reported_and_the_patient_kept(
    respx_mock: respx.MockRouter,
) -> None:
    declared = (
        "Condition",
        "Observation",
        "QuestionnaireResponse",
        "Encounter",
        "MedicationRequest",
    )
    records, issues = read_one(declared, respx_mock)
    assert len(records) == 1
    assert [r["resourceType"] for r in records[0].resources] == [
        "Condition",
        "Observation",
        "QuestionnaireResponse",
        "Encounter",
    ]
    assert len(issues) == 1
    assert issues[0].location == "MedicationRequest?patient"
    assert "403" in issues[0].reason
    assert issues[0].unread_patient is None, "the patient is still profiled"


FORBIDDEN = {"resourceType": "OperationOutcome", "issue": [{"code": "forbidden"}]}


@respx.mock(assert_all_called=False)
def test_a_failing_required_search_fails_the_patient_in_the_report(
    respx_mock: respx.MockRouter,
) -> None:
    respx_mock.get(f"{BASE}/metadata").respond(json=capabilities("Condition", "Observation"))
    for pid in ("p1", "p2"):
        respx_mock.get(f"{BASE}/Patient/{pid}").respond(json={"resourceType": "Patient", "id": pid})
        respx_mock.get(f"{BASE}/Observation", params={"patient": pid}).respond(json=bundle())
    respx_mock.get(f"{BASE}/Condition", params={"patient": "p1"}).respond(403, json=FORBIDDEN)
    respx_mock.get(f"{BASE}/Condition", params={"patient": "p2"}).respond(json=bundle())
    report = RunReport()
    with FhirClient(BASE) as client:
        source = ServerSource(client, PatientSelection(ids=("p1", "p2", "gone")))
        respx_mock.get(f"{BASE}/Patient/gone").respond(404, json=FORBIDDEN)
        records = list(source.records(report.read_issue))
    assert [r.patient_id for r in records] == ["p2"]
    failed = {p.patient: p.detail or "" for p in report.patients if p.outcome == "failed"}
    assert sorted(failed) == ["Patient/gone", "Patient/p1"]
    assert "Condition?patient" in failed["Patient/p1"] and "403" in failed["Patient/p1"]
    assert report.failed, "a run with unread patients is not complete"


@respx.mock(assert_all_called=False)
def test_a_failing_changed_since_search_stops_the_listing(respx_mock: respx.MockRouter) -> None:
    respx_mock.get(f"{BASE}/metadata").respond(json=capabilities("Condition", "Observation"))
    respx_mock.get(f"{BASE}/Patient").respond(json=bundle())
    respx_mock.get(f"{BASE}/Condition").respond(403, json=FORBIDDEN)
    respx_mock.get(f"{BASE}/Observation").respond(json=bundle())
    since = datetime(2026, 11, 1, tzinfo=UTC)
    with FhirClient(BASE) as client:
        source = ServerSource(client, PatientSelection(since=since))
        with pytest.raises(FhirServerError, match="403"):
            list(source.records(lambda _issue: None))


def test_capabilities_are_asked_once_per_run() -> None:
    with respx.mock(base_url=BASE) as router:
        metadata = router.get("/metadata").respond(json=capabilities("Condition", "Observation"))
        for pid in ("p1", "p2"):
            router.get(f"/Patient/{pid}").respond(json={"resourceType": "Patient", "id": pid})
        router.get("/Condition").mock(return_value=httpx.Response(200, json=bundle()))
        router.get("/Observation").mock(return_value=httpx.Response(200, json=bundle()))
        with FhirClient(BASE) as client:
            source = ServerSource(client, PatientSelection(ids=("p1", "p2")))
            assert len(list(source.records(lambda _issue: None))) == 2
        assert metadata.call_count == 1
