"""No PHI or secrets in logs, reports or error messages.

``sync`` runs over the fixture patients through a respx-mocked FHIR server with a bearer token,
at DEBUG with JSON logs, and neither stderr nor the report may hold a fixture patient's name,
birth date or the token.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from click.testing import CliRunner

from fhir_tailor.auth import BearerTokenAuth
from fhir_tailor.cli import main
from fhir_tailor.client import FhirClient
from fhir_tailor.definitions import bundled_path
from fhir_tailor.errors import FhirTailorError
from fhir_tailor.record import PatientRecord
from fhir_tailor.sources import file_source
from fhir_tailor.sources.server import OPTIONAL_DATA_TYPES, PATIENT_DATA_TYPES

BASE = "http://fhir.test/fhir"
TOKEN = "tok-3f9a1c77e2b44d0c9a51"
FIXTURES = bundled_path("fixtures") / "bundles"
DEBUG_JSON = ["--as-of", "2026-11-15", "--log-level", "DEBUG", "--log-format", "json"]
#: A patient search declared for every type fhir-tailor reads, so whole records are read.
CAPABILITY = {
    "resourceType": "CapabilityStatement",
    "fhirVersion": "4.0.1",
    "rest": [
        {
            "resource": [
                {"type": rtype, "searchParam": [{"name": "patient"}]}
                for rtype in (*PATIENT_DATA_TYPES, *OPTIONAL_DATA_TYPES)
            ]
        }
    ],
}


def _fixture_records() -> dict[str, PatientRecord]:
    records = file_source(FIXTURES).records(lambda _issue: None)
    return {record.patient_id: record for record in records}


def _searchset(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [{"resource": r} for r in resources],
    }


def _fake_server(records: dict[str, PatientRecord], seen: list[httpx.Request]) -> Any:
    """Reads and ``patient=`` searches answered from the fixture records; nothing written."""

    def respond(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        parts = request.url.path.removeprefix("/fhir/").split("/")
        if parts == ["metadata"]:
            return httpx.Response(200, json=CAPABILITY)
        if len(parts) == 2 and parts[0] == "Patient" and parts[1] in records:
            return httpx.Response(200, json=records[parts[1]].patient)
        pid = request.url.params.get("patient")
        if parts[0] == "Patient":
            found = [r.patient for r in records.values()]
        elif pid in records:
            found = list(records[pid].of_type(parts[0]))
        else:
            found = []
        return httpx.Response(200, json=_searchset(found))

    return respond


def test_fixture_names_and_birth_dates_are_known(phi: set[str]) -> None:
    assert len(phi) >= 20
    assert any(value[:4].isdigit() for value in phi)


def test_sync_over_a_server_with_a_token_leaks_no_phi_or_token(
    tmp_path: Path, phi: set[str]
) -> None:
    records = _fixture_records()
    seen: list[httpx.Request] = []
    report = tmp_path / "report.json"
    everyone = ["--all", "--dry-run", "--report"]
    with respx.mock(assert_all_mocked=True) as mock:
        mock.route(host="fhir.test").mock(side_effect=_fake_server(records, seen))
        result = CliRunner().invoke(
            main,
            [*DEBUG_JSON, "sync", "--server", BASE, "--token", TOKEN, *everyone, str(report)],
        )
    assert result.exit_code == 0, result.stderr
    assert all(r.headers["Authorization"] == f"Bearer {TOKEN}" for r in seen)
    summary = json.loads(report.read_text(encoding="utf-8"))
    assert len(summary["patients"]) == len(records)
    assert any(line.startswith("{") for line in result.stderr.splitlines())
    for text in (result.stderr, report.read_text(encoding="utf-8")):
        assert TOKEN not in text
        leaked = sorted(value for value in phi if value in text)
        assert not leaked, leaked


def test_sync_over_files_at_debug_leaks_no_phi(tmp_path: Path, phi: set[str]) -> None:
    report, out = tmp_path / "report.json", tmp_path / "out"
    result = CliRunner().invoke(
        main,
        [*DEBUG_JSON, "sync", "--input", str(FIXTURES), "--out", str(out), "--report", str(report)],
    )
    assert result.exit_code == 0, result.stderr
    for text in (result.stderr, report.read_text(encoding="utf-8")):
        leaked = sorted(value for value in phi if value in text)
        assert not leaked, leaked


UNAUTHORIZED = httpx.Response(
    401,
    headers={"WWW-Authenticate": 'Bearer realm="fhir", error="invalid_token"'},
    json={"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "login"}]},
)


def test_a_401_error_does_not_echo_the_authorization_header(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with respx.mock(assert_all_mocked=True) as mock:
        mock.get(f"{BASE}/Patient/p1").mock(return_value=UNAUTHORIZED)
        with (
            FhirClient(BASE, auth=BearerTokenAuth(TOKEN)) as client,
            pytest.raises(FhirTailorError) as raised,
        ):
            client.read("Patient", "p1")
    for text in (str(raised.value), repr(raised.value), repr(raised.value.args), caplog.text):
        assert TOKEN not in text
        assert "Authorization" not in text
    assert "401" in str(raised.value)


def test_a_refused_token_at_start_is_reported_without_the_token() -> None:
    with respx.mock(assert_all_mocked=True) as mock:
        mock.get(f"{BASE}/metadata").mock(return_value=UNAUTHORIZED)
        result = CliRunner().invoke(
            main,
            [*DEBUG_JSON, "sync", "--server", BASE, "--token", TOKEN, "--all"],
        )
    assert result.exit_code == 3
    assert "401" in result.stderr
    assert TOKEN not in result.stderr
    assert "Authorization" not in result.stderr
