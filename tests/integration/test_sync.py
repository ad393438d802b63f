"""End to end against a real FHIR server on loopback: load, sync, re-sync, respect edits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from fhir.resources.R4B.careplan import CarePlan
from fhir.resources.R4B.goal import Goal
from fhir.resources.R4B.provenance import Provenance

from fhir_tailor.cli import main
from fhir_tailor.definitions import bundled_path
from fhir_tailor.resources import CAREPLAN_ID_SYSTEM

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = bundled_path("fixtures") / "bundles"
AS_OF = "2026-11-15"


def sync(server: str, tmp_path: Path, *args: str) -> dict[str, Any]:
    report = tmp_path / "report.json"
    result = CliRunner().invoke(
        main, ["--as-of", AS_OF, "sync", "--server", server, "--report", str(report), *args]
    )
    assert result.exit_code == 0, result.stderr
    data: dict[str, Any] = json.loads(report.read_text())
    return data


def search_all(http: httpx.Client, path: str) -> list[dict[str, Any]]:
    resources: list[dict[str, Any]] = []
    url: str | None = path
    while url:
        bundle = http.get(url).raise_for_status().json()
        resources += [e["resource"] for e in bundle.get("entry", [])]
        url = next(
            (link["url"] for link in bundle.get("link", []) if link["relation"] == "next"), None
        )
    return resources


def our_careplans(http: httpx.Client) -> dict[str, dict[str, Any]]:
    """CarePlans fhir-tailor wrote, by patient reference."""
    plans: dict[str, dict[str, Any]] = {}
    for careplan in search_all(http, "CarePlan?_count=100"):
        if any(i.get("system") == CAREPLAN_ID_SYSTEM for i in careplan.get("identifier", [])):
            subject = careplan["subject"]["reference"]
            assert subject not in plans, f"two CarePlans for {subject}"
            plans[subject] = careplan
    return plans


@pytest.fixture(scope="module")
def loaded(fhir_server: str) -> str:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "load-fixtures"),
            "--server",
            fhir_server,
            str(FIXTURES),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return fhir_server


@pytest.fixture(scope="module")
def eligible() -> set[str]:
    """Patients the file-based run gives a plan: the same must get exactly one on the server."""
    result = CliRunner().invoke(
        main, ["--as-of", AS_OF, "sync", "--input", str(FIXTURES), "--out", "-"]
    )
    assert result.exit_code == 0, result.stderr
    return {
        json.loads(line)["entry"][0]["resource"]["subject"]["reference"]
        for line in result.stdout.splitlines()
    }


@pytest.fixture
def http(loaded: str) -> httpx.Client:
    return httpx.Client(
        base_url=loaded + "/", headers={"Accept": "application/fhir+json"}, timeout=30
    )


def test_sync_three_times_leaves_one_valid_careplan_per_eligible_patient(
    loaded: str, eligible: set[str], http: httpx.Client, tmp_path: Path
) -> None:
    first = sync(loaded, tmp_path, "--all")
    assert first["counts"]["created"] == len(eligible) > 0
    versions = {}
    for run in (2, 3):
        again = sync(loaded, tmp_path, "--all")
        assert again["counts"].get("created", 0) == 0, run
        assert again["counts"]["unchanged"] == len(eligible), run
    plans = our_careplans(http)
    assert set(plans) == eligible
    for subject, careplan in plans.items():
        versions[subject] = careplan["meta"]["versionId"]
        CarePlan.model_validate(careplan)
        assert careplan["status"] == "draft"
        assert all(a["detail"]["reasonCode"] for a in careplan["activity"]), subject
        for reference in careplan.get("goal", []):
            goal = http.get(reference["reference"]).raise_for_status().json()
            Goal.model_validate(goal)
            assert goal["subject"]["reference"] == subject
    provenances = search_all(http, "Provenance?_count=100")
    targeted = {t["reference"].split("/_history")[0] for p in provenances for t in p["target"]}
    for careplan in plans.values():
        assert f"CarePlan/{careplan['id']}" in targeted
    for provenance in provenances:
        Provenance.model_validate(provenance)
    assert len(provenances) == len(eligible), "re-syncs must not add Provenance"
    assert {s: c["meta"]["versionId"] for s, c in our_careplans(http).items()} == versions


def test_clinician_edit_is_never_overwritten(
    loaded: str, http: httpx.Client, tmp_path: Path
) -> None:
    sync(loaded, tmp_path, "--all")
    subject, careplan = sorted(our_careplans(http).items())[0]
    edited = {**careplan, "status": "active", "description": "Reviewed with the patient"}
    http.put(f"CarePlan/{careplan['id']}", json=edited).raise_for_status()
    before = http.get(f"CarePlan/{careplan['id']}").json()

    report = sync(loaded, tmp_path, "--patient", subject.removeprefix("Patient/"))
    assert report["counts"] == {"skipped-edited": 1}
    after = http.get(f"CarePlan/{careplan['id']}").json()
    assert after == before
    assert len([c for s, c in our_careplans(http).items() if s == subject]) == 1


def test_changed_data_updates_the_plan_in_place(
    loaded: str, http: httpx.Client, tmp_path: Path
) -> None:
    sync(loaded, tmp_path, "--all")
    subject = "Patient/ft-03"
    before = our_careplans(http)[subject]
    provenances_before = len(search_all(http, "Provenance?_count=100"))
    hunger = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "88122-7"}]},
        "subject": {"reference": subject},
        "effectiveDateTime": "2026-11-10",
        "valueCodeableConcept": {"coding": [{"system": "http://loinc.org", "code": "LA28397-0"}]},
    }
    created = http.post("Observation", json=hunger).raise_for_status().json()
    since = created["meta"]["lastUpdated"]

    dry = CliRunner().invoke(
        main, ["--as-of", AS_OF, "sync", "--server", loaded, "--since", since, "--dry-run"]
    )
    assert dry.exit_code == 0, dry.stderr
    assert f"--- CarePlan/{before['id']} (server)" in dry.stdout and "food" in dry.stdout
    assert our_careplans(http)[subject]["meta"]["versionId"] == before["meta"]["versionId"]

    report = sync(loaded, tmp_path, "--since", since)
    assert report["counts"] == {"updated": 1}, report["counts"]
    after = our_careplans(http)[subject]
    assert after["id"] == before["id"]
    assert int(after["meta"]["versionId"]) == int(before["meta"]["versionId"]) + 1
    assert any("food" in a["detail"]["description"] for a in after["activity"])
    assert {"reference": f"Observation/{created['id']}"} in after["supportingInfo"]
    for reference in after["goal"]:
        http.get(reference["reference"]).raise_for_status()
    assert len(after["goal"]) > len(before["goal"])
    assert len(search_all(http, "Provenance?_count=100")) == provenances_before + 1

    again = sync(loaded, tmp_path, "--patient", "ft-03")
    assert again["counts"] == {"unchanged": 1}
    assert our_careplans(http)[subject]["meta"]["versionId"] == after["meta"]["versionId"]
