"""The documents the web app fetches from servers it does not control are read under
MAX_DOCUMENT_BYTES: the issuer's OpenID configuration and key set (verifying an id_token) and a
CDS client's JWK Set (verifying its call). A body declared larger is refused before any of it is
read, one without a length once the bytes received pass the limit; the error is the one the
fetch raises for any other failure, naming the URL path and the limit, never the body."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import respx
from bodies import CHUNK, Endless, padded
from cryptography.hazmat.primitives.asymmetric import ec
from idtokens import ISSUER, JWKS_URI, id_token, jwks
from test_cds_security import AUDIENCE, ISS, KID, jwk_of, new_key, token
from test_token_response_limit import refusal
from test_web_identity import CLIENT, NONCE, refused, verify

from fhir_tailor.web.cds_auth import ClientAuth, ClientAuthError, TrustedClient, VerifiedClient
from fhir_tailor.web.fetch import MAX_DOCUMENT_BYTES
from fhir_tailor.web.identity import Clinician

LIMIT = MAX_DOCUMENT_BYTES
OPENID = f"{ISSUER}/.well-known/openid-configuration"
KEY_SET = f"the issuer's key set (jwks_uri) at {JWKS_URI} could not be read: "


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


def signed_in() -> str:
    return id_token(client_id=CLIENT, nonce=NONCE, fhir_user="Practitioner/pr-1")


# --- the id_token's issuer -------------------------------------------------------------------


def test_an_issuers_key_set_up_to_the_limit_is_read_and_a_byte_more_refused(
    router: respx.MockRouter,
) -> None:
    route = router.get(JWKS_URI)
    route.respond(content=padded(jwks(), LIMIT))
    assert verify(signed_in()) == Clinician("Practitioner/pr-1")
    route.respond(content=padded(jwks(), LIMIT + 1))
    assert refused(signed_in()) == KEY_SET + refusal("GET", "/jwks", LIMIT + 1)


def test_an_issuers_key_set_without_a_length_stops_at_the_limit(router: respx.MockRouter) -> None:
    body = Endless(bound=64 * LIMIT)
    router.get(JWKS_URI).respond(stream=body)
    assert refused(signed_in()) == KEY_SET + refusal("GET", "/jwks")
    assert body.taken <= LIMIT + CHUNK


def test_an_openid_configuration_declared_past_the_limit_is_not_read(
    router: respx.MockRouter,
) -> None:
    body = Endless(bound=64 * LIMIT)
    router.get(OPENID).respond(headers={"Content-Length": str(2**31)}, stream=body)
    message = refused(signed_in(), jwks_uri=None)
    refused_document = refusal("GET", "/.well-known/openid-configuration", 2**31)
    assert message == f"the OpenID configuration at {OPENID} could not be read: {refused_document}"
    assert body.taken == 0


# --- a CDS client's JWK Set ------------------------------------------------------------------

CDS_JWKS = "https://ehr.example/jwks.json"
CDS_KEY_SET = f"the JWK Set at {CDS_JWKS} could not be read: "


@pytest.fixture(scope="module")
def ehr_key() -> ec.EllipticCurvePrivateKey:
    return new_key()


def client_call(key: ec.EllipticCurvePrivateKey) -> VerifiedClient:
    """A CDS call signed with ``key``, verified by a service that has not fetched keys yet."""
    auth = ClientAuth([TrustedClient(ISS, CDS_JWKS)])
    headers = {"authorization": f"Bearer {token(key)}"}
    return asyncio.run(auth.verify(headers, [AUDIENCE]))


def call_refused(key: ec.EllipticCurvePrivateKey) -> str:
    with pytest.raises(ClientAuthError) as refused_call:
        client_call(key)
    return str(refused_call.value)


def test_a_cds_clients_key_set_up_to_the_limit_is_read_and_a_byte_more_refused(
    router: respx.MockRouter, ehr_key: ec.EllipticCurvePrivateKey
) -> None:
    key_set = {"keys": [jwk_of(ehr_key, KID)]}
    route = router.get(CDS_JWKS)
    route.respond(content=padded(key_set, LIMIT))
    assert client_call(ehr_key).kid == KID
    route.respond(content=padded(key_set, LIMIT + 1))
    assert call_refused(ehr_key) == CDS_KEY_SET + refusal("GET", "/jwks.json", LIMIT + 1)


def test_a_cds_clients_key_set_without_a_length_stops_at_the_limit(
    router: respx.MockRouter, ehr_key: ec.EllipticCurvePrivateKey
) -> None:
    body = Endless(bound=64 * LIMIT)
    router.get(CDS_JWKS).respond(stream=body)
    assert call_refused(ehr_key) == CDS_KEY_SET + refusal("GET", "/jwks.json")
    assert body.taken <= LIMIT + CHUNK


def test_a_cds_clients_key_set_declared_past_the_limit_is_not_read(
    router: respx.MockRouter, ehr_key: ec.EllipticCurvePrivateKey
) -> None:
    body = Endless(bound=64 * LIMIT)
    router.get(CDS_JWKS).respond(headers={"Content-Length": str(2**31)}, stream=body)
    assert call_refused(ehr_key) == CDS_KEY_SET + refusal("GET", "/jwks.json", 2**31)
    assert body.taken == 0
