"""What the Spark test modules share: they need pyspark and Java.

pyspark is in the dev extra and scripts/test runs where Java is installed: in CI (CI set) a
missing pyspark or Java fails these tests instead of skipping them. The Spark application
itself is conftest's ``spark`` fixture.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
