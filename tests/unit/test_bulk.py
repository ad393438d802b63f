"""Bulk Data $export against respx-mocked servers: no network, and no real sleeping."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from click.testing import CliRunner

from fhir_tailor.auth import BearerTokenAuth
from fhir_tailor.bulk import (
    EXPORT_TYPES,
    BulkExport,
    BulkExportError,
    BulkSource,
    ExportProgress,
    ExportRequest,
    ExportResult,
    bulk_source,
    declares_export,
)
from fhir_tailor.cli import main
from fhir_tailor.client import FhirClient
from fhir_tailor.errors import FhirServerError
from fhir_tailor.record import ReadIssue
from fhir_tailor.retry import RetryPolicy
from fhir_tailor.sources.server import ServerSource

BASE = "http://fhir.test/fhir"
STATUS = f"{BASE}/bulk-status/job1"
FILES = f"{BASE}/bulk-files/job1"
EXPORTS = [
    {"name": "export", "definition": "http://hl7.org/fhir/OperationDefinition/export"},
]


def capability(*, declared: bool = True) -> dict[str, Any]:
    """A CapabilityStatement shaped like sekmet's (see docs/sekmet-notes.md)."""
    patient_ops = [
        {"name": "export", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-export"}
    ]
    group_ops = [
        {"name": "export", "definition": "http://hl7.org/fhir/OperationDefinition/Group-export"}
    ]
    return {
        "resourceType": "CapabilityStatement",
        "fhirVersion": "4.0.1",
        "rest": [
            {
                "mode": "server",
                "operation": EXPORTS if declared else [],
                "resource": [
                    {"type": "Patient", "operation": patient_ops if declared else []},
                    {"type": "Group", "operation": group_ops if declared else []},
                ],
            }
        ],
    }


def ndjson(*resources: dict[str, Any]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in resources).encode()


def patient(pid: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "gender": "female", "birthDate": "1960-01-01"}


def observation(oid: str, pid: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
        "subject": {"reference": f"Patient/{pid}"},
        "valueQuantity": {"value": 8.1, "unit": "%"},
    }


def manifest(*outputs: tuple[str, str], errors: int = 0, token: bool = False) -> dict[str, Any]:
    return {
        "transactionTime": "2026-11-23T10:00:00Z",
        "request": f"{BASE}/Patient/$export",
        "requiresAccessToken": token,
        "output": [{"type": t, "url": url} for t, url in outputs],
        "error": [
            {"type": "OperationOutcome", "url": f"{FILES}/errors{n}.ndjson"} for n in range(errors)
        ],
    }


def accepted(**headers: str) -> httpx.Response:
    return httpx.Response(202, headers=headers)


class Clock:
    """A monotonic clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def router() -> respx.Router:
    router = respx.Router(assert_all_mocked=True)
    router.get(f"{BASE}/metadata").respond(json=capability())
    return router


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_client(router: respx.Router, clock: Clock, **kwargs: Any) -> FhirClient:
    kwargs.setdefault("retry", RetryPolicy(rng=random.Random(7)))
    return FhirClient(
        BASE, transport=httpx.MockTransport(router.handler), sleep=clock.sleep, **kwargs
    )


@pytest.fixture
def client(router: respx.Router, clock: Clock) -> Iterator[FhirClient]:
    with make_client(router, clock) as fhir:
        yield fhir


def export(
    client: FhirClient,
    tmp_path: Path,
    clock: Clock,
    budget: float = 600.0,
    limits: dict[str, Any] | None = None,
    **request: Any,
) -> BulkExport:
    return BulkExport(
        client,
        tmp_path / "bulk",
        ExportRequest(**request),
        budget=budget,
        sleep=clock.sleep,
        clock=clock,
        **(limits or {}),
    )


def test_kickoff_polls_downloads_split_files_and_reports_error_file(
    client: FhirClient, router: respx.Router, clock: Clock, tmp_path: Path
) -> None:
    kickoff = router.get(f"{BASE}/Patient/$export").respond(
        202, headers={"Content-Location": STATUS}
    )
    outputs = [
        ("Patient", f"{FILES}/Patient.ndjson"),
        ("Observation", f"{FILES}/Observation-a.ndjson"),
        ("Observation", f"{FILES}/Observation-b.ndjson"),
    ]
    router.get(STATUS).mock(
        side_effect=[
            accepted(**{"Retry-After": "3", "X-Progress": "collecting"}),
            accepted(**{"Retry-After": "Thu, 01 Jan 1970 00:00:00 GMT", "X-Progress": "50%"}),
            httpx.Response(200, json=manifest(*outputs, errors=1)),
        ]
    )
    deleted = router.delete(STATUS).respond(202)
    router.get(f"{FILES}/Patient.ndjson").respond(content=ndjson(patient("p1"), patient("p2")))
    router.get(f"{FILES}/Observation-a.ndjson").respond(content=ndjson(observation("o1", "p1")))
    router.get(f"{FILES}/Observation-b.ndjson").respond(content=ndjson(observation("o2", "p2")))
    failure = {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "processing",
                "diagnostics": "Jane Doe's record is locked",
                "expression": ["Observation.value"],
            }
        ],
    }
    router.get(f"{FILES}/errors0.ndjson").respond(content=ndjson(failure))

    source = bulk_source(client, tmp_path / "bulk", ExportRequest(), sleep=clock.sleep)
    issues: list[ReadIssue] = []
    records = list(source.records(issues.append))

    request = kickoff.calls.last.request
    assert request.headers["Prefer"] == "respond-async"
    assert request.headers["Accept"] == "application/fhir+json"
    assert request.url.params["_type"] == ",".join(EXPORT_TYPES)
    assert "_since" not in request.url.params
    # backoff from 2 s, never past the server's hint (3 s, then a date in the past: 0)
    assert clock.sleeps == [2.0, 0.0]
    assert sorted(p.name for p in (tmp_path / "bulk").glob("*.ndjson")) == [
        "Observation.1.ndjson",
        "Observation.2.ndjson",
        "Patient.1.ndjson",
    ]
    assert {r.patient_id: len(r.resources) for r in records} == {"p1": 1, "p2": 1}
    [issue] = issues
    assert "error processing at Observation.value" in issue.reason
    assert "Jane" not in str(issue), "free-text diagnostics may hold PHI"
    assert deleted.called
    assert isinstance(source, BulkSource)
    sizes = sum(p.stat().st_size for p in (tmp_path / "bulk").glob("*.ndjson"))
    summary = source.result.summary()
    assert 0 <= summary.pop("wait_seconds") < 60  # real time: the test's clock only sleeps
    assert summary == {
        "level": "Patient",
        "files": 3,
        "files_by_type": {"Observation": 2, "Patient": 1},
        "files_reused": 0,
        "bytes_downloaded": sizes,
        "server_errors": 1,
        "status_polls": 3,
    }


MARKER = "Quinn-Zebulon-1961"  # stands for what a server's free text may quote


@pytest.mark.parametrize(
    ("header", "logged"),
    [
        ("42% done", "bulk export in progress (42%); poll 1, 0s elapsed"),
        (f"{MARKER}: 42.5 % of Patient", "bulk export in progress (42.5%); poll 1, 0s elapsed"),
        (f"collecting for {MARKER}", "bulk export in progress; poll 1, 0s elapsed"),
        (f"{MARKER} 1961%", "bulk export in progress; poll 1, 0s elapsed"),  # no percentage
        (None, "bulk export in progress; poll 1, 0s elapsed"),
    ],
)
def test_progress_is_logged_as_a_percentage_only(
    client: FhirClient,
    router: respx.Router,
    clock: Clock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    header: str | None,
    logged: str,
) -> None:
    router.get(f"{BASE}/Patient/$export").respond(202, headers={"Content-Location": STATUS})
    status = accepted(**({"X-Progress": header} if header is not None else {}))
    router.get(STATUS).mock(side_effect=[status, httpx.Response(200, json=manifest())])
    router.delete(STATUS).respond(202)
    # Captured on the module's own logger, enabled and at DEBUG: what commands run in-process
    # earlier left of the process's logging (levels, propagation) must not hide the line.
    logger = logging.getLogger("fhir_tailor.bulk")
    monkeypatch.setattr(logger, "disabled", False)
    monkeypatch.setattr(logger, "propagate", False)
    monkeypatch.setattr(logger, "handlers", [caplog.handler])
    with caplog.at_level(logging.DEBUG, logger="fhir_tailor.bulk"):
        result = export(client, tmp_path, clock).run()
    assert result.files == []
    assert logged in caplog.messages
    assert MARKER not in caplog.text
    assert clock.sleeps == [2.0], "no Retry-After: the default poll delay"


def test_the_budget_error_holds_no_free_text_from_the_progress_header(
    client: FhirClient, router: respx.Router, clock: Clock, tmp_path: Path
) -> None:
    router.get(f"{BASE}/Patient/$export").respond(202, headers={"Content-Location": STATUS})
    router.get(STATUS).mock(return_value=accepted(**{"X-Progress": f"waiting on {MARKER}"}))
    router.delete(STATUS).respond(202)
    with pytest.raises(BulkExportError) as failed:
        export(client, tmp_path, clock, budget=25).run()
    assert str(failed.value).startswith("the $export was not ready within 25s after 4 polls; ")
    assert MARKER not in str(failed.value)


@pytest.mark.parametrize("token", [True, False])
def test_access_token_is_sent_for_files_only_when_required(
    router: respx.Router, clock: Clock, tmp_path: Path, token: bool
) -> None:
    router.get(f"{BASE}/Patient/$export").respond(202, headers={"Content-Location": STATUS})
    router.get(STATUS).respond(json=manifest(("Patient", f"{FILES}/Patient.ndjson"), token=token))
    router.delete(STATUS).respond(202)
    download = router.get(f"{FILES}/Patient.ndjson").respond(content=ndjson(patient("p1")))
    with make_client(router, clock, auth=BearerTokenAuth("s3cret")) as client:
        export(client, tmp_path, clock).run()
    sent = download.calls.last.request.headers.get("Authorization")
    assert sent == ("Bearer s3cret" if token else None)
    assert router.routes[1].calls.last.request.headers["Authorization"] == "Bearer s3cret"


def test_cross_origin_output_is_refused_before_any_request(
    client: FhirClient, router: respx.Router, clock: Clock, tmp_path: Path
) -> None:
    elsewhere = "https://bucket.example.org/job1/Patient.ndjson"
    router.get(f"{BASE}/Patient/$export").respond(202, headers={"Content-Location": STATUS})
    router.get(STATUS).respond(json=manifest(("Patient", elsewhere)))
    deleted = router.delete(STATUS).respond(202)
    foreign = router.get(elsewhere).respond(content=ndjson(patient("p1")))

    with pytest.raises(BulkExportError, match=r"https://bucket\.example\.org:443"):
        export(client, tmp_path, clock).run()
    assert not foreign.called
    assert deleted.called, "the job is still cleaned up"


def test_cross_origin_status_url_is_refused(
    client: FhirClient, router: respx.Router, clock: Clock, tmp_path: Path
) -> None:
    elsewhere = "http://evil.test/status/1"
    router.get(f"{BASE}/Patient/$export").respond(202, headers={"Content-Location": elsewhere})
    status = router.get(elsewhere).respond(json=manifest())
    with pytest.raises(BulkExportError, match=r"evil\.test"):
        export(client, tmp_path, clock).run()
    assert not status.called


def test_download_503_then_success_restarts_the_file(
    client: FhirClient, router: respx.Router, clock: Clock, tmp_path: Path
) -> None:
    router.get(f"{BASE}/Patient/$export").respond(202, headers={"Content-Location": STATUS})
    router.get(STATUS).respond(json=manifest(("Patient", f"{FILES}/Patient.ndjson")))
    router.delete(STATUS).respond(202)
    router.get(f"{FILES}/Patient.ndjson").mock(
        side_effect=[
            httpx.Response(503, headers={"Retry-After": "4"}),
            httpx.ReadError("connection reset mid-body"),
            httpx.Response(200, content=ndjson(patient("p1"))),
        ]
    )
    result = export(client, tmp_path, clock).run()
    assert client.retries == 2
    assert clock.sleeps[0] == 4.0
    assert result.files[0].read_bytes() == ndjson(patient("p1"))


def test_download_that_keeps_failing_fails_the_export(
    router: respx.Router, clock: Clock, tmp_path: Path
) -> None:
    router.get(f"{BASE}/Patient/$export").respond(202, headers={"Content-Location": STATUS})
    router.get(STATUS).respond(json=manifest(("Patient", f"{FILES}/Patient.ndjson")))
    router.delete(STATUS).respond(202)
    router.get(f"{FILES}/Patient.ndjson").respond(500)
    retry = RetryPolicy(max_attempts=2, rng=random.Random(1))
    with (
        make_client(router, clock, retry=retry) as client,
        pytest.raises(BulkExportError, match="output file 1: gave up on GET"),
    ):
        export(client, tmp_path, clock).run()


class Trickle(httpx.AsyncByteStream):
    """A body without a Content-Length: ``count`` chunks, ``pause`` seconds apart."""

    def __init__(self, chunk: bytes, count: int, pause: float = 0.0) -> None:
        self.chunk, self.count, self.pause = chunk, count, pause
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.count):
            await asyncio.sleep(self.pause)
            self.sent += len(self.chunk)
            yield self.chunk


@pytest.mark.parametrize("declared", [True, False])
def test_files_past_the_exports_size_limit_fail_it_and_leave_nothing_behind(
    client: FhirClient, router: respx.Router, clock: Clock, tmp_path: Path, declared: bool
) -> None:
    """The limit is on the export's files together: the first (600 bytes) fits 1 MiB, the
    second would pass it, by its Content-Length or counted as it streams."""
    outputs = [("Patient", f"{FILES}/Patient.ndjson"), ("Observation", f"{FILES}/Obs.ndjson")]
    router.get(f"{BASE}/Patient/$export").respond(202, headers={"Content-Location": STATUS})
    router.get(STATUS).respond(json=manifest(*outputs))
    deleted = router.delete(STATUS).respond(202)
    router.get(f"{FILES}/Patient.ndjson").respond(content=b" " * 599 + b"\n")
    trickle = Trickle(b" " * 2**16, 100)
    second = (
        httpx.Response(200, content=b" " * 2**21)
        if declared
        else httpx.Response(200, stream=trickle)
    )
    route = router.get(f"{FILES}/Obs.ndjson").mock(return_value=second)
    limits = {"max_bytes": 2**20}
    with pytest.raises(BulkExportError, match=r"output file 2: .*1 MiB limit on one export"):
        export(client, tmp_path, clock, limits=limits).run()
    assert route.call_count == 1, "not retried"
    assert trickle.sent <= 2**20 + 2**17, "reading stopped at the limit"
    assert not (tmp_path / "bulk" / "Observation.1.ndjson").exists(), "no partial file"
    assert deleted.called


def test_files_not_downloaded_within_the_time_budget_fail_the_export(
    client: FhirClient, router: respx.Router, clock: Clock, tmp_path: Path
) -> None:
    """A file trickling in (each read quick, the whole slow) is cut off by the download
    budget, which covers all the export's files and their retries."""
    router.get(f"{BASE}/Patient/$export").respond(202, headers={"Content-Location": STATUS})
    router.get(STATUS).respond(json=manifest(("Patient", f"{FILES}/Patient.ndjson")))
    router.delete(STATUS).respond(202)
    router.get(f"{FILES}/Patient.ndjson").mock(
        return_value=httpx.Response(200, stream=Trickle(b" ", 40, pause=0.05))
    )
    started = time.monotonic()
    with pytest.raises(BulkExportError, match=r"output file 1: .*within 0.3s"):
        export(client, tmp_path, clock, limits={"download_budget": 0.3}).run()
    assert time.monotonic() - started < 1.5
    assert not (tmp_path / "bulk" / "Patient.1.ndjson").exists()


def test_429_with_retry_after_while_polling(
    client: FhirClient, router: respx.Router, clock: Clock, tmp_path: Path
) -> None:
    router.get(f"{BASE}/Patient/$export").respond(202, headers={"Content-Location": STATUS})
    router.get(STATUS).mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "7"}),
            httpx.Response(200, json=manifest()),
        ]
    )
    router.delete(STATUS).respond(202)
    export(client, tmp_path, clock).run()
    assert clock.sleeps == [7.0]


def test_budget_exhausted_gives_a_clear_error(
    client: FhirClient, router: respx.Router, clock: Clock, tmp_path: Path
) -> None:
    router.get(f"{BASE}/Patient/$export").respond(202, headers={"Content-Location": STATUS})
    router.get(STATUS).mock(return_value=accepted(**{"Retry-After": "10", "X-Progress": "5%"}))
    deleted = router.delete(STATUS).respond(202)
    with pytest.raises(BulkExportError, match=r"not ready within 25s after 5 polls.*5%"):
        export(client, tmp_path, clock, budget=25).run()
    assert clock.sleeps == [2.0, 4.0, 8.0, 10.0]
    assert deleted.called, "an abandoned export is cancelled on the server"


def test_status_error_carries_the_operation_outcome(
    client: FhirClient, router: respx.Router, clock: Clock, tmp_path: Path
) -> None:
    router.get(f"{BASE}/Patient/$export").respond(202, headers={"Content-Location": STATUS})
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "exception", "diagnostics": "disk full"}],
    }
    router.get(STATUS).respond(400, json=outcome)
    router.delete(STATUS).respond(404)
    with pytest.raises(FhirServerError, match=r"HTTP 400 .*: error exception$"):
        export(client, tmp_path, clock).run()


DEEP = b"[" * 100_000 + b"]" * 100_000


def test_a_manifest_nested_too_deeply_fails_the_export_cleanly(
    client: FhirClient, router: respx.Router, clock: Clock, tmp_path: Path
) -> None:
    router.get(f"{BASE}/Patient/$export").respond(202, headers={"Content-Location": STATUS})
    router.get(STATUS).respond(200, content=b'{"output":' + DEEP + b"}")
    router.delete(STATUS).respond(202)
    with pytest.raises(BulkExportError, match=r"manifest .* is not a JSON object"):
        export(client, tmp_path, clock).run()


def test_lines_nested_too_deeply_are_issues_not_crashes(
    client: FhirClient, router: respx.Router, clock: Clock, tmp_path: Path
) -> None:
    """In the server's error file, and in a ``_since`` file read for the changed patients."""
    router.get(f"{BASE}/Patient/$export").respond(202, headers={"Content-Location": STATUS})
    router.get(STATUS).respond(json=manifest(errors=1))
    router.delete(STATUS).respond(202)
    router.get(f"{FILES}/errors0.ndjson").respond(content=DEEP + b"\n")
    result = export(client, tmp_path, clock).run()
    assert [i.reason for i in result.issues] == ["unreadable OperationOutcome line"]

    changed = tmp_path / "Observation.1.ndjson"
    changed.write_bytes(b'{"resourceType":"Observation","subject":' + DEEP + b"}\n")
    issues: list[ReadIssue] = []
    since = BulkSource(client, tmp_path, ExportResult(files=[changed]), since=datetime.now(UTC))
    assert list(since.records(issues.append)) == []
    assert [i.location for i in issues] == ["Observation.1.ndjson:1"]


def test_group_export_with_since(
    client: FhirClient, router: respx.Router, clock: Clock, tmp_path: Path
) -> None:
    kickoff = router.get(f"{BASE}/Group/g1/$export").respond(
        202, headers={"Content-Location": STATUS}
    )
    router.get(STATUS).respond(json=manifest())
    router.delete(STATUS).respond(202)
    since = datetime(2026, 11, 1, 12, 0)
    export(client, tmp_path, clock, group="g1", since=since, level="Group").run()
    assert kickoff.calls.last.request.url.params["_since"] == "2026-11-01T12:00:00+00:00"


def test_since_reads_changed_patients_in_full(
    client: FhirClient, router: respx.Router, tmp_path: Path
) -> None:
    """An export ``_since`` holds only changed resources: never plan from those alone."""
    changed = tmp_path / "Observation.1.ndjson"
    changed.write_bytes(ndjson(observation("o9", "p7")))
    router.get(f"{BASE}/Patient/p7").respond(json=patient("p7"))
    router.get(f"{BASE}/Condition").respond(json={"resourceType": "Bundle", "type": "searchset"})
    full = router.get(f"{BASE}/Observation").respond(
        json={
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [{"resource": observation(o, "p7")} for o in ("o1", "o9")],
        }
    )
    result = BulkSource(client, tmp_path, ExportResult(files=[changed]), since=datetime.now(UTC))
    [record] = list(result.records(lambda issue: None))
    assert record.patient_id == "p7" and len(record.resources) == 2
    assert full.calls.last.request.url.params["patient"] == "p7"


def test_fallback_when_export_is_not_declared(
    router: respx.Router, clock: Clock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    router.routes.clear()
    router.get(f"{BASE}/metadata").respond(json=capability(declared=False))
    kickoff = router.get(f"{BASE}/Patient/$export").respond(202)
    with make_client(router, clock) as client, caplog.at_level(logging.WARNING):
        source = bulk_source(client, tmp_path, ExportRequest())
    assert isinstance(source, ServerSource) and source.selection.everyone
    assert "declares no Patient $export" in caplog.text
    assert not kickoff.called


def test_declared_export_levels(client: FhirClient) -> None:
    assert declares_export(client, "system")
    assert declares_export(client, "Patient")
    assert declares_export(client, "Group")


def test_patient_export_declared_only_at_rest_level(router: respx.Router, clock: Clock) -> None:
    router.routes.clear()
    statement = capability(declared=False)
    statement["rest"][0]["operation"] = [{"name": "patient-export", "definition": "x"}]
    router.get(f"{BASE}/metadata").respond(json=statement)
    with make_client(router, clock) as client:
        assert declares_export(client, "Patient")
        assert not declares_export(client, "system")
        assert not declares_export(client, "Group")


def test_cli_bulk_needs_a_server() -> None:
    result = CliRunner().invoke(main, ["sync", "--bulk"])
    assert result.exit_code == 2
    assert "--bulk needs --server" in result.output


def test_cli_bulk_options_need_bulk() -> None:
    result = CliRunner().invoke(main, ["sync", "--group", "g1"])
    assert result.exit_code == 2
    assert "need --bulk" in result.output


def test_cli_bulk_limits_reach_the_export(router: respx.Router, tmp_path: Path) -> None:
    """--bulk-max-gib bounds the export's files (here 1 KiB, a file of 2 KiB is refused)."""
    router.get(f"{BASE}/Patient/$export").respond(202, headers={"Content-Location": STATUS})
    router.get(STATUS).respond(json=manifest(("Patient", f"{FILES}/Patient.ndjson")))
    router.delete(STATUS).respond(202)
    router.get(f"{FILES}/Patient.ndjson").respond(content=b" " * 2048)
    with respx.mock(assert_all_called=False) as mock:
        mock.route().mock(side_effect=router.handler)
        result = CliRunner().invoke(
            main,
            ["sync", "--server", BASE, "--bulk", "--dry-run", "--bulk-max-gib", str(1 / 2**20)],
        )
    assert result.exit_code == 3, result.output
    assert "bulk export failed" in result.stderr and "1 KiB limit" in result.stderr


def test_a_resumed_export_polls_the_same_job_and_skips_downloaded_files(
    client: FhirClient, router: respx.Router, clock: Clock, tmp_path: Path
) -> None:
    folder = tmp_path / "bulk"
    folder.mkdir()
    first = f"{FILES}/Patient.ndjson"
    (folder / "Patient.1.ndjson").write_bytes(ndjson(patient("p1")))
    saved: list[tuple[str | None, dict[str, str]]] = []
    progress = ExportProgress(STATUS, {first: "Patient.1.ndjson"}, resumable=True)
    progress.save = lambda: saved.append((progress.status_url, dict(progress.files)))

    kickoff = router.get(f"{BASE}/Patient/$export").respond(202)
    outputs = [("Patient", first), ("Observation", f"{FILES}/Observation.ndjson")]
    router.get(STATUS).respond(200, json=manifest(*outputs))
    router.delete(STATUS).respond(202)
    patients = router.get(first).respond(content=ndjson(patient("p1")))
    router.get(f"{FILES}/Observation.ndjson").respond(content=ndjson(observation("o1", "p1")))

    job = BulkExport(client, folder, ExportRequest(), sleep=clock.sleep, progress=progress)
    result = job.run()

    assert not kickoff.called and not patients.called
    assert [p.name for p in result.files] == ["Patient.1.ndjson", "Observation.1.ndjson"]
    assert (result.summary()["files_reused"], result.summary()["files"]) == (1, 2)
    assert saved[-1] == (
        STATUS,
        {first: "Patient.1.ndjson", f"{FILES}/Observation.ndjson": "Observation.1.ndjson"},
    )


def test_a_job_the_server_dropped_is_started_anew(
    client: FhirClient, router: respx.Router, clock: Clock, tmp_path: Path
) -> None:
    gone = f"{BASE}/bulk-status/old"
    progress = ExportProgress(gone, {"http://old/file": "Patient.1.ndjson"}, resumable=True)
    router.get(gone).respond(404, json={"resourceType": "OperationOutcome", "issue": []})
    kickoff = router.get(f"{BASE}/Patient/$export").respond(
        202, headers={"Content-Location": STATUS}
    )
    router.get(STATUS).respond(200, json=manifest(("Patient", f"{FILES}/Patient.ndjson")))
    router.delete(STATUS).respond(202)
    router.get(f"{FILES}/Patient.ndjson").respond(content=ndjson(patient("p1")))

    job = BulkExport(
        client, tmp_path / "bulk", ExportRequest(), sleep=clock.sleep, progress=progress
    )
    result = job.run()
    assert kickoff.called and [p.name for p in result.files] == ["Patient.1.ndjson"]
    assert progress.status_url == STATUS
    assert progress.files == {f"{FILES}/Patient.ndjson": "Patient.1.ndjson"}


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [
        # HAPI FHIR's fixed hint: a quick export is fetched in seconds, not after two minutes
        ("120", [2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 120.0, 120.0]),
        (None, [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]),
        ("5", [2.0, 4.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0]),
    ],
)
def test_polls_back_off_exponentially_up_to_the_servers_hint(
    client: FhirClient,
    router: respx.Router,
    clock: Clock,
    tmp_path: Path,
    retry_after: str | None,
    expected: list[float],
) -> None:
    router.get(f"{BASE}/Patient/$export").respond(202, headers={"Content-Location": STATUS})
    headers = {"Retry-After": retry_after} if retry_after else {}
    waiting = [accepted(**headers) for _ in expected]
    router.get(STATUS).mock(side_effect=[*waiting, httpx.Response(200, json=manifest())])
    router.delete(STATUS).respond(202)
    export(client, tmp_path, clock).run()
    assert clock.sleeps == expected
