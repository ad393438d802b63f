"""The CDS Hooks endpoints read at most HOOK_BODY_LIMIT (a hook call, prefetch included) or
FEEDBACK_BODY_LIMIT bytes of a request: a body declared larger is refused before any of it is
read, one sent chunked as soon as the bytes received pass the limit, with 413 and nothing of the
body in the answer or the log.

The chunked bodies are sent through httpx's ASGI transport, which hands the app each chunk as it
is asked for (Starlette's TestClient would read the whole body first)."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from bodies import CHUNK, Endless, padded
from starlette.applications import Starlette
from starlette.testclient import TestClient
from test_cds_hooks import BUNDLES, PUBLIC, SERVICE, cards_of, hook_call, patient_id, prefetch_for

from fhir_tailor.definitions import Definitions
from fhir_tailor.web.cds_auth import ClientAuth
from fhir_tailor.web.cds_feedback import FeedbackLog
from fhir_tailor.web.cds_hooks import FEEDBACK_BODY_LIMIT, HOOK_BODY_LIMIT, cds_routes

FEEDBACK = f"{SERVICE}/feedback"
LIMITS = {SERVICE: HOOK_BODY_LIMIT, FEEDBACK: FEEDBACK_BODY_LIMIT}
MARKER = "Quinn-Zebulon-1961"  # stands for PHI in a body: never to be answered or logged
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def app(definitions: Definitions) -> Starlette:
    routes = cds_routes(
        definitions,
        public_url=PUBLIC,
        auth=ClientAuth.insecure_no_client_auth(),
        feedback=FeedbackLog(),
    )
    return Starlette(routes=routes)


def feedback_body() -> dict[str, object]:
    item = {"card": "c1", "outcome": "overridden", "outcomeTimestamp": "2026-11-15T10:05:31Z"}
    return {"feedback": [item]}


def check_refused(response: httpx.Response, path: str) -> None:
    assert response.status_code == 413
    limit = "16 MiB" if path == SERVICE else "64 KiB"
    assert response.json() == {"error": f"the request body is larger than the {limit} limit"}


def test_a_hook_call_up_to_the_limit_is_answered_and_a_byte_more_refused(
    app: Starlette, caplog: pytest.LogCaptureFixture
) -> None:
    path = BUNDLES[0]
    call = hook_call(patient_id(path), prefetch=prefetch_for(path), note=MARKER)
    client = TestClient(app)
    at_limit = client.post(SERVICE, content=padded(call, HOOK_BODY_LIMIT), headers=JSON)
    assert cards_of(at_limit), "the call at the limit is answered as any other"
    with caplog.at_level(logging.DEBUG), caplog.at_level(logging.DEBUG, logger="fhir_tailor"):
        over = client.post(SERVICE, content=padded(call, HOOK_BODY_LIMIT + 1), headers=JSON)
    check_refused(over, SERVICE)
    assert MARKER not in over.text and MARKER not in caplog.text
    assert "413" in caplog.text


def test_feedback_up_to_the_limit_is_recorded_and_a_byte_more_refused(app: Starlette) -> None:
    client = TestClient(app)
    body = feedback_body()
    at_limit = client.post(FEEDBACK, content=padded(body, FEEDBACK_BODY_LIMIT), headers=JSON)
    assert at_limit.status_code == 200 and at_limit.json() == {"recorded": 1}
    over = client.post(FEEDBACK, content=padded(body, FEEDBACK_BODY_LIMIT + 1), headers=JSON)
    check_refused(over, FEEDBACK)


async def post(app: Starlette, path: str, body: Endless, headers: dict[str, str]) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=PUBLIC) as client:
        return await client.post(path, content=body, headers=JSON | headers)


@pytest.mark.parametrize("path", [SERVICE, FEEDBACK])
def test_a_chunked_body_is_refused_once_past_the_limit_and_not_read_further(
    app: Starlette, path: str
) -> None:
    limit = LIMITS[path]
    body = Endless(bound=4 * limit)
    response = asyncio.run(post(app, path, body, {}))
    check_refused(response, path)
    assert body.taken <= limit + CHUNK, "reading stopped at the limit"


@pytest.mark.parametrize("path", [SERVICE, FEEDBACK])
def test_a_body_declared_past_the_limit_is_refused_before_reading(
    app: Starlette, path: str
) -> None:
    body = Endless(bound=4 * LIMITS[path])
    response = asyncio.run(post(app, path, body, {"Content-Length": str(2**40)}))
    check_refused(response, path)
    assert body.taken == 0
