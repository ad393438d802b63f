"""The CDS Hooks service's trust and reach: client JWTs (CDS Hooks 2.0, "Trusting CDS Clients"),
CORS for browser-based clients, and the feedback endpoint.

Tokens are signed with real keys (EC P-384, the specification's recommended ES384) and the
client's JWK Set is served over HTTP on loopback, so the service's fetching and caching run as
they do against an EHR."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient
from test_cds_hooks import AS_OF, BUNDLES, hook_call, patient_id, prefetch_for

from fhir_tailor.definitions import Definitions
from fhir_tailor.web import cds_auth
from fhir_tailor.web.app import AppConfig, create_app
from fhir_tailor.web.cds_auth import ClientAuth, ConfigError, TrustedClient
from fhir_tailor.web.cds_cors import cds_cors
from fhir_tailor.web.cds_feedback import FeedbackLog
from fhir_tailor.web.cds_hooks import CdsSettings, cds_routes

PUBLIC = "https://tailor.example"
SERVICE = "/cds-services/fhir-tailor-care-plan"
AUDIENCE = f"{PUBLIC}{SERVICE}"
ISS = "https://ehr.example"
KID = "ehr-key-1"
EHR_ORIGIN = "https://sandbox.cds-hooks.org"


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def jwk_of(key: ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    public: dict[str, Any] = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    return public | {"kid": kid, "use": "sig", "alg": "ES384"}


class JwksServer:
    """The EHR's JWK Set URL, on loopback; counts how often each path was fetched."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.hits: dict[str, int] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits[self.path] = outer.hits.get(self.path, 0) + 1
                body = json.dumps({"keys": outer.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def ehr_key() -> ec.EllipticCurvePrivateKey:
    return new_key()


@pytest.fixture(scope="module")
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    yield server
    server.close()


@pytest.fixture
def jwks(jwks_server: JwksServer, ehr_key: ec.EllipticCurvePrivateKey) -> JwksServer:
    """The EHR's JWK Set URL holding its key, no fetch counted yet."""
    jwks_server.keys = [jwk_of(ehr_key, KID)]
    jwks_server.hits.clear()
    return jwks_server


def token(
    key: Any,
    *,
    aud: str | list[str] = AUDIENCE,
    iss: str = ISS,
    lifetime: float = 300,
    issued: float | None = None,
    header: dict[str, Any] | None = None,
    algorithm: str = "ES384",
    **claims: Any,
) -> str:
    """A client JWT as the specification has CDS clients sign it (the sandbox's shape)."""
    now = time.time() if issued is None else issued
    payload = {
        "iss": iss,
        "aud": aud,
        "iat": int(now),
        "exp": int(now + lifetime),
        "jti": str(uuid.uuid4()),
    } | claims
    return jwt.encode(
        payload, key, algorithm=algorithm, headers={"kid": KID, "typ": "JWT"} | (header or {})
    )


def hs256_with_public_key(key: ec.EllipticCurvePrivateKey) -> str:
    """The classic algorithm confusion: HMAC-signed with the client's public key as the secret
    (built by hand: PyJWT refuses to sign it)."""
    secret = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    now = int(time.time())
    parts = [
        {"alg": "HS256", "typ": "JWT", "kid": KID},
        {"iss": ISS, "aud": AUDIENCE, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())},
    ]
    signing_input = ".".join(_b64(json.dumps(part).encode()) for part in parts)
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def make_app(
    definitions: Definitions,
    auth: ClientAuth,
    feedback: FeedbackLog | None = None,
    origins: tuple[str, ...] = ("*",),
) -> TestClient:
    routes = cds_routes(
        definitions, public_url=PUBLIC, auth=auth, feedback=feedback, today=lambda: AS_OF
    )
    other = Route("/other", lambda request: PlainTextResponse("not CDS"))
    app = Starlette(routes=[*routes, other], middleware=[cds_cors(origins)])
    return TestClient(app, base_url=PUBLIC)


@pytest.fixture
def secured(definitions: Definitions, jwks: JwksServer) -> TestClient:
    return make_app(definitions, ClientAuth([TrustedClient(ISS, jwks.url)]))


def call_body() -> dict[str, Any]:
    path = BUNDLES[0]
    return hook_call(patient_id(path), prefetch=prefetch_for(path))


# -- client JWT ------------------------------------------------------------------------------


def test_a_trusted_clients_token_is_answered(
    secured: TestClient, ehr_key: ec.EllipticCurvePrivateKey
) -> None:
    response = secured.post(SERVICE, json=call_body(), headers=bearer(token(ehr_key)))
    assert response.status_code == 200, response.text
    assert "cards" in response.json()
    as_list = token(ehr_key, aud=[AUDIENCE], tenant="clinic-7")  # aud may be an array
    assert secured.post(SERVICE, json=call_body(), headers=bearer(as_list)).status_code == 200


def refused(response: Any) -> None:
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer ")
    assert response.json() == {"error": "the CDS client is not authenticated"}  # no reason


@pytest.mark.parametrize(
    "case",
    [
        "no-token",
        "not-bearer",
        "garbage",
        "bad-signature",
        "wrong-aud",
        "discovery-aud",
        "expired",
        "future-iat",
        "over-an-hour",
        "unknown-iss",
        "hs256-with-public-key",
        "alg-none",
        "no-kid",
        "not-typ-jwt",
        "no-jti",
        "unknown-kid",
    ],
)
def test_untrusted_calls_are_refused_with_401(
    secured: TestClient,
    ehr_key: ec.EllipticCurvePrivateKey,
    case: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sent = {
        "no-token": None,
        "not-bearer": None,
        "garbage": "not.a.jwt",
        "bad-signature": token(new_key()),
        "wrong-aud": token(ehr_key, aud=f"{PUBLIC}/cds-services/another-service"),
        "discovery-aud": token(ehr_key, aud=f"{PUBLIC}/cds-services"),
        "expired": token(ehr_key, issued=time.time() - 600),
        "future-iat": token(ehr_key, issued=time.time() + 600),
        "over-an-hour": token(ehr_key, lifetime=3 * 3600),
        "unknown-iss": token(ehr_key, iss="https://other-ehr.example"),
        "hs256-with-public-key": hs256_with_public_key(ehr_key),
        "alg-none": jwt.encode(
            {"iss": ISS, "aud": AUDIENCE, "exp": int(time.time()) + 300, "jti": "n"},
            None,
            algorithm="none",
            headers={"kid": KID},
        ),
        "no-kid": None,
        "not-typ-jwt": token(ehr_key, header={"typ": "at+jwt"}),
        "no-jti": None,
        "unknown-kid": token(ehr_key, header={"kid": "rotated-away"}),
    }[case]
    if case == "no-kid":
        now = int(time.time())
        claims = {"iss": ISS, "aud": AUDIENCE, "iat": now, "exp": now + 300, "jti": "k"}
        sent = jwt.encode(claims, ehr_key, algorithm="ES384", headers={"typ": "JWT"})
    if case == "no-jti":
        now = int(time.time())
        claims = {"iss": ISS, "aud": AUDIENCE, "iat": now, "exp": now + 300}
        sent = jwt.encode(claims, ehr_key, algorithm="ES384", headers={"kid": KID, "typ": "JWT"})
    headers = {} if sent is None else {"Authorization": f"Bearer {sent}"}
    if case == "not-bearer":
        headers = {"Authorization": "Basic dXNlcjpwYXNz"}
    with caplog.at_level(logging.DEBUG):
        response = secured.post(SERVICE, json=call_body(), headers=headers)
    refused(response)
    assert "call refused" in caplog.text
    if sent:
        assert sent not in caplog.text  # the token is never logged


def test_a_replayed_token_is_refused(
    secured: TestClient, ehr_key: ec.EllipticCurvePrivateKey
) -> None:
    once = token(ehr_key)
    assert secured.post(SERVICE, json=call_body(), headers=bearer(once)).status_code == 200
    refused(secured.post(SERVICE, json=call_body(), headers=bearer(once)))
    other = token(ehr_key)  # a new jti is fine
    assert secured.post(SERVICE, json=call_body(), headers=bearer(other)).status_code == 200


def test_a_token_expires_after_its_exp_plus_the_leeway(
    definitions: Definitions, jwks: JwksServer, ehr_key: ec.EllipticCurvePrivateKey
) -> None:
    now = [time.time()]
    auth = ClientAuth([TrustedClient(ISS, jwks.url)], clock=lambda: now[0])
    client = make_app(definitions, auth)
    sent = token(ehr_key, issued=now[0], lifetime=300)
    now[0] += 300 + 61  # past exp and the 60 s leeway
    refused(client.post(SERVICE, json=call_body(), headers=bearer(sent)))
    now[0] -= 2  # just within the leeway
    assert client.post(SERVICE, json=call_body(), headers=bearer(sent)).status_code == 200


def test_a_jku_other_than_the_configured_jwks_url_is_not_followed(
    secured: TestClient, jwks: JwksServer, ehr_key: ec.EllipticCurvePrivateKey
) -> None:
    elsewhere = JwksServer()
    elsewhere.keys = [jwk_of(ehr_key, KID)]
    try:
        sent = token(ehr_key, header={"jku": elsewhere.url})
        refused(secured.post(SERVICE, json=call_body(), headers=bearer(sent)))
        assert not elsewhere.hits
        same = token(ehr_key, header={"jku": jwks.url})  # the configured URL: fine
        assert secured.post(SERVICE, json=call_body(), headers=bearer(same)).status_code == 200
    finally:
        elsewhere.close()


def test_the_jwks_is_fetched_once_and_an_unknown_kid_does_not_refetch_it_at_once(
    secured: TestClient, jwks: JwksServer, ehr_key: ec.EllipticCurvePrivateKey
) -> None:
    for _ in range(3):
        sent = token(ehr_key)
        assert secured.post(SERVICE, json=call_body(), headers=bearer(sent)).status_code == 200
    assert jwks.hits == {"/jwks.json": 1}
    # A made-up kid: PyJWKClient refetches only after its cooldown, so a stream of them cannot
    # make the service hammer the EHR's JWK Set URL.
    for n in range(3):
        refused(
            secured.post(
                SERVICE, json=call_body(), headers=bearer(token(ehr_key, header={"kid": f"x{n}"}))
            )
        )
    assert jwks.hits == {"/jwks.json": 1}


def test_a_rotated_key_is_found_by_fetching_the_jwks_again(
    definitions: Definitions,
    jwks: JwksServer,
    ehr_key: ec.EllipticCurvePrivateKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cds_auth, "JWKS_COOLDOWN", 0.0)  # the 30 s cooldown, elapsed
    client = make_app(definitions, ClientAuth([TrustedClient(ISS, jwks.url)]))
    assert client.post(SERVICE, json=call_body(), headers=bearer(token(ehr_key))).status_code == 200
    rotated = new_key()
    jwks.keys.append(jwk_of(rotated, "ehr-key-2"))
    sent = token(rotated, header={"kid": "ehr-key-2"})
    assert client.post(SERVICE, json=call_body(), headers=bearer(sent)).status_code == 200
    assert jwks.hits == {"/jwks.json": 2}


def test_keys_exchanged_out_of_band_as_a_jwks_file(
    definitions: Definitions, ehr_key: ec.EllipticCurvePrivateKey, tmp_path: Path
) -> None:
    keys = tmp_path / "ehr-jwks.json"
    keys.write_text(json.dumps({"keys": [jwk_of(ehr_key, KID)]}))
    client = make_app(definitions, ClientAuth([TrustedClient(ISS, str(keys))]))
    assert client.post(SERVICE, json=call_body(), headers=bearer(token(ehr_key))).status_code == 200
    refused(client.post(SERVICE, json=call_body(), headers=bearer(token(new_key()))))


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("https://ehr.example", "expected ISS=JWKS_URL_OR_FILE"),
        ("=https://ehr.example/jwks", "expected ISS=JWKS_URL_OR_FILE"),
        ("https://ehr.example=http://ehr.example/jwks", "must be https"),
        ("https://ehr.example=/no/such/jwks.json", "No such file"),
    ],
)
def test_bad_trusted_client_settings_are_refused_naming_them(setting: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ClientAuth([TrustedClient.parse(setting)])


def test_no_trusted_client_means_every_call_is_refused_but_discovery_answers(
    definitions: Definitions, ehr_key: ec.EllipticCurvePrivateKey
) -> None:
    client = make_app(definitions, ClientAuth(()))
    refused(client.post(SERVICE, json=call_body(), headers=bearer(token(ehr_key))))
    assert client.get("/cds-services").status_code == 200


def test_without_client_authentication_anyone_is_answered(definitions: Definitions) -> None:
    client = make_app(definitions, ClientAuth.insecure_no_client_auth())
    assert client.post(SERVICE, json=call_body()).status_code == 200


# -- CORS ------------------------------------------------------------------------------------


def test_a_preflight_is_answered_for_any_origin_with_the_headers_a_client_sends(
    secured: TestClient,
) -> None:
    response = secured.options(
        SERVICE,
        headers={
            "Origin": EHR_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert response.status_code in (200, 204)
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    methods = {m.strip() for m in response.headers["Access-Control-Allow-Methods"].split(",")}
    assert {"GET", "POST", "OPTIONS"} <= methods
    allowed = {
        h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")
    }
    assert {"authorization", "content-type"} <= allowed
    assert "Access-Control-Allow-Credentials" not in response.headers


def test_responses_carry_cors_headers_refusals_too(
    secured: TestClient, ehr_key: ec.EllipticCurvePrivateKey
) -> None:
    origin = {"Origin": EHR_ORIGIN}
    answered = secured.post(SERVICE, json=call_body(), headers=origin | bearer(token(ehr_key)))
    assert answered.status_code == 200
    assert answered.headers["Access-Control-Allow-Origin"] == "*"
    refusal = secured.post(SERVICE, json=call_body(), headers=origin)
    assert refusal.status_code == 401
    assert refusal.headers["Access-Control-Allow-Origin"] == "*"
    assert "WWW-Authenticate" in refusal.headers["Access-Control-Expose-Headers"]
    discovery = secured.get("/cds-services", headers=origin)
    assert discovery.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Origin" not in secured.get("/other", headers=origin).headers


def test_cors_can_be_limited_to_listed_origins(definitions: Definitions) -> None:
    client = make_app(definitions, ClientAuth.insecure_no_client_auth(), origins=(EHR_ORIGIN,))
    preflight = {"Access-Control-Request-Method": "POST"}
    ok = client.options(SERVICE, headers={"Origin": EHR_ORIGIN} | preflight)
    assert ok.status_code == 200 and ok.headers["Access-Control-Allow-Origin"] == EHR_ORIGIN
    other = client.options(SERVICE, headers={"Origin": "https://evil.example"} | preflight)
    assert other.status_code == 400
    assert "Access-Control-Allow-Origin" not in other.headers
    posted = client.post(SERVICE, json=call_body(), headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in posted.headers


def test_the_app_serves_cors_on_the_cds_endpoints_only(definitions: Definitions) -> None:
    config = AppConfig(
        client_id="app",
        definitions=definitions,
        public_url=PUBLIC,
        fhir_server="https://ehr.example/fhir",
        cds=CdsSettings(insecure_no_client_auth=True),
    )
    client = TestClient(create_app(config), base_url=PUBLIC)
    preflight = {"Origin": EHR_ORIGIN, "Access-Control-Request-Method": "POST"}
    assert client.options(SERVICE, headers=preflight).status_code == 200
    assert client.post(SERVICE, json=call_body()).status_code == 200
    page = client.get("/", headers={"Origin": EHR_ORIGIN})
    assert "Access-Control-Allow-Origin" not in page.headers


# -- feedback --------------------------------------------------------------------------------

FEEDBACK = f"{SERVICE}/feedback"


def feedback_item(card: str, outcome: str, **fields: Any) -> dict[str, Any]:
    return {"card": card, "outcome": outcome, "outcomeTimestamp": "2026-11-15T10:05:31Z"} | fields


def test_accepted_and_overridden_feedback_is_recorded_without_free_text(
    definitions: Definitions,
    jwks: JwksServer,
    ehr_key: ec.EllipticCurvePrivateKey,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    kept = FeedbackLog(tmp_path / "feedback.jsonl")
    client = make_app(definitions, ClientAuth([TrustedClient(ISS, jwks.url)]), kept)
    answered = client.post(SERVICE, json=call_body(), headers=bearer(token(ehr_key)))
    (card,) = answered.json()["cards"]
    (suggestion,) = card["suggestions"]
    comment = "Patient Quinn Zebulon declined at the visit"
    body = {
        "feedback": [
            feedback_item(
                card["uuid"], "accepted", acceptedSuggestions=[{"id": suggestion["uuid"]}]
            ),
            feedback_item(
                card["uuid"],
                "overridden",
                overrideReason={
                    "reason": {
                        "system": "https://ehr.example/reasons",
                        "code": "declined",
                        "display": "Declined by Quinn",
                    },
                    "userComment": comment,
                },
            ),
        ]
    }
    aud = f"{AUDIENCE}/feedback"
    with caplog.at_level(logging.INFO):
        response = client.post(FEEDBACK, json=body, headers=bearer(token(ehr_key, aud=aud)))
    assert response.status_code == 200, response.text
    assert kept.counts == {"accepted": 1, "overridden": 1}
    lines = [json.loads(line) for line in (tmp_path / "feedback.jsonl").read_text().splitlines()]
    assert [(r["card"], r["outcome"], r["card_kind"], r["client"]) for r in lines] == [
        (card["uuid"], "accepted", "create", ISS),
        (card["uuid"], "overridden", "create", ISS),
    ]
    assert lines[0]["accepted_suggestions"] == [suggestion["uuid"]]
    assert lines[1]["override_reason"] == "https://ehr.example/reasons|declined"
    assert lines[0]["outcome_timestamp"] == "2026-11-15T10:05:31+00:00"
    written = (tmp_path / "feedback.jsonl").read_text() + caplog.text
    assert "Quinn" not in written and comment not in written


@pytest.mark.parametrize(
    ("item", "field"),
    [
        (feedback_item("c1", "accepted"), "acceptedSuggestions"),
        (feedback_item("c1", "ignored"), "outcome"),
        (feedback_item("c1\nforged log line", "overridden"), "card"),
        (feedback_item("c1", "overridden") | {"outcomeTimestamp": "yesterday"}, "outcomeTimestamp"),
        (
            feedback_item("c1", "overridden") | {"outcomeTimestamp": "2026-11-15T10:05:31"},
            "outcomeTimestamp",
        ),
    ],
    ids=["accepted-without-suggestions", "bad-outcome", "bad-card-id", "bad-time", "no-zone"],
)
def test_malformed_feedback_is_refused_naming_the_field(
    definitions: Definitions, item: dict[str, Any], field: str
) -> None:
    kept = FeedbackLog()
    client = make_app(definitions, ClientAuth.insecure_no_client_auth(), kept)
    response = client.post(FEEDBACK, json={"feedback": [item]})
    assert response.status_code == 400
    assert field in response.json()["error"]
    assert not kept.counts


def test_feedback_needs_a_trusted_client_and_a_known_service(
    secured: TestClient, ehr_key: ec.EllipticCurvePrivateKey
) -> None:
    body = {"feedback": [feedback_item("c1", "overridden")]}
    refused(secured.post(FEEDBACK, json=body))
    other = "/cds-services/another/feedback"
    assert secured.post(other, json=body, headers=bearer(token(ehr_key))).status_code == 404
    # Signed for the service itself rather than its feedback endpoint: accepted too.
    assert secured.post(FEEDBACK, json=body, headers=bearer(token(ehr_key))).status_code == 200


# -- fhir-tailor serve's CDS options ---------------------------------------------------------


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The apps ``uvicorn.run`` would have served (nothing listens)."""
    import uvicorn

    apps: list[Any] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: apps.append(app))
    return apps


def serve(*options: str) -> Any:
    from click.testing import CliRunner

    from fhir_tailor.cli import main

    args = ["--as-of", AS_OF.isoformat(), "serve", "--client-id", "app"]
    return CliRunner().invoke(main, [*args, "--fhir-server", "https://ehr.example/fhir", *options])


def test_serve_answers_the_cds_clients_it_is_given_and_refuses_others(
    served: list[Any], ehr_key: ec.EllipticCurvePrivateKey, tmp_path: Path
) -> None:
    keys = tmp_path / "jwks.json"
    keys.write_text(json.dumps({"keys": [jwk_of(ehr_key, KID)]}))
    feedback = tmp_path / "feedback.jsonl"
    result = serve("--cds-client", f"{ISS}={keys}", "--cds-feedback-file", str(feedback))
    assert result.exit_code == 0, result.stderr
    assert "WARNING" not in result.stderr and "refused" not in result.stderr
    base = "http://127.0.0.1:8000"
    client = TestClient(served[0], base_url=base)
    aud = f"{base}{SERVICE}"
    refused(client.post(SERVICE, json=call_body()))
    answered = client.post(SERVICE, json=call_body(), headers=bearer(token(ehr_key, aud=aud)))
    assert answered.status_code == 200
    (card,) = answered.json()["cards"]
    body = {"feedback": [feedback_item(card["uuid"], "overridden")]}
    sent = bearer(token(ehr_key, aud=f"{aud}/feedback"))
    assert client.post(FEEDBACK, json=body, headers=sent).status_code == 200
    assert json.loads(feedback.read_text())["card"] == card["uuid"]


def test_serve_says_loudly_when_cds_calls_go_unauthenticated(served: list[Any]) -> None:
    result = serve("--cds-insecure-no-client-auth")
    assert result.exit_code == 0, result.stderr
    assert "WARNING: --cds-insecure-no-client-auth" in result.stderr
    client = TestClient(served[0], base_url="http://127.0.0.1:8000")
    assert client.post(SERVICE, json=call_body()).status_code == 200


def test_serve_without_cds_clients_refuses_cds_calls_and_says_so(served: list[Any]) -> None:
    result = serve()
    assert result.exit_code == 0, result.stderr
    assert "every CDS call is refused" in result.stderr
    refused(TestClient(served[0]).post(SERVICE, json=call_body()))


def test_serve_limits_cors_to_the_origins_given(served: list[Any]) -> None:
    result = serve("--cds-insecure-no-client-auth", "--cds-cors-origin", EHR_ORIGIN)
    assert result.exit_code == 0, result.stderr
    client = TestClient(served[0])
    preflight = {"Access-Control-Request-Method": "POST"}
    assert client.options(SERVICE, headers={"Origin": EHR_ORIGIN} | preflight).status_code == 200
    other = client.options(SERVICE, headers={"Origin": "https://evil.example"} | preflight)
    assert other.status_code == 400


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--cds-client", "no-separator"], "expected ISS=JWKS_URL_OR_FILE"),
        (["--cds-cors-origin", "ftp://ehr.example"], "must be an https URL"),
        (
            ["--cds-insecure-no-client-auth", "--cds-client", f"{ISS}=https://ehr.example/jwks"],
            "give no --cds-client",
        ),
        (["--cds-client", f"{ISS}=/no/such/file.json"], "No such file"),
    ],
    ids=["no-separator", "bad-origin", "insecure-and-clients", "missing-jwks-file"],
)
def test_serve_refuses_bad_cds_options_naming_them(
    served: list[Any], options: list[str], message: str
) -> None:
    result = serve(*options)
    assert result.exit_code != 0 and not served
    assert message in result.stderr
    assert "Traceback" not in result.stderr
