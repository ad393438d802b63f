"""Integration tests run against a real FHIR R4 server on loopback (scripts/fhir-server).

Set FHIR_TAILOR_TEST_SERVER to a base URL to use an already running server instead.
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


@contextmanager
def running_server(smart_clients: Path | None = None) -> Iterator[str]:
    """Start a fresh, empty server on a free loopback port; stop it and drop its data after.

    With ``smart_clients`` (a file listing sekmet smart_clients entries) the server requires
    SMART Backend Services access tokens from those clients.
    """
    port = str(free_loopback_port())
    options = ["--smart-clients", str(smart_clients)] if smart_clients else []
    try:
        started = fhir_server_command("start", "--port", port, *options)
        if started.returncode != 0:
            pytest.fail(
                f"scripts/fhir-server start --port {port} {' '.join(options)} failed "
                f"({started.returncode}):\n"
                f"{started.stdout}{started.stderr}",
                pytrace=False,
            )
        yield started.stdout.strip().splitlines()[-1]
    finally:
        fhir_server_command("stop", "--port", port)


@pytest.fixture(scope="session")
def fhir_server() -> Iterator[str]:
    """Base URL of a fresh, empty FHIR R4 server, stopped at the end of the session."""
    external = os.environ.get("FHIR_TAILOR_TEST_SERVER")
    if external:
        yield external.rstrip("/")
        return
    with running_server() as url:
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
def own_server() -> Iterator[str]:
    """A server of the test module's own, for tests that fill it with many patients."""
    with running_server() as url:
        yield url
