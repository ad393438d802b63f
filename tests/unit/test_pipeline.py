"""The pipeline keeps going when one patient fails, and reports it."""

from __future__ import annotations

from datetime import UTC, datetime

from builders import AS_OF, SNOMED, condition, record

from fhir_tailor.definitions import Definitions
from fhir_tailor.errors import FhirTailorError
from fhir_tailor.pipeline import run
from fhir_tailor.plan import Plan
from fhir_tailor.record import IssueHandler, PatientRecord, ReadIssue
from fhir_tailor.report import PatientOutcome, RunReport
from fhir_tailor.resources import PlanResources


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
        }
    ]
    assert summary["counts"] == {"failed": 2, "written": 2}
