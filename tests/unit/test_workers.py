"""sync --workers: patients shared by worker processes, with the output, report, journal and
logs of a run in one process, byte for byte; a worker that dies stops the run."""

from __future__ import annotations

import codecs
import json
import logging
import os
import subprocess
import sys
import threading
from concurrent.futures import Future
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from multiprocessing import parent_process
from pathlib import Path
from typing import Any

import orjson
import pytest
from builders import AS_OF
from click.testing import CliRunner

from fhir_tailor import pipeline, workers
from fhir_tailor.cli import main
from fhir_tailor.concurrency import done
from fhir_tailor.definitions import Definitions, bundled_path
from fhir_tailor.pipeline import run
from fhir_tailor.plan import Plan
from fhir_tailor.record import RELEVANT, PatientRecord, ReadIssue, relevant_only
from fhir_tailor.report import PatientOutcome, RunReport
from fhir_tailor.resources import PlanResources
from fhir_tailor.sinks.files import FileFormat, FolderRenderer, FolderSink, Rendered, StdoutSink
from fhir_tailor.sources import Source, file_source
from fhir_tailor.sources import files as source_files
from fhir_tailor.sources.files import NdjsonSource, Part, grouped, pieces, read_parts
from fhir_tailor.state import RunState
from fhir_tailor.withdrawal import Withdrawal

RECORDED = datetime(2026, 11, 15, tzinfo=UTC)
GENERATOR = Path(__file__).resolve().parents[2] / "scripts" / "generate-population"
FIXTURES = bundled_path("fixtures")


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 generated patients (seed 3) beside NDJSON lines that are no resource of theirs:
    invalid JSON, a byte order mark, blank lines, a duplicate Patient, a duplicate resource, an
    Observation of a patient not in the input, and a file none of whose lines is FHIR."""
    folder = tmp_path_factory.mktemp("population")
    subprocess.run(
        [
            *(sys.executable, str(GENERATOR), "--patients", "120", "--history", "6"),
            *("--seed", "3", "--as-of", AS_OF.isoformat(), "--out", str(folder)),
        ],
        check=True,
        capture_output=True,
    )
    (folder / "truth.json").unlink()
    first = (folder / "Patient.ndjson").read_bytes().splitlines(keepends=True)[0]
    observation = (folder / "Observation.ndjson").read_bytes().splitlines(keepends=True)[5]
    orphan = json.loads(observation)
    orphan["id"], orphan["subject"] = "orphan-1", {"reference": "Patient/nobody"}
    extra = [
        codecs.BOM_UTF8 + first,  # the same Patient again, with a BOM
        b"\n",
        b"{not json\n",
        observation,  # the same Observation again
        json.dumps(orphan).encode() + b"\r\n",
        b'{"resourceType": "Observation", "id": "no-subject", "status": "final"}\n',
        b"[1, 2]",  # the last line, without a newline
    ]
    (folder / "Extra.ndjson").write_bytes(b"".join(extra))
    (folder / "Zz-not-fhir.ndjson").write_bytes(b"hello\nworld\n")
    return folder


@pytest.fixture
def small_buckets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Buckets and pieces of a few kilobytes: small inputs spread over many of each, so the
    workers cut files between lines and hand patients across buckets."""
    monkeypatch.setattr(source_files, "BUCKET_BYTES", 48 * 1024)
    monkeypatch.setattr(workers, "MIN_PIECE_BYTES", 16 * 1024)


def _run(
    source: Source,
    out: Path,
    definitions: Definitions,
    count: int,
    out_format: FileFormat = "ndjson",
    state: RunState | None = None,
) -> dict[str, Any]:
    """A run into folder ``out``: its report, without the times."""
    report = RunReport()
    sink = FolderSink(out, out_format)
    try:
        run(
            source,
            sink,
            definitions,
            as_of=AS_OF,
            recorded=RECORDED,
            report=report,
            state=state,
            workers=count,
        )
    finally:
        sink.close()
    result = report.to_dict()
    for timing in ("started_at", "finished_at", "duration_seconds"):
        del result[timing]
    return result


def _files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


@pytest.mark.parametrize(
    ("out_format", "method"), [("ndjson", "fork"), ("bundles", "fork"), ("ndjson", "forkserver")]
)
def test_two_workers_write_what_one_writes_byte_for_byte(
    population: Path,
    definitions: Definitions,
    small_buckets: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    out_format: FileFormat,
    method: str,
) -> None:
    """Workers started as copies of this process, or from a fork server (when another thread
    runs here: an HTTP client's)."""
    monkeypatch.setattr(workers, "start_method", lambda: method)
    reports = {}
    for count in (1, 2):  # the report names the output folder: "out" in both runs
        monkeypatch.chdir((tmp_path / str(count)).mkdir() or tmp_path / str(count))
        reports[count] = _run(file_source(population), Path("out"), definitions, count, out_format)
    one, two = reports[1], reports[2]
    assert _files(tmp_path / "1" / "out") == _files(tmp_path / "2" / "out")
    assert len(_files(tmp_path / "1" / "out")) >= 4
    assert one["patients"] == two["patients"] and len(one["patients"]) == 120
    assert {p["outcome"] for p in one["patients"]} >= {"written", "no-plan", "skipped-deceased"}
    assert one["read_issues"] == two["read_issues"]
    problems = {issue["reason"].split(":")[0] for issue in one["read_issues"]}
    assert {"duplicate Patient; first one kept", "duplicate resource; first one kept"} <= problems
    assert {"invalid JSON", "not FHIR NDJSON", "field subject"} <= problems
    lines = [issue["location"] for issue in one["read_issues"]]
    assert "Extra.ndjson:3" in lines and "Extra.ndjson:7" in lines  # numbered as in the file
    assert one["data_issues"] == two["data_issues"] and one["data_issues"]
    assert one == two


def test_the_fixtures_and_a_bulk_folder_are_the_same_at_two_workers(
    population: Path, definitions: Definitions, small_buckets: None, tmp_path: Path
) -> None:
    for name, source in [
        ("fixtures", file_source(FIXTURES)),  # Bundles, NDJSON and messy files together
        ("bulk", NdjsonSource(population)),
    ]:
        one = _run(source, tmp_path / name / "out", definitions, 1)
        one_files = _files(tmp_path / name / "out")
        two = _run(source, tmp_path / name / "out", definitions, 2)
        assert _files(tmp_path / name / "out") == one_files, name
        assert one == two, name
    assert one["urgent"]


def test_a_resumed_run_journals_and_skips_as_one_process_does(
    population: Path, definitions: Definitions, small_buckets: None, tmp_path: Path
) -> None:
    journals = []
    for count in (1, 2):
        state = RunState.load(tmp_path / f"{count}" / "state.json")
        state.begin("the population", RECORDED, None)
        for pid in ("gen-000003", "gen-000050", "gen-000117"):  # an earlier attempt finished these
            state.mark_done(pid)
        report = _run(file_source(population), tmp_path / f"{count}" / "out", definitions, count)
        del report  # the same run again, with the state:
        report = _run(
            file_source(population), tmp_path / f"{count}" / "out", definitions, count, state=state
        )
        journals.append((tmp_path / f"{count}" / "state.json.done").read_text())
        state.close()
        outcomes = {p["patient"]: p["outcome"] for p in report["patients"]}
        assert outcomes["Patient/gen-000050"] == "done-earlier"
    assert journals[0] == journals[1]
    assert len(journals[0].splitlines()) == 120


def test_stdout_prints_what_one_process_prints(
    population: Path, definitions: Definitions, small_buckets: None
) -> None:
    printed: dict[int, list[str]] = {1: [], 2: []}
    for count, lines in printed.items():
        sink = StdoutSink(lines.append, "summary")
        report = RunReport()
        run(
            file_source(population),
            sink,
            definitions,
            as_of=AS_OF,
            recorded=RECORDED,
            report=report,
            workers=count,
        )
    assert printed[1] == printed[2] and len(printed[1]) > 100


class ServerLikeSink:
    """A sink that writes plans, not text (as a server does): workers send it plans, which it
    takes concurrently, as the server sink does."""

    concurrent_writes = True

    def __init__(self) -> None:
        self.written: list[tuple[str, bytes]] = []

    def write(self, plan: Plan, resources: PlanResources) -> PatientOutcome:
        entries = [entry.resource for entry in resources.entries]
        self.written.append((plan.patient, orjson.dumps(entries)))
        return PatientOutcome(plan.patient, "created", careplan=f"{plan.patient}/plan")

    def submit(self, plan: Plan, resources: PlanResources) -> Future[PatientOutcome]:
        return done(self.write(plan, resources))

    def withdraw(self, withdrawal: Withdrawal) -> PatientOutcome:
        return PatientOutcome(withdrawal.patient, "skipped-deceased", "withdrawn")

    def close(self) -> None:
        return None


def test_a_sink_of_plans_gets_the_plans_one_process_makes(
    population: Path, definitions: Definitions, small_buckets: None
) -> None:
    sinks = {1: ServerLikeSink(), 2: ServerLikeSink()}
    reports = {count: RunReport() for count in sinks}
    for count, sink in sinks.items():
        run(
            NdjsonSource(population),
            sink,
            definitions,
            as_of=AS_OF,
            recorded=RECORDED,
            report=reports[count],
            concurrency=4,
            workers=count,
        )
    assert sinks[1].written == sinks[2].written and len(sinks[1].written) > 100
    assert reports[1].patients == reports[2].patients
    assert reports[1].data_issues == reports[2].data_issues


class FailingRenderer:
    """Renders as the folder sink does, but fails for one patient and, with ``crash``, ends
    the process rendering another (a worker killed mid-bucket)."""

    def __init__(self, crash: bool = False) -> None:
        self.crash = crash

    def __call__(self, plan: Plan, resources: PlanResources) -> Rendered:
        if plan.patient == "Patient/gen-000007":
            raise ValueError("no text for gen-000007")
        if self.crash and plan.patient == "Patient/gen-000042" and parent_process() is not None:
            os._exit(9)  # only ever in a worker process
        return FolderRenderer("ndjson")(plan, resources)


class FailingSink(FolderSink):
    crash: bool = False

    def renderer(self) -> FailingRenderer:  # type: ignore[override]
        return FailingRenderer(self.crash)


def test_a_patient_failing_in_a_worker_is_that_patients_outcome_and_its_log(
    population: Path,
    definitions: Definitions,
    small_buckets: None,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    reports = {}
    for count in (1, 2):
        caplog.clear()
        report = RunReport()
        sink = FailingSink(tmp_path / str(count), "ndjson")
        with caplog.at_level(logging.WARNING, logger="fhir_tailor"):
            run(
                file_source(population),
                sink,
                definitions,
                as_of=AS_OF,
                recorded=RECORDED,
                report=report,
                workers=count,
            )
        sink.close()
        reports[count] = report
        logged = [r.getMessage() for r in caplog.records if r.name == "fhir_tailor.pipeline"]
        assert logged == ["Patient/gen-000007 failed unexpectedly: ValueError"], count
    failed = [p for p in reports[2].patients if p.outcome == "failed"]
    assert [(p.patient, p.detail) for p in failed] == [
        ("Patient/gen-000007", "unexpected ValueError: no text for gen-000007")
    ]
    outcomes = {
        count: [(p.patient, p.outcome, p.detail) for p in report.patients]
        for count, report in reports.items()
    }
    assert outcomes[1] == outcomes[2]


def test_a_worker_that_dies_stops_the_run_with_an_error(
    population: Path, definitions: Definitions, small_buckets: None, tmp_path: Path
) -> None:
    sink = FailingSink(tmp_path, "ndjson")
    sink.crash = True
    report = RunReport()
    with pytest.raises(workers.WorkerError, match="worker process ended abruptly"):
        run(
            file_source(population),
            sink,
            definitions,
            as_of=AS_OF,
            recorded=RECORDED,
            report=report,
            workers=2,
        )
    sink.close()
    assert "Patient/gen-000042" not in {p.patient for p in report.patients}


def test_pieces_read_the_lines_a_whole_file_reading_reads(population: Path) -> None:
    whole = [Part(path, path.name, ndjson=True) for path in sorted(population.glob("*.ndjson"))]
    issues: list[ReadIssue] = []
    expected = [(item.location, item.raw) for item in read_parts(whole, issues.append)]
    total = sum(path.stat().st_size for path in population.glob("*.ndjson"))
    for size in (1, 7, 100, 4096, 50_000, total // 3, total + 1):
        cut = list(pieces(whole, size))
        parts = [part for piece in cut for part in piece]
        found: list[ReadIssue] = []
        read = [(item.location, item.raw) for item in read_parts(parts, found.append)]
        assert read == expected, size
        assert found == issues, size
        if size >= 4096:  # pieces hold about ``size`` bytes: the last of each may be shorter
            assert len(cut) <= -(-total // size) + len(whole)


def test_one_worker_or_a_one_bucket_input_starts_no_process(
    definitions: Definitions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("no worker process for a one-bucket input")

    monkeypatch.setattr(workers, "ProcessPoolExecutor", refuse)
    report = _run(file_source(FIXTURES / "ndjson"), tmp_path / "out", definitions, 4)
    assert report["counts"]["written"] > 0


def test_workers_option_and_its_variable(
    small_buckets: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counts: list[int] = []

    def counted(count: int, *args: Any) -> AbstractContextManager[None]:
        counts.append(count)
        return workers.worker_pool(count, *args)

    monkeypatch.setattr(pipeline, "worker_pool", counted)
    runner = CliRunner()
    base = ["--as-of", AS_OF.isoformat(), "sync", "--input", str(FIXTURES)]
    base += ["--recorded", "2026-11-15T00:00:00", "--out-format", "ndjson"]
    one = runner.invoke(main, [*base, "--out", str(tmp_path / "1"), "--workers", "1"])
    monkeypatch.setenv("FHIR_TAILOR_WORKERS", "2")
    two = runner.invoke(main, [*base, "--out", str(tmp_path / "2")])
    assert counts == [1, 2]
    assert one.exit_code == two.exit_code == 0, (one.output, two.output)
    assert one.output == two.output
    assert _files(tmp_path / "1") == _files(tmp_path / "2")
    refused = runner.invoke(main, [*base, "--out", str(tmp_path / "0"), "--workers", "0"])
    assert refused.exit_code == 2 and "--workers" in refused.output


class Told:
    """A processor saying whether its worker groups with the run's relevance filter."""

    def __call__(self, record: PatientRecord, report: RunReport) -> object:
        return RELEVANT.get() is bool


@pytest.mark.parametrize("method", ["fork", "forkserver"])
def test_workers_group_with_the_runs_relevance_filter(
    population: Path, small_buckets: None, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    monkeypatch.setattr(workers, "start_method", lambda: method)
    with relevant_only(bool), workers.worker_pool(2, Told()):
        records = list(file_source(population).records(lambda issue: None))
    assert len(records) == 120
    assert all(isinstance(r, workers.Prepared) and r.replay(RunReport()) for r in records)


def test_workers_process_only_the_patients_asked_for(
    population: Path, definitions: Definitions, small_buckets: None, tmp_path: Path
) -> None:
    parts = [Part(path, path.name, ndjson=True) for path in sorted(population.glob("*.ndjson"))]
    with workers.worker_pool(2, Told()):
        records = list(grouped(parts, lambda issue: None, ("gen-000010", "gen-000077")))
    processed = [r.patient_id for r in records if isinstance(r, workers.Prepared) and r.processed]
    assert len(records) == 120 and processed == ["gen-000010", "gen-000077"]
    asked = ("gen-000077", "gen-000010", "nobody")
    one = _run(file_source(population, asked), tmp_path / "1", definitions, 1)
    two = _run(file_source(population, asked), tmp_path / "2", definitions, 2)
    assert _files(tmp_path / "1") == _files(tmp_path / "2")
    assert [p["patient"] for p in one["patients"]] == [
        "Patient/gen-000010",
        "Patient/gen-000077",
        "Patient/nobody",
    ]
    assert [p["outcome"] for p in one["patients"]] == [p["outcome"] for p in two["patients"]]


@pytest.mark.skipif(sys.platform != "linux", reason="copies of a process only on Linux")
def test_workers_are_copies_of_this_process_only_while_no_other_thread_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(threading, "active_count", lambda: 1)
    assert workers.start_method() == "fork"
    monkeypatch.setattr(threading, "active_count", lambda: 2)  # the HTTP client's thread
    assert workers.start_method() == "forkserver"


def test_the_default_is_the_cores_this_process_may_use() -> None:
    expected = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert workers.default_workers() == expected
