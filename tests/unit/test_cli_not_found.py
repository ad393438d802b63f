"""A ``--patient`` the source does not hold is one behaviour in every command and from every
source: named once on stderr, exit 3, the patients found still done."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import respx
from click.testing import CliRunner

from fhir_tailor.cli import main
from fhir_tailor.definitions import bundled_path
from fhir_tailor.state import RunState

BASE = "http://fhir.test/fhir"
FIXTURES = bundled_path("fixtures")
FT01 = json.loads(next((FIXTURES / "bundles").glob("01-*.json")).read_text())
PATIENT = next(e["resource"] for e in FT01["entry"] if e["resource"]["resourceType"] == "Patient")
CAPABILITY = {
    "resourceType": "CapabilityStatement",
    "fhirVersion": "4.0.1",
    "rest": [
        {
            "resource": [
                {"type": t, "searchParam": [{"name": "patient"}]}
                for t in ("Condition", "Observation")
            ]
        }
    ],
}
NOT_FOUND = {
    "resourceType": "OperationOutcome",
    "issue": [{"severity": "error", "code": "not-found"}],
}


def answer(request: httpx.Request) -> httpx.Response:
    """ft-01 exists (with no data), any other Patient is 404; every search finds nothing."""
    path = request.url.path.removeprefix("/fhir/")
    if path == "metadata":
        return httpx.Response(200, json=CAPABILITY)
    if path.startswith("Patient/"):
        if path == f"Patient/{PATIENT['id']}":
            return httpx.Response(200, json=PATIENT)
        return httpx.Response(404, json=NOT_FOUND)
    return httpx.Response(200, json={"resourceType": "Bundle", "type": "searchset", "entry": []})


def invoke(*args: str, server: bool = False) -> tuple[int, str, str]:
    runner = CliRunner()
    if not server:
        result = runner.invoke(main, ["--as-of", "2026-11-15", *args])
    else:
        with respx.mock(assert_all_mocked=True) as mock:
            mock.route(host="fhir.test").mock(side_effect=answer)
            result = runner.invoke(main, ["--as-of", "2026-11-15", *args, "--server", BASE])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    return result.exit_code, result.stdout, result.stderr


def said_once(err: str, where: str) -> None:
    assert err.count("nobody") == 1, err
    assert f"error: Patient/nobody not found {where}\n" in err


FROM_FILES: list[tuple[str, ...]] = [
    (),
    ("--input", str(FIXTURES / "bundles")),
    ("--input", str(FIXTURES / "ndjson")),
]


@pytest.mark.parametrize("source", FROM_FILES, ids=["default", "bundles", "ndjson"])
def test_sync_from_files(source: tuple[str, ...]) -> None:
    code, out, err = invoke(
        "sync", *source, "--patient", "nobody", "--patient", "ft-01", "--out", "-"
    )
    assert code == 3
    said_once(err, "in the input")
    assert [json.loads(line)["type"] for line in out.splitlines()] == ["transaction"]  # ft-01 done
    # counted as what it is: not a failed patient, nor an unreadable resource
    assert "2 patients (1 not-found, 1 written); 0 unreadable resources skipped;" in err
    assert "failed" not in err


def test_sync_from_a_server(tmp_path: Path) -> None:
    report = tmp_path / "run.json"
    code, _, err = invoke(
        "sync",
        "--patient",
        "nobody",
        "--patient",
        "ft-01",
        "--dry-run",
        "--report",
        str(report),
        server=True,
    )
    assert code == 3
    said_once(err, "on the server")
    written = json.loads(report.read_text())
    outcomes = {p["patient"]: p["outcome"] for p in written["patients"]}
    assert outcomes == {"Patient/ft-01": "would-create", "Patient/nobody": "not-found"}
    assert written["counts"] == {"not-found": 1, "would-create": 1}
    assert "2 patients (1 not-found, 1 would-create); 0 unreadable resources skipped;" in err


def test_a_patient_not_found_does_not_hold_a_run_open(tmp_path: Path) -> None:
    """No rerun finds a patient the source does not hold: with --state the run completes as
    for the patients found, instead of resuming forever."""
    state = tmp_path / "state.json"
    args = ("sync", "--input", str(FIXTURES / "bundles"), "--patient", "nobody")
    args += ("--patient", "ft-01", "--out", str(tmp_path / "out"), "--state", str(state))
    code, _, err = invoke(*args)
    assert code == 3 and "1 not-found, 1 written" in err
    assert RunState.load(state).watermark is not None and not RunState.load(state).resuming
    code, _, err = invoke(*args)
    assert code == 3 and "resuming" not in err and "1 not-found, 1 written" in err


@pytest.mark.parametrize("command", ["plan", "profile"])
@pytest.mark.parametrize("server", [False, True], ids=["files", "server"])
def test_one_patient_commands(command: str, server: bool) -> None:
    code, out, err = invoke(command, "--patient", "nobody", server=server)
    assert code == 3 and out == ""
    said_once(err, "on the server" if server else "in the input")


@pytest.mark.parametrize("server", [False, True], ids=["files", "server"])
def test_segments(server: bool) -> None:
    code, out, err = invoke("segments", "--patient", "nobody", "--patient", "ft-01", server=server)
    assert code == 3 and "1 patients" in out
    said_once(err, "on the server" if server else "in the input")
