"""An OpenID Connect issuer for unit tests: an RSA key, its JWKS, and id_tokens it signs."""

from __future__ import annotations

import json
import time
from functools import cache
from typing import Any

import httpx
import jwt
import respx
from cryptography.hazmat.primitives.asymmetric import rsa

ISSUER = "https://auth.test"
JWKS_URI = f"{ISSUER}/jwks"
KID = "key-1"


@cache
def signing_key(name: str = "issuer") -> rsa.RSAPrivateKey:
    """An RSA key per name, made once per test run (2048-bit generation is slow)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwks(key: rsa.RSAPrivateKey | None = None, kid: str = KID) -> dict[str, Any]:
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk((key or signing_key()).public_key()))
    return {"keys": [{**public, "kid": kid, "alg": "RS256", "use": "sig"}]}


def id_token(
    *,
    client_id: str,
    nonce: str | None,
    fhir_user: str | None = None,
    key: rsa.RSAPrivateKey | None = None,
    kid: str = KID,
    algorithm: str = "RS256",
    **claims: Any,
) -> str:
    """An id_token as a SMART authorization server issues it; ``claims`` override or add
    (a value of ``None`` removes the claim)."""
    now = int(time.time())
    payload: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "user-1",
        "aud": client_id,
        "iat": now,
        "exp": now + 300,
        "nonce": nonce,
        "fhirUser": fhir_user,
        **claims,
    }
    payload = {k: v for k, v in payload.items() if v is not None}
    signer: Any = key or signing_key()
    if algorithm.startswith("HS"):
        signer = "a-shared-secret-of-at-least-32-bytes!"
    return jwt.encode(payload, signer, algorithm=algorithm, headers={"kid": kid})


def serve_jwks(router: respx.MockRouter, document: dict[str, Any] | None = None) -> respx.Route:
    return router.get(JWKS_URI).mock(return_value=httpx.Response(200, json=document or jwks()))
