"""The SMART app's launch, callback, page and approve routes with Starlette's TestClient.

The FHIR and authorization servers are mocked with respx; the app itself runs for real.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from html import unescape
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import respx
from builders import SNOMED, condition, observation, patient, quantity
from idtokens import ISSUER, JWKS_URI, id_token, serve_jwks
from starlette.testclient import TestClient

from fhir_tailor.definitions import Definitions
from fhir_tailor.resources import (
    CONTENT_DIGEST_URL,
    PARTICIPANT_TYPE,
    content_digest,
    extension_value,
)
from fhir_tailor.web.app import AppConfig, ConfigError, create_app
from fhir_tailor.web.identity import Clinician
from fhir_tailor.web.launch import Grant
from fhir_tailor.web.sessions import COOKIE_NAME, SessionStore

ISS = "https://ehr.test/fhir"
AUTHORIZE = f"{ISSUER}/authorize"
TOKEN_URL = f"{ISSUER}/token"
TOKEN = "SECRET-ACCESS-TOKEN-123"
APP = "http://localhost"
CLIENT_ID = "tailor-app"
PRACTITIONER = "Practitioner/pr-1"


@pytest.fixture
def store() -> SessionStore:
    return SessionStore()


def make_client(definitions: Definitions, store: SessionStore, **options: Any) -> TestClient:
    config = AppConfig(
        client_id=CLIENT_ID,
        definitions=definitions,
        **{"public_url": APP, "allowed_issuers": frozenset({ISS}), **options},
    )
    base = config.public_url
    return TestClient(create_app(config, store), base_url=base, follow_redirects=False)


@pytest.fixture
def mocked() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        router.get(f"{ISS}/.well-known/smart-configuration").mock(
            return_value=httpx.Response(
                200,
                json={
                    "issuer": ISSUER,
                    "jwks_uri": JWKS_URI,
                    "authorization_endpoint": AUTHORIZE,
                    "token_endpoint": TOKEN_URL,
                    "code_challenge_methods_supported": ["S256"],
                },
            )
        )
        serve_jwks(router)
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
    assert len(params["nonce"]) >= 32
    cookie = response.headers["set-cookie"].lower()
    # plain HTTP on loopback: Lax, the only SameSite a cookie without Secure may have
    assert "httponly" in cookie and "samesite=lax" in cookie and "secure" not in cookie


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


def fhir_routes(
    router: respx.MockRouter, name: str = "Ana", clinician: str = "Grace Hopper"
) -> None:
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
    router.get(f"{ISS}/{PRACTITIONER}").mock(
        side_effect=guarded(
            {"resourceType": "Practitioner", "id": "pr-1", "name": [{"text": clinician}]}
        )
    )


def valid_identity(launch_nonce: str, **claims: Any) -> dict[str, Any]:
    """The token response's id_token for a launch's nonce; ``claims`` change it."""
    fields: dict[str, Any] = {"nonce": launch_nonce, "fhir_user": PRACTITIONER, **claims}
    return {"id_token": id_token(client_id=CLIENT_ID, **fields)}


def signed_in(
    definitions: Definitions,
    store: SessionStore,
    mocked: respx.MockRouter,
    *,
    identity: Callable[[str], dict[str, Any]] | None = None,
    expected: int = 303,
    **options: Any,
) -> TestClient:
    """A browser that launched and signed in. ``identity`` makes, from the launch's nonce,
    what the token response says about the user (by default a valid id_token naming the
    Practitioner); ``expected`` is the callback's status."""
    client = make_client(definitions, store, **options)
    params = query(client.get("/launch", params={"iss": ISS, "launch": "L-1"}).headers["location"])
    challenge = params["code_challenge"]
    claims = (identity or valid_identity)(params["nonce"])

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
                **claims,
            },
        )

    mocked.post(TOKEN_URL).mock(side_effect=token)
    before = client.cookies.get(COOKIE_NAME)
    response = client.get("/callback", params={"code": "the-code", "state": params["state"]})
    assert response.status_code == expected, response.text
    if expected != 303:
        return client
    assert response.headers["location"] == "/app"
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


#: The supporting types :func:`fhir_routes`' server declares no way to read, as plans name them.
UNREAD = "QuestionnaireResponse, Encounter, MedicationRequest and ServiceRequest resources"


def test_the_page_says_which_types_the_server_could_not_give(
    definitions: Definitions, store: SessionStore, mocked: respx.MockRouter
) -> None:
    """Issue 15 leftover: the clinician reviewing the proposal sees that it was decided without
    them, as its CarePlan note does."""
    fhir_routes(mocked)
    page = signed_in(definitions, store, mocked).get("/app").text
    warning = re.search(r'<p class="warning">(Drafted without [^<]*)</p>', page)
    assert warning is not None
    assert unescape(warning.group(1)).startswith(
        f"Drafted without the patient's {UNREAD}: the server offers no way to read them"
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


def approve_form(page: str) -> tuple[str, str, list[str]]:
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    shown = re.search(r'name="plan" value="([0-9a-f]+)"', page)
    keys = re.findall(r'name="drop" value="([^"]+)"', page)
    assert csrf and shown and len(keys) > 1
    return csrf.group(1), shown.group(1), keys


def test_approve_writes_and_reports_the_active_careplan(
    definitions: Definitions, store: SessionStore, mocked: respx.MockRouter
) -> None:
    fhir_routes(mocked)
    client = signed_in(definitions, store, mocked)
    csrf, shown, keys = approve_form(client.get("/app").text)
    written: list[dict[str, Any]] = []
    bundles: list[dict[str, Any]] = []

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
        bundles.append(json.loads(request.content))
        written.append(bundles[-1]["entry"][0]["resource"])
        return httpx.Response(
            200, json={"resourceType": "Bundle", "type": "transaction-response", "entry": []}
        )

    mocked.get(f"{ISS}/CarePlan").mock(side_effect=careplans)
    mocked.post(ISS).mock(side_effect=transaction)
    response = client.post("/approve", data={"csrf": csrf, "plan": shown, "drop": [keys[0]]})
    assert response.status_code == 303
    careplan = written[0]
    assert careplan["status"] == "active"
    assert len(careplan["activity"]) == len(keys) - 1
    # the signed-in clinician authored the approved plan, which is part of its digest
    assert careplan["author"] == {"reference": PRACTITIONER}
    assert extension_value(careplan, CONTENT_DIGEST_URL) == content_digest(careplan)
    edited = {**careplan, "author": {"reference": "Practitioner/someone-else"}}
    assert content_digest(edited) != content_digest(careplan)
    (provenance,) = [
        e["resource"] for e in bundles[0]["entry"] if e["resource"]["resourceType"] == "Provenance"
    ]
    agents = {
        a["type"]["coding"][0]["code"]: a["who"]
        for a in provenance["agent"]
        if a["type"]["coding"][0]["system"] == PARTICIPANT_TYPE
    }
    assert agents["author"] == {"reference": PRACTITIONER}
    assert agents["assembler"]["type"] == "Device"
    # the server declares no search for the supporting types: the approved plan still says so
    assert careplan["note"][0]["text"].startswith(f"Drafted without the patient's {UNREAD}")
    after = client.get("/app").text
    assert "Approved: CarePlan/cp9 is active" in after


def test_the_page_says_who_is_signed_in_and_logs_only_the_type(
    definitions: Definitions,
    store: SessionStore,
    mocked: respx.MockRouter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fhir_routes(mocked, clinician="Dr. Grace Hopper")
    # on fhir-tailor's logger itself: a command run earlier in the process may have set its level
    caplog.set_level("DEBUG", logger="fhir_tailor")
    client = signed_in(definitions, store, mocked)
    session = store.get(client.cookies.get(COOKIE_NAME))
    assert session is not None
    assert session.clinician == Clinician(PRACTITIONER, "Dr. Grace Hopper")
    page = client.get("/app").text
    assert "Signed in as Dr. Grace Hopper (Practitioner/pr-1)" in page
    ours = " ".join(r.getMessage() for r in caplog.records if r.name.startswith("fhir_tailor"))
    assert "signed in as Practitioner" in ours and "pr-1" not in ours
    assert "Grace Hopper" not in caplog.text


def test_an_unreadable_practitioner_still_signs_in_by_reference(
    definitions: Definitions, store: SessionStore, mocked: respx.MockRouter
) -> None:
    fhir_routes(mocked)
    mocked.get(f"{ISS}/{PRACTITIONER}").mock(return_value=httpx.Response(403))
    page = signed_in(definitions, store, mocked).get("/app").text
    assert "Signed in as Practitioner/pr-1" in page


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"aud": "another-app"}, "another client"),
        ({"nonce": "the-nonce-of-another-launch"}, "nonce"),
        ({"exp": 1_000_000, "iat": 999_000}, "expired"),
        ({"fhir_user": "https://elsewhere.test/fhir/Practitioner/pr-1"}, "another FHIR server"),
    ],
)
def test_an_invalid_id_token_refuses_the_sign_in(
    definitions: Definitions,
    store: SessionStore,
    mocked: respx.MockRouter,
    claims: dict[str, Any],
    reason: str,
) -> None:
    fhir_routes(mocked)
    client = signed_in(
        definitions,
        store,
        mocked,
        identity=lambda nonce: valid_identity(nonce, **claims),
        expected=403,
    )
    assert client.get("/app").status_code == 401  # nobody was signed in
    session = store.get(client.cookies.get(COOKIE_NAME))
    assert session is not None and session.grant is None


def test_the_refusal_says_why(
    definitions: Definitions, store: SessionStore, mocked: respx.MockRouter
) -> None:
    client = make_client(definitions, store)
    params = query(client.get("/launch", params={"iss": ISS, "launch": "L-1"}).headers["location"])
    mocked.post(TOKEN_URL).mock(
        return_value=httpx.Response(
            200,
            json={
                "access_token": TOKEN,
                "token_type": "Bearer",
                "scope": params["scope"],
                "patient": "p1",
                **valid_identity(params["nonce"], aud="another-app"),
            },
        )
    )
    response = client.get("/callback", params={"code": "c", "state": params["state"]})
    assert response.status_code == 403
    assert "Sign-in refused: the id_token is for another client" in response.text
    assert TOKEN not in response.text


def test_a_token_response_without_id_token_refuses_the_sign_in_when_openid_was_granted(
    definitions: Definitions, store: SessionStore, mocked: respx.MockRouter
) -> None:
    client = signed_in(definitions, store, mocked, identity=lambda _: {}, expected=403)
    assert client.get("/app").status_code == 401


def test_without_openid_granted_the_plan_shows_but_cannot_be_approved(
    definitions: Definitions, store: SessionStore, mocked: respx.MockRouter
) -> None:
    fhir_routes(mocked)
    client = signed_in(
        definitions, store, mocked, identity=lambda _: {"scope": "launch patient/*.read"}
    )
    page = client.get("/app").text
    assert "Signed in without a clinician identity" in page
    csrf, shown, _ = approve_form(page)
    write = mocked.post(ISS)
    response = client.post("/approve", data={"csrf": csrf, "plan": shown})
    assert response.status_code == 403
    assert "must name the clinician who approved it" in response.text
    assert not write.called


# -- iframe launch: cookie and frame-ancestors --------------------------------------------------


def test_over_https_the_cookie_survives_a_cross_site_iframe(
    definitions: Definitions, store: SessionStore, mocked: respx.MockRouter
) -> None:
    client = make_client(definitions, store, public_url="https://app.test")
    response = client.get("/launch", params={"iss": ISS, "launch": "L-1"})
    attributes = {a.strip().lower() for a in response.headers["set-cookie"].split(";")}
    assert {"httponly", "secure", "samesite=none", "partitioned", "path=/"} <= attributes


def test_pages_may_be_framed_only_by_the_trusted_ehrs(
    definitions: Definitions, store: SessionStore
) -> None:
    def ancestors(**options: Any) -> str:
        policy = (
            make_client(definitions, store, **options).get("/").headers["content-security-policy"]
        )
        (directive,) = [d.strip() for d in policy.split(";") if "frame-ancestors" in d]
        return directive

    # by default the origins of the FHIR servers allowed to launch the app
    assert ancestors() == "frame-ancestors https://ehr.test"
    assert (
        ancestors(
            allowed_issuers=frozenset({ISS, "http://127.0.0.1:8080/fhir/"}),
            fhir_server="https://ehr.test:443/other",
        )
        == "frame-ancestors http://127.0.0.1:8080 https://ehr.test"
    )
    # or the ones configured
    configured = frozenset({"https://portal.ehr.test", "https://ehr2.test:8443/page"})
    assert (
        ancestors(frame_ancestors=configured)
        == "frame-ancestors https://ehr2.test:8443 https://portal.ehr.test"
    )
    # any server may launch it, no embedder named: no page may frame it
    assert ancestors(allowed_issuers=frozenset(), allow_any_issuer=True) == "frame-ancestors 'none'"


def test_an_insecure_frame_ancestor_is_a_configuration_error(
    definitions: Definitions, store: SessionStore
) -> None:
    with pytest.raises(ConfigError, match="https"):
        make_client(definitions, store, frame_ancestors=frozenset({"http://ehr.example.org"}))


# -- the EHR allow-list -------------------------------------------------------------------------


def test_the_app_needs_an_allow_list_or_an_explicit_any(
    definitions: Definitions, store: SessionStore, mocked: respx.MockRouter
) -> None:
    with pytest.raises(ConfigError, match="allow_any_issuer"):
        make_client(definitions, store, allowed_issuers=frozenset())
    client = make_client(definitions, store, allowed_issuers=frozenset(), allow_any_issuer=True)
    other = "https://other-ehr.test/fhir"
    mocked.get(f"{other}/.well-known/smart-configuration").mock(
        return_value=httpx.Response(
            200, json={"authorization_endpoint": AUTHORIZE, "token_endpoint": TOKEN_URL}
        )
    )
    assert client.get("/launch", params={"iss": other, "launch": "x"}).status_code == 302
