"""The pipeline keeps going when one patient fails, and reports it."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import respx
from builders import AS_OF, SNOMED, condition, observation, patient, quantity, record

from fhir_tailor import pipeline
from fhir_tailor.client import FhirClient
from fhir_tailor.definitions import Definitions
from fhir_tailor.errors import FhirTailorError
from fhir_tailor.pipeline import run
from fhir_tailor.plan import Plan
from fhir_tailor.record import IssueHandler, PatientRecord, ReadIssue
from fhir_tailor.report import PatientOutcome, RunReport
from fhir_tailor.resources import PlanResources
from fhir_tailor.retry import RetryPolicy
from fhir_tailor.sinks.files import FolderSink
from fhir_tailor.sources import file_source
from fhir_tailor.sources.server import PatientSelection, ServerSource
from fhir_tailor.state import RunState

RECORDED = datetime(2026, 11, 15, tzinfo=UTC)
BASE = "https://fhir.example.org/r4"
DIABETES = condition("c1", SNOMED, "44054006")


class ListSource:
    def __init__(self, *records: PatientRecord) -> None:
        self.records_ = records

    def records(self, on_issue: IssueHandler) -> list[PatientRecord]:  # type: ignore[override]
        on_issue(ReadIssue("x.ndjson:3", "invalid JSON"))
        return list(self.records_)


class FlakySink:
    """Fails for one patient, crashes for another, writes the rest."""

    def __init__(self) -> None:
        self.written: list[str] = []

    def write(self, plan: Plan, resources: PlanResources) -> PatientOutcome:
        if plan.patient == "Patient/bad":
            raise FhirTailorError("HTTP 422 from POST /fhir: processing")
        if plan.patient == "Patient/crash":
            raise KeyError("surprise")
        self.written.append(plan.patient)
        return PatientOutcome(plan.patient, "written")

    def close(self) -> None:
        return None


def test_one_failing_patient_does_not_abort_the_run(definitions: Definitions) -> None:
    diabetic = condition("c1", SNOMED, "44054006")
    source = ListSource(
        record(diabetic, pid="a"),
        record({**diabetic, "subject": {"reference": "Patient/bad"}}, pid="bad"),
        record({**diabetic, "subject": {"reference": "Patient/crash"}}, pid="crash"),
        record(diabetic, pid="z"),
    )
    sink = FlakySink()
    report = run(
        source,
        sink,
        definitions,
        as_of=AS_OF,
        recorded=datetime(2026, 11, 15, tzinfo=UTC),
        report=RunReport(),
    )
    assert sink.written == ["Patient/a", "Patient/z"]
    assert report.counts == {"written": 2, "failed": 2}
    assert report.failed
    details = {p.patient: p.detail for p in report.patients}
    assert "HTTP 422" in (details["Patient/bad"] or "")
    assert "KeyError" in (details["Patient/crash"] or "")
    summary = report.to_dict()
    assert summary["read_issues"] == [
        {
            "location": "x.ndjson:3",
            "reason": "invalid JSON",
            "resource_type": None,
            "resource_id": None,
            "unread_patient": None,
            "not_found": False,
            "unread_input": False,
        }
    ]
    assert summary["counts"] == {"failed": 2, "written": 2}


class RecordingSink:
    def __init__(self) -> None:
        self.written: list[str] = []

    def write(self, plan: Plan, resources: PlanResources) -> PatientOutcome:
        self.written.append(plan.patient)
        return PatientOutcome(plan.patient, "written")

    def close(self) -> None:
        return None


def searchset(*resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r} for r in resources],
    }


def test_a_patient_whose_supporting_search_fails_is_not_planned_and_holds_the_watermark(
    definitions: Definitions, tmp_path: Path
) -> None:
    """Every Encounter search answered 503 (issue 15 #4): no plan from part of a record."""
    types = ("Condition", "Observation", "Encounter")
    declared = {
        "resourceType": "CapabilityStatement",
        "fhirVersion": "4.0.1",
        "rest": [{"resource": [{"type": t, "searchParam": [{"name": "patient"}]} for t in types]}],
    }
    state = RunState.load(tmp_path / "state.json")
    state.begin("everyone", RECORDED, None)
    sink = RecordingSink()
    report = RunReport()
    with respx.mock(base_url=BASE, assert_all_called=False) as server:
        server.get("/metadata").respond(json=declared)
        server.get("/Patient").respond(json=searchset(patient("p1"), patient("p2")))
        for pid in ("p1", "p2"):
            diabetes = {**DIABETES, "subject": {"reference": f"Patient/{pid}"}}
            server.get("/Condition", params={"patient": pid}).respond(json=searchset(diabetes))
            server.get("/Observation", params={"patient": pid}).respond(json=searchset())
        server.get("/Encounter", params={"patient": "p1"}).respond(503)
        server.get("/Encounter", params={"patient": "p2"}).respond(json=searchset())
        retry = RetryPolicy(max_attempts=2, base_delay=0)
        with FhirClient(BASE, retry=retry, sleep=lambda _: None) as client:
            source = ServerSource(client, PatientSelection(everyone=True))
            run(
                source,
                sink,
                definitions,
                as_of=AS_OF,
                recorded=RECORDED,
                report=report,
                state=state,
            )
    assert sink.written == ["Patient/p2"]
    assert {p.patient: p.outcome for p in report.patients} == {
        "Patient/p1": "failed",
        "Patient/p2": "written",
    }
    assert report.failed
    again = RunState.load(tmp_path / "state.json")
    assert again.watermark is None and again.resuming, "the next run retries Patient/p1"
    assert again.done == {"p2"}


def test_a_record_lacking_a_type_is_planned_and_named_in_the_report(
    definitions: Definitions, tmp_path: Path
) -> None:
    """Issue 15 #7: a plan made without questionnaires must not look complete."""
    lacking = replace(record(DIABETES, pid="p1"), unread_types=("QuestionnaireResponse",))
    state = RunState.load(tmp_path / "state.json")
    state.begin("everyone", RECORDED, None)
    report = RunReport()
    sink = RecordingSink()
    source = ListSource(lacking, record(DIABETES, pid="p2"))
    run(source, sink, definitions, as_of=AS_OF, recorded=RECORDED, report=report, state=state)
    assert sink.written == ["Patient/p1", "Patient/p2"]
    assert report.incomplete and not report.failed
    entries = {p["patient"]: p for p in report.to_dict()["patients"]}
    assert entries["Patient/p1"]["not_read"] == ["QuestionnaireResponse"]
    assert "not_read" not in entries["Patient/p2"]
    assert report.to_dict()["not_read"] == {"QuestionnaireResponse": 1}
    assert report.summary().endswith(
        "; 1 patients' plans decided without types not readable from this server "
        "(QuestionnaireResponse 1)"
    )
    # No later run could read more: the watermark moves.
    assert RunState.load(tmp_path / "state.json").watermark == RECORDED


def test_a_plan_from_a_server_that_cannot_give_a_type_says_so_in_its_careplan(
    definitions: Definitions, tmp_path: Path
) -> None:
    """Issue 15 leftover: the server declares a way to read Encounters and nothing for the other
    supporting types; the CarePlan written names exactly those, as the report does."""
    types = ("Condition", "Observation", "Encounter")
    declared = {
        "resourceType": "CapabilityStatement",
        "fhirVersion": "4.0.1",
        "rest": [{"resource": [{"type": t, "searchParam": [{"name": "patient"}]} for t in types]}],
    }
    report = RunReport()
    sink = FolderSink(tmp_path / "out", "ndjson")
    with respx.mock(base_url=BASE, assert_all_called=False) as server:
        server.get("/metadata").respond(json=declared)
        server.get("/Patient/p1").respond(json=patient("p1"))
        server.get("/Condition", params={"patient": "p1"}).respond(json=searchset(DIABETES))
        server.get("/Observation", params={"patient": "p1"}).respond(json=searchset())
        server.get("/Encounter", params={"patient": "p1"}).respond(json=searchset())
        with FhirClient(BASE) as client:
            source = ServerSource(client, PatientSelection(ids=("p1",)))
            run(source, sink, definitions, as_of=AS_OF, recorded=RECORDED, report=report)
    sink.close()
    unread = ["QuestionnaireResponse", "MedicationRequest", "ServiceRequest"]
    assert report.to_dict()["patients"][0]["not_read"] == unread
    (careplan,) = [json.loads(line) for line in (tmp_path / "out/CarePlan.ndjson").open()]
    (note,) = careplan["note"]
    assert note["text"].startswith(
        "Drafted without the patient's QuestionnaireResponse, MedicationRequest and "
        "ServiceRequest resources: the server offers no way to read them for a patient"
    )
    assert "Incomplete record." in careplan["text"]["div"]


def test_an_input_file_that_is_not_fhir_fails_the_run(
    definitions: Definitions, tmp_path: Path
) -> None:
    """Issue 15 #9: the patients read are planned, the run is reported incomplete."""
    folder = tmp_path / "in"
    folder.mkdir()
    entries = [{"resource": patient("p1")}, {"resource": DIABETES}]
    (folder / "good.json").write_text(json.dumps({"resourceType": "Bundle", "entry": entries}))
    (folder / "notes.json").write_text('{"title": "not FHIR"}')
    report = RunReport()
    sink = RecordingSink()
    run(file_source(folder), sink, definitions, as_of=AS_OF, recorded=RECORDED, report=report)
    assert sink.written == ["Patient/p1"]
    assert report.failed and report.counts == {"written": 1}
    assert [issue.location for issue in report.unread_inputs] == ["notes.json"]
    assert report.to_dict()["unread_inputs"] == 1
    assert report.summary().startswith("1 patients (1 written); 1 inputs unreadable; 0 ")


def test_a_run_reads_records_without_what_no_rule_reads_and_writes_the_same(
    definitions: Definitions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files are grouped leaving out the Observations no rule reads (``profile.bears_on``):
    profiles never see them, and the plans and report are those made from whole records."""
    folder = tmp_path / "in"
    folder.mkdir()
    temperature = observation("t1", "8310-5", **quantity(37.2, "Cel"))
    hba1c = observation("h1", "4548-4", **quantity(9.1, "%"))
    lines = [patient("p1"), DIABETES, temperature, hba1c, {**temperature, "status": 7}]
    (folder / "all.ndjson").write_text("".join(json.dumps(r) + "\n" for r in lines))
    seen: list[list[str]] = []
    profile = pipeline.build_profile

    def spied(record: PatientRecord, *args: Any) -> Any:
        seen.append([f"{r['resourceType']}/{r['id']}" for r in record.resources])
        return profile(record, *args)

    monkeypatch.setattr(pipeline, "build_profile", spied)

    def written() -> tuple[dict[str, bytes], dict[str, Any]]:
        out = tmp_path / f"out{len(seen)}"
        report = RunReport()
        sink = FolderSink(out, "ndjson")
        run(file_source(folder), sink, definitions, as_of=AS_OF, recorded=RECORDED, report=report)
        sink.close()
        summary = {k: v for k, v in report.to_dict().items() if "_at" not in k and "dur" not in k}
        summary["patients"] = [(p.patient, p.outcome) for p in report.patients]  # not the folder
        return {p.name: p.read_bytes() for p in sorted(out.iterdir())}, summary

    relevant = written()
    assert seen == [["Condition/c1", "Observation/h1"]]  # the duplicate t1 is reported
    monkeypatch.setattr(pipeline, "bears_on", lambda _resource, index: True)
    assert written() == relevant
    assert seen[1] == ["Condition/c1", "Observation/t1", "Observation/h1"]
    assert any("duplicate resource" in i["reason"] for i in relevant[1]["read_issues"])
