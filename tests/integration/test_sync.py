"""End to end against a real FHIR server on loopback: load, sync, re-sync, respect edits."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from expected import AS_OF, FIXTURES, eligible_patients
from fhir.resources.R4B.careplan import CarePlan
from fhir.resources.R4B.goal import Goal
from fhir.resources.R4B.provenance import Provenance
from fhir.resources.R4B.servicerequest import ServiceRequest
from fhir.resources.R4B.task import Task
from searching import search_all

from fhir_tailor.cli import main
from fhir_tailor.definitions import bundled_path
from fhir_tailor.resources import CAREPLAN_ID_SYSTEM

ROOT = Path(__file__).resolve().parents[2]
SERVICEREQUEST_ID_SYSTEM = "https://fhir-tailor.dev/fhir/id/servicerequest"


def sync(server: str, tmp_path: Path, *args: str, profiles: Path | None = None) -> dict[str, Any]:
    report = tmp_path / "report.json"
    options = ["--profiles", str(profiles)] if profiles else []
    result = CliRunner().invoke(
        main,
        [*options, "--as-of", AS_OF, "sync", "--server", server, "--report", str(report), *args],
    )
    assert result.exit_code == 0, result.stderr
    data: dict[str, Any] = json.loads(report.read_text())
    return data


def our_careplans(http: httpx.Client) -> dict[str, dict[str, Any]]:
    """CarePlans fhir-tailor wrote, by patient reference."""
    plans: dict[str, dict[str, Any]] = {}
    for careplan in search_all(http, "CarePlan?_count=100"):
        if any(i.get("system") == CAREPLAN_ID_SYSTEM for i in careplan.get("identifier", [])):
            subject = careplan["subject"]["reference"]
            assert subject not in plans, f"two CarePlans for {subject}"
            plans[subject] = careplan
    return plans


def our_referrals(http: httpx.Client, query: str = "_count=100") -> list[dict[str, Any]]:
    """Referral ServiceRequests fhir-tailor wrote; each identifier must occur once."""
    referrals = [
        r
        for r in search_all(http, f"ServiceRequest?{query}")
        if any(i.get("system") == SERVICEREQUEST_ID_SYSTEM for i in r.get("identifier", []))
    ]
    identifiers = [i["value"] for r in referrals for i in r["identifier"]]
    assert len(identifiers) == len(set(identifiers)), "a referral was written twice"
    return referrals


def activity_texts(http: httpx.Client, careplan: dict[str, Any]) -> list[str]:
    """What each activity says: its detail, or the referral ServiceRequest it references."""
    texts = []
    for activity in careplan["activity"]:
        if "reference" in activity:
            referral = http.get(activity["reference"]["reference"]).raise_for_status().json()
            texts.append(referral["code"]["text"])
        else:
            texts.append(activity["detail"]["description"])
    return texts


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
    return set(eligible_patients())


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
        for activity in careplan["activity"]:
            if "reference" in activity:  # a referral or urgent Task: its reasons are on it
                request = http.get(activity["reference"]["reference"]).raise_for_status().json()
                if request["resourceType"] == "Task":  # an urgent finding for a clinician
                    Task.model_validate(request)
                    assert request["for"]["reference"] == subject
                    assert request["priority"] in ("urgent", "asap", "stat"), subject
                    continue
                ServiceRequest.model_validate(request)
                assert request["subject"]["reference"] == subject
                assert request["note"], subject
            else:
                assert activity["detail"]["reasonCode"], subject
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
    assert all(r["meta"]["versionId"] == "1" for r in our_referrals(http))


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
    assert any("food" in text for text in activity_texts(http, after))
    assert {"reference": f"Observation/{created['id']}"} in after["supportingInfo"]
    for reference in after["goal"]:
        http.get(reference["reference"]).raise_for_status()
    assert len(after["goal"]) > len(before["goal"])
    assert len(search_all(http, "Provenance?_count=100")) == provenances_before + 1

    again = sync(loaded, tmp_path, "--patient", "ft-03")
    assert again["counts"] == {"unchanged": 1}
    assert our_careplans(http)[subject]["meta"]["versionId"] == after["meta"]["versionId"]


# A test-only module: a social goal and a food pantry referral with SDOH categories and a SNOMED
# CT procedure code, so the test does not depend on what the bundled modules declare.
REFERRAL_MODULE = """
id: zz-food-referral-test
version: "1.0.0"
changelog: ["1.0.0: test-only module"]
title: Food pantry referral (integration test)
description: A referral to a food pantry for food insecurity.
care_path: social-care
dimensions: [social]
applies_when: {feature: food_insecurity}
goals:
  - id: food-security
    description: Reliable access to enough food
    sdoh_category: food-insecurity
    target:
      measure:
        system: http://loinc.org
        code: 88124-3
        display: Food insecurity risk [HVS]
      text: No risk
      due_in_days: 90
activities:
  - id: food-pantry-referral
    kind: ServiceRequest
    description: Referral to a food pantry, with help applying
    code:
      system: http://snomed.info/sct
      code: "467771000124109"
      display: Assistance with application for food pantry program
    sdoh_category: food-insecurity
    tags: [referral]
"""


# Runs last: the patient it adds would change the counts of the `--all` syncs above.
def test_a_referral_is_on_the_server_once_after_three_syncs(
    loaded: str, http: httpx.Client, tmp_path: Path
) -> None:
    profiles = tmp_path / "profiles"
    shutil.copytree(bundled_path("profiles"), profiles)
    (profiles / "modules" / "zz-food-referral-test.yaml").write_text(REFERRAL_MODULE)
    patient = "ft-referral"
    http.put(
        f"Patient/{patient}",
        json={
            "resourceType": "Patient",
            "id": patient,
            "gender": "female",
            "birthDate": "1970-03-02",
        },
    ).raise_for_status()
    hunger = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "88122-7"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": "2026-11-01",
        "valueCodeableConcept": {"coding": [{"system": "http://loinc.org", "code": "LA28397-0"}]},
    }
    observation = http.post("Observation", json=hunger).raise_for_status().json()

    counts = [
        sync(loaded, tmp_path, "--patient", patient, profiles=profiles)["counts"] for _ in range(3)
    ]
    assert counts == [{"created": 1}, {"unchanged": 1}, {"unchanged": 1}]

    careplan = our_careplans(http)[f"Patient/{patient}"]
    referenced = [a["reference"]["reference"] for a in careplan["activity"] if "reference" in a]
    ours = our_referrals(http, f"subject=Patient/{patient}&_count=100")
    key = "zz-food-referral-test.food-pantry-referral"
    [referral] = [r for r in ours if r["identifier"][0]["value"].endswith(f"/{key}")]
    assert referral["meta"]["versionId"] == "1"
    assert f"ServiceRequest/{referral['id']}" in referenced
    ServiceRequest.model_validate(referral)
    assert referral["status"] == "draft" and referral["intent"] == "plan"
    assert len(referral["meta"]["profile"]) == 2
    assert {"reference": f"Observation/{observation['id']}"} in referral["reasonReference"]
    [pertains] = [
        e["valueReference"]["reference"]
        for e in referral["extension"]
        if e["url"] == "http://hl7.org/fhir/StructureDefinition/resource-pertainsToGoal"
    ]
    goal = http.get(pertains).raise_for_status().json()
    assert goal["category"][0]["coding"][0]["code"] == "food-insecurity"
    assert {"reference": pertains} in careplan["goal"]
    provenances = search_all(http, f"Provenance?target=CarePlan/{careplan['id']}")
    assert len(provenances) == 1
    targets = {t["reference"].split("/_history")[0] for t in provenances[0]["target"]}
    assert f"ServiceRequest/{referral['id']}" in targets
