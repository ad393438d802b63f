"""id_token verification: signature against the issuer's JWKS, iss, aud, exp, nonce, fhirUser.

The issuer's key set is served by respx; tokens are signed with real RSA keys by PyJWT.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest
import respx
from idtokens import ISSUER, JWKS_URI, id_token, jwks, serve_jwks, signing_key

from fhir_tailor.web.identity import (
    Clinician,
    IdentityError,
    KeySets,
    clinician_reference,
    display_name,
    identify,
    verify_id_token,
)
from fhir_tailor.web.launch import Grant, PendingLaunch, SmartEndpoints

CLIENT = "tailor-app"
NONCE = "nonce-of-this-launch"
FHIR = "https://ehr.test/fhir"


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


def verify(
    token: str,
    *,
    jwks_uri: str | None = JWKS_URI,
    nonce: str = NONCE,
    key_sets: KeySets | None = None,
) -> Clinician | None:
    return asyncio.run(
        verify_id_token(
            token,
            issuer=ISSUER,
            jwks_uri=jwks_uri,
            client_id=CLIENT,
            nonce=nonce,
            fhir_base=FHIR,
            key_sets=key_sets or KeySets(),
        )
    )


def refused(token: str, **options: object) -> str:
    with pytest.raises(IdentityError) as caught:
        verify(token, **options)  # type: ignore[arg-type]
    assert token not in str(caught.value)
    return str(caught.value)


def test_a_valid_token_names_the_practitioner(router: respx.MockRouter) -> None:
    serve_jwks(router)
    token = id_token(client_id=CLIENT, nonce=NONCE, fhir_user="Practitioner/pr-1")
    assert verify(token) == Clinician("Practitioner/pr-1")


def test_an_absolute_fhir_user_on_the_same_server_becomes_relative(
    router: respx.MockRouter,
) -> None:
    serve_jwks(router)
    token = id_token(client_id=CLIENT, nonce=NONCE, fhir_user=f"{FHIR}/PractitionerRole/r-9")
    assert verify(token) == Clinician("PractitionerRole/r-9")


def test_a_token_without_fhir_user_is_valid_but_names_nobody(router: respx.MockRouter) -> None:
    serve_jwks(router)
    assert verify(id_token(client_id=CLIENT, nonce=NONCE)) is None


def test_a_bad_signature_is_refused(router: respx.MockRouter) -> None:
    serve_jwks(router)  # publishes the issuer's key; the token is signed with another
    token = id_token(
        client_id=CLIENT, nonce=NONCE, fhir_user="Practitioner/pr-1", key=signing_key("forger")
    )
    assert "signature" in refused(token)


def test_a_token_for_another_client_is_refused(router: respx.MockRouter) -> None:
    serve_jwks(router)
    token = id_token(client_id="another-app", nonce=NONCE, fhir_user="Practitioner/pr-1")
    assert "another client" in refused(token)


def test_an_expired_token_is_refused(router: respx.MockRouter) -> None:
    serve_jwks(router)
    now = int(time.time())
    token = id_token(
        client_id=CLIENT,
        nonce=NONCE,
        fhir_user="Practitioner/pr-1",
        iat=now - 3600,
        exp=now - 600,  # beyond the minute of leeway
    )
    assert "expired" in refused(token)


def test_a_token_with_another_launchs_nonce_is_refused(router: respx.MockRouter) -> None:
    serve_jwks(router)
    token = id_token(client_id=CLIENT, nonce="another-launch", fhir_user="Practitioner/pr-1")
    assert "nonce" in refused(token)
    assert "nonce" in refused(id_token(client_id=CLIENT, nonce=None))


def test_a_token_from_another_issuer_is_refused(router: respx.MockRouter) -> None:
    serve_jwks(router)
    token = id_token(client_id=CLIENT, nonce=NONCE, iss="https://other-issuer.test")
    assert "iss" in refused(token)


def test_a_fhir_user_on_another_server_is_refused(router: respx.MockRouter) -> None:
    serve_jwks(router)
    for elsewhere in (
        "https://other-ehr.test/fhir/Practitioner/pr-1",
        "http://ehr.test/fhir/Practitioner/pr-1",  # same host, other scheme
        "https://ehr.test:8443/fhir/Practitioner/pr-1",  # other port
        "https://ehr.test/other/Practitioner/pr-1",  # other base path
    ):
        token = id_token(client_id=CLIENT, nonce=NONCE, fhir_user=elsewhere)
        assert "another FHIR server" in refused(token), elsewhere


def test_a_user_who_is_not_a_clinician_is_refused(router: respx.MockRouter) -> None:
    serve_jwks(router)
    token = id_token(client_id=CLIENT, nonce=NONCE, fhir_user="Patient/p1")
    assert "for clinicians" in refused(token)


def test_unsigned_and_shared_secret_tokens_are_refused_before_any_fetch(
    router: respx.MockRouter,
) -> None:
    route = serve_jwks(router)
    hs256 = id_token(client_id=CLIENT, nonce=NONCE, algorithm="HS256")
    assert "asymmetric" in refused(hs256)
    assert "not a signed JWT" in refused("not-a-jwt")
    assert not route.called


def test_a_rotated_key_is_fetched_again_once(router: respx.MockRouter) -> None:
    old, new = signing_key("issuer"), signing_key("rotated")
    published = [jwks(old, "key-1")]
    route = router.get(JWKS_URI).mock(side_effect=lambda _: httpx.Response(200, json=published[0]))
    key_sets = KeySets()
    verify(id_token(client_id=CLIENT, nonce=NONCE, key=old, kid="key-1"), key_sets=key_sets)
    verify(id_token(client_id=CLIENT, nonce=NONCE, key=old, kid="key-1"), key_sets=key_sets)
    assert route.call_count == 1  # cached
    published[0] = jwks(new, "key-2")  # the issuer rotates its key
    verify(id_token(client_id=CLIENT, nonce=NONCE, key=new, kid="key-2"), key_sets=key_sets)
    assert route.call_count == 2
    unknown = id_token(client_id=CLIENT, nonce=NONCE, key=new, kid="key-3")
    assert "does not publish" in refused(unknown, key_sets=key_sets)
    assert route.call_count == 3  # one fresh fetch for the unknown key, no more


def test_without_jwks_uri_the_openid_configuration_names_it(router: respx.MockRouter) -> None:
    discovery = router.get(f"{ISSUER}/.well-known/openid-configuration").mock(
        return_value=httpx.Response(200, json={"issuer": ISSUER, "jwks_uri": JWKS_URI})
    )
    serve_jwks(router)
    token = id_token(client_id=CLIENT, nonce=NONCE, fhir_user="Practitioner/pr-1")
    assert verify(token, jwks_uri=None) == Clinician("Practitioner/pr-1")
    assert discovery.called


def test_an_issuer_publishing_no_keys_refuses_the_sign_in(router: respx.MockRouter) -> None:
    router.get(f"{ISSUER}/.well-known/openid-configuration").mock(return_value=httpx.Response(404))
    token = id_token(client_id=CLIENT, nonce=NONCE)
    assert "HTTP 404" in refused(token, jwks_uri=None)


def pending(scope: str = "launch openid fhirUser patient/*.read") -> PendingLaunch:
    endpoints = SmartEndpoints(f"{ISSUER}/authorize", f"{ISSUER}/token", ISSUER, JWKS_URI)
    return PendingLaunch(FHIR, endpoints, "https://app.test/callback", scope, "verifier", NONCE)


def grant(scope: str, id_token: str | None) -> Grant:
    return Grant(FHIR, "access", "p1", scope, None, id_token)


def test_a_missing_id_token_refuses_the_sign_in_when_openid_was_granted() -> None:
    with pytest.raises(IdentityError, match="granted openid but sent no id_token"):
        asyncio.run(
            identify(
                grant("openid fhirUser", None), pending(), client_id=CLIENT, key_sets=KeySets()
            )
        )


def test_without_openid_granted_the_user_is_unknown() -> None:
    found = asyncio.run(
        identify(grant("patient/*.read", None), pending(), client_id=CLIENT, key_sets=KeySets())
    )
    assert found is None


def test_identify_checks_the_token_against_the_launch(router: respx.MockRouter) -> None:
    serve_jwks(router)
    token = id_token(client_id=CLIENT, nonce=NONCE, fhir_user="Practitioner/pr-1")
    found = asyncio.run(
        identify(grant("openid fhirUser", token), pending(), client_id=CLIENT, key_sets=KeySets())
    )
    assert found == Clinician("Practitioner/pr-1")


def test_references_and_names() -> None:
    assert clinician_reference("Practitioner/a.b-1", FHIR) == "Practitioner/a.b-1"
    with pytest.raises(IdentityError):
        clinician_reference("Practitioner/a/_history/2", FHIR)
    with pytest.raises(IdentityError):
        clinician_reference(42, FHIR)
    practitioner = {
        "resourceType": "Practitioner",
        "name": [{"prefix": ["Dr."], "given": ["Ada"], "family": "Lovelace"}],
    }
    assert display_name(practitioner) == "Dr. Ada Lovelace"
    role = {"resourceType": "PractitionerRole", "practitioner": {"display": "Ada Lovelace"}}
    assert display_name(role) == "Ada Lovelace"
    assert display_name({"resourceType": "Practitioner"}) is None
    assert "Lovelace" not in repr(Clinician("Practitioner/1", "Ada Lovelace"))
