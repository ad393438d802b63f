"""SMART Backend Services auth against respx-mocked FHIR and token endpoints."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import jwt
import pytest
import respx
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from fhir_tailor.cli import main
from fhir_tailor.client import FhirClient
from fhir_tailor.errors import FhirServerError
from fhir_tailor.smart import (
    ASSERTION_TYPE,
    DEFAULT_SCOPE,
    SigningKey,
    SmartAuthError,
    SmartBackendAuth,
    check_scope,
    load_signing_key,
    smart_auth_from_settings,
)

BASE = "https://fhir.test/fhir"
TOKEN_URL = "https://auth.test/oauth/token"
CLIENT_ID = "fhir-tailor-backend"
SECRET = "s3cret/with+odd chars"
PATIENT = {"resourceType": "Patient", "id": "p1"}

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


class Clock:
    """Epoch seconds that only move when a test says so."""

    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture
def router() -> respx.Router:
    return respx.Router(assert_all_mocked=True)


@pytest.fixture
def clock() -> Clock:
    return Clock()


class TokenServer:
    """A token endpoint that hands out ``access-1``, ``access-2``, ... and keeps each form."""

    def __init__(self, expires_in: int = 300) -> None:
        self.expires_in = expires_in
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        body = {
            "access_token": f"access-{len(self.requests)}",
            "token_type": "bearer",
            "expires_in": self.expires_in,
            "scope": "system/*.read",
        }
        return httpx.Response(200, json=body)

    def form(self, index: int = -1) -> dict[str, str]:
        parsed = parse_qs(self.requests[index].content.decode())
        return {name: values[0] for name, values in parsed.items()}

    @property
    def tokens(self) -> list[str]:
        return [f"access-{n}" for n in range(1, len(self.requests) + 1)]


def signing_key(key: PrivateKey, kid: str = "key-1") -> SigningKey:
    return SigningKey(key, kid, "RS384" if isinstance(key, rsa.RSAPrivateKey) else "ES384")


def make_client(router: respx.Router, auth: httpx.Auth) -> FhirClient:
    return FhirClient(
        BASE, auth=auth, transport=httpx.MockTransport(router.handler), sleep=lambda _: None
    )


def jwt_auth(key: PrivateKey, clock: Clock, **kwargs: Any) -> SmartBackendAuth:
    kwargs.setdefault("token_url", TOKEN_URL)
    return SmartBackendAuth(BASE, CLIENT_ID, signing_key=signing_key(key), clock=clock, **kwargs)


def bearer_seen(route: respx.Route) -> list[str | None]:
    return [call.request.headers.get("Authorization") for call in route.calls]


def pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def private_jwk(key: PrivateKey, kid: str) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPrivateKey):
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key, as_dict=True)
    else:
        jwk = jwt.algorithms.ECAlgorithm.to_jwk(key, as_dict=True)
    return {**jwk, "kid": kid}


# --- discovery -------------------------------------------------------------------------------


def test_token_endpoint_is_discovered_and_the_token_attached(
    router: respx.Router, rsa_key: rsa.RSAPrivateKey, clock: Clock
) -> None:
    config = {
        "token_endpoint": TOKEN_URL,
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
    }
    discovery = router.get(f"{BASE}/.well-known/smart-configuration").respond(json=config)
    tokens = TokenServer()
    router.post(TOKEN_URL).mock(side_effect=tokens)
    read = router.get(f"{BASE}/Patient/p1").respond(json=PATIENT)
    with make_client(router, jwt_auth(rsa_key, clock, token_url=None)) as client:
        client.read("Patient", "p1")
        client.read("Patient", "p1")
    assert discovery.call_count == 1
    assert "Authorization" not in discovery.calls[0].request.headers
    assert bearer_seen(read) == ["Bearer access-1", "Bearer access-1"]


def test_discovery_refuses_a_server_without_private_key_jwt(
    router: respx.Router, rsa_key: rsa.RSAPrivateKey, clock: Clock
) -> None:
    config = {
        "token_endpoint": TOKEN_URL,
        "token_endpoint_auth_methods_supported": ["client_secret_basic"],
    }
    router.get(f"{BASE}/.well-known/smart-configuration").respond(json=config)
    with (
        make_client(router, jwt_auth(rsa_key, clock, token_url=None)) as client,
        pytest.raises(SmartAuthError, match="does not support private_key_jwt"),
    ):
        client.read("Patient", "p1")


def test_missing_smart_configuration_suggests_token_url(
    router: respx.Router, rsa_key: rsa.RSAPrivateKey, clock: Clock
) -> None:
    router.get(f"{BASE}/.well-known/smart-configuration").respond(404)
    with (
        make_client(router, jwt_auth(rsa_key, clock, token_url=None)) as client,
        pytest.raises(SmartAuthError, match="--token-url"),
    ):
        client.read("Patient", "p1")


@pytest.mark.parametrize("url", ["http://auth.test/token", "ftp://auth.test/token"])
def test_credentials_only_go_to_an_https_token_endpoint(
    router: respx.Router, rsa_key: rsa.RSAPrivateKey, clock: Clock, url: str
) -> None:
    with pytest.raises(SmartAuthError, match="HTTPS"):
        jwt_auth(rsa_key, clock, token_url=url)
    router.get(f"{BASE}/.well-known/smart-configuration").respond(json={"token_endpoint": url})
    with (
        make_client(router, jwt_auth(rsa_key, clock, token_url=None)) as client,
        pytest.raises(SmartAuthError, match="HTTPS"),
    ):
        client.read("Patient", "p1")


def test_loopback_token_endpoint_may_be_plain_http(rsa_key: rsa.RSAPrivateKey) -> None:
    SmartBackendAuth(
        BASE, CLIENT_ID, signing_key=signing_key(rsa_key), token_url="http://127.0.0.1:9/token"
    )


def test_the_token_never_goes_to_another_origin(rsa_key: rsa.RSAPrivateKey, clock: Clock) -> None:
    auth = jwt_auth(rsa_key, clock)
    flow = auth.async_auth_flow(httpx.Request("GET", "https://elsewhere.test/x"))
    request = asyncio.run(anext(flow))
    assert request.url.host == "elsewhere.test"
    assert "Authorization" not in request.headers


# --- the assertion ---------------------------------------------------------------------------


@pytest.mark.parametrize(("key_name", "algorithm"), [("rsa_key", "RS384"), ("ec_key", "ES384")])
def test_assertion_is_signed_with_the_registered_key(
    router: respx.Router,
    clock: Clock,
    request: pytest.FixtureRequest,
    key_name: str,
    algorithm: str,
) -> None:
    key: PrivateKey = request.getfixturevalue(key_name)
    tokens = TokenServer()
    router.post(TOKEN_URL).mock(side_effect=tokens)
    router.get(f"{BASE}/Patient/p1").respond(json=PATIENT)
    with make_client(router, jwt_auth(key, clock)) as client:
        client.read("Patient", "p1")
        clock.now += 300  # the first token has expired
        client.read("Patient", "p1")
    assert len(tokens.requests) == 2
    jtis = []
    for index in (0, 1):
        form = tokens.form(index)
        assert form["grant_type"] == "client_credentials"
        assert form["scope"] == DEFAULT_SCOPE
        assert form["client_assertion_type"] == ASSERTION_TYPE
        assertion = form["client_assertion"]
        header = jwt.get_unverified_header(assertion)
        assert header["alg"] == algorithm and header["kid"] == "key-1"
        claims = jwt.decode(
            assertion,
            key.public_key(),
            algorithms=[algorithm],
            audience=TOKEN_URL,
            options={"verify_exp": False, "verify_iat": False},
        )
        assert claims["iss"] == claims["sub"] == CLIENT_ID
        assert claims["exp"] - claims["iat"] == 300
        assert claims["iat"] == int(clock.now) - 300 * (1 - index)
        jtis.append(claims["jti"])
    assert len(set(jtis)) == 2


# --- caching and refresh ---------------------------------------------------------------------


def test_token_is_cached_and_refreshed_when_less_than_a_minute_remains(
    router: respx.Router, rsa_key: rsa.RSAPrivateKey, clock: Clock
) -> None:
    tokens = TokenServer(expires_in=300)
    router.post(TOKEN_URL).mock(side_effect=tokens)
    read = router.get(f"{BASE}/Patient/p1").respond(json=PATIENT)
    with make_client(router, jwt_auth(rsa_key, clock)) as client:
        client.read("Patient", "p1")
        clock.now += 239  # 61 s left
        client.read("Patient", "p1")
        clock.now += 2  # 59 s left
        client.read("Patient", "p1")
        client.read("Patient", "p1")
    assert bearer_seen(read) == ["Bearer access-1"] * 2 + ["Bearer access-2"] * 2


def test_a_401_renews_the_token_and_retries_once(
    router: respx.Router, rsa_key: rsa.RSAPrivateKey, clock: Clock
) -> None:
    tokens = TokenServer()
    router.post(TOKEN_URL).mock(side_effect=tokens)
    sent: list[tuple[str | None, bytes]] = []

    def refuse_first(request: httpx.Request) -> httpx.Response:
        # Recorded now: the retry resends the same request object with a new header.
        sent.append((request.headers.get("Authorization"), request.content))
        return httpx.Response(401) if len(sent) == 1 else httpx.Response(201, json=PATIENT)

    router.post(f"{BASE}/Patient").mock(side_effect=refuse_first)
    with make_client(router, jwt_auth(rsa_key, clock)) as client:
        assert client.create({"resourceType": "Patient"}) == PATIENT
    body = b'{"resourceType": "Patient"}'
    assert sent == [("Bearer access-1", body), ("Bearer access-2", body)]


def test_a_second_401_is_an_error(
    router: respx.Router, rsa_key: rsa.RSAPrivateKey, clock: Clock
) -> None:
    tokens = TokenServer()
    router.post(TOKEN_URL).mock(side_effect=tokens)
    read = router.get(f"{BASE}/Patient/p1").respond(401)
    with (
        make_client(router, jwt_auth(rsa_key, clock)) as client,
        pytest.raises(FhirServerError) as caught,
    ):
        client.read("Patient", "p1")
    assert caught.value.status == 401
    assert len(tokens.requests) == 2 and read.call_count == 2


def test_short_lived_tokens_are_renewed_at_half_their_lifetime(
    router: respx.Router, rsa_key: rsa.RSAPrivateKey, clock: Clock
) -> None:
    router.post(TOKEN_URL).mock(side_effect=TokenServer(expires_in=60))
    read = router.get(f"{BASE}/Patient/p1").respond(json=PATIENT)
    with make_client(router, jwt_auth(rsa_key, clock)) as client:
        client.read("Patient", "p1")
        clock.now += 29
        client.read("Patient", "p1")
        clock.now += 2
        client.read("Patient", "p1")
    assert bearer_seen(read) == ["Bearer access-1"] * 2 + ["Bearer access-2"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"token_type": "bearer", "expires_in": 300}, "sent no access_token"),
        ({"access_token": "a", "token_type": "mac"}, "not a bearer token"),
        ({"access_token": "a", "token_type": "Bearer", "expires_in": "soon"}, "invalid expires_in"),
    ],
)
def test_malformed_token_responses_are_refused(
    router: respx.Router,
    rsa_key: rsa.RSAPrivateKey,
    clock: Clock,
    body: dict[str, Any],
    message: str,
) -> None:
    router.post(TOKEN_URL).respond(json=body)
    with (
        make_client(router, jwt_auth(rsa_key, clock)) as client,
        pytest.raises(SmartAuthError, match=message),
    ):
        client.read("Patient", "p1")


def test_threads_share_one_token_and_one_renewal(rsa_key: rsa.RSAPrivateKey, clock: Clock) -> None:
    tokens = TokenServer()

    def fhir(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.test":
            time.sleep(0.05)  # a slow token endpoint invites a stampede
            return tokens(request)
        if request.headers["Authorization"] == "Bearer access-1":
            return httpx.Response(401)  # the first token is revoked for everyone
        return httpx.Response(200, json=PATIENT)

    client = FhirClient(BASE, auth=jwt_auth(rsa_key, clock), transport=httpx.MockTransport(fhir))
    with client, ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: client.read("Patient", "p1"), range(32)))
    assert results == [PATIENT] * 32
    assert len(tokens.requests) == 2


# --- client secret ---------------------------------------------------------------------------


def test_client_secret_basic(router: respx.Router, clock: Clock) -> None:
    tokens = TokenServer()
    router.post(TOKEN_URL).mock(side_effect=tokens)
    read = router.get(f"{BASE}/Patient/p1").respond(json=PATIENT)
    auth = SmartBackendAuth(
        BASE, CLIENT_ID, client_secret=SECRET, token_url=TOKEN_URL, scope="system/*.rs"
    )
    with make_client(router, auth) as client:
        client.read("Patient", "p1")
    expected = base64.b64encode(b"fhir-tailor-backend:s3cret%2Fwith%2Bodd+chars").decode()
    assert tokens.requests[0].headers["Authorization"] == f"Basic {expected}"
    assert tokens.form() == {"grant_type": "client_credentials", "scope": "system/*.rs"}
    assert bearer_seen(read) == ["Bearer access-1"]


# --- errors and secrets ----------------------------------------------------------------------


def test_token_endpoint_error_names_endpoint_and_oauth_error_without_secrets(
    router: respx.Router, rsa_key: rsa.RSAPrivateKey, clock: Clock
) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        form = parse_qs(request.content.decode())
        echoed = form["client_assertion"][0]
        body = {"error": "invalid_client", "error_description": f"bad signature on {echoed}"}
        return httpx.Response(400, json=body)

    router.post(TOKEN_URL).mock(side_effect=refuse)
    with (
        make_client(router, jwt_auth(rsa_key, clock)) as client,
        pytest.raises(SmartAuthError) as caught,
    ):
        client.read("Patient", "p1")
    message = str(caught.value)
    assert TOKEN_URL in message and "invalid_client: bad signature on <redacted>" in message
    assert "eyJ" not in message  # no JWT


def run_and_fail(auth: SmartBackendAuth) -> tuple[list[str], list[str]]:
    """One read, then a read the server refuses twice with 401.

    Returns what a user could see (messages, reprs) and the secrets the flow used.
    """
    router = respx.Router(assert_all_mocked=True)
    tokens = TokenServer()
    router.post(TOKEN_URL).mock(side_effect=tokens)
    config = {"token_endpoint": TOKEN_URL}
    router.get(f"{BASE}/.well-known/smart-configuration").respond(json=config)
    router.get(f"{BASE}/Patient/p1").mock(
        side_effect=[httpx.Response(200, json=PATIENT), httpx.Response(401), httpx.Response(401)]
    )
    with make_client(router, auth) as client:
        client.read("Patient", "p1")
        with pytest.raises(FhirServerError) as caught:
            client.read("Patient", "p1")
        shown = [str(caught.value), repr(caught.value), repr(auth), repr(client)]
    assertions = [tokens.form(i).get("client_assertion") for i in range(len(tokens.requests))]
    return shown, [*tokens.tokens, *filter(None, assertions)]


def test_no_secret_reaches_logs_messages_or_reprs(
    rsa_key: rsa.RSAPrivateKey, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="fhir_tailor")
    shown, secrets = run_and_fail(jwt_auth(rsa_key, clock, token_url=None))
    assert len(secrets) == 4  # a token and an assertion, then one more of each
    more_shown, more_secrets = run_and_fail(
        SmartBackendAuth(BASE, CLIENT_ID, client_secret=SECRET, clock=clock)
    )
    router = respx.Router(assert_all_mocked=True)
    router.post(TOKEN_URL).respond(401, text=f"unknown client secret {SECRET}")
    broken = SmartBackendAuth(BASE, CLIENT_ID, client_secret=SECRET, token_url=TOKEN_URL)
    with make_client(router, broken) as client, pytest.raises(SmartAuthError) as failed:
        client.read("Patient", "p1")
    assert "<redacted>" in str(failed.value)
    assert "access token obtained" in caplog.text  # the flow did log
    everything = "\n".join(
        [*shown, *more_shown, str(failed.value), repr(signing_key(rsa_key)), caplog.text]
    )
    key_lines = pem(rsa_key).decode().splitlines()[1:-1]
    forbidden = [*secrets, *more_secrets, SECRET, private_jwk(rsa_key, "k")["d"], *key_lines]
    for secret in forbidden:
        assert secret not in everything
    assert "eyJ" not in everything and "PRIVATE KEY" not in everything


# --- keys and settings -----------------------------------------------------------------------


def test_pem_keys_load_with_a_kid(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    for name, key, algorithm in (("rsa.pem", rsa_key, "RS384"), ("ec.pem", ec_key, "ES384")):
        path = tmp_path / name
        path.write_bytes(pem(key))
        loaded = load_signing_key(path, "k1")
        assert (loaded.kid, loaded.algorithm) == ("k1", algorithm)
        with pytest.raises(SmartAuthError, match="--kid"):
            load_signing_key(path)


def test_jwks_key_is_chosen_by_kid(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    path = tmp_path / "jwks.json"
    public = {k: v for k, v in private_jwk(rsa_key, "public-only").items() if k != "d"}
    keys = [private_jwk(rsa_key, "rsa-1"), {**private_jwk(ec_key, "ec-1"), "alg": "ES384"}, public]
    path.write_text(json.dumps({"keys": keys}))
    assert load_signing_key(path, "ec-1").algorithm == "ES384"
    assert load_signing_key(path, "rsa-1").algorithm == "RS384"
    with pytest.raises(SmartAuthError, match="2 private keys; choose one with --kid"):
        load_signing_key(path)
    with pytest.raises(SmartAuthError, match="no private key with kid 'public-only'"):
        load_signing_key(path, "public-only")
    path.write_text(json.dumps({"keys": [keys[0]]}))
    assert load_signing_key(path).kid == "rsa-1"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: {**private_jwk(ec.generate_private_key(ec.SECP256R1()), "k")}, "P-384"),
        (
            lambda: {**private_jwk(rsa.generate_private_key(65537, 2048), "k"), "alg": "RS256"},
            "RS256",
        ),
    ],
)
def test_unsuitable_jwks_keys_are_refused(
    tmp_path: Path, make: Callable[[], dict[str, Any]], message: str
) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [make()]}))
    with pytest.raises(SmartAuthError, match=message):
        load_signing_key(path)


def test_unreadable_key_file_is_refused_without_echoing_it(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    path.write_text("-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWJ5dGVz\n-----END PRIVATE KEY-----\n")
    with pytest.raises(SmartAuthError) as caught:
        load_signing_key(path, "k")
    assert "c2VjcmV0" not in str(caught.value) and str(path) in str(caught.value)


def test_scopes_in_v1_and_v2_syntax() -> None:
    assert check_scope(" system/*.read  system/CarePlan.write ") == (
        "system/*.read system/CarePlan.write"
    )
    assert check_scope("system/*.rs system/Observation.rs?category=laboratory system/Goal.cu")
    for wrong in ("", "system/Patient.raed", "patient/*.read", "system/Goal.sc", "system/Goal."):
        with pytest.raises(ValueError):
            check_scope(wrong)


def test_settings_need_exactly_one_credential(tmp_path: Path) -> None:
    def settings(**overrides: Any) -> SmartBackendAuth | None:
        values: dict[str, Any] = {
            "private_key": None,
            "kid": None,
            "client_secret": None,
            "token_url": None,
            "scope": None,
        }
        return smart_auth_from_settings(
            BASE, overrides.pop("client_id", CLIENT_ID), **values | overrides
        )

    assert settings(client_id=None) is None
    auth = settings(client_secret=SECRET)
    assert auth is not None and auth.method == "client_secret_basic"
    for wrong in (
        {},
        {"client_id": None, "client_secret": SECRET},
        {"client_secret": SECRET, "private_key": tmp_path / "k.pem"},
    ):
        with pytest.raises(ValueError):
            settings(**wrong)


def test_cli_refuses_smart_with_a_static_token(tmp_path: Path) -> None:
    args = ["sync", "--server", BASE, "--all", "--client-id", "c", "--client-secret", "s"]
    result = CliRunner().invoke(main, [*args, "--token", "t"])
    assert result.exit_code == 2 and "--client-id" in result.stderr


def test_cli_reports_a_token_failure_and_cannot_start(tmp_path: Path) -> None:
    args = ["sync", "--server", "http://127.0.0.1:9/fhir", "--all", "--client-id", "c"]
    args += ["--client-secret", SECRET, "--token-url", "http://127.0.0.1:9/token"]
    result = CliRunner().invoke(main, [*args, "--retry-budget", "0"])
    assert result.exit_code == 3 and "cannot use server" in result.stderr
    assert SECRET not in result.stderr
