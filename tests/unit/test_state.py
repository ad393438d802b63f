"""Run state: resuming a killed run, and the watermark of --since auto."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from fhir_tailor.cli import main
from fhir_tailor.state import RunState, StateError

T0 = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)
T1 = datetime(2026, 11, 2, 2, 0, tzinfo=UTC)


def test_a_run_is_resumed_only_for_the_same_selection(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    state = RunState.load(path)
    assert not state.resuming and state.watermark is None
    state.begin("run-a", T0, None)
    state.mark_done("p1")
    state.mark_done("p2")
    state.close()  # killed here: never completed

    again = RunState.load(path)
    assert again.resuming and again.done == {"p1", "p2"} and again.started == T0
    again.begin("run-a", T1, None)
    assert again.started == T0 and again.done == {"p1", "p2"}
    again.close()

    other = RunState.load(path)
    other.begin("run-b", T1, None)
    assert other.done == set() and other.started == T1
    other.close()
    assert RunState.load(path).done == set()


def test_completing_moves_the_watermark_to_the_run_start(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    state = RunState.load(path)
    state.begin("run-a", T0, None)
    state.mark_done("p1")
    state.complete()
    loaded = RunState.load(path)
    assert loaded.watermark == T0 and not loaded.resuming and loaded.done == set()
    assert not loaded.journal_path.exists()


def test_a_broken_state_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("{not json")
    with pytest.raises(StateError, match=r"state\.json: unreadable state file"):
        RunState.load(path)
    path.write_text(json.dumps({"format": 99}))
    with pytest.raises(StateError, match="unknown state format 99"):
        RunState.load(path)


def sync(tmp_path: Path, *extra: str) -> dict[str, int]:
    report = tmp_path / "report.json"
    result = CliRunner().invoke(
        main,
        [
            "--as-of",
            "2026-11-15",
            "sync",
            "--out",
            str(tmp_path / "out"),
            "--state",
            str(tmp_path / "state.json"),
            "--report",
            str(report),
            *extra,
        ],
    )
    assert result.exit_code == 0, result.output
    counts: dict[str, int] = json.loads(report.read_text())["counts"]
    return counts


def test_sync_resumes_where_a_killed_run_stopped(tmp_path: Path) -> None:
    first = sync(tmp_path)
    patients = sum(first.values())
    assert "done-earlier" not in first
    state = RunState.load(tmp_path / "state.json")
    assert state.watermark is not None and not state.resuming

    # Simulate a kill after three patients of the next run of the same command (the default
    # run on the bundled fixtures): the run is open and three patients are journaled.
    selection = {"all": False, "input": None, "patients": [], "server": None, "since": None}
    killed = RunState.load(tmp_path / "state.json")
    killed.begin(json.dumps(selection, sort_keys=True), datetime.now(UTC), None)
    for pid in ("ft-01", "ft-02", "ft-03"):
        killed.mark_done(pid)
    killed.close()

    resumed = sync(tmp_path)
    assert resumed["done-earlier"] == 3
    assert sum(resumed.values()) == patients
    assert not RunState.load(tmp_path / "state.json").resuming


def test_since_auto_needs_a_server_and_sync(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["sync", "--since", "auto", "--state", str(tmp_path / "s")])
    assert result.exit_code == 2 and "--since auto reads a server" in result.output
    result = CliRunner().invoke(main, ["segments", "--since", "auto"])
    assert result.exit_code == 2 and "--since auto is for sync with --state" in result.output


def test_the_bulk_job_is_kept_with_the_run_and_dropped_when_it_completes(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    state = RunState.load(path)
    state.begin("bulk-run", T0, None)
    state.bulk_job = {"status_url": "https://h/fhir/status/1", "files": {"u1": "Patient.1.ndjson"}}
    state.save()
    state.close()
    resumed = RunState.load(path)
    assert resumed.bulk_job["files"] == {"u1": "Patient.1.ndjson"}
    resumed.begin("bulk-run", T1, None)
    assert resumed.bulk_job["status_url"] == "https://h/fhir/status/1"
    resumed.complete()
    assert RunState.load(path).bulk_job == {}
