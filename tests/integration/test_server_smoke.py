"""The loopback FHIR server answers like a FHIR R4 server."""

from __future__ import annotations

import httpx


def test_metadata_says_fhir_r4(fhir_server: str) -> None:
    response = httpx.get(
        f"{fhir_server}/metadata", headers={"Accept": "application/fhir+json"}, timeout=30
    )
    assert response.status_code == 200
    capability = response.json()
    assert capability["resourceType"] == "CapabilityStatement"
    assert capability["fhirVersion"].startswith("4.")
