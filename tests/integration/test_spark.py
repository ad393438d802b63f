"""spark-sync on Spark in local mode writes what the single-process sync writes, byte for byte.

Needs pyspark and Java (see sparking.py); one local[2] application runs the module.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sparking import generated_population, requires_spark

from fhir_tailor.cli import main

AS_OF = "2026-11-15"
RECORDED = "2026-11-15T08:30:00+00:00"
pytestmark = requires_spark

BAD_LINES = {
    "Condition.ndjson": [
        '{"resourceType": "Condition", "id": "broken"',  # invalid JSON
        json.dumps({"resourceType": "Condition", "id": "no-subject"}),
        # a patient the input does not hold
        json.dumps(
            {"resourceType": "Condition", "id": "orphan", "subject": {"reference": "Patient/nope"}}
        ),
    ],
    "Observation.ndjson": ["", "[1, 2]"],  # a blank line is skipped, a list is not a resource
}


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 generated patients plus lines no patient can be found for, and a duplicate."""
    folder = generated_population(tmp_path_factory.mktemp("population"), 60, 3)
    for name, lines in BAD_LINES.items():
        with (folder / name).open("a", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
    patients = folder / "Patient.ndjson"
    first = patients.read_text(encoding="utf-8").splitlines()[0]
    with patients.open("a", encoding="utf-8") as handle:
        handle.write(first + "\n")  # a duplicate Patient: the first one is kept
    return folder


def fhir_tailor(*args: str) -> None:
    result = CliRunner().invoke(main, ["--as-of", AS_OF, *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output


def run(command: str, population: Path, out: Path, fmt: str, *extra: str) -> dict[str, Any]:
    report = out.with_suffix(".report.json")
    fhir_tailor(
        command,
        "--input",
        str(population),
        "--out",
        str(out),
        "--out-format",
        fmt,
        "--recorded",
        RECORDED,
        "--report",
        str(report),
        *extra,
    )
    loaded: dict[str, Any] = json.loads(report.read_text(encoding="utf-8"))
    return loaded


def ndjson_lines(folder: Path) -> dict[str, list[str]]:
    """Lines per resource type, whether in ``CarePlan.ndjson`` or ``CarePlan.part-NNNNN.ndjson``."""
    lines: defaultdict[str, list[str]] = defaultdict(list)
    for path in folder.glob("*.ndjson"):
        lines[path.name.split(".")[0]] += path.read_text(encoding="utf-8").splitlines()
    return {rtype: sorted(found) for rtype, found in lines.items()}


def bundle_files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.glob("*.json")}


def comparable(report: dict[str, Any]) -> dict[str, Any]:
    """What a run decided, without timings or where it wrote."""

    def ordered(items: list[dict[str, Any]]) -> list[str]:
        return sorted(json.dumps(item, sort_keys=True) for item in items)

    return {
        "counts": report["counts"],
        "patients_total": report["patients_total"],
        "patients": ordered([{**p, "careplan": None} for p in report["patients"]]),
        "read_issues": ordered(report["read_issues"]),
        "data_issues": ordered(report["data_issues"]),
    }


@pytest.fixture(scope="module")
def single(population: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The single-process outputs: NDJSON and bundles folders, and their reports."""
    base = tmp_path_factory.mktemp("single")
    return {
        fmt: (base / fmt, run("sync", population, base / fmt, fmt)) for fmt in ("ndjson", "bundles")
    }


def test_ndjson_output_and_report_equal_the_single_process_run(
    population: Path, single: dict[str, Any], tmp_path: Path
) -> None:
    expected_out, expected_report = single["ndjson"]
    report = run("spark-sync", population, tmp_path / "out", "ndjson", "--partitions", "3")
    produced = ndjson_lines(tmp_path / "out")
    assert produced == ndjson_lines(expected_out)
    assert set(produced) >= {"CarePlan", "Goal", "Provenance"}
    assert all(f'"recorded":"{RECORDED}"' in line for line in produced["Provenance"])
    assert comparable(report) == comparable(expected_report)
    reasons = {issue["reason"].split(":")[0] for issue in report["read_issues"]}
    assert {"invalid JSON", "field subject", "duplicate Patient; first one kept"} <= reasons


def test_bundles_equal_the_single_process_run(
    population: Path, single: dict[str, Any], tmp_path: Path
) -> None:
    expected_out, expected_report = single["bundles"]
    report = run("spark-sync", population, tmp_path / "out", "bundles", "--partitions", "4")
    produced = bundle_files(tmp_path / "out")
    assert len(produced) == expected_report["counts"]["written"]
    assert produced == bundle_files(expected_out)
    assert comparable(report) == comparable(expected_report)


def test_partition_count_does_not_change_the_output(population: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    seven = run("spark-sync", population, out, "ndjson", "--partitions", "7")
    assert len(list(out.glob("CarePlan.*"))) > 1
    lines = ndjson_lines(out)
    # A rerun into the same folder with fewer partitions leaves no part of the earlier run.
    one = run("spark-sync", population, out, "ndjson", "--partitions", "1")
    assert {p.name.split(".")[1] for p in out.glob("*.ndjson")} == {"part-00000"}
    assert not [p for p in out.iterdir() if p.name.startswith(".staging")]
    assert ndjson_lines(out) == lines
    assert comparable(one) == comparable(seven)
