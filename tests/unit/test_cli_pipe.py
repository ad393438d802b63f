"""``fhir-tailor sync --out - | head``: when the reader of standard output goes away, the run
stops at once and quietly (no error per patient, no traceback), keeping its report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_a_closed_pipe_stops_the_run_quietly(tmp_path: Path) -> None:
    report = tmp_path / "run.json"
    command = "from fhir_tailor.cli import main; main()"
    args = ["--as-of", "2026-11-15", "sync", "--out", "-", "--report", str(report)]
    with subprocess.Popen(
        [sys.executable, "-c", command, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        first = process.stdout.readline()  # what `head -1` reads before it exits
        process.stdout.close()
        err = process.stderr.read().decode()
        code = process.wait(timeout=120)
    assert json.loads(first)["resourceType"] == "Bundle"
    assert code == 4, err  # stopped part-way
    assert err == ""
    done = json.loads(report.read_text())
    # the ~1 MB of plans for the 37 fixture patients cannot all fit in a pipe's buffer (64 kB)
    assert 1 <= done["patients_total"] < 37 and "failed" not in done["counts"]
