"""Syncs killed at seeded random points and resumed: nothing lost, nothing duplicated.

Each cycle loads the fixture patients under fresh ids into a server of this module's own,
starts ``fhir-tailor sync --state`` as a subprocess, SIGKILLs it after a seeded delay, then runs
the same command again to completion. Afterwards every eligible patient has exactly one
CarePlan, and the server holds no Goal, ServiceRequest or Provenance that no CarePlan accounts
for (what a duplicated or half-repeated write would leave behind).
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from searching import search_all

from fhir_tailor.resources import GENERATED_TAG

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures" / "bundles"
CYCLES = 20
SEED = 2026
AS_OF = "2026-11-15"
CLI = [str(Path(sys.executable).parent / "fhir-tailor")]


def load_cycle(server: str, prefix: str, folder: Path) -> list[str]:
    """Load every fixture bundle with ids prefixed; return the patient ids."""
    folder.mkdir()
    patients = []
    for path in sorted(FIXTURES.glob("*.json")):
        text = path.read_text().replace('"ft-', f'"{prefix}ft-').replace("/ft-", f"/{prefix}ft-")
        (folder / path.name).write_text(text)
        bundle = json.loads(text)
        patients += [
            e["resource"]["id"]
            for e in bundle["entry"]
            if e["resource"]["resourceType"] == "Patient"
        ]
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "load-fixtures"), "--server", server, str(folder)],
        check=True,
        capture_output=True,
    )
    return patients


def sync_command(server: str, patients: list[str], state: Path) -> list[str]:
    selection = [arg for pid in patients for arg in ("--patient", pid)]
    return [*CLI, "--as-of", AS_OF, "sync", "--server", server, *selection, "--state", str(state)]


def test_killed_and_resumed_syncs_lose_and_duplicate_nothing(
    own_server: str, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    eligible_fixtures = eligible_fixture_patients(tmp_path)

    # An uninterrupted run measures how long a cycle takes, to spread the kill points over it.
    # A first run warms the server up (HAPI FHIR's first writes are several times slower than
    # its later ones): measured cold, a cycle's length would put most kill points after the end.
    warm = load_cycle(own_server, "warm-", tmp_path / "warm")
    subprocess.run(
        sync_command(own_server, warm, tmp_path / "warm.state"), check=True, capture_output=True
    )
    base = load_cycle(own_server, "base-", tmp_path / "base")
    started = time.monotonic()
    subprocess.run(
        sync_command(own_server, base, tmp_path / "base.state"), check=True, capture_output=True
    )
    duration = time.monotonic() - started

    expected = {prefix + pid for prefix in ("warm-", "base-") for pid in eligible_fixtures}
    kills = []
    for cycle in range(CYCLES):
        prefix = f"k{cycle:02d}-"
        patients = load_cycle(own_server, prefix, tmp_path / prefix)
        expected |= {prefix + pid for pid in eligible_fixtures}
        state = tmp_path / f"{prefix}state.json"
        command = sync_command(own_server, patients, state)
        delay = rng.uniform(0.05, duration)
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        resumed = subprocess.run(command, capture_output=True, text=True)
        assert resumed.returncode == 0, resumed.stderr
        kills.append((round(delay, 2), process.returncode))

    with httpx.Client(headers={"Accept": "application/fhir+json"}, timeout=60) as client:
        careplans = search_all(client, f"{own_server}/CarePlan?_count=200")
        goals = search_all(client, f"{own_server}/Goal?_count=200")
        requests = [
            r
            for kind in ("ServiceRequest", "Task")
            for r in search_all(client, f"{own_server}/{kind}?_count=200")
            if GENERATED_TAG in r.get("meta", {}).get("tag", [])  # not the patients' own
        ]
        provenances = search_all(client, f"{own_server}/Provenance?_count=200")

    subjects = [cp["subject"]["reference"].removeprefix("Patient/") for cp in careplans]
    lost = expected - set(subjects)
    duplicated = {s for s in subjects if subjects.count(s) > 1}
    assert (len(lost), len(duplicated)) == (0, 0), (sorted(lost), sorted(duplicated), kills)
    assert set(subjects) == expected

    goal_refs = {g["reference"] for cp in careplans for g in cp.get("goal", [])}
    assert {f"Goal/{g['id']}" for g in goals} == goal_refs
    request_refs = {
        a["reference"]["reference"]
        for cp in careplans
        for a in cp.get("activity", [])
        if "reference" in a
    }
    assert {f"{r['resourceType']}/{r['id']}" for r in requests} == request_refs
    # One Provenance per CarePlan write; every CarePlan was written once (version 1).
    assert all(cp["meta"]["versionId"] == "1" for cp in careplans)
    assert len(provenances) == len(careplans)
    # Most kills must have hit a run in progress, or the test proves little.
    assert sum(1 for _, code in kills if code == -signal.SIGKILL) >= CYCLES // 2, kills


def eligible_fixture_patients(tmp_path: Path) -> set[str]:
    """Fixture patients that get a plan, from a file run (no server involved)."""
    report = tmp_path / "eligible.json"
    subprocess.run(
        [
            *CLI,
            "--as-of",
            AS_OF,
            "sync",
            "--input",
            str(FIXTURES),
            "--out",
            str(tmp_path / "files"),
            "--report",
            str(report),
        ],
        check=True,
        capture_output=True,
    )
    outcomes = json.loads(report.read_text())["patients"]
    return {o["patient"].removeprefix("Patient/") for o in outcomes if o["outcome"] == "written"}
