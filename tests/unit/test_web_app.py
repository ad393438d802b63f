"""The SMART app's launch, callback, page and approve routes with Starlette's TestClient.

The FHIR and authorization servers are mocked with respx; the app itself runs for real.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import respx
from builders import SNOMED, condition, observation, patient, quantity
from starlette.testclient import TestClient

from fhir_tailor.definitions import Definitions
from fhir_tailor.web.app import AppConfig, create_app
from fhir_tailor.web.launch import Grant
from fhir_tailor.web.sessions import COOKIE_NAME, SessionStore

ISS = "https://ehr.test/fhir"
AUTHORIZE = "https://auth.test/authorize"
TOKEN_URL = "https://auth.test/token"
TOKEN = "SECRET-ACCESS-TOKEN-123"
APP = "http://localhost"


@pytest.fixture
def store() -> SessionStore:
    return SessionStore()


def make_client(definitions: Definitions, store: SessionStore, **options: Any) -> TestClient:
    config = AppConfig(
        client_id="tailor-app",
        definitions=definitions,
        public_url=APP,
        **{"allowed_issuers": frozenset({ISS}), **options},
    )
    return TestClient(create_app(config, store), base_url=APP, follow_redirects=False)


@pytest.fixture
def mocked() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        router.get(f"{ISS}/.well-known/smart-configuration").mock(
            return_value=httpx.Response(
                200,
                json={
                    "authorization_endpoint": AUTHORIZE,
                    "token_endpoint": TOKEN_URL,
                    "code_challenge_methods_supported": ["S256"],
                },
            )
        )
        yield router


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def test_ehr_launch_redirects_with_pkce_s256_aud_and_launch(
    definitions: Definitions, store: SessionStore, mocked: respx.MockRouter
) -> None:
    client = make_client(definitions, store)
    response = client.get("/launch", params={"iss": ISS, "launch": "L-1"})
    assert response.status_code == 302
    location = response.headers["location"]
    assert location.startswith(AUTHORIZE + "?")
    params = query(location)
    assert params["response_type"] == "code"
    assert params["client_id"] == "tailor-app"
    assert params["redirect_uri"] == f"{APP}/callback"
    assert params["code_challenge_method"] == "S256"
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", params["code_challenge"])
    assert (params["aud"], params["launch"]) == (ISS, "L-1")
    assert params["scope"].split()[:3] == ["launch", "openid", "fhirUser"]
    assert "patient/*.read" in params["scope"] and "patient/CarePlan.write" in params["scope"]
    assert len(params["state"]) >= 32
    cookie = response.headers["set-cookie"]
    assert "httponly" in cookie.lower() and "samesite=lax" in cookie.lower()


def test_standalone_launch_uses_the_configured_server_and_v2_scopes(
    definitions: Definitions, store: SessionStore, mocked: respx.MockRouter
) -> None:
    client = make_client(definitions, store, fhir_server=ISS, scope_syntax="v2")
    params = query(client.get("/launch").headers["location"])
    scopes = params["scope"].split()
    assert "launch/patient" in scopes and "launch" not in scopes
    assert {"patient/*.rs", "patient/CarePlan.cu", "patient/Goal.cu"} <= set(scopes)
    assert "launch" not in params


def test_a_launch_without_iss_is_refused(
    definitions: Definitions, store: SessionStore, mocked: respx.MockRouter
) -> None:
    client = make_client(definitions, store)
    assert client.get("/launch").status_code == 400
    assert client.get("/launch", params={"launch": "L-1"}).status_code == 400
    assert not mocked.calls


def test_a_launch_from_an_unknown_server_is_refused_before_any_call(
    definitions: Definitions, store: SessionStore, mocked: respx.MockRouter
) -> None:
    client = make_client(definitions, store)
    response = client.get("/launch", params={"iss": "https://evil.test/fhir", "launch": "x"})
    assert response.status_code == 400
    assert not mocked.calls


def test_a_server_without_pkce_s256_is_refused(
    definitions: Definitions, store: SessionStore, mocked: respx.MockRouter
) -> None:
    mocked.get(f"{ISS}/.well-known/smart-configuration").mock(
        return_value=httpx.Response(
            200,
            json={
                "authorization_endpoint": AUTHORIZE,
                "token_endpoint": TOKEN_URL,
                "code_challenge_methods_supported": ["plain"],
            },
        )
    )
    response = make_client(definitions, store).get("/launch", params={"iss": ISS, "launch": "x"})
    assert response.status_code == 502
    assert "S256" in response.text


def test_a_callback_with_a_foreign_state_is_rejected(
    definitions: Definitions, store: SessionStore, mocked: respx.MockRouter
) -> None:
    token_route = mocked.post(TOKEN_URL)
    client = make_client(definitions, store)
    client.get("/launch", params={"iss": ISS, "launch": "L-1"})
    response = client.get("/callback", params={"code": "c", "state": "not-the-state"})
    assert response.status_code == 400
    assert not token_route.called
    # without any session at all, too
    fresh = make_client(definitions, store)
    assert fresh.get("/callback", params={"code": "c", "state": "x"}).status_code == 400


def fhir_routes(router: respx.MockRouter, name: str = "Ana") -> None:
    """The patient's data on the mocked FHIR server, served only with the launch's token."""

    def guarded(payload: dict[str, Any]) -> Any:
        def respond(request: httpx.Request) -> httpx.Response:
            if request.headers.get("authorization") != f"Bearer {TOKEN}":
                return httpx.Response(401)
            return httpx.Response(200, json=payload)

        return respond

    def bundle(*resources: dict[str, Any]) -> dict[str, Any]:
        return {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [{"resource": r} for r in resources],
        }

    capability = {"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1", "rest": []}
    router.get(f"{ISS}/metadata").mock(side_effect=guarded(capability))
    router.get(f"{ISS}/Patient/p1").mock(
        side_effect=guarded(patient("p1", name=[{"given": [name], "family": "Test"}]))
    )
    router.get(f"{ISS}/Condition").mock(
        side_effect=guarded(bundle(condition("c1", SNOMED, "44054006")))
    )
    router.get(f"{ISS}/Observation").mock(
        side_effect=guarded(bundle(observation("o1", "4548-4", **quantity(9.6, "%"))))
    )


def signed_in(
    definitions: Definitions, store: SessionStore, mocked: respx.MockRouter
) -> TestClient:
    client = make_client(definitions, store)
    params = query(client.get("/launch", params={"iss": ISS, "launch": "L-1"}).headers["location"])
    challenge = params["code_challenge"]

    def token(request: httpx.Request) -> httpx.Response:
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        digest = hashlib.sha256(form["code_verifier"].encode()).digest()
        assert base64.urlsafe_b64encode(digest).rstrip(b"=").decode() == challenge
        assert (form["code"], form["grant_type"]) == ("the-code", "authorization_code")
        assert form["redirect_uri"] == f"{APP}/callback"
        return httpx.Response(
            200,
            json={
                "access_token": TOKEN,
                "token_type": "Bearer",
                "expires_in": 300,
                "scope": params["scope"],
                "patient": "p1",
            },
        )

    mocked.post(TOKEN_URL).mock(side_effect=token)
    before = client.cookies.get(COOKIE_NAME)
    response = client.get("/callback", params={"code": "the-code", "state": params["state"]})
    assert response.status_code == 303 and response.headers["location"] == "/app"
    assert TOKEN not in json.dumps(dict(response.headers))
    assert client.cookies.get(COOKIE_NAME) not in (None, before)  # rotated at sign-in
    return client


def test_the_code_is_exchanged_with_the_verifier_and_the_token_stays_server_side(
    definitions: Definitions, store: SessionStore, mocked: respx.MockRouter
) -> None:
    fhir_routes(mocked)
    client = signed_in(definitions, store, mocked)
    session = store.get(client.cookies.get(COOKIE_NAME))
    assert session is not None and isinstance(session.grant, Grant)
    assert session.grant.access_token == TOKEN and session.grant.patient == "p1"
    assert TOKEN not in repr(session.grant)
    page = client.get("/app")
    assert page.status_code == 200
    assert TOKEN not in page.text
    assert TOKEN not in client.cookies.get(COOKIE_NAME, "")
    assert page.headers["cache-control"] == "no-store"


def test_the_page_links_findings_to_their_sources_and_escapes_text(
    definitions: Definitions, store: SessionStore, mocked: respx.MockRouter
) -> None:
    fhir_routes(mocked, name="<script>alert(1)</script>")
    page = signed_in(definitions, store, mocked).get("/app").text
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert '<html lang="en">' in page
    assert page.count("<h1") == 1
    assert f'href="{ISS}/Condition/c1"' in page
    assert f'href="{ISS}/Observation/o1"' in page
    boxes = re.findall(r'<input type="checkbox" id="(drop-\d+)"', page)
    assert boxes and all(f'<label for="{box}">' in page for box in boxes)
    assert 'href="/static/app.css"' in page and "http" not in page.split("<body>")[0].replace(
        "http-equiv", ""
    )


def test_approve_needs_the_session_csrf_token(
    definitions: Definitions, store: SessionStore, mocked: respx.MockRouter
) -> None:
    fhir_routes(mocked)
    client = signed_in(definitions, store, mocked)
    page = client.get("/app").text
    shown = re.search(r'name="plan" value="([0-9a-f]+)"', page)
    assert shown is not None
    write = mocked.post(ISS)
    response = client.post("/approve", data={"csrf": "forged", "plan": shown.group(1)})
    assert response.status_code == 403
    assert not write.called


def test_approve_writes_and_reports_the_active_careplan(
    definitions: Definitions, store: SessionStore, mocked: respx.MockRouter
) -> None:
    fhir_routes(mocked)
    client = signed_in(definitions, store, mocked)
    page = client.get("/app").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    shown = re.search(r'name="plan" value="([0-9a-f]+)"', page)
    keys = re.findall(r'name="drop" value="([^"]+)"', page)
    assert csrf and shown and len(keys) > 1
    written: list[dict[str, Any]] = []

    def careplans(request: httpx.Request) -> httpx.Response:
        entries = (
            [
                {
                    "resource": {
                        **written[0],
                        "id": "cp9",
                        "meta": {**written[0]["meta"], "versionId": "1"},
                    }
                }
            ]
            if written
            else []
        )
        return httpx.Response(
            200, json={"resourceType": "Bundle", "type": "searchset", "entry": entries}
        )

    def transaction(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        written.append(json.loads(request.content)["entry"][0]["resource"])
        return httpx.Response(
            200, json={"resourceType": "Bundle", "type": "transaction-response", "entry": []}
        )

    mocked.get(f"{ISS}/CarePlan").mock(side_effect=careplans)
    mocked.post(ISS).mock(side_effect=transaction)
    response = client.post(
        "/approve",
        data={"csrf": csrf.group(1), "plan": shown.group(1), "drop": [keys[0]]},
    )
    assert response.status_code == 303
    assert written[0]["status"] == "active"
    assert len(written[0]["activity"]) == len(keys) - 1
    after = client.get("/app").text
    assert "Approved: CarePlan/cp9 is active" in after


def test_the_cds_hooks_service_is_mounted_and_links_to_the_launch(
    definitions: Definitions, store: SessionStore
) -> None:
    response = make_client(definitions, store).get("/cds-services")
    assert response.status_code == 200
    assert response.json()["services"]
