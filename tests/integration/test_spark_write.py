"""spark-sync --server: executors write the plans back to the real loopback server, throttled.

What the operator is promised: the same patients get a CarePlan as in a single-process run, one
each; a rerun writes nothing new; and however the work is spread, no more than
WRITERS x CONCURRENCY requests reach the server at once. A counting proxy between the
executors and the server measures the last one. The server is this module's own: the tests
read back everything written to it, and the rerun relies on the first run's plans.
"""

from __future__ import annotations

import json
import socket
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result
from faultproxy import FaultProxy, Plan, Record, fault_proxy
from searching import search_all
from sparking import generated_population, load_population, requires_spark

from fhir_tailor.cli import main

pytestmark = requires_spark

AS_OF = "2026-11-15"
RECORDED = "2026-11-15T08:30:00+00:00"
WRITERS, CONCURRENCY = 2, 2
WRITTEN_TYPES = ("CarePlan", "Goal", "ServiceRequest", "Provenance")


def fhir_tailor(*args: str) -> Result:
    return CliRunner().invoke(main, ["--as-of", AS_OF, *args], catch_exceptions=False)


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = generated_population(tmp_path_factory.mktemp("population"), 30, 5)
    return folder


@pytest.fixture(scope="module")
def single_run(population: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Each patient's outcome in a single-process run into a folder: ``written`` or ``no-plan``."""
    base = tmp_path_factory.mktemp("single")
    report = base / "report.json"
    result = fhir_tailor(
        "sync", "--input", str(population), "--out", str(base / "out"), "--report", str(report)
    )
    assert result.exit_code == 0, result.output
    patients = json.loads(report.read_text(encoding="utf-8"))["patients"]
    return {p["patient"]: p["outcome"] for p in patients}


@pytest.fixture(scope="module")
def proxy(own_server: str, population: Path) -> Iterator[FaultProxy]:
    """The server holding the population, behind a proxy that records the writes."""
    assert load_population(own_server, population) == 30
    with fault_proxy(own_server) as running:
        yield running


def spark_write(proxy: FaultProxy, population: Path, report: Path) -> tuple[dict[str, Any], Record]:
    """One ``spark-sync --server`` run through the proxy: its report and what the proxy saw."""
    record = proxy.use(Plan())
    result = fhir_tailor(
        "spark-sync",
        "--input",
        str(population),
        "--server",
        proxy.base_url,
        "--writers",
        str(WRITERS),
        "--concurrency",
        str(CONCURRENCY),
        "--recorded",
        RECORDED,
        "--report",
        str(report),
    )
    assert result.exit_code == 0, result.output
    loaded: dict[str, Any] = json.loads(report.read_text(encoding="utf-8"))
    return loaded, record


@pytest.fixture(scope="module")
def first_run(
    proxy: FaultProxy, population: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Any], Record]:
    return spark_write(proxy, population, tmp_path_factory.mktemp("first") / "report.json")


def stored(server: str, rtype: str) -> list[dict[str, Any]]:
    with httpx.Client(timeout=30) as http:
        return search_all(http, f"{server}/{rtype}?_count=100")


def versions(server: str) -> dict[str, str]:
    """``Type/id`` -> versionId of everything a run writes."""
    return {
        f"{rtype}/{r['id']}": r["meta"]["versionId"]
        for rtype in WRITTEN_TYPES
        for r in stored(server, rtype)
    }


def test_one_careplan_per_patient_a_single_process_run_plans_for(
    first_run: tuple[dict[str, Any], Record], single_run: dict[str, str], own_server: str
) -> None:
    report, _ = first_run
    planned = sorted(p for p, outcome in single_run.items() if outcome == "written")
    assert planned, "the population must have patients with a plan"
    outcomes = {p["patient"]: p["outcome"] for p in report["patients"]}
    assert outcomes == {
        p: "created" if outcome == "written" else outcome for p, outcome in single_run.items()
    }
    subjects = Counter(c["subject"]["reference"] for c in stored(own_server, "CarePlan"))
    assert subjects == Counter(planned)
    assert all(p["careplan"].startswith("CarePlan/") for p in report["patients"] if p["careplan"])


def test_requests_in_flight_never_exceed_writers_times_concurrency(
    first_run: tuple[dict[str, Any], Record],
) -> None:
    _, record = first_run
    # More than one at a time: the writers did work concurrently, and the proxy saw it.
    assert 1 < record.max_in_flight <= WRITERS * CONCURRENCY


def test_a_rerun_writes_nothing_new(
    first_run: tuple[dict[str, Any], Record],
    proxy: FaultProxy,
    population: Path,
    own_server: str,
    tmp_path: Path,
) -> None:
    first, _ = first_run
    before = versions(own_server)
    report, record = spark_write(proxy, population, tmp_path / "report.json")
    assert versions(own_server) == before
    created = first["counts"]["created"]
    assert report["counts"] == {"unchanged": created, "no-plan": first["patients_total"] - created}
    assert record.max_in_flight <= WRITERS * CONCURRENCY


@pytest.mark.parametrize(
    "args",
    [
        ["--out", "plans", "--server", "http://127.0.0.1:9/fhir"],
        [],
        ["--out", "plans", "--writers", "2"],
        ["--server", "http://127.0.0.1:9/fhir", "--partitions", "4"],
    ],
    ids=["out-and-server", "neither", "writers-without-server", "partitions-with-server"],
)
def test_usage_errors_stop_before_spark_starts(args: list[str], population: Path) -> None:
    result = fhir_tailor("spark-sync", "--input", str(population), *args)
    assert result.exit_code == 2, result.output


def test_an_unreachable_server_stops_the_run_before_spark_starts(population: Path) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound but never listening: connections are refused
        server = f"http://127.0.0.1:{closed.getsockname()[1]}/fhir"
        args = ("--input", str(population), "--server", server, "--retry-budget", "0")
        result = fhir_tailor("spark-sync", *args)
    assert result.exit_code == 3, result.output
    assert "cannot use server" in result.output
