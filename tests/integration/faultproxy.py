"""A fault-injecting HTTP/1.1 reverse proxy on loopback, for end-to-end fault tests.

It forwards every request to an upstream FHIR server and, following a seeded plan, answers some
with a fault instead: a 429/5xx status, no answer within the client's timeout, or a connection
reset before or in the middle of the response. Which requests fail is decided by a hash of the
request (method, path and query, and the first ``Patient/..`` reference in a body), never by
arrival order, so a run at any concurrency meets the same faults. Only the first ``times``
attempts of a chosen request fail, so a client that retries gets through.

Upstream URLs in response bodies and ``Location`` headers (paging links, Bulk Data status and
file URLs) are rewritten to the proxy's origin, so the client stays on one origin, as it must.
The proxy counts what it injected, so tests can assert that the faults were really met, and
the most requests it was handling at once, so tests can assert a client's concurrency bound.
"""

from __future__ import annotations

import hashlib
import http.client
import re
import socket
import struct
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal
from urllib.parse import urlsplit

Fault = Literal[
    "429-retry-after", "429", "500", "502", "503", "504", "timeout", "reset", "reset-mid-body"
]
STATUS_FAULTS: dict[str, int] = {
    "429-retry-after": 429,
    "429": 429,
    "500": 500,
    "502": 502,
    "503": 503,
    "504": 504,
}
#: Seconds a ``429-retry-after`` asks the client to wait.
RETRY_AFTER = 1
# Not forwarded: they describe this hop, and upstream compression would defeat the rewriting.
_HOP_HEADERS = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "host", "accept-encoding"}
)
_PATIENT_REF = re.compile(rb"Patient/[A-Za-z0-9\-.]{1,64}")
_COUNT = re.compile(r"(?<=[?&])_count=\d+")


@dataclass(frozen=True, slots=True)
class Rule:
    """Inject ``fault`` into about one request in ``every`` of those matching ``methods`` and
    ``path`` (a regex searched in path and query), for the first ``times`` attempts of each."""

    fault: Fault
    every: int = 5
    methods: frozenset[str] = frozenset({"GET", "POST", "PUT", "DELETE"})
    path: str = ""
    times: int = 1

    def chooses(self, seed: int, method: str, target: str, key: str) -> bool:
        if method not in self.methods or not re.search(self.path, target):
            return False
        digest = hashlib.sha256(f"{seed}:{self.fault}:{key}".encode()).digest()
        return int.from_bytes(digest[:8], "big") % self.every == 0


@dataclass(slots=True)
class Plan:
    """The faults of one run: ``rules`` (the first that chooses a request wins), and an outage:
    503 to everything from the first request whose path and query match ``outage_from`` on (a
    request, not a count, so the outage starts at the same point of a concurrent run)."""

    rules: tuple[Rule, ...] = ()
    seed: int = 0
    outage_from: str | None = None


@dataclass(slots=True)
class Record:
    """What the proxy saw and did, for the tests' assertions."""

    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0  # the most requests being handled at once
    outage: bool = False
    attempts: Counter[str] = field(default_factory=Counter)  # per request key
    injected: Counter[str] = field(default_factory=Counter)  # per fault kind
    faulted: list[tuple[str, str]] = field(default_factory=list)  # (fault, request key)


class FaultProxy(ThreadingHTTPServer):
    """The proxy server; ``upstream`` is the FHIR base URL it forwards to."""

    daemon_threads = True

    def __init__(self, upstream: str, *, timeout_delay: float, page_size: int | None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        parts = urlsplit(upstream.rstrip("/"))
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.upstream_origin = f"{parts.scheme}://{parts.netloc}".encode()
        self.origin = f"http://127.0.0.1:{self.server_address[1]}".encode()
        self.base_url = self.origin.decode() + parts.path
        self.timeout_delay = timeout_delay
        self.page_size = page_size
        self.plan = Plan()
        self.record = Record()
        self.stopping = threading.Event()
        self._lock = threading.Lock()

    def use(self, plan: Plan) -> Record:
        """Switch to ``plan`` with a fresh record (returned)."""
        with self._lock:
            self.plan, self.record = plan, Record()
            return self.record

    def decide(self, method: str, target: str, body: bytes) -> tuple[str, Fault | None]:
        """The request's key and the fault to inject into this attempt, if any."""
        reference = _PATIENT_REF.search(body) if body else None
        key = f"{method} {target}" + (f" {reference.group().decode()}" if reference else "")
        with self._lock:
            record, plan = self.record, self.plan
            record.requests += 1
            record.attempts[key] += 1
            fault: Fault | None = None
            if plan.outage_from is not None and re.search(plan.outage_from, target):
                record.outage = True
            if record.outage:
                fault = "503"
            else:
                for rule in plan.rules:
                    if record.attempts[key] <= rule.times and rule.chooses(
                        plan.seed, method, target, key
                    ):
                        fault = rule.fault
                        break
            if fault is not None:
                record.injected[fault] += 1
                record.faulted.append((fault, key))
            return key, fault

    @contextmanager
    def handling(self) -> Iterator[None]:
        """Count one request in flight, from its headers being read to its answer being sent."""
        with self._lock:
            record = self.record
            record.in_flight += 1
            record.max_in_flight = max(record.max_in_flight, record.in_flight)
        try:
            yield
        finally:
            with self._lock:
                record.in_flight -= 1

    def rewrite(self, data: bytes) -> bytes:
        return data.replace(self.upstream_origin, self.origin)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FaultProxy
    abort = False

    def do_GET(self) -> None:
        with self.server.handling():
            self._handle()

    do_POST = do_PUT = do_DELETE = do_GET

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the record says what happened; request lines may carry patient ids."""

    def _handle(self) -> None:
        proxy = self.server
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        target = self.path
        if proxy.page_size is not None:  # small pages, so paging is exercised on few patients
            target = _COUNT.sub(f"_count={proxy.page_size}", target)
        _, fault = proxy.decide(self.command, target, body)
        if fault in STATUS_FAULTS:
            self._status_fault(STATUS_FAULTS[fault], retry_after=fault == "429-retry-after")
        elif fault == "timeout":  # answer nothing until the client has given up
            proxy.stopping.wait(proxy.timeout_delay)
            self._reset()
        else:
            status, reason, headers, payload = self._forward(target, body)
            if fault == "reset":  # the server acted on the request; its answer is lost
                self._reset()
            elif fault == "reset-mid-body":
                self._send(status, reason, headers, payload[: len(payload) // 2], len(payload))
                self._reset()
            else:
                self._send(status, reason, headers, payload, len(payload))

    def _forward(self, target: str, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        proxy = self.server
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
        upstream = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=60)
        try:
            upstream.request(self.command, target, body=body or None, headers=headers)
            response = upstream.getresponse()
            payload = proxy.rewrite(response.read())
            kept = [
                (name, proxy.rewrite(value.encode("latin-1")).decode("latin-1"))
                for name, value in response.getheaders()
                if name.lower() not in _HOP_HEADERS and name.lower() != "content-length"
            ]
            return response.status, response.reason, kept, payload
        finally:
            upstream.close()

    def _send(
        self, status: int, reason: str, headers: list[tuple[str, str]], payload: bytes, length: int
    ) -> None:
        self.send_response_only(status, reason)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.write(payload)

    def _status_fault(self, status: int, *, retry_after: bool) -> None:
        outcome = (
            b'{"resourceType":"OperationOutcome","issue":[{"severity":"error",'
            b'"code":"transient","diagnostics":"injected by the fault proxy"}]}'
        )
        headers = [("Content-Type", "application/fhir+json")]
        if retry_after:
            headers.append(("Retry-After", str(RETRY_AFTER)))
        self._send(status, http.client.responses[status], headers, outcome, len(outcome))

    def _reset(self) -> None:
        """End the connection with a TCP RST, once the handler is done with it (``finish``)."""
        self.close_connection = True
        self.abort = True

    def finish(self) -> None:
        super().finish()
        if self.abort:  # SO_LINGER 0: close() sends RST, not FIN (socketserver would shut down)
            linger = struct.pack("ii", 1, 0)
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            self.connection.close()


@contextmanager
def fault_proxy(
    upstream: str, *, timeout_delay: float = 3.0, page_size: int | None = None
) -> Iterator[FaultProxy]:
    """A running proxy to ``upstream``; ``proxy.base_url`` is the FHIR base URL to use.

    ``timeout_delay`` is how long a ``timeout`` fault keeps the client waiting (make it longer
    than the client's timeout); ``page_size`` rewrites every ``_count``, to force paging.
    """
    proxy = FaultProxy(upstream, timeout_delay=timeout_delay, page_size=page_size)
    thread = threading.Thread(target=proxy.serve_forever, name="fault-proxy", daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.stopping.set()
        proxy.shutdown()
        proxy.server_close()
        thread.join()
