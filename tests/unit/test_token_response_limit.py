"""The answers of a token exchange are read under MAX_TOKEN_RESPONSE_BYTES: SMART Backend
Services (the token response and the SMART configuration, read inside the auth flow) and the
app's launch (the same two, read by authlib's client). A body declared larger is refused before
any of it is read, one without a length once the bytes received pass the limit, a compressed one
by its decoded size; the error names the URL path and the limit, never the body."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import respx
from bodies import CHUNK, Endless, padded
from cryptography.hazmat.primitives.asymmetric import ec
from idtokens import ISSUER, JWKS_URI, serve_jwks
from starlette.testclient import TestClient
from test_smart import BASE, PATIENT, TOKEN_URL, Clock, jwt_auth, make_client
from test_web_app import AUTHORIZE, ISS, fhir_routes, query, signed_in, valid_identity
from test_web_app import TOKEN_URL as LAUNCH_TOKEN_URL
from test_web_app import make_client as make_app

from fhir_tailor.definitions import Definitions
from fhir_tailor.smart import MAX_TOKEN_RESPONSE_BYTES, SmartAuthError
from fhir_tailor.web.sessions import SessionStore

LIMIT = MAX_TOKEN_RESPONSE_BYTES
Key = ec.EllipticCurvePrivateKey
TOKEN = {"access_token": "access-1", "token_type": "bearer", "expires_in": 300}


def refusal(method: str, path: str, declared: int | None = None) -> str:
    claim = f" (Content-Length {declared})" if declared is not None else ""
    return (
        f"the response to {method} {path} is larger than the 1 MiB limit{claim}: "
        "refused and not retried"
    )


# --- SMART Backend Services ------------------------------------------------------------------


@pytest.fixture(scope="module")
def key() -> Key:
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture
def router() -> respx.Router:
    router = respx.Router(assert_all_mocked=True)
    router.get(f"{BASE}/Patient/p1").respond(json=PATIENT)
    return router


def backend_failure(router: respx.Router, key: Key, **auth: Any) -> str:
    with (
        make_client(router, jwt_auth(key, Clock(), **auth)) as client,
        pytest.raises(SmartAuthError) as failed,
    ):
        client.read("Patient", "p1")
    return str(failed.value)


def test_a_token_response_up_to_the_limit_is_read_and_a_byte_more_refused(
    router: respx.Router, key: Key
) -> None:
    token = router.post(TOKEN_URL)
    token.respond(content=padded(TOKEN, LIMIT))
    with make_client(router, jwt_auth(key, Clock())) as client:
        assert client.read("Patient", "p1") == PATIENT
    token.respond(content=padded(TOKEN, LIMIT + 1))
    message = backend_failure(router, key)
    assert message == "no access token: " + refusal("POST", "/oauth/token", LIMIT + 1)


def test_a_token_response_without_a_length_stops_at_the_limit(
    router: respx.Router, key: Key
) -> None:
    body = Endless(bound=64 * LIMIT)
    router.post(TOKEN_URL).respond(stream=body)
    assert backend_failure(router, key) == "no access token: " + refusal("POST", "/oauth/token")
    assert body.taken <= LIMIT + CHUNK


def test_a_token_response_declared_past_the_limit_is_not_read(
    router: respx.Router, key: Key
) -> None:
    body = Endless(bound=64 * LIMIT)
    router.post(TOKEN_URL).respond(headers={"Content-Length": str(2**31)}, stream=body)
    message = backend_failure(router, key)
    assert message == "no access token: " + refusal("POST", "/oauth/token", 2**31)
    assert body.taken == 0


def test_a_compressed_token_response_counts_decoded(router: respx.Router, key: Key) -> None:
    bomb = gzip.compress(padded(TOKEN, 64 * LIMIT))  # 64 MiB of JSON in about 64 KiB
    router.post(TOKEN_URL).respond(content=bomb, headers={"Content-Encoding": "gzip"})
    assert len(bomb) < LIMIT
    assert backend_failure(router, key) == "no access token: " + refusal("POST", "/oauth/token")


def test_the_smart_configuration_is_read_under_the_limit_too(
    router: respx.Router, key: Key
) -> None:
    config = {"token_endpoint": TOKEN_URL}
    router.get(f"{BASE}/.well-known/smart-configuration").respond(content=padded(config, LIMIT + 1))
    message = backend_failure(router, key, token_url=None)
    assert message == "no access token: " + refusal(
        "GET", "/fhir/.well-known/smart-configuration", LIMIT + 1
    )


# --- the app's launch ------------------------------------------------------------------------

SMART_CONFIGURATION = {
    "issuer": ISSUER,
    "jwks_uri": JWKS_URI,
    "authorization_endpoint": AUTHORIZE,
    "token_endpoint": LAUNCH_TOKEN_URL,
    "code_challenge_methods_supported": ["S256"],
}
LAUNCH_TOKEN = TOKEN | {"patient": "p1"}


@pytest.fixture
def store() -> SessionStore:
    return SessionStore()


@contextmanager
def mocked_ehr() -> Iterator[respx.MockRouter]:
    """The EHR the app launches from: its SMART configuration and its issuer's keys."""
    with respx.mock(assert_all_called=False) as router:
        router.get(f"{ISS}/.well-known/smart-configuration").respond(json=SMART_CONFIGURATION)
        serve_jwks(router)
        yield router


@pytest.fixture
def mocked() -> Iterator[respx.MockRouter]:
    with mocked_ehr() as router:
        yield router


def launched(definitions: Definitions, store: SessionStore) -> tuple[TestClient, str]:
    """A browser sent to the authorization server, and the state to come back with."""
    app = make_app(definitions, store)
    location = app.get("/launch", params={"iss": ISS, "launch": "L-1"}).headers["location"]
    return app, query(location)["state"]


def sign_in_fails(definitions: Definitions, store: SessionStore) -> str:
    app, state = launched(definitions, store)
    response = app.get("/callback", params={"code": "the-code", "state": state})
    assert response.status_code == 502
    return response.text


def test_a_launch_token_response_near_the_limit_signs_in_and_one_past_it_fails(
    definitions: Definitions, store: SessionStore, mocked: respx.MockRouter
) -> None:
    fhir_routes(mocked)
    filler = {"padding": " " * (LIMIT - 4 * 2**10)}  # the rest of the answer is under 4 KiB
    signed_in(definitions, store, mocked, identity=lambda nonce: valid_identity(nonce) | filler)
    mocked.post(LAUNCH_TOKEN_URL).respond(content=padded(LAUNCH_TOKEN, LIMIT + 1))
    failed = "Sign-in failed: the token request failed: "
    assert failed + refusal("POST", "/token", LIMIT + 1) in sign_in_fails(definitions, store)


def test_a_launch_token_response_without_a_length_stops_at_the_limit(
    definitions: Definitions, store: SessionStore, mocked: respx.MockRouter
) -> None:
    body = Endless(bound=64 * LIMIT)
    mocked.post(LAUNCH_TOKEN_URL).respond(stream=body)
    shown = sign_in_fails(definitions, store)
    assert "Sign-in failed: the token request failed: " + refusal("POST", "/token") in shown
    assert body.taken <= LIMIT + CHUNK


def test_a_launch_token_response_declared_past_the_limit_is_not_read(
    definitions: Definitions, store: SessionStore, mocked: respx.MockRouter
) -> None:
    body = Endless(bound=64 * LIMIT)
    mocked.post(LAUNCH_TOKEN_URL).respond(headers={"Content-Length": str(2**31)}, stream=body)
    shown = sign_in_fails(definitions, store)
    assert refusal("POST", "/token", 2**31) in shown
    assert body.taken == 0


def test_a_launch_refuses_a_smart_configuration_past_the_limit(
    definitions: Definitions, store: SessionStore, mocked: respx.MockRouter
) -> None:
    configuration = f"{ISS}/.well-known/smart-configuration"
    mocked.get(configuration).respond(content=padded(SMART_CONFIGURATION, LIMIT + 1))
    app = make_app(definitions, store)
    response = app.get("/launch", params={"iss": ISS, "launch": "L-1"})
    assert response.status_code == 502
    refused = refusal("GET", "/fhir/.well-known/smart-configuration", LIMIT + 1)
    assert f"SMART discovery at {configuration} failed: {refused}" in response.text
