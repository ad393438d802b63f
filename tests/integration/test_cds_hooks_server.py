"""The CDS Hooks service's fallback against a real FHIR server: no prefetch, data read live."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.careplan import CarePlan
from starlette.applications import Starlette
from starlette.testclient import TestClient

from fhir_tailor.definitions import Definitions, bundled_path, load_definitions
from fhir_tailor.pipeline import assess
from fhir_tailor.resources import to_fhir
from fhir_tailor.sources import BundleSource
from fhir_tailor.web.cds_hooks import cds_routes

AS_OF = date(2026, 11, 15)
BUNDLE = bundled_path("fixtures") / "bundles" / "01-diabetes-transport-insecurity.json"


@pytest.fixture(scope="module")
def definitions() -> Definitions:
    return load_definitions(bundled_path("profiles"))


@pytest.fixture(scope="module")
def loaded(fhir_server: str) -> str:
    """The server with one fixture patient (its transaction Bundle PUTs client-assigned ids)."""
    response = httpx.post(
        fhir_server,
        content=BUNDLE.read_bytes(),
        headers={"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"},
        timeout=60,
    )
    assert response.status_code == 200, response.text[:500]
    return fhir_server


def test_patient_view_without_prefetch_reads_the_server_and_answers_the_pipelines_card(
    loaded: str, definitions: Definitions
) -> None:
    (record,) = BundleSource(BUNDLE).records(lambda issue: None)
    profile, _, plan = assess(record, definitions, AS_OF)
    assert plan is not None
    app = Starlette(
        routes=cds_routes(definitions, launch_url="http://127.0.0.1/launch", today=lambda: AS_OF)
    )
    call: dict[str, Any] = {
        "hook": "patient-view",
        "hookInstance": "5f4b7f3e-3d0c-4e55-9d58-2b7b0b2f1c11",
        "fhirServer": loaded,
        "context": {"userId": "Practitioner/example", "patientId": record.patient_id},
    }
    response = TestClient(app).post("/cds-services/fhir-tailor-care-plan", json=call)
    assert response.status_code == 200, response.text
    (card,) = response.json()["cards"]
    needs = [f for _, f in profile.findings() if f.current_present]
    assert card["summary"].startswith(f"{len(needs)} need") and len(card["summary"]) < 140
    assert 0 < len(needs) <= 5  # so the detail lists every one
    assert all(source in card["detail"] for f in needs for source in f.sources)
    careplan = card["suggestions"][0]["actions"][0]["resource"]
    CarePlan.model_validate(careplan)
    expected = to_fhir(plan, datetime.now(UTC)).careplan.resource
    # Read live, the record gives the same plan as the Bundle file: same content, same digest.
    assert json.dumps(careplan["extension"]) == json.dumps(expected["extension"])
