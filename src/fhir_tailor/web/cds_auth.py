"""Which CDS clients the CDS Hooks service answers: the signed JWT of "Trusting CDS Clients".

CDS Hooks 2.0 (section "Trusting CDS Clients") has the client send, on every call, an
``Authorization: Bearer <JWT>`` it signed with its private key; the service checks it against the
client's public keys (a JWK Set). The checks, in the order of the specification's security best
practices (cds-hooks.org/best-practices, "CDS Services / JWT"):

- the header: ``alg`` an asymmetric algorithm (the specification forbids ``none`` and every
  symmetric one: a shared secret would let the service sign as the client), ``typ`` ``JWT`` and a
  ``kid`` (both REQUIRED);
- ``iss`` is on the allow-list (:class:`TrustedClient`), which names the client's JWK Set: a URL
  or a file (the specification lets the keys be exchanged out of band). A ``jku`` header, when
  the client sends one, must be the configured URL: a service that fetched whatever ``jku`` a
  token names would trust whoever signs a token;
- the signature, against the key of that ``kid`` (the JWK Set fetched with
  :func:`~fhir_tailor.web.fetch.get_json_object`, read up to 1 MiB, cached 5 minutes, refetched at
  most every 30 s for an unknown ``kid``, so rotation works and a stream of made-up ``kid`` values
  cannot turn the service into a load on the client);
- ``aud`` is the URL of the endpoint called (``{public URL}/cds-services/{id}``);
- ``exp``, ``iat`` and ``jti`` are present, ``exp`` not passed, ``iat`` not in the future (60 s
  leeway for clock skew), and the lifetime ``exp - iat`` at most :data:`MAX_LIFETIME` (the best
  practices: "no more than an hour"; the CDS Hooks sandbox signs for 5 minutes);
- ``jti`` not seen before from that ``iss`` (:class:`ReplayGuard`, kept until the token expires).

A refused call gets ``401`` with ``WWW-Authenticate: Bearer`` and no reason: the best practices
ask not to tell a caller what was wrong with its token. The reason goes to the log, without the
token (the log holds ``iss``, ``kid``, ``jti`` and ``tenant`` at most, which the best practices
call safe to log).

The replay guard is in memory: a service run as several processes needs one guard per process,
so a token could be replayed once per process. ``fhir-tailor serve`` is one process.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt

from ..errors import FhirTailorError
from .fetch import DOCUMENT, get_json_object

log = logging.getLogger("fhir_tailor.web.cds_auth")

#: Asymmetric JWS algorithms (RFC 7518 section 3.1, RFC 8037 for EdDSA). CDS Hooks 2.0 forbids
#: ``none`` and the HMAC family, and recommends ES384 and RS384.
ALGORITHMS = (
    "ES256",
    "ES384",
    "ES512",
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "EdDSA",
)
#: The longest lifetime (``exp - iat``, seconds) a client token may have: the CDS Hooks security
#: best practices say a client's tokens "should be no more than an hour".
MAX_LIFETIME = 3600.0
#: Clock skew tolerated on ``exp`` and ``iat``, seconds.
LEEWAY = 60.0
#: How long a fetched JWK Set is used before it is fetched again, seconds.
JWKS_LIFESPAN = 300.0
#: The least time, seconds, between two fetches of a JWK Set for a ``kid`` it lacked.
JWKS_COOLDOWN = 30.0
#: A JWK Set URL that does not answer within this many seconds fails the call.
JWKS_TIMEOUT = 5.0
#: Tokens remembered at most by the replay guard; past it, calls are refused (see ReplayGuard).
MAX_REMEMBERED = 100_000
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
_CHALLENGE = 'Bearer realm="fhir-tailor CDS Hooks", error="invalid_token"'
#: What ``WWW-Authenticate`` says on a refused call (RFC 6750 section 3).
WWW_AUTHENTICATE = {"WWW-Authenticate": _CHALLENGE}


class ClientAuthError(Exception):
    """A call whose client is not trusted; the message is for the log, never for the caller."""


class ConfigError(FhirTailorError, ValueError):
    """A trusted-client setting that cannot work; the message names the setting at fault."""


@dataclass(frozen=True, slots=True)
class TrustedClient:
    """A CDS client the service answers: its ``iss`` and where its public keys are.

    ``jwks`` is an ``https`` URL (``http`` on loopback only) or the path of a JWK Set file.
    """

    iss: str
    jwks: str

    @classmethod
    def parse(cls, setting: str) -> TrustedClient:
        """``ISS=JWKS`` (split at the first ``=``: an ``iss`` is a URL without a query)."""
        iss, sep, jwks = setting.partition("=")
        if not sep or not iss.strip() or not jwks.strip():
            raise ConfigError(f"CDS client {setting[:80]!r}: expected ISS=JWKS_URL_OR_FILE")
        return cls(iss.strip(), jwks.strip())

    @property
    def is_url(self) -> bool:
        return self.jwks.startswith(("https://", "http://"))


@dataclass(frozen=True, slots=True)
class VerifiedClient:
    """Who called, as the verified token says: safe to log (no secret, no PHI)."""

    iss: str
    kid: str
    jti: str
    tenant: str | None = None


class _KeySource:
    """The public keys of one trusted client, by ``kid``: its JWK Set file, or its JWK Set URL
    fetched with :func:`~fhir_tailor.web.fetch.get_json_object` (so read up to
    :data:`~fhir_tailor.web.fetch.MAX_DOCUMENT_BYTES`), kept :data:`JWKS_LIFESPAN` seconds and
    fetched again for a ``kid`` it lacks at most every :data:`JWKS_COOLDOWN` seconds."""

    def __init__(self, client: TrustedClient) -> None:
        self.client = client
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched = -math.inf  # time.monotonic() of the last fetch
        self._fetching = asyncio.Lock()  # one fetch at a time, whatever the calls in flight
        if client.is_url:
            _check_jwks_url(client)
        else:
            self._keys = _jwks_file(client)

    async def key(self, kid: str, jku: object) -> jwt.PyJWK:
        """The key ``kid`` names, fetching the JWK Set when it is due."""
        if not self.client.is_url:
            # Keys exchanged out of band: a jku in the token is not followed.
            found = self._keys.get(kid)
            if found is None:
                raise ClientAuthError(f"kid {kid[:64]!r} is not in the JWK Set file")
            return found
        if jku is not None and jku != self.client.jwks:
            raise ClientAuthError("jku is not the JWK Set URL configured for this iss")
        async with self._fetching:
            if time.monotonic() - self._fetched >= JWKS_LIFESPAN:
                await self._fetch()
            found = self._keys.get(kid)
            if found is None and time.monotonic() - self._fetched >= JWKS_COOLDOWN:
                await self._fetch()
                found = self._keys.get(kid)
        if found is None:
            raise ClientAuthError(f"no usable key {kid[:64]!r} in the JWK Set")
        return found

    async def _fetch(self) -> None:
        url = self.client.jwks
        headers = {"User-Agent": "fhir-tailor"}
        async with httpx.AsyncClient(timeout=JWKS_TIMEOUT, headers=headers) as http:
            document = await get_json_object(
                http, url, what="the JWK Set", error=ClientAuthError, wording=DOCUMENT
            )
        try:
            self._keys = _signing_keys(document)
        except (ValueError, jwt.PyJWTError) as exc:
            problem = type(exc).__name__
            raise ClientAuthError(f"the JWK Set at {url} is not usable: {problem}") from None
        self._fetched = time.monotonic()


class ReplayGuard:
    """``jti`` values seen, per ``iss``, until their token expires.

    Bounded: were :data:`MAX_REMEMBERED` unexpired tokens ever held (thousands of calls a
    second for an hour), new ones are refused rather than the oldest forgotten, since forgetting
    would let those be replayed.
    """

    def __init__(self, limit: int = MAX_REMEMBERED) -> None:
        self._seen: dict[tuple[str, str], float] = {}
        self._expiries: list[tuple[float, tuple[str, str]]] = []
        self._limit = limit
        self._lock = threading.Lock()

    def first_use(self, iss: str, jti: str, until: float, now: float) -> bool:
        """Remember ``jti`` of ``iss`` until ``until``; ``False`` if it was seen already."""
        key = (iss, jti)
        with self._lock:
            while self._expiries and self._expiries[0][0] < now:
                _, gone = heapq.heappop(self._expiries)
                self._seen.pop(gone, None)
            if key in self._seen:
                return False
            if len(self._seen) >= self._limit:
                raise ClientAuthError("too many unexpired tokens remembered; refused")
            self._seen[key] = until
            heapq.heappush(self._expiries, (until, key))
            return True


class ClientAuth:
    """Verifies the client JWT of each CDS Hooks call (see the module docstring).

    ``ClientAuth(())`` trusts no client: every call is refused. :meth:`insecure` trusts every
    caller, for local development only.
    """

    def __init__(
        self,
        clients: Iterable[TrustedClient],
        *,
        max_lifetime: float = MAX_LIFETIME,
        clock: Callable[[], float] = time.time,
        insecure: bool = False,
    ) -> None:
        self.insecure = insecure
        self.max_lifetime = max_lifetime
        self._clock = clock
        self._sources: dict[str, _KeySource] = {}
        for client in clients:
            if client.iss in self._sources:
                raise ConfigError(f"CDS client {client.iss!r} is named twice")
            self._sources[client.iss] = _KeySource(client)
        self._replays = ReplayGuard()

    @classmethod
    def insecure_no_client_auth(cls) -> ClientAuth:
        """Answer every caller, unauthenticated: for local development only."""
        return cls((), insecure=True)

    @property
    def issuers(self) -> frozenset[str]:
        return frozenset(self._sources)

    async def verify(self, headers: Mapping[str, str], audience: Iterable[str]) -> VerifiedClient:
        """The client behind a call's ``Authorization`` header, or :class:`ClientAuthError`.

        ``audience`` lists the URLs the token's ``aud`` may name (the endpoint called).
        """
        header = headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ClientAuthError("no bearer token")
        token = token.strip()
        try:
            head = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise ClientAuthError("not a JWT") from None
        alg, kid, typ = head.get("alg"), head.get("kid"), head.get("typ")
        if alg not in ALGORITHMS:
            raise ClientAuthError(f"alg {str(alg)[:16]!r} is not an asymmetric algorithm")
        if not isinstance(kid, str) or not kid:
            raise ClientAuthError("no kid in the JWT header")
        if not isinstance(typ, str) or typ.upper() != "JWT":
            raise ClientAuthError("typ is not JWT")
        iss = unverified.get("iss")
        source = self._sources.get(iss) if isinstance(iss, str) else None
        if source is None:
            raise ClientAuthError(f"iss {str(iss)[:80]!r} is not a trusted CDS client")
        key = await source.key(kid, head.get("jku"))
        claims = self._claims(token, key, str(alg), str(iss), list(audience))
        jti = claims["jti"]
        if not self._replays.first_use(str(iss), jti, float(claims["exp"]) + LEEWAY, self._now()):
            raise ClientAuthError(f"jti {jti[:64]!r} was used before (replay)")
        tenant = claims.get("tenant")
        return VerifiedClient(str(iss), kid, jti, tenant if isinstance(tenant, str) else None)

    def _claims(
        self, token: str, key: jwt.PyJWK, alg: str, iss: str, audience: list[str]
    ) -> dict[str, Any]:
        now = self._now()
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key.key,
                algorithms=[alg],
                audience=audience,
                issuer=iss,
                leeway=LEEWAY,
                options={
                    "require": ["iss", "aud", "exp", "iat", "jti"],
                    # PyJWT reads the clock itself; ours is checked below (tests move it).
                    "verify_iat": False,
                    "verify_exp": False,
                    "verify_nbf": False,
                },
            )
        except jwt.InvalidAudienceError:
            raise ClientAuthError("aud is not this endpoint's URL") from None
        except jwt.InvalidSignatureError:
            raise ClientAuthError("bad signature") from None
        except jwt.PyJWTError as exc:
            raise ClientAuthError(f"invalid token: {type(exc).__name__}") from None
        exp, iat, jti = claims["exp"], claims["iat"], claims["jti"]
        if not all(isinstance(t, int | float) and not isinstance(t, bool) for t in (exp, iat)):
            raise ClientAuthError("exp or iat is not a number")
        if not isinstance(jti, str) or not jti:
            raise ClientAuthError("jti is not a string")
        if exp + LEEWAY < now:
            raise ClientAuthError("expired")
        if iat - LEEWAY > now:
            raise ClientAuthError("issued in the future")
        if exp - iat > self.max_lifetime:
            raise ClientAuthError(f"lifetime {exp - iat:.0f} s is over {self.max_lifetime:.0f} s")
        return claims

    def _now(self) -> float:
        return self._clock()


def _check_jwks_url(client: TrustedClient) -> None:
    try:
        url = httpx.URL(client.jwks)
    except httpx.InvalidURL:
        raise ConfigError(f"CDS client {client.iss!r}: JWK Set URL is not a URL") from None
    if not url.host or (url.scheme != "https" and url.host not in _LOOPBACK):
        raise ConfigError(
            f"CDS client {client.iss!r}: the JWK Set URL must be https (http on loopback only)"
        )


def _jwks_file(client: TrustedClient) -> dict[str, jwt.PyJWK]:
    path = Path(client.jwks)
    try:
        usable = _signing_keys(json.loads(path.read_text(encoding="utf-8")))
    except OSError as exc:
        raise ConfigError(f"CDS client {client.iss!r}: {path}: {exc.strerror}") from None
    except (ValueError, jwt.PyJWTError) as exc:
        raise ConfigError(
            f"CDS client {client.iss!r}: {path} is not a JWK Set ({type(exc).__name__})"
        ) from None
    if not usable:
        raise ConfigError(f"CDS client {client.iss!r}: {path} has no signing key with a kid")
    return usable


def _signing_keys(document: object) -> dict[str, jwt.PyJWK]:
    """The signing keys of a JWK Set by ``kid`` (those without a kid cannot be named)."""
    if not isinstance(document, dict):
        raise ValueError("a JWK Set is a JSON object")
    keys = jwt.PyJWKSet.from_dict(document).keys
    return {k.key_id: k for k in keys if k.key_id and k.public_key_use in ("sig", None)}
