"""How to reach a FHIR server, as data another process can build its own client from.

A :class:`~fhir_tailor.client.FhirClient` owns an event loop, a connection pool and (for SMART)
a key object, none of which can be pickled or shared across processes. :class:`ServerAccess`
holds the settings instead, so it can travel (in a Spark broadcast) to every executor, which
then opens a client of its own. Secrets stay out of ``repr``: logging it, or Spark showing it,
reveals no token, password, client secret or key.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from .auth import auth_from_settings
from .client import FhirClient
from .retry import RetryPolicy
from .smart import DEFAULT_SCOPE, SigningKey, SmartBackendAuth


@dataclass(frozen=True, slots=True)
class PortableKey:
    """A SMART signing key as PKCS#8 PEM bytes: key objects do not pickle, bytes do, and the
    executors then need no copy of the key file."""

    pem: bytes = field(repr=False)
    kid: str
    algorithm: str

    @classmethod
    def of(cls, key: SigningKey) -> PortableKey:
        pem = key.key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        return cls(pem, key.kid, key.algorithm)

    def load(self) -> SigningKey:
        key = load_pem_private_key(self.pem, password=None)
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise ValueError(f"signing key {self.kid!r} is not an RSA or EC private key")
        return SigningKey(key, self.kid, self.algorithm)


@dataclass(frozen=True, slots=True)
class ServerAccess:
    """A FHIR base URL, its credentials (the options of ``sync --server``) and the throttle.

    ``concurrency`` bounds one client's connection pool, and so its requests in flight;
    ``writers`` is how many such clients may write at once (see ``spark-sync --server``).
    Settings are checked where they are given (the command line, which also connects once);
    here they are only carried.
    """

    base_url: str
    writers: int = 1
    concurrency: int = 4
    timeout: float = 30.0
    retry_budget: float = 120.0
    show_server_diagnostics: bool = False
    token: str | None = field(default=None, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    client_id: str | None = None
    signing_key: PortableKey | None = None
    client_secret: str | None = field(default=None, repr=False)
    token_url: str | None = None
    scope: str | None = None

    def auth(self) -> httpx.Auth | None:
        """A fresh auth object: SMART tokens are fetched and cached per client."""
        if not self.client_id:
            return auth_from_settings(self.token, self.username, self.password)
        return SmartBackendAuth(
            self.base_url,
            self.client_id,
            signing_key=self.signing_key.load() if self.signing_key else None,
            client_secret=self.client_secret,
            token_url=self.token_url or None,
            scope=self.scope or DEFAULT_SCOPE,
            timeout=self.timeout,
        )

    def client(self) -> FhirClient:
        """A client of this process's own, with at most ``concurrency`` connections."""
        return FhirClient(
            self.base_url,
            auth=self.auth(),
            timeout=self.timeout,
            retry=RetryPolicy(total_budget=self.retry_budget),
            max_connections=self.concurrency,
            show_server_diagnostics=self.show_server_diagnostics,
        )
