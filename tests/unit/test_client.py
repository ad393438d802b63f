"""FhirClient against respx-mocked servers: no network, and no real sleeping."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import respx
from click.testing import CliRunner

from fhir_tailor import __version__
from fhir_tailor.auth import BearerTokenAuth, auth_from_settings
from fhir_tailor.cli import main
from fhir_tailor.client import AsyncFhirClient, FhirClient
from fhir_tailor.errors import (
    ConflictError,
    CrossOriginLinkError,
    FhirServerError,
    InvalidResponseError,
    PagingLoopError,
    PreconditionFailedError,
    ResourceNotFoundError,
    ResponseTooLargeError,
    RetryBudgetExceededError,
    UnconfirmedWriteError,
    UnsafeToRetryError,
    UnsupportedFhirVersionError,
)
from fhir_tailor.record import ReadIssue
from fhir_tailor.retry import RetryPolicy
from fhir_tailor.sources.server import PatientSelection, ServerSource

BASE = "http://fhir.test/fhir"
FHIR_JSON = "application/fhir+json"


@pytest.fixture
def router() -> respx.Router:
    return respx.Router(assert_all_mocked=True)


@pytest.fixture
def sleeps() -> list[float]:
    """Delays the client asked to sleep, in order."""
    return []


def make_client(router: respx.Router, sleeps: list[float], **kwargs: Any) -> FhirClient:
    kwargs.setdefault("retry", RetryPolicy(rng=random.Random(7)))
    return FhirClient(
        BASE + "/", transport=httpx.MockTransport(router.handler), sleep=sleeps.append, **kwargs
    )


@pytest.fixture
def client(router: respx.Router, sleeps: list[float]) -> Iterator[FhirClient]:
    with make_client(router, sleeps) as fhir:
        yield fhir


def bundle(*resources: dict[str, Any], next_url: str | None = None) -> dict[str, Any]:
    links = [{"relation": "self", "url": "ignored"}]
    if next_url is not None:
        links.append({"relation": "next", "url": next_url})
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "link": links,
        "entry": [{"resource": r, "search": {"mode": "match"}} for r in resources],
    }


def patient(pid: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid}


def outcome(code: str, diagnostics: str, expression: list[str]) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": code,
                "diagnostics": diagnostics,
                "expression": expression,
            }
        ],
    }


# --- construction and capabilities -------------------------------------------------------


def test_base_url_loses_trailing_slash(client: FhirClient) -> None:
    assert client.base_url == BASE


@pytest.mark.parametrize("bad", ["fhir.test/fhir", "ftp://fhir.test/fhir", f"{BASE}?x=1"])
def test_base_url_must_be_plain_http(bad: str) -> None:
    with pytest.raises(ValueError, match="base URL"):
        FhirClient(bad)


@pytest.mark.parametrize("version", ["4.0.1", "4.3.0"])
def test_capabilities_accepts_r4_and_r4b_and_is_cached(
    client: FhirClient, router: respx.Router, version: str
) -> None:
    statement = {"resourceType": "CapabilityStatement", "fhirVersion": version}
    route = router.get(f"{BASE}/metadata").respond(200, json=statement)

    assert client.capabilities() == statement
    assert client.capabilities() == statement
    assert route.call_count == 1
    headers = route.calls.last.request.headers
    assert headers["Accept"] == FHIR_JSON
    assert headers["User-Agent"] == f"fhir-tailor/{__version__}"


@pytest.mark.parametrize("version", ["3.0.2", "5.0.0", "4.2.0"])
def test_capabilities_refuses_other_fhir_versions(
    client: FhirClient, router: respx.Router, version: str
) -> None:
    router.get(f"{BASE}/metadata").respond(
        200, json={"resourceType": "CapabilityStatement", "fhirVersion": version}
    )
    with pytest.raises(UnsupportedFhirVersionError, match=rf"'{version}'.*R4 \(4\.0\.x\)") as info:
        client.capabilities()
    assert info.value.found == version


def test_capabilities_without_fhir_version_is_refused(
    client: FhirClient, router: respx.Router
) -> None:
    router.get(f"{BASE}/metadata").respond(200, json={"resourceType": "CapabilityStatement"})
    with pytest.raises(UnsupportedFhirVersionError, match="no fhirVersion"):
        client.capabilities()


def test_capabilities_must_be_a_capability_statement(
    client: FhirClient, router: respx.Router
) -> None:
    router.get(f"{BASE}/metadata").respond(200, text="<html>login</html>")
    with pytest.raises(InvalidResponseError, match="GET /fhir/metadata: the body is not a JSON"):
        client.capabilities()


# --- read ------------------------------------------------------------------------------------


def test_read_returns_the_resource(client: FhirClient, router: respx.Router) -> None:
    router.get(f"{BASE}/Patient/p1").respond(200, json=patient("p1"))
    assert client.read("Patient", "p1") == patient("p1")


@pytest.mark.parametrize("status", [404, 410])
def test_read_missing_resource(client: FhirClient, router: respx.Router, status: int) -> None:
    router.get(f"{BASE}/Patient/gone").respond(
        status, json=outcome("not-found", "Resource Patient/gone is not known", [])
    )
    with pytest.raises(ResourceNotFoundError) as info:
        client.read("Patient", "gone")
    assert isinstance(info.value, FhirServerError)
    assert info.value.status == status
    assert str(info.value) == f"HTTP {status} from GET /fhir/Patient/gone: error not-found"


@pytest.mark.parametrize(("rtype", "rid"), [("Patient", "1/../../admin"), ("patient?x", "1")])
def test_read_refuses_values_that_would_change_the_url(
    client: FhirClient, router: respx.Router, rtype: str, rid: str
) -> None:
    with pytest.raises(ValueError):
        client.read(rtype, rid)
    assert not router.calls


# --- search and paging -----------------------------------------------------------------------


def test_search_follows_absolute_then_relative_next_links(
    client: FhirClient, router: respx.Router
) -> None:
    organization = {"resourceType": "Organization", "id": "o1"}
    page1 = bundle(patient("1"), patient("2"), next_url=f"{BASE}/Patient?page=2")
    page1["entry"].append({"resource": organization, "search": {"mode": "include"}})
    page1["entry"].append(
        {
            "resource": outcome("informational", "slow search", []),
            "search": {"mode": "outcome"},
        }
    )
    first = router.get(
        f"{BASE}/Patient",
        params__eq={"name": "smith", "_include": "Patient:organization", "_count": "2"},
    ).respond(200, json=page1)
    second = router.get(f"{BASE}/Patient", params__eq={"page": "2"}).respond(
        200, json=bundle(patient("3"), patient("4"), next_url="Patient?page=3")
    )
    third = router.get(f"{BASE}/Patient", params__eq={"page": "3"}).respond(
        200, json=bundle(patient("5"))
    )

    found = list(
        client.search("Patient", {"name": "smith", "_include": "Patient:organization"}, count=2)
    )

    assert [f"{r['resourceType']}/{r['id']}" for r in found] == [
        "Patient/1",
        "Patient/2",
        "Organization/o1",
        "Patient/3",
        "Patient/4",
        "Patient/5",
    ]
    assert (first.call_count, second.call_count, third.call_count) == (1, 1, 1)
    for route in (first, second, third):
        assert route.calls.last.request.headers["Prefer"] == "handling=strict"


def test_search_pages_yields_each_bundle(client: FhirClient, router: respx.Router) -> None:
    router.get(f"{BASE}/Observation", params__eq={}).respond(
        200, json=bundle(next_url="?_getpages=abc&_offset=10")
    )
    router.get(BASE, params__eq={"_getpages": "abc", "_offset": "10"}).respond(200, json=bundle())
    pages = list(client.search_pages("Observation"))
    assert len(pages) == 2
    assert all(page["resourceType"] == "Bundle" for page in pages)


def test_origin_relative_and_default_port_next_links_stay_on_server(
    client: FhirClient, router: respx.Router
) -> None:
    router.get(f"{BASE}/Patient", params__eq={}).respond(
        200, json=bundle(patient("1"), next_url="/fhir/Patient?page=2")
    )
    router.get(f"{BASE}/Patient", params__eq={"page": "2"}).respond(
        200, json=bundle(patient("2"), next_url="HTTP://FHIR.test:80/fhir/Patient?page=3")
    )
    router.get(f"{BASE}/Patient", params__eq={"page": "3"}).respond(200, json=bundle(patient("3")))
    assert [r["id"] for r in client.search("Patient")] == ["1", "2", "3"]


def test_repeated_search_parameters_are_all_sent(client: FhirClient, router: respx.Router) -> None:
    route = router.get(f"{BASE}/Condition").respond(200, json=bundle())
    list(client.search("Condition", {"category": ["problem-list-item", "health-concern"]}))
    list(client.search("Condition", [("_revinclude", "A:b"), ("_revinclude", "C:d")]))
    first, second = (call.request.url.params for call in route.calls)
    assert first.get_list("category") == ["problem-list-item", "health-concern"]
    assert second.get_list("_revinclude") == ["A:b", "C:d"]


def test_count_given_twice_is_refused(client: FhirClient) -> None:
    with pytest.raises(ValueError, match="_count"):
        client.search_pages("Patient", {"_count": "5"}, count=10)


def test_lenient_search_sends_no_prefer_header(router: respx.Router, sleeps: list[float]) -> None:
    route = router.get(f"{BASE}/Patient").respond(200, json=bundle())
    with make_client(router, sleeps, strict_search=False) as lenient:
        list(lenient.search("Patient"))
    assert "Prefer" not in route.calls.last.request.headers


@pytest.mark.parametrize(
    ("next_url", "origin"),
    [
        ("https://evil.test/fhir/Patient?page=2", "https://evil.test:443"),
        ("//evil.test/fhir/Patient?page=2", "http://evil.test:80"),
        ("https://fhir.test/fhir/Patient?page=2", "https://fhir.test:443"),
        ("http://fhir.test:8080/fhir/Patient?page=2", "http://fhir.test:8080"),
    ],
)
def test_cross_origin_next_link_is_refused_without_a_request(
    router: respx.Router, sleeps: list[float], next_url: str, origin: str
) -> None:
    router.get(f"{BASE}/Patient").respond(200, json=bundle(patient("1"), next_url=next_url))
    elsewhere = router.get(url__regex=r"^(https://|http://evil|http://fhir\.test:8080)").respond(
        200, json=bundle(patient("stolen"))
    )
    found: list[str] = []
    with (
        make_client(router, sleeps, auth=BearerTokenAuth("s3cret")) as fhir,
        pytest.raises(CrossOriginLinkError, match=f"next link to {origin}") as info,
    ):
        found.extend(r["id"] for r in fhir.search("Patient"))
    assert found == ["1"]
    assert not elsewhere.called
    assert len(router.calls) == 1
    assert info.value.expected_origin == "http://fhir.test:80"


def test_next_link_back_to_a_fetched_page_stops_the_loop(
    client: FhirClient, router: respx.Router
) -> None:
    router.get(f"{BASE}/Patient", params__eq={"_count": "1"}).respond(
        200, json=bundle(patient("1"), next_url=f"{BASE}/Patient?page=2")
    )
    second = router.get(f"{BASE}/Patient", params__eq={"page": "2"}).respond(
        200, json=bundle(patient("2"), next_url=f"{BASE}/Patient?_count=1")
    )
    with pytest.raises(PagingLoopError, match="/fhir/Patient"):
        list(client.search("Patient", count=1))
    assert second.call_count == 1
    assert len(router.calls) == 2


def test_search_response_must_be_a_bundle(client: FhirClient, router: respx.Router) -> None:
    router.get(f"{BASE}/Patient").respond(200, json=patient("1"))
    with pytest.raises(InvalidResponseError, match="expected a Bundle, got 'Patient'"):
        list(client.search("Patient"))


def nested(depth: int) -> bytes:
    """A searchset whose one Observation holds arrays nested ``depth`` deep."""
    head = b'{"resourceType":"Bundle","type":"searchset","entry":[{"resource":'
    head += b'{"resourceType":"Observation","id":"o1","valueString":'
    return head + b"[" * depth + b"]" * depth + b"}}]}"


@pytest.mark.parametrize("depth", [2_000, 100_000])
def test_a_body_nested_too_deeply_is_an_invalid_response(
    client: FhirClient, router: respx.Router, depth: int
) -> None:
    router.get(f"{BASE}/Observation").respond(200, content=nested(depth))
    with pytest.raises(InvalidResponseError, match="nested too deeply"):
        list(client.search("Observation", {"patient": "p1"}))


def test_an_error_body_nested_too_deeply_is_still_the_servers_error(
    client: FhirClient, router: respx.Router
) -> None:
    router.get(f"{BASE}/Patient/1").respond(400, content=nested(100_000))
    with pytest.raises(FhirServerError, match="HTTP 400 from GET /fhir/Patient/1"):
        client.read("Patient", "1")


def test_a_patient_whose_search_is_nested_too_deeply_fails_alone(
    router: respx.Router, sleeps: list[float]
) -> None:
    """The run-level symptom: p1's unreadable search is an issue for p1, and p2 is read."""
    capabilities = {
        "resourceType": "CapabilityStatement",
        "fhirVersion": "4.0.1",
        "rest": [{"mode": "server", "resource": []}],
    }
    router.get(f"{BASE}/metadata").respond(200, json=capabilities)
    for pid in ("p1", "p2"):
        router.get(f"{BASE}/Patient/{pid}").respond(200, json=patient(pid))
        router.get(f"{BASE}/Condition", params={"patient": pid}).respond(200, json=bundle())
    router.get(f"{BASE}/Observation", params={"patient": "p1"}).respond(
        200, content=nested(100_000)
    )
    router.get(f"{BASE}/Observation", params={"patient": "p2"}).respond(200, json=bundle())
    issues: list[ReadIssue] = []
    with make_client(router, sleeps) as fhir:
        source = ServerSource(fhir, PatientSelection(ids=("p1", "p2")))
        records = list(source.records(issues.append))
    assert [r.patient_id for r in records] == ["p2"]
    [issue] = issues
    assert issue.unread_patient == "p1"
    assert "nested too deeply" in issue.reason


# --- retries ----------------------------------------------------------------------------------


def test_429_with_retry_after_seconds_is_honoured(
    client: FhirClient,
    router: respx.Router,
    sleeps: list[float],
    caplog: pytest.LogCaptureFixture,
) -> None:
    route = router.get(f"{BASE}/Patient").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "2"}),
            httpx.Response(200, json=bundle(patient("1"))),
        ]
    )
    with caplog.at_level(logging.WARNING, logger="fhir_tailor.client"):
        found = list(client.search("Patient", {"identifier": "urn:mrn|12345"}))

    assert [r["id"] for r in found] == ["1"]
    assert sleeps == [2.0]
    assert route.call_count == 2
    assert client.retries == 1
    (record,) = caplog.records
    assert record.getMessage() == (
        "retrying GET /fhir/Patient after HTTP 429 (attempt 1 of 6) in 2.00s"
    )


def test_retry_after_http_date_is_honoured(
    client: FhirClient, router: respx.Router, sleeps: list[float]
) -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    router.get(f"{BASE}/Patient/1").mock(
        side_effect=[
            httpx.Response(503, headers={"Retry-After": later}),
            httpx.Response(200, json=patient("1")),
        ]
    )
    assert client.read("Patient", "1") == patient("1")
    (delay,) = sleeps
    assert 28 <= delay <= 30


def test_persistent_503_exhausts_attempts(router: respx.Router, sleeps: list[float]) -> None:
    route = router.get(f"{BASE}/Patient/1").respond(
        503, json=outcome("transient", "database is down", [])
    )
    policy = RetryPolicy(max_attempts=4, base_delay=0.5, rng=random.Random(3))
    with (
        make_client(router, sleeps, retry=policy) as fhir,
        pytest.raises(
            RetryBudgetExceededError, match=r"after 4 attempts in .*\(last failure: HTTP 503\)"
        ) as info,
    ):
        fhir.read("Patient", "1")

    assert route.call_count == 4
    assert len(sleeps) == 3
    assert all(0 <= delay <= 0.5 * 2**n for n, delay in enumerate(sleeps))
    assert len(set(sleeps)) == 3  # jittered, not a fixed schedule
    assert fhir.retries == 3
    assert isinstance(info.value.__cause__, FhirServerError)
    assert str(info.value.__cause__).endswith(": error transient")
    assert info.value.__cause__.issues[0].diagnostics == "database is down"


def test_retry_after_beyond_budget_gives_up_at_once(
    client: FhirClient, router: respx.Router, sleeps: list[float]
) -> None:
    route = router.get(f"{BASE}/Patient/1").respond(429, headers={"Retry-After": "600"})
    with pytest.raises(RetryBudgetExceededError, match=r"after 1 attempt in .*wait 600s"):
        client.read("Patient", "1")
    assert route.call_count == 1
    assert sleeps == []


def test_jittered_sleeps_stay_within_total_budget(
    router: respx.Router, sleeps: list[float]
) -> None:
    router.get(f"{BASE}/Patient/1").respond(502)
    policy = RetryPolicy(max_attempts=50, base_delay=8, max_delay=8, total_budget=20)
    with (
        make_client(router, sleeps, retry=policy) as fhir,
        pytest.raises(RetryBudgetExceededError, match="time budget used up"),
    ):
        fhir.read("Patient", "1")
    assert sum(sleeps) <= 20
    assert sum(sleeps) == pytest.approx(20, abs=0.5)


def test_connect_error_then_success(
    client: FhirClient, router: respx.Router, sleeps: list[float]
) -> None:
    router.get(f"{BASE}/Patient/1").mock(
        side_effect=[httpx.ConnectError("refused"), httpx.Response(200, json=patient("1"))]
    )
    assert client.read("Patient", "1") == patient("1")
    assert len(sleeps) == 1
    assert client.retries == 1


def test_read_timeouts_forever_name_the_exception(
    router: respx.Router, sleeps: list[float]
) -> None:
    router.get(f"{BASE}/Patient/1").mock(side_effect=httpx.ReadTimeout("slow"))
    with (
        make_client(router, sleeps, retry=RetryPolicy(max_attempts=2)) as fhir,
        pytest.raises(
            RetryBudgetExceededError, match=r"after 2 attempts .*last failure: ReadTimeout"
        ),
    ):
        fhir.read("Patient", "1")


def test_ambiguous_failure_of_plain_post_is_not_retried(
    client: FhirClient, router: respx.Router, sleeps: list[float]
) -> None:
    route = router.post(BASE).mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(UnsafeToRetryError, match="POST /fhir failed with ReadTimeout"):
        client.transaction({"resourceType": "Bundle", "type": "transaction", "entry": []})
    assert route.call_count == 1
    assert sleeps == []


def test_server_error_on_plain_post_is_not_retried(
    client: FhirClient, router: respx.Router
) -> None:
    route = router.post(f"{BASE}/CarePlan").respond(500)
    with pytest.raises(FhirServerError, match="HTTP 500 from POST /fhir/CarePlan"):
        client.create({"resourceType": "CarePlan"})
    assert route.call_count == 1


def test_conditional_create_is_retried_after_a_timeout(
    client: FhirClient, router: respx.Router
) -> None:
    created = {"resourceType": "CarePlan", "id": "cp1"}
    route = router.post(f"{BASE}/CarePlan").mock(
        side_effect=[httpx.ReadTimeout("slow"), httpx.Response(201, json=created)]
    )
    assert client.create({"resourceType": "CarePlan"}, if_none_exist="identifier=x|1") == created
    assert route.call_count == 2


# --- bounded responses: size and whole-request deadline ------------------------------------


class HostileServer(BaseHTTPRequestHandler):
    """A loopback server whose answers never end on their own: ``/claims`` declares 2 GiB,
    ``/chunked`` streams without a length, ``/drip`` sends one byte every 50 ms (each read is
    quick, the whole is slow). It counts requests and the bytes it managed to send."""

    protocol_version = "HTTP/1.1"
    requests = 0
    sent = 0

    def log_message(self, *args: object) -> None:
        return None

    def do_GET(self) -> None:
        self.answer()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.answer()

    def answer(self) -> None:
        cls = type(self)
        cls.requests += 1
        kind = self.path.rsplit("/", 1)[-1].split("?")[0].lower()
        self.send_response(200)
        self.send_header("Content-Type", FHIR_JSON)
        if kind == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
        else:
            length = 2 * 2**30 if kind == "claims" else 40
            self.send_header("Content-Length", str(length))
        self.end_headers()
        chunk, pause, limit = {
            "claims": (b" " * 2**16, 0.0, 64 * 2**20),
            "chunked": (b"%x\r\n%s\r\n" % (2**16, b" " * 2**16), 0.0, 64 * 2**20),
            "drip": (b" ", 0.05, 40),
        }[kind]
        try:
            while cls.sent < limit:
                self.wfile.write(chunk)
                self.wfile.flush()
                cls.sent += len(chunk)
                time.sleep(pause)
        except OSError:  # the client hung up, as it should
            return


@pytest.fixture
def hostile() -> Iterator[str]:
    HostileServer.requests = HostileServer.sent = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), HostileServer)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/fhir"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("kind", ["claims", "chunked"])
def test_a_response_over_the_size_cap_is_refused_early_and_not_retried(
    hostile: str, kind: str
) -> None:
    """A declared length past the cap is refused before reading; a body without one is counted
    while it streams, and reading stops at the cap. Either way one request, no retry."""
    started = time.monotonic()
    with (
        FhirClient(hostile, max_response_bytes=2**20, timeout=5) as fhir,
        pytest.raises(ResponseTooLargeError) as info,
    ):
        list(fhir.search(kind.title(), {"name": "Doe"}))
    message = str(info.value)
    assert f"GET /fhir/{kind.title()}" in message and "1 MiB" in message
    assert "Doe" not in message and "name" not in message, "no query string (PHI)"
    assert ("2147483648" in message) == (kind == "claims")
    assert HostileServer.requests == 1, "an oversized response is not retried"
    assert HostileServer.sent < 32 * 2**20, "reading stopped near the cap"
    assert fhir.retries == 0
    assert time.monotonic() - started < 2


def test_the_timeout_bounds_the_whole_request_not_each_read(hostile: str) -> None:
    """A server that sends a byte every 50 ms never trips a 0.3 s read timeout; the request as a
    whole must still end at 0.3 s, each attempt."""
    started = time.monotonic()
    retry = RetryPolicy(max_attempts=2, base_delay=0, max_delay=0)
    with (
        FhirClient(hostile, timeout=0.3, retry=retry) as fhir,
        pytest.raises(RetryBudgetExceededError, match=r"not complete within 0\.3s") as info,
    ):
        fhir.read("Patient", "drip")
    assert "after 2 attempts" in str(info.value)
    assert HostileServer.requests == 2
    assert time.monotonic() - started < 1.5


def test_a_plain_post_past_its_deadline_may_have_been_applied(hostile: str) -> None:
    with (
        FhirClient(hostile, timeout=0.3) as fhir,
        pytest.raises(UnsafeToRetryError, match="may already have applied it"),
    ):
        fhir.create({"resourceType": "Drip"})
    assert HostileServer.requests == 1


def test_an_oversized_error_response_is_not_retried(
    router: respx.Router, sleeps: list[float]
) -> None:
    route = router.get(f"{BASE}/Patient/1").respond(503, content=b"x" * 2048)
    with (
        make_client(router, sleeps, max_response_bytes=1024) as fhir,
        pytest.raises(ResponseTooLargeError, match="larger than the 1 KiB limit"),
    ):
        fhir.read("Patient", "1")
    assert route.call_count == 1
    assert sleeps == []


def test_a_response_at_the_cap_is_read(router: respx.Router, sleeps: list[float]) -> None:
    body = json.dumps(patient("1")).encode()
    router.get(f"{BASE}/Patient/1").respond(200, content=body)
    with make_client(router, sleeps, max_response_bytes=len(body)) as fhir:
        assert fhir.read("Patient", "1") == patient("1")


# --- errors ---------------------------------------------------------------------------------


PHI_DIAGNOSTICS = "Jane Doe (born 1961-02-03) has no element 'foo'"


def test_operation_outcome_codes_and_locations_are_in_the_message_never_diagnostics(
    client: FhirClient, router: respx.Router, caplog: pytest.LogCaptureFixture
) -> None:
    """Servers quote names and birth dates in ``diagnostics``: the message carries severity,
    code and location only, and so do the logs of retries."""
    router.post(f"{BASE}/CarePlan").respond(
        422, json=outcome("processing", PHI_DIAGNOSTICS, ["CarePlan.foo"])
    )
    router.get(f"{BASE}/Patient/1").mock(
        side_effect=[
            httpx.Response(503, json=outcome("transient", PHI_DIAGNOSTICS, [])),
            httpx.Response(200, json=patient("1")),
        ]
    )
    with caplog.at_level(logging.DEBUG), pytest.raises(FhirServerError) as info:
        client.read("Patient", "1")
        client.create({"resourceType": "CarePlan", "foo": 1})
    error = info.value
    assert str(error) == "HTTP 422 from POST /fhir/CarePlan: error processing at CarePlan.foo"
    assert (error.status, error.method, error.url_path) == (422, "POST", "/fhir/CarePlan")
    assert [(i.severity, i.code) for i in error.issues] == [("error", "processing")]
    assert error.issues[0].diagnostics == PHI_DIAGNOSTICS, "kept for code that asks for it"
    assert "Jane" not in caplog.text and "1961" not in caplog.text


def test_diagnostics_are_shown_when_the_operator_asks(
    router: respx.Router, sleeps: list[float]
) -> None:
    router.post(f"{BASE}/CarePlan").respond(
        422, json=outcome("processing", PHI_DIAGNOSTICS, ["CarePlan.foo"])
    )
    with (
        make_client(router, sleeps, show_server_diagnostics=True) as fhir,
        pytest.raises(FhirServerError) as info,
    ):
        fhir.create({"resourceType": "CarePlan", "foo": 1})
    assert str(info.value) == (
        f"HTTP 422 from POST /fhir/CarePlan: error processing at CarePlan.foo: {PHI_DIAGNOSTICS}"
    )


@pytest.mark.parametrize("how", ["default", "option", "environment"])
def test_sync_quotes_diagnostics_only_with_show_server_diagnostics(how: str, tmp_path: Any) -> None:
    """The command line: the report and stderr carry the codes, and the server's text only
    with --show-server-diagnostics (or FHIR_TAILOR_SHOW_SERVER_DIAGNOSTICS=1)."""
    capabilities = {
        "resourceType": "CapabilityStatement",
        "fhirVersion": "4.0.1",
        "rest": [{"mode": "server", "resource": []}],
    }
    report = tmp_path / "report.json"
    args = ["sync", "--server", BASE, "--patient", "p1", "--dry-run", "--report", str(report)]
    env = {"FHIR_TAILOR_SHOW_SERVER_DIAGNOSTICS": "1"} if how == "environment" else {}
    with respx.mock(assert_all_called=False) as mock:
        mock.get(f"{BASE}/metadata").respond(200, json=capabilities)
        mock.get(f"{BASE}/Patient/p1").respond(200, json=patient("p1"))
        mock.get(f"{BASE}/Condition").respond(
            400, json=outcome("processing", PHI_DIAGNOSTICS, ["Condition.subject"])
        )
        mock.get(f"{BASE}/Observation").respond(200, json=bundle())
        flag = ["--show-server-diagnostics"] if how == "option" else []
        result = CliRunner().invoke(main, [*args, *flag], env=env)
    assert result.exit_code == 1, result.output
    written = report.read_text()
    assert "error processing at Condition.subject" in written
    assert "error processing at Condition.subject" in result.stderr
    shown = how != "default"
    assert ("Jane Doe" in written) == shown
    assert ("Jane Doe" in result.stderr) == shown


@pytest.mark.parametrize("show", [False, True])
def test_issue_falls_back_to_details_text_and_location(
    router: respx.Router, sleeps: list[float], show: bool
) -> None:
    router.get(f"{BASE}/Patient/1").respond(
        400,
        json={
            "resourceType": "OperationOutcome",
            "issue": [
                {"severity": "error", "code": "invalid", "details": {"text": "bad id"}},
                {"severity": "warning", "code": "informational", "location": ["Patient.id"]},
            ],
        },
    )
    first = "error invalid: bad id" if show else "error invalid"
    with (
        make_client(router, sleeps, show_server_diagnostics=show) as fhir,
        pytest.raises(FhirServerError) as info,
    ):
        fhir.read("Patient", "1")
    assert str(info.value).endswith(f": {first}; warning informational at Patient.id")


@pytest.mark.parametrize("show", [False, True])
def test_a_body_that_is_no_operation_outcome_is_described_and_quoted_only_on_request(
    router: respx.Router, sleeps: list[float], show: bool
) -> None:
    page = "<html>\n  <body>" + "Bad Gateway " * 50 + "</body></html>"
    router.get(f"{BASE}/Patient").respond(400, html=page)
    with (
        make_client(router, sleeps, show_server_diagnostics=show) as fhir,
        pytest.raises(FhirServerError) as info,
    ):
        list(fhir.search("Patient", {"identifier": "urn:mrn|12345"}))
    message = str(info.value)
    if show:
        assert message.startswith("HTTP 400 from GET /fhir/Patient: <html> <body>Bad Gateway")
        assert len(info.value.snippet or "") <= 200
    else:
        assert message == (
            f"HTTP 400 from GET /fhir/Patient: a text/html body of {len(page)} bytes, "
            "not an OperationOutcome"
        )
    assert "12345" not in message
    assert "identifier" not in message


def test_a_resource_type_that_is_no_type_is_not_quoted(
    client: FhirClient, router: respx.Router
) -> None:
    router.get(f"{BASE}/Patient/1").respond(200, json={"resourceType": PHI_DIAGNOSTICS})
    with pytest.raises(
        InvalidResponseError, match=r"expected a Patient, got \(not a code\)"
    ) as info:
        client.read("Patient", "1")
    assert "Jane" not in str(info.value)


def test_409_is_a_conflict(client: FhirClient, router: respx.Router) -> None:
    router.post(f"{BASE}/CarePlan").respond(409, json=outcome("conflict", "duplicate", []))
    with pytest.raises(ConflictError, match=r"error conflict$"):
        client.create({"resourceType": "CarePlan"})


# --- writes ---------------------------------------------------------------------------------


def test_create_sends_fhir_json_and_if_none_exist(client: FhirClient, router: respx.Router) -> None:
    plan = {"resourceType": "CarePlan", "status": "active", "title": "Übung"}
    route = router.post(f"{BASE}/CarePlan").respond(201, json={**plan, "id": "cp1"})

    result = client.create(plan, if_none_exist="identifier=urn:x|42")

    assert result["id"] == "cp1"
    request = route.calls.last.request
    assert request.headers["If-None-Exist"] == "identifier=urn:x|42"
    assert request.headers["Content-Type"] == FHIR_JSON
    assert request.headers["Accept"] == FHIR_JSON
    assert json.loads(request.content) == plan


@pytest.mark.parametrize(("given", "sent"), [("3", 'W/"3"'), ('"3"', 'W/"3"'), ('W/"3"', 'W/"3"')])
def test_update_sends_weak_if_match(
    client: FhirClient, router: respx.Router, given: str, sent: str
) -> None:
    plan = {"resourceType": "CarePlan", "id": "cp1", "status": "active"}
    route = router.put(f"{BASE}/CarePlan/cp1").respond(200, json=plan)
    assert client.update(plan, if_match=given) == plan
    request = route.calls.last.request
    assert request.headers["If-Match"] == sent
    assert json.loads(request.content) == plan


def test_update_without_if_match_sends_none(client: FhirClient, router: respx.Router) -> None:
    plan = {"resourceType": "CarePlan", "id": "cp1"}
    route = router.put(f"{BASE}/CarePlan/cp1").respond(200, json=plan)
    client.update(plan)
    assert "If-Match" not in route.calls.last.request.headers


def test_stale_if_match_raises_precondition_failed(
    client: FhirClient, router: respx.Router
) -> None:
    router.put(f"{BASE}/CarePlan/cp1").respond(
        412, json=outcome("conflict", "version 2 is not current", [])
    )
    with pytest.raises(PreconditionFailedError, match=r"HTTP 412 .*: error conflict$"):
        client.update({"resourceType": "CarePlan", "id": "cp1"}, if_match="2")


def test_transaction_posts_the_bundle_to_the_base(client: FhirClient, router: respx.Router) -> None:
    request_bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {"resourceType": "CarePlan", "status": "active"},
                "request": {"method": "POST", "url": "CarePlan"},
            }
        ],
    }
    response_bundle = {
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": [{"response": {"status": "201 Created", "location": "CarePlan/9/_history/1"}}],
    }
    route = router.post(url__eq=BASE).respond(200, json=response_bundle)

    assert client.transaction(request_bundle) == response_bundle
    request = route.calls.last.request
    assert json.loads(request.content) == request_bundle
    assert request.headers["Content-Type"] == FHIR_JSON


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        (httpx.Response(200, content=b'{"resourceType": "Bundle", "ty'), "not a JSON object"),
        (httpx.Response(200, json=outcome("informational", "Jane Doe", [])), "error informational"),
        (httpx.Response(200, json={"resourceType": "Bundle", "type": "batch-response"}), "batch"),
    ],
    ids=["truncated", "operation-outcome", "other-bundle"],
)
def test_a_transaction_answered_without_its_result_may_have_been_applied(
    client: FhirClient, router: respx.Router, answer: httpx.Response, said: str
) -> None:
    route = router.post(url__eq=BASE).mock(return_value=answer)
    with pytest.raises(UnconfirmedWriteError) as info:
        client.transaction({"resourceType": "Bundle", "type": "transaction", "entry": []})
    message = str(info.value)
    assert message.startswith("unexpected response to POST /fhir: HTTP 200")
    assert said in message and message.endswith("the server may have applied it")
    assert "Jane" not in message
    assert route.call_count == 1


def test_transaction_refuses_other_bundles(client: FhirClient, router: respx.Router) -> None:
    with pytest.raises(ValueError, match="transaction"):
        client.transaction({"resourceType": "Bundle", "type": "batch"})
    assert not router.calls


# --- auth -----------------------------------------------------------------------------------


def test_bearer_token_is_sent_but_never_shown(router: respx.Router, sleeps: list[float]) -> None:
    auth = auth_from_settings("s3cret", None, None)
    route = router.get(f"{BASE}/Patient/1").respond(200, json=patient("1"))
    with make_client(router, sleeps, auth=auth) as fhir:
        fhir.read("Patient", "1")
    assert route.calls.last.request.headers["Authorization"] == "Bearer s3cret"
    assert "s3cret" not in repr(auth)
    assert "s3cret" not in str(auth)


def test_basic_auth_from_settings(router: respx.Router, sleeps: list[float]) -> None:
    route = router.get(f"{BASE}/Patient/1").respond(200, json=patient("1"))
    with make_client(router, sleeps, auth=auth_from_settings(None, "ann", "pw")) as fhir:
        fhir.read("Patient", "1")
    assert route.calls.last.request.headers["Authorization"] == "Basic YW5uOnB3"


def test_auth_settings_that_conflict_are_refused() -> None:
    assert auth_from_settings(None, None, None) is None
    assert auth_from_settings("", "", "") is None
    with pytest.raises(ValueError, match="not both"):
        auth_from_settings("t", "ann", "pw")
    with pytest.raises(ValueError, match="without a username"):
        auth_from_settings(None, None, "pw")


def counting_server(seconds: float) -> tuple[httpx.MockTransport, dict[str, int]]:
    """Answers every request after ``seconds``; counts the most answered at once."""
    seen = {"running": 0, "peak": 0}

    async def handle(request: httpx.Request) -> httpx.Response:
        seen["running"] += 1
        seen["peak"] = max(seen["peak"], seen["running"])
        await asyncio.sleep(seconds)
        seen["running"] -= 1
        return httpx.Response(200, json={"resourceType": "Patient", "id": "p"})

    return httpx.MockTransport(handle), seen


def test_no_more_than_max_connections_requests_are_in_flight() -> None:
    """Requests past the bound wait in the client, not in httpx's pool (issue 17 #3: its queue
    cost more CPU than the requests once dozens were waiting)."""
    transport, seen = counting_server(0.01)

    async def many() -> None:
        async with AsyncFhirClient(BASE, max_connections=3, transport=transport) as client:
            await asyncio.gather(*(client.read("Patient", f"p{n}") for n in range(12)))

    asyncio.run(many())
    assert seen["peak"] == 3


def test_waiting_for_a_turn_does_not_count_against_the_timeout() -> None:
    transport, seen = counting_server(0.2)

    async def queued() -> None:
        async with AsyncFhirClient(
            BASE, max_connections=1, timeout=0.3, transport=transport
        ) as client:
            await asyncio.gather(*(client.read("Patient", f"p{n}") for n in range(3)))

    asyncio.run(queued())  # the third waits 0.4 s for its turn, then takes 0.2 s
    assert seen["peak"] == 1
