"""The command line, end to end on file sources (no server)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from fhir_tailor.cli import main
from fhir_tailor.definitions import bundled_path
from fhir_tailor.sinks.files import StdoutSink

FIXTURES = bundled_path("fixtures")
AS_OF = ["--as-of", "2026-11-15"]


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [*AS_OF, *args])
    return result.exit_code, result.stdout, result.stderr


def test_default_run_prints_plans_for_the_bundled_fixtures() -> None:
    code, out, err = invoke("sync")
    assert code == 0, err
    patients = len(list((FIXTURES / "bundles").glob("*.json")))
    assert out.count("Patient/ft-") >= patients // 2
    assert "adapted by telehealth-follow-up" in out
    assert f"{patients} patients" in err


def test_sync_to_folder_writes_valid_bundles_and_a_report(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    code, _, err = invoke(
        "sync",
        "--input",
        str(FIXTURES / "ndjson"),
        "--out",
        str(tmp_path / "out"),
        "--report",
        str(report),
    )
    assert code == 0, err
    written = sorted((tmp_path / "out").glob("*.json"))
    data = json.loads(report.read_text())
    assert len(written) == data["counts"]["written"] > 0
    bundle = json.loads(written[0].read_text())
    assert bundle["type"] == "transaction"
    assert bundle["entry"][0]["resource"]["resourceType"] == "CarePlan"
    assert bundle["entry"][-1]["resource"]["resourceType"] == "Provenance"


def test_ndjson_output_layout(tmp_path: Path) -> None:
    code, _, err = invoke(
        "sync",
        "--input",
        str(FIXTURES / "bundles"),
        "--out",
        str(tmp_path),
        "--out-format",
        "ndjson",
    )
    assert code == 0, err
    careplans = (tmp_path / "CarePlan.ndjson").read_text().splitlines()
    assert careplans and all(json.loads(line)["resourceType"] == "CarePlan" for line in careplans)
    assert (tmp_path / "Goal.ndjson").exists() and (tmp_path / "Provenance.ndjson").exists()


def test_bundles_and_ndjson_fixtures_give_the_same_plans(tmp_path: Path) -> None:
    _, from_bundles, _ = invoke("sync", "--input", str(FIXTURES / "bundles"), "--out", "-")
    _, from_ndjson, _ = invoke("sync", "--input", str(FIXTURES / "ndjson"), "--out", "-")
    recorded = '"recorded":"'
    strip = lambda text: sorted(line.split(recorded)[0] for line in text.splitlines())  # noqa: E731
    assert strip(from_bundles) == strip(from_ndjson) and from_bundles


def test_messy_input_is_reported_not_fatal() -> None:
    code, _, err = invoke("sync", "--input", str(FIXTURES / "messy"))
    assert code == 0, err
    assert "unreadable resources skipped" in err
    assert "skipped:" in err


def test_profile_json_and_table() -> None:
    code, out, err = invoke("profile", "--patient", "ft-01", "--json")
    assert code == 0, err
    profile = json.loads(out)
    assert profile["patient"] == "Patient/ft-01"
    assert set(profile) >= {
        "medical",
        "cognitive_behavioral",
        "social",
        "functional",
        "facts",
        "data_gaps",
    }
    code, out, _ = invoke("profile", "--patient", "ft-01")
    assert code == 0 and "dimension" in out and "need" in out


def test_plan_command_prints_without_writing() -> None:
    code, out, _ = invoke("plan", "--patient", "ft-01", "--json")
    assert code == 0
    assert json.loads(out)["patient"] == "Patient/ft-01"


def test_unknown_patient() -> None:
    code, _, err = invoke("profile", "--patient", "nobody")
    assert code == 3 and "nobody" in err


def test_validate_profiles() -> None:
    code, out, _ = invoke("validate-profiles")
    assert code == 0 and "profiles OK" in out


def test_broken_profiles_stop_the_run_with_a_clear_error(tmp_path: Path) -> None:
    code, _, err = invoke("--profiles", str(tmp_path), "sync")
    assert code == 3 and "error:" in err and str(tmp_path) in err


def test_server_needs_a_patient_selection() -> None:
    code, _, err = invoke("sync", "--server", "http://127.0.0.1:9/fhir")
    assert code == 2 and "--all" in err


def test_token_and_basic_auth_are_exclusive() -> None:
    code, _, _ = invoke(
        "sync", "--server", "http://127.0.0.1:9/fhir", "--all", "--token", "t", "--username", "u"
    )
    assert code == 2


def test_unreachable_server_cannot_start() -> None:
    code, _, err = invoke(
        "sync", "--server", "http://127.0.0.1:9/fhir", "--all", "--retry-budget", "0"
    )
    assert code == 3 and "cannot use server" in err


def test_a_failed_patient_makes_the_exit_code_non_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(self: StdoutSink, plan: object, resources: object) -> object:
        raise RuntimeError("disk full")

    monkeypatch.setattr(StdoutSink, "write", fail)
    code, _, err = invoke("sync")
    assert code == 1 and "failed: Patient/ft-" in err
