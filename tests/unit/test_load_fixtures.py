"""scripts/load-fixtures runs on any Python 3, with nothing installed: it is run before, or
without, installing fhir-tailor (``python -S`` below leaves site-packages out)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "load-fixtures"
BUNDLE = sorted((ROOT / "fixtures" / "bundles").glob("*.json"))[0]


class FhirServer(BaseHTTPRequestHandler):
    """Answers a transaction with one 201 per entry, or 400 with an OperationOutcome when the
    path asks for it."""

    received: ClassVar[list[dict[str, object]]] = []

    def do_POST(self) -> None:
        bundle = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FhirServer.received.append(bundle)
        if self.path.endswith("/refuse"):
            status = 400
            body: dict[str, object] = {
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "error", "code": "invalid", "diagnostics": "no"}],
            }
        else:
            status = 200
            entries = [{"response": {"status": "201 Created"}} for _ in bundle["entry"]]
            body = {"resourceType": "Bundle", "type": "transaction-response", "entry": entries}
        content = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = HTTPServer(("127.0.0.1", 0), FhirServer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    FhirServer.received = []
    yield f"http://127.0.0.1:{httpd.server_address[1]}/fhir"
    httpd.shutdown()
    httpd.server_close()


def load(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-S", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_loads_a_bundle_with_no_package_installed(server: str) -> None:
    result = load("--server", server, str(BUNDLE))
    assert result.returncode == 0, result.stderr
    entries = len(json.loads(BUNDLE.read_text())["entry"])
    assert result.stdout == f"{BUNDLE.name}: ok (HTTP 200, {entries} entries)\n"
    assert FhirServer.received == [json.loads(BUNDLE.read_text())]


def test_a_refused_bundle_is_named_with_the_server_outcome(server: str) -> None:
    result = load("--server", f"{server}/refuse", str(BUNDLE))
    assert result.returncode == 1
    assert f"{BUNDLE.name}: failed (HTTP 400: error/invalid: no)" in result.stdout
