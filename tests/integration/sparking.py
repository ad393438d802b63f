"""What the Spark test modules share: they need pyspark and Java.

pyspark is in the dev extra and scripts/test runs where Java is installed: in CI (CI set) a
missing pyspark or Java fails these tests instead of skipping them. The Spark application
itself is conftest's ``spark`` fixture.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhir_tailor.spark import SparkUnavailableError, require_spark

try:
    require_spark()
    MISSING = ""
except SparkUnavailableError as exc:  # the message says what to install
    MISSING = str(exc)
if MISSING and os.environ.get("CI"):
    pytest.fail(f"CI must run the Spark tests: {MISSING}", pytrace=False)

#: ``pytestmark`` of a Spark test module: skipped without pyspark or Java, in one local[2] app.
requires_spark = [
    pytest.mark.skipif(bool(MISSING), reason=MISSING),
    pytest.mark.usefixtures("spark"),
]


def generated_population(folder: Path, patients: int, seed: int) -> Path:
    """``folder`` filled by scripts/generate-population: Bulk NDJSON, one file per type."""
    script = Path(__file__).parents[2] / "scripts" / "generate-population"
    command = [sys.executable, str(script), "--patients", str(patients), "--seed", str(seed)]
    subprocess.run([*command, "--out", str(folder)], check=True, capture_output=True)
    return folder


def load_population(server: str, folder: Path) -> int:
    """Put ``folder``'s generated NDJSON on ``server``, one transaction per patient (the Patient
    first), so the plans written for them refer to resources the server holds: a server that
    keeps referential integrity (HAPI FHIR) refuses a Provenance naming a missing source.
    Returns the number of patients."""
    by_patient: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(folder.glob("*.ndjson")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            resource = json.loads(line)
            if resource["resourceType"] == "Patient":
                owner = resource["id"]
                by_patient.setdefault(owner, []).insert(0, resource)
            else:
                reference = (resource.get("subject") or resource.get("patient") or {}).get(
                    "reference", ""
                )
                owner = reference.removeprefix("Patient/")
                by_patient.setdefault(owner, []).append(resource)
    with httpx.Client(timeout=60, headers={"Content-Type": "application/fhir+json"}) as client:
        for resources in by_patient.values():
            bundle = {
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [
                    {
                        "resource": r,
                        "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"},
                    }
                    for r in resources
                ],
            }
            client.post(server, json=bundle).raise_for_status()
    return len(by_patient)
