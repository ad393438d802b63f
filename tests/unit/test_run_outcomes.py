"""``fhir-tailor`` tells the truth about what a run read (issue 15 #4, #7, #9): a patient whose
supporting search failed is not planned and holds the watermark; plans made without a type the
server cannot give are named and exit 5; input that says nothing is never a success."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import respx
from builders import SNOMED, condition, patient
from click.testing import CliRunner

from fhir_tailor.cli import main
from fhir_tailor.cli.progress import expected_patients
from fhir_tailor.cli.sources import SourceChoice
from fhir_tailor.definitions import bundled_path
from fhir_tailor.retry import RetryPolicy
from fhir_tailor.sources import file_source
from fhir_tailor.sources.server import OPTIONAL_DATA_TYPES
from fhir_tailor.state import RunState

BASE = "https://fhir.example.org/r4"
FIXTURES = bundled_path("fixtures") / "bundles"


def fhir_tailor(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--as-of", "2026-11-15", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.stderr
    return result.exit_code, result.stderr


def searchset(*resources: dict[str, Any]) -> dict[str, Any]:
    entries = [{"resource": r} for r in resources]
    return {"resourceType": "Bundle", "type": "searchset", "entry": entries}


def statement(*types: str) -> dict[str, Any]:
    declared = [{"type": t, "searchParam": [{"name": "patient"}]} for t in types]
    return {
        "resourceType": "CapabilityStatement",
        "fhirVersion": "4.0.1",
        "rest": [{"resource": declared}],
    }


def serve(router: respx.MockRouter, declared: dict[str, Any], *pids: str) -> None:
    """A server holding a diabetic patient per id, with nothing else about them."""
    router.get("/metadata").respond(json=declared)
    router.get("/Patient").respond(json=searchset(*(patient(pid) for pid in pids)))
    for pid in pids:
        router.get(f"/Patient/{pid}").respond(json=patient(pid))
        diabetes = condition(f"{pid}-c1", SNOMED, "44054006", pid=pid)
        router.get("/Condition", params={"patient": pid}).respond(json=searchset(diabetes))
        router.get("/Observation", params={"patient": pid}).respond(json=searchset())


def test_a_supporting_search_failing_after_retries_fails_the_patient_and_holds_the_watermark(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(RetryPolicy, "backoff", lambda self, retry_number: 0.0)
    state = tmp_path / "state.json"
    report = tmp_path / "report.json"
    args = ["sync", "--server", BASE, "--since", "auto", "--state", str(state)]
    args += ["--out", str(tmp_path / "out"), "--report", str(report)]
    with respx.mock(base_url=BASE, assert_all_called=False) as server:
        failing = server.get("/Encounter", params={"patient": "p1"}).respond(503)
        serve(server, statement("Condition", "Observation", *OPTIONAL_DATA_TYPES), "p1", "p2")
        for rtype in OPTIONAL_DATA_TYPES:
            server.get(f"/{rtype}").respond(json=searchset())
        code, err = fhir_tailor(*args)
        assert failing.call_count == RetryPolicy().max_attempts
        assert code == 1, err
        assert "failed: Patient/p1: could not be read (Encounter?patient)" in err
        outcomes = {p["patient"]: p["outcome"] for p in json.loads(report.read_text())["patients"]}
        assert outcomes == {"Patient/p1": "failed", "Patient/p2": "written"}
        assert not list((tmp_path / "out").glob("*p1*")), "nothing is written for Patient/p1"
        held = RunState.load(state)
        assert held.watermark is None and held.resuming

        failing.respond(json=searchset())
        code, err = fhir_tailor(*args)
    assert code == 0, err
    outcomes = {p["patient"]: p["outcome"] for p in json.loads(report.read_text())["patients"]}
    assert outcomes == {"Patient/p1": "written", "Patient/p2": "done-earlier"}
    assert RunState.load(state).watermark == held.started


def test_plans_made_without_a_type_the_server_cannot_give_are_named_and_exit_5(
    tmp_path: Path,
) -> None:
    report = tmp_path / "report.json"
    with respx.mock(base_url=BASE, assert_all_called=False) as server:
        serve(server, statement("Condition", "Observation", "Encounter"), "p1")
        server.get("/Encounter").respond(json=searchset())
        code, err = fhir_tailor(
            "sync", "--server", BASE, "--patient", "p1", "--out", str(tmp_path / "out"),
            "--report", str(report),
        )  # fmt: skip
    assert code == 5, err
    assert (
        "1 patients' plans decided without types not readable from this server "
        "(MedicationRequest 1, QuestionnaireResponse 1, ServiceRequest 1)"
    ) in err
    data = json.loads(report.read_text())
    [entry] = data["patients"]
    assert entry["outcome"] == "written"
    assert entry["not_read"] == ["QuestionnaireResponse", "MedicationRequest", "ServiceRequest"]
    assert data["not_read"] == {
        "MedicationRequest": 1,
        "QuestionnaireResponse": 1,
        "ServiceRequest": 1,
    }


def test_an_empty_input_folder_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    report = tmp_path / "report.json"
    code, err = fhir_tailor("sync", "--input", str(tmp_path / "in"), "--report", str(report))
    assert code == 3
    assert f"no patients in {tmp_path / 'in'}: no .json or .ndjson files" in err
    assert json.loads(report.read_text())["patients_total"] == 0


@pytest.mark.parametrize("command", ["plan", "profile", "segments"])
def test_commands_about_patients_refuse_an_input_without_any(tmp_path: Path, command: str) -> None:
    (tmp_path / "export.json").write_text("<html>not json</html>")
    code, err = fhir_tailor(command, "--input", str(tmp_path), "--patient", "p1")
    assert code == 3
    assert "export.json: ?/?: invalid JSON" in err


def test_a_file_that_is_not_fhir_fails_the_run_naming_what_is_missing(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    shutil.copytree(FIXTURES, folder / "bundles")
    (folder / "settings.json").write_text('{"retries": 3}')
    code, err = fhir_tailor("sync", "--input", str(folder), "--out", str(tmp_path / "out"))
    assert code == 1, err
    assert (
        "unreadable: settings.json: ?/?: field resourceType: missing (this JSON is not FHIR)" in err
    )
    assert "1 inputs unreadable" in err


def test_patients_in_subfolders_are_read(tmp_path: Path) -> None:
    """``--input fixtures`` read 0 patients and said all was well."""
    shutil.copytree(FIXTURES, tmp_path / "in" / "bundles")
    report = tmp_path / "report.json"
    code, err = fhir_tailor(
        "sync", "--input", str(tmp_path / "in"), "--out", str(tmp_path / "out"),
        "--report", str(report),
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(report.read_text())["patients_total"] == len(list(FIXTURES.glob("*.json")))


def test_the_progress_total_of_ndjson_input_is_still_counted(tmp_path: Path) -> None:
    """Input files are read with their subfolders now; NDJSON alone still gives a total."""
    folder = tmp_path / "export" / "2026"
    folder.mkdir(parents=True)
    (folder / "Patient.ndjson").write_text(
        json.dumps(patient("p1")) + "\n\n" + json.dumps(patient("p2"))
    )
    assert expected_patients(SourceChoice(file_source(tmp_path), None, ())) == 2
    (tmp_path / "more.json").write_text("{}")
    assert expected_patients(SourceChoice(file_source(tmp_path), None, ())) is None
