"""Integration tests run against real FHIR R4 servers on loopback (scripts/fhir-server): each
test that takes ``fhir_server`` or ``own_server`` runs once per server kind, sekmet and HAPI
FHIR JPA, so what differs between them is found here and not by users.

FHIR_TAILOR_TEST_SERVERS names the kinds to run (comma-separated, e.g. ``sekmet``; default:
both). Set FHIR_TAILOR_TEST_SERVER to a base URL to use one already running server instead.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FHIR_SERVER_SCRIPT = ROOT / "scripts" / "fhir-server"
HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # This hook sees every collected item, not only this folder's: mark ours only.
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.integration)


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def fhir_server_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(FHIR_SERVER_SCRIPT), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


#: The server kinds scripts/fhir-server starts.
SERVER_KINDS = ("sekmet", "hapi")
#: The kinds tested when FHIR_TAILOR_TEST_SERVERS is not set.
DEFAULT_KINDS = SERVER_KINDS


def server_kinds() -> list[str]:
    """The kinds to test against: those FHIR_TAILOR_TEST_SERVERS names, else the default."""
    named = os.environ.get("FHIR_TAILOR_TEST_SERVERS")
    if not named:
        return list(DEFAULT_KINDS)
    kinds = [kind.strip() for kind in named.split(",") if kind.strip()]
    unknown = sorted(set(kinds) - set(SERVER_KINDS))
    if unknown:
        raise pytest.UsageError(f"FHIR_TAILOR_TEST_SERVERS: unknown server kind(s) {unknown}")
    return kinds


@contextmanager
def running_server(kind: str = "sekmet", smart_clients: Path | None = None) -> Iterator[str]:
    """Start a fresh, empty server of ``kind`` on a free loopback port; stop it and drop its
    data after.

    With ``smart_clients`` (a file listing sekmet smart_clients entries) the server requires
    SMART Backend Services access tokens from those clients.
    """
    port = str(free_loopback_port())
    options = ["--server", kind, "--port", port]
    if smart_clients:
        options += ["--smart-clients", str(smart_clients)]
    try:
        started = fhir_server_command("start", *options)
        if started.returncode != 0:
            pytest.fail(
                f"scripts/fhir-server start {' '.join(options)} failed ({started.returncode}):\n"
                f"{started.stdout}{started.stderr}",
                pytrace=False,
            )
        yield started.stdout.strip().splitlines()[-1]
    finally:
        fhir_server_command("stop", "--server", kind, "--port", port)


@pytest.fixture(scope="session", params=server_kinds())
def server_kind(request: pytest.FixtureRequest) -> str:
    """The kind of server this test runs against (a parameter: every kind in turn)."""
    kind: str = request.param
    return kind


@pytest.fixture(scope="session")
def fhir_server(server_kind: str) -> Iterator[str]:
    """Base URL of a fresh, empty FHIR R4 server of ``server_kind``, stopped at the end of the
    session."""
    external = os.environ.get("FHIR_TAILOR_TEST_SERVER")
    if external:
        yield external.rstrip("/")
        return
    with running_server(server_kind) as url:
        yield url


@pytest.fixture(scope="module")
def spark() -> Iterator[None]:
    """One local[2] Spark application per test module (sparking.requires_spark uses it):
    spark-sync, run in the same process, joins it instead of starting its own."""
    from fhir_tailor.spark import spark_context

    with spark_context("local[2]") as context:
        context.setLogLevel("ERROR")
        yield


@pytest.fixture(scope="module")
def own_server(server_kind: str) -> Iterator[str]:
    """A server of the test module's own, for tests that fill it with many patients."""
    with running_server(server_kind) as url:
        yield url
