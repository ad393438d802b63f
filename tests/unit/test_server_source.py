"""The server source: which searches it runs per patient (respx; the real server is in
tests/integration)."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import respx

from fhir_tailor.client import FhirClient
from fhir_tailor.errors import FhirServerError
from fhir_tailor.record import ReadIssue
from fhir_tailor.report import RunReport
from fhir_tailor.retry import RetryPolicy
from fhir_tailor.sources.server import (
    EVERYTHING,
    PatientSelection,
    ServerSource,
    declares_everything,
)

BASE = "https://fhir.example.org/r4"
DECLARED = ("Condition", "Observation", "QuestionnaireResponse", "Encounter")


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
def test_types_the_server_gives_no_way_to_read_are_named_on_the_record(
    respx_mock: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    """Not a silent skip: the record says what it lacks (issue 15 #7)."""
    with caplog.at_level(logging.WARNING):
        records, issues = read_one(("Condition", "Observation"), respx_mock)
    assert "QuestionnaireResponse, Encounter, MedicationRequest, ServiceRequest" in caplog.text
    [record] = records
    assert [r["resourceType"] for r in record.resources] == ["Condition", "Observation"]
    assert record.unread_types == (
        "QuestionnaireResponse",
        "Encounter",
        "MedicationRequest",
        "ServiceRequest",
    )
    assert issues == []
    searched = {call.request.url.path for call in respx_mock.calls}
    assert "/r4/QuestionnaireResponse" not in searched


def statement(resources: list[dict[str, Any]], **rest: Any) -> dict[str, Any]:
    return {
        "resourceType": "CapabilityStatement",
        "fhirVersion": "4.0.1",
        "rest": [{"mode": "server", "resource": resources, **rest}],
    }


def searchable(rtype: str, *parameters: str) -> dict[str, Any]:
    return {"type": rtype, "searchParam": [{"name": p, "type": "reference"} for p in parameters]}


def serve_patient(router: respx.MockRouter, declared: dict[str, Any]) -> None:
    router.get(f"{BASE}/metadata").respond(json=declared)
    router.get(f"{BASE}/Patient/p1").respond(json={"resourceType": "Patient", "id": "p1"})
    for rtype in ("Condition", "Observation"):
        router.get(f"{BASE}/{rtype}", params={"patient": "p1"}).respond(
            json=bundle(about(rtype, f"{rtype[:3].lower()}1"))
        )


def read_record(declared: dict[str, Any], router: respx.MockRouter) -> tuple[Any, RunReport]:
    serve_patient(router, declared)
    report = RunReport()
    with FhirClient(BASE) as client:
        [record] = ServerSource(client, PatientSelection(ids=("p1",))).records(report.read_issue)
    return record, report


@respx.mock(assert_all_called=True)
def test_a_type_without_patient_search_is_read_by_subject(respx_mock: respx.MockRouter) -> None:
    declared = statement(
        [
            searchable("QuestionnaireResponse", "subject"),
            *(searchable(t, "patient") for t in ("Encounter", "MedicationRequest")),
            searchable("ServiceRequest", "subject", "patient"),
        ]
    )
    by_subject = respx_mock.get(
        f"{BASE}/QuestionnaireResponse", params={"subject": "Patient/p1"}
    ).respond(json=bundle(about("QuestionnaireResponse", "q1")))
    for rtype in ("Encounter", "MedicationRequest", "ServiceRequest"):
        respx_mock.get(f"{BASE}/{rtype}", params={"patient": "p1"}).respond(json=bundle())
    record, report = read_record(declared, respx_mock)
    assert by_subject.call_count == 1
    assert [r["id"] for r in record.of_type("QuestionnaireResponse")] == ["q1"]
    assert record.unread_types == ()
    assert report.read_issues == []


@pytest.mark.parametrize(
    "declaration",
    [
        {"resource": {"name": "everything", "definition": "http://example.org/OpDef/P-everything"}},
        {"system": {"name": "patient-everything", "definition": EVERYTHING + "|4.0.1"}},
    ],
)
def test_types_without_any_search_are_read_through_everything(
    declaration: dict[str, Any],
) -> None:
    patient: dict[str, Any] = {"type": "Patient"}
    rest: dict[str, Any] = {}
    if "resource" in declaration:
        patient["operation"] = [declaration["resource"]]
    else:
        rest["operation"] = [declaration["system"]]
    declared = statement([patient, searchable("Encounter", "patient")], **rest)
    # A server that ignores _type sends the whole compartment: only the asked types are kept.
    page = bundle(
        {"resourceType": "Patient", "id": "p1"},
        about("Condition", "con1"),
        about("QuestionnaireResponse", "q1"),
        about("ServiceRequest", "s1"),
        {**about("QuestionnaireResponse", "q-other"), "subject": {"reference": "Patient/p2"}},
    )
    with respx.mock(assert_all_called=True) as router:
        router.get(f"{BASE}/Encounter", params={"patient": "p1"}).respond(json=bundle())
        everything = router.get(f"{BASE}/Patient/p1/$everything").respond(json=page)
        record, _ = read_record(declared, router)
    params = everything.calls.last.request.url.params
    assert params["_type"] == "QuestionnaireResponse,MedicationRequest,ServiceRequest"
    assert sorted(f"{r['resourceType']}/{r['id']}" for r in record.resources) == [
        "Condition/con1",
        "Observation/obs1",
        "QuestionnaireResponse/q1",
        "ServiceRequest/s1",
    ]
    assert record.unread_types == ()


@respx.mock(assert_all_called=False)
def test_a_failing_everything_fails_the_patient(respx_mock: respx.MockRouter) -> None:
    patient = {"type": "Patient", "operation": [{"name": "everything", "definition": EVERYTHING}]}
    respx_mock.get(f"{BASE}/Patient/p1/$everything").respond(403, json=FORBIDDEN)
    serve_patient(respx_mock, statement([patient]))
    report = RunReport()
    with FhirClient(BASE) as client:
        source = ServerSource(client, PatientSelection(ids=("p1",)))
        assert list(source.records(report.read_issue)) == []
    [outcome] = report.patients
    assert outcome.outcome == "failed" and "Patient/$everything" in (outcome.detail or "")


def test_declares_everything_reads_the_capability_statement() -> None:
    assert not declares_everything(statement([searchable("Patient", "name")]))
    assert not declares_everything({"rest": "garbage"})
    encounter = {"type": "Encounter", "operation": [{"name": "everything"}]}
    assert not declares_everything(statement([encounter]))
    assert declares_everything(
        statement([{"type": "Patient", "operation": [{"name": "everything"}]}])
    )


@respx.mock(assert_all_called=False)
def test_a_failing_supporting_search_fails_the_patient(respx_mock: respx.MockRouter) -> None:
    """A plan from part of a record can miss what the rest held (issue 15 #4)."""
    declared = (
        "Condition",
        "Observation",
        "QuestionnaireResponse",
        "Encounter",
        "MedicationRequest",
    )
    records, issues = read_one(declared, respx_mock)
    assert records == []
    [issue] = issues
    assert issue.location == "MedicationRequest?patient"
    assert "403" in issue.reason
    assert issue.unread_patient == "p1" and not issue.not_found


@respx.mock(assert_all_called=False)
def test_a_supporting_search_failing_after_retries_fails_the_patient(
    respx_mock: respx.MockRouter,
) -> None:
    respx_mock.get(f"{BASE}/metadata").respond(json=capabilities(*DECLARED))
    respx_mock.get(f"{BASE}/Patient/p1").respond(json={"resourceType": "Patient", "id": "p1"})
    for rtype in DECLARED:
        respx_mock.get(f"{BASE}/{rtype}").respond(json=bundle(about(rtype, "x1")))
    encounters = respx_mock.get(f"{BASE}/Encounter").respond(503)
    report = RunReport()
    retry = RetryPolicy(max_attempts=3, base_delay=0)
    with FhirClient(BASE, retry=retry, sleep=lambda _: None) as client:
        source = ServerSource(client, PatientSelection(ids=("p1",)))
        assert list(source.records(report.read_issue)) == []
    assert encounters.call_count == 3
    [outcome] = report.patients
    assert outcome.outcome == "failed" and "Encounter?patient" in (outcome.detail or "")
    assert report.failed


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
    assert sorted(failed) == ["Patient/p1"]
    assert "Condition?patient" in failed["Patient/p1"] and "403" in failed["Patient/p1"]
    # a patient the server does not hold is not a failure to read it
    (gone,) = [p for p in report.patients if p.patient == "Patient/gone"]
    assert (gone.outcome, gone.detail) == ("not-found", "Patient/gone not found on the server")
    assert [i.resource_id for i in report.read_issues if i.not_found] == ["gone"]
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


@respx.mock(assert_all_called=False)
def test_a_failing_changed_since_search_of_a_supporting_type_leaves_the_run_incomplete(
    respx_mock: respx.MockRouter,
) -> None:
    """Patients whose only change is an Encounter are missed: the watermark must hold."""
    respx_mock.get(f"{BASE}/metadata").respond(json=capabilities(*DECLARED))
    respx_mock.get(f"{BASE}/Patient").respond(json=bundle())
    for rtype in ("Condition", "Observation", "QuestionnaireResponse"):
        respx_mock.get(f"{BASE}/{rtype}").respond(json=bundle())
    respx_mock.get(f"{BASE}/Encounter").respond(403, json=FORBIDDEN)
    report = RunReport()
    with FhirClient(BASE) as client:
        source = ServerSource(client, PatientSelection(since=datetime(2026, 11, 1, tzinfo=UTC)))
        assert list(source.records(report.read_issue)) == []
    [issue] = report.unread_inputs
    assert issue.location == "Encounter?_lastUpdated" and "403" in issue.reason
    assert report.failed


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


ALL_TYPES = (
    "Condition",
    "Observation",
    "QuestionnaireResponse",
    "Encounter",
    "MedicationRequest",
    "ServiceRequest",
)


def serving(delays: dict[str, float], failing: str | None = None) -> httpx.MockTransport:
    """A server declaring every type's patient search; each search answers after its delay
    (``failing``'s with a 403 at once), and the peak of searches in flight is counted."""
    state = {"running": 0, "peak": 0}

    async def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/r4/")
        if path == "metadata":
            return httpx.Response(200, json=capabilities(*ALL_TYPES))
        if path.startswith("Patient/"):
            return httpx.Response(200, json={"resourceType": "Patient", "id": "p1"})
        if path == failing:
            return httpx.Response(403, json=FORBIDDEN)
        state["running"] += 1
        state["peak"] = max(state["peak"], state["running"])
        try:
            await asyncio.sleep(delays.get(path, 0.02))
        finally:
            state["running"] -= 1
        return httpx.Response(200, json=bundle(about(path, f"{path[:3].lower()}1")))

    transport = httpx.MockTransport(handle)
    transport.state = state  # type: ignore[attr-defined]
    return transport


def test_a_patients_searches_are_sent_together() -> None:
    """One round trip per patient rather than one per type (issue 17 #3), records unchanged."""
    transport = serving({})
    with FhirClient(BASE, transport=transport) as client:
        source = ServerSource(client, PatientSelection(ids=("p1",)), concurrency=1)
        [record] = source.records(lambda _issue: None)
    assert transport.state["peak"] == len(ALL_TYPES)  # type: ignore[attr-defined]
    assert [r["resourceType"] for r in record.resources] == list(ALL_TYPES)


def test_a_failing_search_stops_the_patients_other_searches() -> None:
    """The patient fails at once, naming the search that failed; the slow ones are dropped."""
    transport = serving({"Observation": 3600, "ServiceRequest": 3600}, failing="Encounter")
    report = RunReport()
    started = time.monotonic()
    with FhirClient(BASE, transport=transport) as client:
        source = ServerSource(client, PatientSelection(ids=("p1",)))
        assert list(source.records(report.read_issue)) == []
    assert time.monotonic() - started < 30
    [outcome] = report.patients
    assert outcome.outcome == "failed" and "Encounter?patient" in (outcome.detail or "")
