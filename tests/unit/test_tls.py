"""TLS certificates are verified by default: a server with a self-signed certificate is refused."""

from __future__ import annotations

import http.server
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from certificates import self_signed_certificate

from fhir_tailor.client import FhirClient
from fhir_tailor.errors import FhirTailorError
from fhir_tailor.retry import RetryPolicy


@pytest.fixture
def self_signed_server(tmp_path: Path) -> Iterator[str]:
    cert, key = self_signed_certificate(tmp_path, ["localhost"])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://localhost:{server.server_address[1]}/fhir"
    server.shutdown()


def test_an_untrusted_certificate_is_refused_by_default(self_signed_server: str) -> None:
    with (
        FhirClient(self_signed_server, retry=RetryPolicy(total_budget=0)) as client,
        pytest.raises(FhirTailorError, match=r"(?i)certificate|ssl"),
    ):
        client.capabilities()
