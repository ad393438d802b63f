"""Every file of tests/corpus/malformed/ through ``fhir-tailor sync``: no crash, each break
reported against the resource and field at fault, the good patient still processed, and a file
that yields nothing at all reported as an unread input."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from builders import AS_OF
from click.testing import CliRunner

from fhir_tailor.cli import main
from fhir_tailor.definitions import Definitions
from fhir_tailor.errors import NoPatientsError
from fhir_tailor.pipeline import run
from fhir_tailor.report import RunReport
from fhir_tailor.sinks.files import FolderSink
from fhir_tailor.sources import file_source

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "malformed"
EXPECTED: dict[str, dict[str, Any]] = json.loads((CORPUS / "expected.json").read_text())


def test_corpus_is_complete() -> None:
    files = {p.name for p in CORPUS.iterdir()} - {"README.md", "expected.json"}
    assert files == set(EXPECTED)
    assert len(files) >= 50
    readme = (CORPUS / "README.md").read_text(encoding="utf-8")
    assert all(f"| {name} |" in readme for name in files)


def _issues(report: dict[str, Any]) -> list[tuple[str, str]]:
    """Every reported problem as ``(Type/id, reason)``, read and data issues alike."""
    read = [
        (f"{i['resource_type'] or '?'}/{i['resource_id'] or '?'}", i["reason"])
        for i in report["read_issues"]
    ]
    return read + [(i["resource"], i["problem"]) for i in report["data_issues"]]


def _input(name: str, tmp_path: Path) -> Path:
    """The path to give ``--input``: a Bundle file itself, an NDJSON file in its own folder."""
    if not name.endswith(".ndjson"):
        return CORPUS / name
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(CORPUS / name, folder / name)
    return folder


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_malformed_input_is_reported_not_fatal(
    name: str, tmp_path: Path, definitions: Definitions
) -> None:
    report = RunReport()

    def sync() -> None:
        run(
            file_source(_input(name, tmp_path)),
            FolderSink(tmp_path / "out"),
            definitions,
            as_of=AS_OF,
            recorded=datetime(2026, 11, 15, tzinfo=UTC),
            report=report,
        )

    if EXPECTED[name]["processed"]:
        sync()
    else:  # an input without patients is an error, whatever else is wrong with it
        with pytest.raises(NoPatientsError):
            sync()
    # A file that yields nothing at all is an unread input: the run is not complete.
    assert report.failed == bool(report.unread_inputs)
    assert all(issue.location == name for issue in report.unread_inputs)
    summary = report.to_dict()
    issues = _issues(summary)
    remaining = list(issues)
    for who, field in EXPECTED[name]["issues"]:
        found = next((i for i in remaining if i[0] == who and field in i[1]), None)
        assert found is not None, f"no issue for {who} naming {field!r} in {issues}"
        remaining.remove(found)
    outcomes = {p["patient"]: p["outcome"] for p in summary["patients"]}
    assert "failed" not in outcomes.values(), summary["patients"]
    assert set(outcomes) == {f"Patient/{pid}" for pid in EXPECTED[name]["processed"]}
    json.dumps(summary)  # the report can be written


@pytest.mark.parametrize(("suffix", "code"), [(".json", 1), (".ndjson", 0)])
def test_sync_over_the_whole_corpus_exits_with_the_truth(
    suffix: str, code: int, tmp_path: Path
) -> None:
    """One ``fhir-tailor sync`` per format over every corpus file at once, and a report: exit 0
    for the NDJSON files, where every file holds a readable patient; exit 1 for the Bundles,
    some of which are not FHIR at all (each named in the report)."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name in EXPECTED:
        if name.endswith(suffix):
            shutil.copy(CORPUS / name, folder / name)
    report_path = tmp_path / "report.json"
    args = ["--input", str(folder), "--out", str(tmp_path / "out"), "--report", str(report_path)]
    result = CliRunner().invoke(main, ["--as-of", "2026-11-15", "sync", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code == code, result.stderr
    assert "Traceback" not in result.stderr
    summary = json.loads(report_path.read_text(encoding="utf-8"))
    unread = sorted(i["location"] for i in summary["read_issues"] if i["unread_input"])
    assert summary["unread_inputs"] == len(unread)
    assert unread == sorted(
        name
        for name, expected in EXPECTED.items()
        if name.endswith(suffix) and not expected["processed"] and expected["issues"]
    )
    assert "Patient/good" in {p["patient"] for p in summary["patients"]}
    assert len(_issues(summary)) >= 20
