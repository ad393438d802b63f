"""ServerAccess travels to other processes (pickled, as in a Spark broadcast) without leaking."""

from __future__ import annotations

import pickle

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from fhir_tailor.access import PortableKey, ServerAccess
from fhir_tailor.auth import BearerTokenAuth
from fhir_tailor.smart import SigningKey, SmartBackendAuth

BASE = "https://fhir.example.org/r4"
SECRETS = ("tok-s3cr3t", "pw-s3cr3t", "cs-s3cr3t")


@pytest.mark.parametrize(
    ("key", "algorithm"),
    [
        (rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS384"),
        (ec.generate_private_key(ec.SECP384R1()), "ES384"),
    ],
    ids=["rsa", "ec"],
)
def test_a_signing_key_survives_pickling(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, algorithm: str
) -> None:
    access = ServerAccess(
        BASE, client_id="tailor", signing_key=PortableKey.of(SigningKey(key, "k1", algorithm))
    )
    travelled = pickle.loads(pickle.dumps(access))
    assert travelled.signing_key is not None
    loaded = travelled.signing_key.load()
    assert (loaded.kid, loaded.algorithm) == ("k1", algorithm)
    assert loaded.key.private_numbers() == key.private_numbers()
    auth = travelled.auth()
    assert isinstance(auth, SmartBackendAuth)
    assert auth.method == "private_key_jwt"


def test_repr_shows_no_secret() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    access = ServerAccess(
        BASE,
        token=SECRETS[0],
        username="svc",
        password=SECRETS[1],
        client_id="tailor",
        client_secret=SECRETS[2],
        signing_key=PortableKey.of(SigningKey(key, "k1", "ES384")),
    )
    shown = repr(access)
    assert "svc" in shown and "k1" in shown
    assert not any(secret in shown for secret in SECRETS)
    assert "PRIVATE KEY" not in shown


def test_auth_is_built_from_the_settings() -> None:
    assert isinstance(ServerAccess(BASE, token=SECRETS[0]).auth(), BearerTokenAuth)
    assert ServerAccess(BASE).auth() is None
    smart = ServerAccess(BASE, client_id="tailor", client_secret=SECRETS[2]).auth()
    assert isinstance(smart, SmartBackendAuth)
    assert smart.method == "client_secret_basic"
