"""``sync --recorded`` pins the Provenance time, so two runs write the same bytes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from fhir_tailor.cli import main


def sync_to(out: Path, recorded: str) -> dict[str, str]:
    args = ["--as-of", "2026-11-15", "sync", "--out", str(out), "--out-format", "ndjson"]
    result = CliRunner().invoke(main, [*args, "--recorded", recorded], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return {path.name: path.read_text(encoding="utf-8") for path in out.glob("*.ndjson")}


@pytest.mark.parametrize(
    ("given", "written"),
    [
        ("2026-01-02T03:04:05+02:00", "2026-01-02T03:04:05+02:00"),
        ("2026-01-02T03:04:05", "2026-01-02T03:04:05+00:00"),  # no offset: UTC
    ],
)
def test_recorded_is_the_provenance_time_and_reruns_are_identical(
    tmp_path: Path, given: str, written: str
) -> None:
    first = sync_to(tmp_path / "first", given)
    assert first == sync_to(tmp_path / "second", given)
    provenances = [json.loads(line) for line in first["Provenance.ndjson"].splitlines()]
    assert provenances
    assert {p["recorded"] for p in provenances} == {written}
