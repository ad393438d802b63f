"""End to end against a real FHIR server on loopback: a patient who dies after fhir-tailor wrote
their draft plan has it withdrawn by the next sync, once; a plan a clinician made active is never
touched; and should the death prove recorded in error, the draft comes back."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from expected import AS_OF
from fhir.resources.R4B.careplan import CarePlan
from fhir.resources.R4B.provenance import Provenance
from searching import search_all

from fhir_tailor.cli import main
from fhir_tailor.definitions import bundled_path
from fhir_tailor.resources import CAREPLAN_ID_SYSTEM
from fhir_tailor.withdrawal import REASON

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
#: Type 2 diabetes, an HbA1c above target and a positive food screening: a plan with goals
#: and (food insecurity) social care, so the withdrawal reaches Goals as well as the CarePlan.
HUNGER = ("88122-7", "LA28397-0")


def sync(
    server: str, tmp_path: Path, *args: str, profiles: Path | None = None
) -> tuple[dict[str, Any], str, str]:
    """One ``fhir-tailor sync`` against the server: its JSON report, stdout and stderr."""
    report = tmp_path / "report.json"
    options = ["--profiles", str(profiles)] if profiles else []
    result = CliRunner().invoke(
        main,
        [*options, "--as-of", AS_OF, "sync", "--server", server, "--report", str(report), *args],
    )
    assert result.exit_code == 0, result.stderr
    data: dict[str, Any] = json.loads(report.read_text())
    return data, result.stdout, result.stderr


def load_patient(http: httpx.Client, pid: str) -> dict[str, Any]:
    """A living patient with type 2 diabetes, an HbA1c of 9.4 % and food insecurity."""
    patient = {"resourceType": "Patient", "id": pid, "gender": "female", "birthDate": "1951-06-14"}
    entries = [
        patient,
        {
            "resourceType": "Condition",
            "id": f"{pid}-c1",
            "clinicalStatus": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                        "code": "active",
                    }
                ]
            },
            "code": {"coding": [{"system": SNOMED, "code": "44054006"}]},
            "subject": {"reference": f"Patient/{pid}"},
            "recordedDate": "2019-04-02",
        },
        {
            "resourceType": "Observation",
            "id": f"{pid}-o1",
            "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "4548-4"}]},
            "subject": {"reference": f"Patient/{pid}"},
            "effectiveDateTime": "2026-09-01",
            "valueQuantity": {
                "value": 9.4,
                "unit": "%",
                "system": "http://unitsofmeasure.org",
                "code": "%",
            },
        },
        {
            "resourceType": "Observation",
            "id": f"{pid}-o2",
            "status": "final",
            "code": {"coding": [{"system": LOINC, "code": HUNGER[0]}]},
            "subject": {"reference": f"Patient/{pid}"},
            "effectiveDateTime": "2026-09-01",
            "valueCodeableConcept": {"coding": [{"system": LOINC, "code": HUNGER[1]}]},
        },
    ]
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
            for r in entries
        ],
    }
    http.post("", json=bundle).raise_for_status()
    return patient


def dies(http: httpx.Client, patient: dict[str, Any]) -> None:
    http.put(
        f"Patient/{patient['id']}", json={**patient, "deceasedDateTime": "2026-10-20"}
    ).raise_for_status()


def our_careplan(http: httpx.Client, pid: str) -> dict[str, Any]:
    found = [
        c
        for c in search_all(http, f"CarePlan?subject=Patient/{pid}")
        if any(i.get("system") == CAREPLAN_ID_SYSTEM for i in c.get("identifier", []))
    ]
    assert len(found) == 1, f"one CarePlan of ours for {pid}"
    return found[0]


def goals_of(http: httpx.Client, careplan: dict[str, Any]) -> list[dict[str, Any]]:
    return [http.get(g["reference"]).raise_for_status().json() for g in careplan["goal"]]


def provenances_of(http: httpx.Client, careplan: dict[str, Any]) -> list[dict[str, Any]]:
    return search_all(http, f"Provenance?target=CarePlan/{careplan['id']}")


@pytest.fixture(scope="module")
def http(own_server: str) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=own_server + "/", headers={"Accept": "application/fhir+json"}, timeout=30
    ) as client:
        yield client


def test_our_draft_is_withdrawn_once_the_patient_has_died(
    own_server: str, http: httpx.Client, tmp_path: Path
) -> None:
    patient = load_patient(http, "dz-draft")
    created, _, _ = sync(own_server, tmp_path, "--patient", "dz-draft")
    assert created["counts"] == {"created": 1}
    draft = our_careplan(http, "dz-draft")
    assert draft["status"] == "draft" and draft["goal"]

    dies(http, patient)
    dry, shown, _ = sync(own_server, tmp_path, "--patient", "dz-draft", "--dry-run")
    assert dry["counts"] == {"skipped-deceased": 1}
    assert "would withdraw our draft plans" in shown
    assert f"--- CarePlan/{draft['id']} (server)" in shown
    assert '+  "status": "revoked"' in shown
    assert our_careplan(http, "dz-draft")["meta"]["versionId"] == draft["meta"]["versionId"]

    report, _, stderr = sync(own_server, tmp_path, "--patient", "dz-draft")
    assert report["counts"] == {"skipped-deceased": 1}
    assert f"withdrew draft CarePlan/{draft['id']}" in stderr
    withdrawn = our_careplan(http, "dz-draft")
    CarePlan.model_validate(withdrawn)
    assert withdrawn["id"] == draft["id"] and withdrawn["status"] == "revoked"
    assert withdrawn["note"][-1]["text"] == REASON
    assert all(a["detail"]["status"] == "cancelled" for a in withdrawn["activity"] if "detail" in a)
    assert {g["lifecycleStatus"] for g in goals_of(http, withdrawn)} == {"cancelled"}
    referrals = [a["reference"]["reference"] for a in withdrawn["activity"] if "reference" in a]
    for reference in referrals:
        assert http.get(reference).raise_for_status().json()["status"] == "revoked"
    provenances = provenances_of(http, withdrawn)
    assert len(provenances) == 2, "the plan's and the withdrawal's"
    [why] = [p for p in provenances if p.get("reason")]
    Provenance.model_validate(why)
    assert why["reason"] == [{"text": REASON}]
    assert {"role": "source", "what": {"reference": "Patient/dz-draft"}} in why["entity"]

    again, _, stderr = sync(own_server, tmp_path, "--patient", "dz-draft")
    assert again["counts"] == {"skipped-deceased": 1}
    assert again["patients"][0]["detail"] == f"CarePlan/{draft['id']} withdrawn earlier"
    after = our_careplan(http, "dz-draft")
    assert after["meta"]["versionId"] == withdrawn["meta"]["versionId"]
    assert len(provenances_of(http, after)) == 2

    # Recorded in error: once the record no longer says so, the draft is back, in place.
    http.put("Patient/dz-draft", json=patient).raise_for_status()
    revived, _, _ = sync(own_server, tmp_path, "--patient", "dz-draft")
    assert revived["counts"] == {"updated": 1}
    restored = our_careplan(http, "dz-draft")
    assert restored["id"] == draft["id"] and restored["status"] == "draft"
    assert {g["lifecycleStatus"] for g in goals_of(http, restored)} == {"proposed"}


def test_a_clinicians_active_plan_is_left_alone_when_the_patient_dies(
    own_server: str, http: httpx.Client, tmp_path: Path
) -> None:
    patient = load_patient(http, "dz-active")
    sync(own_server, tmp_path, "--patient", "dz-active")
    draft = our_careplan(http, "dz-active")
    accepted = {**draft, "status": "active", "description": "Agreed with the patient"}
    http.put(f"CarePlan/{draft['id']}", json=accepted).raise_for_status()
    before = our_careplan(http, "dz-active")
    goals_before = goals_of(http, before)

    dies(http, patient)
    report, _, stderr = sync(own_server, tmp_path, "--patient", "dz-active")
    assert report["counts"] == {"skipped-deceased": 1}
    detail = report["patients"][0]["detail"]
    assert detail.startswith(f"CarePlan/{draft['id']} left untouched")
    assert "'active'" in detail and detail in stderr
    assert our_careplan(http, "dz-active") == before
    assert goals_of(http, before) == goals_before
    assert len(provenances_of(http, before)) == 1


def test_a_patient_who_died_before_any_sync_gets_nothing(
    own_server: str, http: httpx.Client, tmp_path: Path
) -> None:
    patient = load_patient(http, "dz-never")
    dies(http, patient)
    report, _, _ = sync(own_server, tmp_path, "--patient", "dz-never")
    assert report["counts"] == {"skipped-deceased": 1}
    assert report["patients"][0]["detail"] is None
    assert search_all(http, "CarePlan?subject=Patient/dz-never") == []


def test_a_draft_written_under_an_earlier_catalog_version_is_withdrawn(
    own_server: str, http: httpx.Client, tmp_path: Path
) -> None:
    """The identifier carries the catalog version, so a catalog bump leaves earlier drafts
    behind under their old identifier; the patient's are found all the same."""
    earlier = tmp_path / "profiles"
    shutil.copytree(bundled_path("profiles"), earlier)
    catalog = earlier / "catalog.yaml"
    text = catalog.read_text()
    version = next(line for line in text.splitlines() if line.strip().startswith("version:"))
    catalog.write_text(text.replace(version, '  version: "2000.1.0"', 1))
    patient = load_patient(http, "dz-old")
    created, _, _ = sync(own_server, tmp_path, "--patient", "dz-old", profiles=earlier)
    assert created["counts"] == {"created": 1}
    draft = our_careplan(http, "dz-old")
    assert draft["identifier"][0]["value"] == "dz-old/fhir-tailor-core/2000.1.0"

    dies(http, patient)
    report, _, _ = sync(own_server, tmp_path, "--patient", "dz-old")
    assert report["counts"] == {"skipped-deceased": 1}
    assert report["patients"][0]["detail"] == f"withdrew draft CarePlan/{draft['id']}"
    withdrawn = our_careplan(http, "dz-old")
    assert withdrawn["status"] == "revoked"
    assert {g["lifecycleStatus"] for g in goals_of(http, withdrawn)} == {"cancelled"}
