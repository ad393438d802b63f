"""No PHI or token in logs or the report of a DEBUG, JSON-logged sync against a real server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from fhir_tailor.cli import main
from fhir_tailor.definitions import bundled_path

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = bundled_path("fixtures") / "bundles"
LOAD = ROOT / "scripts" / "load-fixtures"
TOKEN = "tok-integration-8c1d55e0b7"
DEBUG_JSON = ["--as-of", "2026-11-15", "--log-level", "DEBUG", "--log-format", "json"]


@pytest.fixture(scope="module")
def loaded(own_server: str) -> str:
    result = subprocess.run(
        [sys.executable, str(LOAD), "--server", own_server, str(FIXTURES)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return own_server


def test_debug_json_sync_with_a_token_leaks_nothing(
    loaded: str, tmp_path: Path, phi: set[str]
) -> None:
    report = tmp_path / "report.json"
    result = CliRunner().invoke(
        main,
        [
            *DEBUG_JSON,
            "sync",
            "--server",
            loaded,
            "--token",
            TOKEN,
            "--all",
            "--report",
            str(report),
        ],
    )
    assert result.exit_code == 0, result.stderr
    for text in (result.stderr, report.read_text(encoding="utf-8")):
        assert TOKEN not in text
        leaked = sorted(value for value in phi if value in text)
        assert not leaked, leaked
