"""The approval form is read up to APPROVE_BODY_LIMIT: a body declared larger is refused before
any of it is read, one sent chunked as soon as the bytes received pass the limit, with 413 and
nothing approved.

The chunked bodies are sent through httpx's ASGI transport, which hands the app each chunk as it
is asked for (Starlette's TestClient would read the whole body first)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
import respx
from bodies import CHUNK, Endless, padded_form
from starlette.testclient import TestClient
from test_token_response_limit import mocked_ehr
from test_web_app import APP, ISS, approve_form, fhir_routes, signed_in

from fhir_tailor.definitions import Definitions
from fhir_tailor.web.app import APPROVE_BODY_LIMIT
from fhir_tailor.web.sessions import COOKIE_NAME, SessionStore

LIMIT = APPROVE_BODY_LIMIT
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
REFUSED = "The request body is larger than the 64 KiB limit; nothing was approved."


@pytest.fixture
def mocked() -> Iterator[respx.MockRouter]:
    """The EHR: its SMART configuration, its issuer's keys and the patient's data."""
    with mocked_ehr() as router:
        fhir_routes(router)
        yield router


@pytest.fixture
def browser(definitions: Definitions, mocked: respx.MockRouter) -> tuple[TestClient, str]:
    """A signed-in browser that was shown the plan, and the form's CSRF token."""
    client = signed_in(definitions, SessionStore(), mocked)
    csrf, _, _ = approve_form(client.get("/app").text)
    return client, csrf


def test_a_form_up_to_the_limit_is_read_and_a_byte_more_refused(
    browser: tuple[TestClient, str], mocked: respx.MockRouter
) -> None:
    client, csrf = browser
    write = mocked.post(ISS)
    fields = {"csrf": csrf, "plan": "a-plan-no-longer-shown"}
    at_limit = client.post("/approve", content=padded_form(fields, LIMIT), headers=FORM)
    assert at_limit.status_code == 409, "read whole: its CSRF token passed, its plan is stale"
    over = client.post("/approve", content=padded_form(fields, LIMIT + 1), headers=FORM)
    assert over.status_code == 413
    assert REFUSED in over.text
    assert not write.called


async def post(client: TestClient, body: Endless, headers: dict[str, str]) -> httpx.Response:
    transport = httpx.ASGITransport(app=client.app)
    cookies = {COOKIE_NAME: client.cookies[COOKIE_NAME]}
    async with httpx.AsyncClient(transport=transport, base_url=APP, cookies=cookies) as http:
        return await http.post("/approve", content=body, headers=FORM | headers)


def test_a_chunked_form_is_refused_once_past_the_limit_and_not_read_further(
    browser: tuple[TestClient, str],
) -> None:
    body = Endless(bound=64 * LIMIT)
    response = asyncio.run(post(browser[0], body, {}))
    assert response.status_code == 413
    assert REFUSED in response.text
    assert body.taken <= LIMIT + CHUNK, "reading stopped at the limit"


def test_a_form_declared_past_the_limit_is_refused_before_reading(
    browser: tuple[TestClient, str],
) -> None:
    body = Endless(bound=64 * LIMIT)
    response = asyncio.run(post(browser[0], body, {"Content-Length": str(2**40)}))
    assert response.status_code == 413
    assert body.taken == 0
