"""What a run against the server must match: the same fixtures planned from files, no server."""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from pathlib import Path

from click.testing import CliRunner

from fhir_tailor.cli import main
from fhir_tailor.definitions import bundled_path

FIXTURES = bundled_path("fixtures") / "bundles"
AS_OF = "2026-11-15"


def eligible_patients() -> list[str]:
    """The fixture patients a file-based run gives a plan (``Patient/ID``), sorted."""
    result = CliRunner().invoke(
        main, ["--as-of", AS_OF, "sync", "--input", str(FIXTURES), "--out", "-"]
    )
    assert result.exit_code == 0, result.stderr
    return sorted(
        json.loads(line)["entry"][0]["resource"]["subject"]["reference"]
        for line in result.stdout.splitlines()
    )


def without_plan() -> dict[str, int]:
    """How a file-based run counts the fixture patients it gives no plan, by outcome:
    ``no-plan`` (no module applies) and ``skipped-deceased`` (recorded as deceased)."""
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "report.json"
        args = ["sync", "--input", str(FIXTURES), "--out", "-", "--report", str(report)]
        result = CliRunner().invoke(main, ["--as-of", AS_OF, *args])
        assert result.exit_code == 0, result.stderr
        counts = Counter(json.loads(report.read_text())["counts"])
    del counts["written"]
    return dict(counts)
