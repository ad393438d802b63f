"""SMART Backend Services authorization: an OAuth2 ``client_credentials`` grant for a system.

:class:`SmartBackendAuth` is an :class:`httpx.Auth`, so :class:`~fhir_tailor.client.FhirClient`
uses it like any other scheme. Its auth flow yields the extra requests itself (discovery of
the token endpoint, the token request) through the same ``httpx.AsyncClient``, so they share its
transport, TLS settings and connection pool, and tests can mock them with the FHIR server.

The client proves who it is either with ``private_key_jwt`` (a short-lived JWT signed RS384 or
ES384 with a key whose public half the server has registered; the SMART default) or with
``client_secret_basic`` (a shared secret, for servers that only support that).

Credentials are guarded on three fronts:

* the token request goes only to the token endpoint, which must be HTTPS (or loopback);
* the access token is only attached to requests to the FHIR base URL's origin;
* tokens, assertions, secrets and keys never appear in logs, exception messages or reprs; error
  text the token endpoint sends back is scrubbed of them before it is shown.

The answers of the token exchange (the SMART configuration, the token response) are read under
:data:`MAX_TOKEN_RESPONSE_BYTES`, so a broken or hostile endpoint cannot fill memory.

It works with ``httpx.AsyncClient`` (the one ``FhirClient`` runs), with any number of requests
in flight.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import secrets
import time
from base64 import b64encode
from collections.abc import AsyncGenerator, Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import httpx
import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from fhir_tailor.client import read_within
from fhir_tailor.errors import FhirTailorError, ResponseTooLargeError

logger = logging.getLogger("fhir_tailor.smart")

#: Read everything, write only what fhir-tailor writes (SMART v1 scope syntax).
DEFAULT_SCOPE = (
    "system/*.read system/CarePlan.write system/Goal.write system/Provenance.write "
    "system/ServiceRequest.write system/Task.write"
)
ASSERTION_LIFETIME = 300  # seconds; SMART says no more than five minutes
REFRESH_MARGIN = 60.0  # seconds of validity below which a cached token is replaced
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: The largest answer read from the token endpoint or the SMART configuration, in bytes, for
#: Backend Services and the app's launch (:mod:`fhir_tailor.web.launch`) alike. A token response
#: is a few KB (the access token, an id_token, a scope list, the launch context) and a SMART
#: configuration of the same order; 1 MiB is hundreds of times either, and still refuses an
#: endpoint sending gigabytes, which was read whole before this limit. Counted after decoding
#: and refused on Content-Length first, as the FHIR client's responses
#: (:data:`fhir_tailor.client.DEFAULT_MAX_RESPONSE_BYTES`, whose mechanism this reuses).
MAX_TOKEN_RESPONSE_BYTES = 2**20
# SMART requires expires_in and recommends tokens live no more than five minutes.
_DEFAULT_TOKEN_LIFETIME = 300.0

# v1: system/Type.read|write|*; v2: system/Type.cruds (any ordered subset), optionally ?query.
_SCOPE = re.compile(r"system/(\*|[A-Z][A-Za-z]+)\.(read|write|\*|(?=[cruds])c?r?u?d?s?)(\?\S+)?")
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_MESSAGE_LIMIT = 200
_REDACTED = "<redacted>"


class SmartAuthError(FhirTailorError):
    """Getting an access token failed: discovery, the token request, or the credentials."""


@dataclass(frozen=True, repr=False)
class SigningKey:
    """A private key for ``private_key_jwt``, the ``kid`` it is registered under, and its alg."""

    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    kid: str
    algorithm: str

    def __repr__(self) -> str:
        return f"SigningKey(kid={self.kid!r}, algorithm={self.algorithm!r}, key=<redacted>)"


def load_signing_key(path: Path, kid: str | None = None) -> SigningKey:
    """The signing key in ``path``: an unencrypted PEM private key or a JWKS of private JWKs.

    A PEM file carries no key id, so ``kid`` is required with it; in a JWKS, ``kid`` picks the
    key and may be left out when the set holds exactly one private key. Errors name the file
    but never echo its content.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SmartAuthError(f"cannot read the private key file {path}: {exc.strerror}") from None
    if data.lstrip().startswith(b"{"):
        return _key_from_jwks(path, data, kid)
    return _key_from_pem(path, data, kid)


def _key_from_pem(path: Path, data: bytes, kid: str | None) -> SigningKey:
    if not kid:
        raise SmartAuthError(
            f"{path} is a PEM key, which has no key id: give the kid its public key is "
            "registered under (--kid)"
        )
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise SmartAuthError(
            f"{path} is neither an unencrypted PEM private key nor a JWKS"
        ) from None
    return SigningKey(_checked_key(path, key), kid, _algorithm_for(path, key))


def _key_from_jwks(path: Path, data: bytes, kid: str | None) -> SigningKey:
    try:
        document = json.loads(data)
    except ValueError:
        raise SmartAuthError(f"{path} is not valid JSON") from None
    keys = document.get("keys", [document]) if isinstance(document, dict) else None
    if not isinstance(keys, list):
        raise SmartAuthError(f"{path} is neither a JWKS nor a JWK")
    private = [k for k in keys if isinstance(k, dict) and "d" in k]
    if kid:
        private = [k for k in private if k.get("kid") == kid]
    if len(private) != 1:
        found = f"no private key with kid {kid!r}" if kid else f"{len(private)} private keys"
        hint = "" if kid else "; choose one with --kid"
        raise SmartAuthError(f"{path} holds {found}{hint}")
    jwk = private[0]
    if not isinstance(jwk.get("kid"), str) or not jwk["kid"]:
        raise SmartAuthError(f"the private key in {path} has no kid")
    try:
        key = jwt.PyJWK(jwk).key
    except (jwt.PyJWTError, ValueError, KeyError, TypeError):
        raise SmartAuthError(
            f"the key {jwk['kid']!r} in {path} is not a valid private JWK"
        ) from None
    algorithm = _algorithm_for(path, key)
    if jwk.get("alg", algorithm) != algorithm:
        raise SmartAuthError(
            f"the key {jwk['kid']!r} in {path} is for {jwk['alg']}; SMART Backend Services "
            f"signs with {algorithm}"
        )
    return SigningKey(_checked_key(path, key), jwk["kid"], algorithm)


def _checked_key(path: Path, key: object) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        return key
    raise SmartAuthError(f"the key in {path} is not an RSA or EC private key")


def _algorithm_for(path: Path, key: object) -> str:
    """RS384 for RSA (at least 2048 bits), ES384 for EC on P-384: what SMART requires."""
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size >= 2048:
        return "RS384"
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP384R1):
        return "ES384"
    raise SmartAuthError(
        f"the key in {path} cannot sign RS384 or ES384: use an RSA key of 2048 bits or more, "
        "or an EC key on P-384"
    )


def check_scope(scope: str) -> str:
    """``scope`` normalised to single spaces, refused if any scope is not a ``system/`` scope.

    Both SMART v1 (``system/*.read``) and v2 (``system/*.rs``) syntax pass; a typo such as
    ``system/Patient.raed`` fails here instead of as an opaque ``invalid_scope`` later.
    """
    scopes = scope.split()
    if not scopes:
        raise ValueError("the scope must not be empty")
    for item in scopes:
        if not _SCOPE.fullmatch(item):
            raise ValueError(f"{item!r} is not a SMART system scope (system/Type.read, .rs, ...)")
    return " ".join(scopes)


class SmartBackendAuth(httpx.Auth):
    """SMART Backend Services: fetch, cache, attach and refresh an access token.

    Give exactly one of ``signing_key`` (``private_key_jwt``) or ``client_secret``
    (``client_secret_basic``). Without ``token_url`` the token endpoint is discovered from
    ``{base_url}/.well-known/smart-configuration`` on first use. ``clock`` (epoch seconds)
    exists so tests can move time forward.
    """

    def __init__(
        self,
        base_url: str,
        client_id: str,
        *,
        signing_key: SigningKey | None = None,
        client_secret: str | None = None,
        token_url: str | None = None,
        scope: str = DEFAULT_SCOPE,
        timeout: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not client_id:
            raise ValueError("the client id must not be empty")
        if (signing_key is None) == (not client_secret):
            raise ValueError("give either a private key or a client secret, not both or neither")
        self._base_url = base_url.rstrip("/")
        self._origin = _origin(httpx.URL(self._base_url))
        self._client_id = client_id
        self._signing_key = signing_key
        self._client_secret = client_secret
        self._token_url = _checked_token_url(token_url) if token_url else None
        self._scope = check_scope(scope)
        self._timeout = httpx.Timeout(timeout).as_dict()
        self._clock = clock
        self._token: str | None = None
        self._expires_at = 0.0
        self._refresh_margin = REFRESH_MARGIN
        self._assertion: str | None = None
        self._lock = asyncio.Lock()

    @property
    def method(self) -> str:
        """The OAuth client authentication method in use."""
        return "private_key_jwt" if self._signing_key else "client_secret_basic"

    def __repr__(self) -> str:
        kid = f", kid={self._signing_key.kid!r}" if self._signing_key else ""
        return (
            f"SmartBackendAuth(client_id={self._client_id!r}, method={self.method!r}{kid}, "
            f"token_url={self._token_url!r})"
        )

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """Attach a valid token to requests to the FHIR origin; on 401, renew it and resend once.

        A server may revoke a token before it expires (a key rotation, a restart), so one 401
        earns one new token; a second 401 is returned as it is and becomes the caller's error.
        Many requests are in flight at once, so the token is fetched under a lock (one fetch
        however many requests find it stale), and a 401 renews it only if no other request
        already has.
        """
        if _origin(request.url) != self._origin:
            yield request  # another origin never sees our token
            return
        await request.aread()  # so that a request refused with 401 can be sent again
        refused: str | None = None  # the token the server answered 401 to, if it did
        for _ in range(2):
            async with self._lock:
                if refused is not None:
                    renew = self._token == refused  # else another request already renewed it
                    if renew:
                        logger.info("the FHIR server answered 401; requesting a new access token")
                else:
                    stale = self._expires_at - self._clock() < self._refresh_margin
                    renew = self._token is None or stale
                if renew:
                    steps = self._fetch_token()
                    step = _advance(steps)
                    while step is not None:
                        reply = yield step
                        await _read_reply(reply)
                        step = _advance(steps, reply)
                token = self._token
            request.headers["Authorization"] = f"Bearer {token}"
            response = yield request
            if response.status_code != 401:
                return
            refused = token

    def _fetch_token(self) -> Generator[httpx.Request, httpx.Response, None]:
        """Request a new access token (discovering the endpoint first if needed) and cache it."""
        if self._token_url is None:
            self._token_url = yield from self._discover_token_url()
        token_url = self._token_url
        requested_at = self._clock()
        response = yield self._token_request(token_url)
        response.read()
        body = _json_object(response)
        if not response.is_success:
            raise SmartAuthError(
                f"the token endpoint {_display(token_url)} refused the request "
                f"(HTTP {response.status_code}): {self._oauth_error(body, response)}"
            )
        body = body or {}
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise SmartAuthError(f"the token endpoint {_display(token_url)} sent no access_token")
        if str(body.get("token_type", "")).lower() != "bearer":
            raise SmartAuthError(
                f"the token endpoint {_display(token_url)} sent a token that is not a bearer token"
            )
        lifetime = _lifetime(body.get("expires_in"), token_url)
        self._token = token
        self._expires_at = requested_at + lifetime
        # A token shorter-lived than two margins would otherwise be replaced on every request.
        self._refresh_margin = min(REFRESH_MARGIN, lifetime / 2)
        logger.info(
            "access token obtained from %s (%s), valid %.0fs, scope %s",
            _display(token_url),
            self.method,
            lifetime,
            body.get("scope", self._scope),
        )

    def _discover_token_url(self) -> Generator[httpx.Request, httpx.Response, str]:
        """The ``token_endpoint`` of the server's SMART configuration, checked to fit us."""
        url = f"{self._base_url}/.well-known/smart-configuration"
        request = httpx.Request(
            "GET",
            url,
            headers={"Accept": "application/json"},
            extensions={"timeout": self._timeout},
        )
        response = yield request
        response.read()
        body = _json_object(response)
        if not response.is_success or body is None:
            raise SmartAuthError(
                f"no SMART configuration at {_display(url)} (HTTP {response.status_code}); "
                "give the token endpoint with --token-url"
            )
        token_url = body.get("token_endpoint")
        if not isinstance(token_url, str) or not token_url:
            raise SmartAuthError(
                f"the SMART configuration at {_display(url)} has no token_endpoint"
            )
        methods = body.get("token_endpoint_auth_methods_supported")
        if isinstance(methods, list) and self.method not in methods:
            raise SmartAuthError(
                f"the server's token endpoint does not support {self.method} "
                f"(it supports {', '.join(str(m) for m in methods) or 'nothing'})"
            )
        logger.debug("discovered token endpoint %s", _display(token_url))
        return _checked_token_url(token_url)

    def _token_request(self, token_url: str) -> httpx.Request:
        form = {"grant_type": "client_credentials", "scope": self._scope}
        headers = {"Accept": "application/json"}
        if self._signing_key is not None:
            self._assertion = self._sign_assertion(self._signing_key, token_url)
            form["client_assertion_type"] = ASSERTION_TYPE
            form["client_assertion"] = self._assertion
        else:
            headers["Authorization"] = _basic_credentials(self._client_id, self._client_secret)
        return httpx.Request(
            "POST", token_url, data=form, headers=headers, extensions={"timeout": self._timeout}
        )

    def _sign_assertion(self, key: SigningKey, token_url: str) -> str:
        now = int(self._clock())
        claims: dict[str, Any] = {
            "iss": self._client_id,
            "sub": self._client_id,
            "aud": token_url,
            "jti": secrets.token_urlsafe(32),
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
        }
        headers = {"kid": key.kid, "typ": "JWT"}
        return jwt.encode(claims, key.key, algorithm=key.algorithm, headers=headers)

    def _oauth_error(self, body: dict[str, Any] | None, response: httpx.Response) -> str:
        """The OAuth ``error``/``error_description`` (or body start), scrubbed of our secrets."""
        if body and isinstance(body.get("error"), str):
            text = body["error"]
            if isinstance(body.get("error_description"), str):
                text += f": {body['error_description']}"
        else:
            text = response.text or "no error given"
        for secret in (self._client_secret, self._assertion, self._token):
            if secret:
                text = text.replace(secret, _REDACTED)
        text = " ".join(text.split())
        return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 3] + "..."


def smart_auth_from_settings(
    base_url: str,
    client_id: str | None,
    *,
    private_key: Path | None,
    kid: str | None,
    client_secret: str | None,
    token_url: str | None,
    scope: str | None,
    timeout: float = 30.0,
) -> SmartBackendAuth | None:
    """SMART auth for the command-line settings, or ``None`` when no client id is given.

    Usage mistakes raise ``ValueError``; an unreadable key raises :class:`SmartAuthError`.
    """
    if not client_id:
        if private_key or client_secret:
            raise ValueError("a private key or client secret needs a client id (--client-id)")
        return None
    if private_key and client_secret:
        raise ValueError("give either a private key or a client secret, not both")
    if not private_key and not client_secret:
        raise ValueError("a client id needs a private key (--private-key) or a client secret")
    return SmartBackendAuth(
        base_url,
        client_id,
        signing_key=load_signing_key(private_key, kid) if private_key else None,
        client_secret=client_secret,
        token_url=token_url or None,
        scope=scope or DEFAULT_SCOPE,
        timeout=timeout,
    )


def _checked_token_url(url: str) -> str:
    """``url`` if credentials may be sent there: HTTPS, or plain HTTP on a loopback host."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        raise SmartAuthError("the token endpoint is not a valid URL") from None
    secure = parsed.scheme == "https" or (
        parsed.scheme == "http" and parsed.host in _LOOPBACK_HOSTS
    )
    if not secure or not parsed.host or parsed.fragment:
        raise SmartAuthError(
            f"refusing the token endpoint {_display(url)}: credentials are only sent over HTTPS "
            "(or plain HTTP to a loopback address)"
        )
    return url


def _advance(
    steps: Generator[httpx.Request, httpx.Response, None], reply: httpx.Response | None = None
) -> httpx.Request | None:
    """The next request of a token exchange given the reply to the last, or ``None`` when done."""
    try:
        return steps.send(reply) if reply is not None else next(steps)
    except StopIteration:
        return None


async def _read_reply(reply: httpx.Response) -> None:
    """Read an answer of the token exchange under MAX_TOKEN_RESPONSE_BYTES; past it, a
    SmartAuthError naming the URL path and the limit, as the other failures to get a token."""
    try:
        await read_within(reply, MAX_TOKEN_RESPONSE_BYTES)
    except ResponseTooLargeError as exc:
        raise SmartAuthError(f"no access token: {exc}") from None


def _basic_credentials(client_id: str, client_secret: str | None) -> str:
    """``client_secret_basic``: both parts form-encoded before base64, as RFC 6749 2.3.1 says."""
    pair = f"{quote_plus(client_id)}:{quote_plus(client_secret or '')}"
    return "Basic " + b64encode(pair.encode()).decode("ascii")


def _lifetime(expires_in: object, token_url: str) -> float:
    """Seconds the token is valid, assuming the recommended maximum if the server does not say."""
    if expires_in is None:
        return _DEFAULT_TOKEN_LIFETIME
    seconds = finite_seconds(expires_in)
    if seconds is None or seconds <= 0:
        raise SmartAuthError(f"the token endpoint {_display(token_url)} sent an invalid expires_in")
    return seconds


#: A whole number of seconds sent as text ("3599"): RFC 6749 5.1 asks for a number, but some
#: authorization servers in use (Azure AD's v1 endpoint, among others) send text.
_SECONDS_TEXT = re.compile(r"[0-9]{1,12}")


def finite_seconds(value: object) -> float | None:
    """``value`` as seconds if it is a finite JSON number or a whole number as text, else None:
    a bool is not one, an integer past float's range would raise OverflowError where it is used,
    and NaN or infinity would make a token that is never renewed (neither compares below a
    refresh margin)."""
    if isinstance(value, str) and _SECONDS_TEXT.fullmatch(value):
        return float(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        seconds = float(value)
    except OverflowError:
        return None
    return seconds if math.isfinite(seconds) else None


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _display(url: str) -> str:
    """A URL without query or fragment, for messages and logs."""
    try:
        return str(httpx.URL(url).copy_with(query=None, fragment=None))
    except httpx.InvalidURL:
        return "<invalid URL>"


def _origin(url: httpx.URL) -> str:
    port = url.port or _DEFAULT_PORTS.get(url.scheme)
    return f"{url.scheme}://{url.host}:{port}"
