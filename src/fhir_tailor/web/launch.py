"""SMART App Launch: discovery, the authorization request with PKCE, and the token exchange.

The OAuth mechanics (PKCE S256 challenge, authorization URL, token request) are authlib's
``AsyncOAuth2Client``; this module adds what SMART asks on top: endpoints discovered from
``{iss}/.well-known/smart-configuration``, the ``aud`` and ``launch`` parameters, the scopes in
SMART v1 or v2 syntax, an OpenID Connect ``nonce``, and the launch context (``patient``) and
id_token read from the token response (:mod:`fhir_tailor.web.identity` verifies the id_token).

Credentials are guarded: endpoints must be HTTPS (or loopback, for tests and demos), the
``state`` must match a launch this session started, and a :class:`Grant` never shows its token
in ``repr`` or logs. The SMART configuration and the token response are read under
:data:`~fhir_tailor.smart.MAX_TOKEN_RESPONSE_BYTES` (1 MiB) before anything parses them, and a
token response that is not a JSON object, or whose ``expires_in`` or ``expires_at`` is not a
finite JSON number, fails the sign-in like any other token failure.
"""

from __future__ import annotations

import logging
import secrets
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from authlib.common.security import generate_token
from authlib.deprecate import AuthlibDeprecationWarning

from ..client import read_within
from ..errors import FhirTailorError, ResponseTooLargeError
from ..smart import MAX_TOKEN_RESPONSE_BYTES, finite_seconds
from .fetch import REQUEST, get_json_object

with warnings.catch_warnings():
    # authlib 1.9.9+ prefers its httpx2 fork and warns when it falls back to httpx, which the
    # rest of fhir-tailor uses; that fallback is the path we rely on (authlib is pinned < 1.10).
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError

log = logging.getLogger("fhir_tailor.web.launch")

ScopeSyntax = Literal["v1", "v2"]
#: Read the patient's record; write what approval writes (CarePlan, Goals, referrals and the
#: Provenance saying who wrote them).
SCOPES: dict[ScopeSyntax, tuple[str, ...]] = {
    "v1": (
        "patient/*.read",
        "patient/CarePlan.write",
        "patient/Goal.write",
        "patient/ServiceRequest.write",
        "patient/Provenance.write",
    ),
    "v2": (
        "patient/*.rs",
        "patient/CarePlan.cu",
        "patient/Goal.cu",
        "patient/ServiceRequest.cu",
        "patient/Provenance.c",
    ),
}
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


class LaunchError(FhirTailorError):
    """A launch cannot go on: bad parameters, failed discovery, or a refused token request."""


def scope_for(syntax: ScopeSyntax, *, standalone: bool) -> str:
    """The scope to request: ``launch`` (EHR launch) or ``launch/patient`` (standalone, the
    server asks the user for a patient), identity, and the data scopes in ``syntax``."""
    launch = "launch/patient" if standalone else "launch"
    return " ".join((launch, "openid", "fhirUser", *SCOPES[syntax]))


@dataclass(frozen=True, slots=True)
class SmartEndpoints:
    """What the SMART configuration announces: OAuth endpoints, and the OpenID Connect issuer
    an id_token must name (``issuer``, the FHIR base when not given) and its key set URL."""

    authorize: str
    token: str
    issuer: str
    jwks_uri: str | None = None


@dataclass(frozen=True, slots=True)
class PendingLaunch:
    """A launch sent to the authorization server, kept server-side until its callback."""

    iss: str
    endpoints: SmartEndpoints
    redirect_uri: str
    scope: str
    code_verifier: str = field(repr=False)
    nonce: str = field(repr=False)
    started: float = field(default_factory=time.monotonic)


@dataclass(frozen=True, slots=True, repr=False)
class Grant:
    """An access token, its launch context and the id_token; tokens never appear in ``repr``.

    ``scope`` is what was granted: the token response's, or the scope requested when the
    response names none (RFC 6749 section 5.1). ``id_token`` is still unverified here.
    """

    iss: str
    access_token: str
    patient: str
    scope: str
    expires_at: float | None
    id_token: str | None = None

    def expired(self, now: float | None = None) -> bool:
        return self.expires_at is not None and (now or time.time()) >= self.expires_at

    def __repr__(self) -> str:
        return (
            f"Grant(iss={self.iss!r}, patient=<redacted>, scope={self.scope!r}, token=<redacted>)"
        )


def check_url(url: str, what: str) -> str:
    """``url`` if it is absolute HTTPS, or HTTP on loopback; a :class:`LaunchError` otherwise."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        raise LaunchError(f"the {what} is not a valid URL") from None
    secure = parsed.scheme == "https" or (
        parsed.scheme == "http" and parsed.host in _LOOPBACK_HOSTS
    )
    if not parsed.host or not secure or parsed.fragment:
        raise LaunchError(f"the {what} must be an https URL (http only on loopback): {url}")
    return url.rstrip("/")


def origin(url: str, what: str) -> str:
    """The origin of ``url`` (``scheme://host[:port]``, the default port left out), as a
    Content-Security-Policy source; ``url`` must pass :func:`check_url`."""
    parsed = httpx.URL(check_url(url, what))
    host = f"[{parsed.host}]" if ":" in parsed.host else parsed.host
    return f"{parsed.scheme}://{host}" + (f":{parsed.port}" if parsed.port else "")


async def discover(client: AsyncOAuth2Client, iss: str) -> SmartEndpoints:
    """The authorization and token endpoints ``iss`` announces, checked to offer PKCE S256."""
    url = f"{iss}/.well-known/smart-configuration"
    config = await get_json_object(
        client, url, what="SMART discovery", error=LaunchError, wording=REQUEST, withhold_token=True
    )
    methods = config.get("code_challenge_methods_supported")
    if methods is not None and "S256" not in methods:
        raise LaunchError(f"{iss} does not support PKCE S256 (code_challenge_methods_supported)")
    endpoints = []
    for key in ("authorization_endpoint", "token_endpoint"):
        value = config.get(key)
        if not isinstance(value, str):
            raise LaunchError(f"SMART discovery at {url} has no {key}")
        endpoints.append(check_url(value, key.replace("_", " ")))
    issuer, jwks_uri = config.get("issuer"), config.get("jwks_uri")
    authorize, token = endpoints
    return SmartEndpoints(
        authorize,
        token,
        issuer=issuer if isinstance(issuer, str) and issuer else iss,
        jwks_uri=check_url(jwks_uri, "jwks_uri") if isinstance(jwks_uri, str) else None,
    )


def _oauth_client(
    client_id: str, client_secret: str | None, redirect_uri: str, scope: str | None = None
) -> AsyncOAuth2Client:
    client = AsyncOAuth2Client(
        client_id=client_id,
        client_secret=client_secret,
        token_endpoint_auth_method="client_secret_basic" if client_secret else "none",
        scope=scope,
        redirect_uri=redirect_uri,
        code_challenge_method="S256",
        timeout=30.0,
        event_hooks={"response": [_read_within_limit]},
    )
    client.register_compliance_hook("access_token_response", _readable_token_answer)
    return client


async def _read_within_limit(response: httpx.Response) -> None:
    """Read each answer the OAuth client gets under MAX_TOKEN_RESPONSE_BYTES, before authlib
    (or :func:`discover`) parses it; httpx would otherwise read it whole, however large."""
    await read_within(response, MAX_TOKEN_RESPONSE_BYTES)


def _readable_token_answer(response: httpx.Response) -> httpx.Response:
    """The token response, checked before authlib parses it: a successful one that is not a
    JSON object, or any JSON object with an unreadable lifetime (:data:`_LIFETIME_FIELDS`), is a
    :class:`LaunchError` naming the URL path (and the field), never quoting the body. authlib
    raises a bare ValueError, TypeError or OverflowError for them, which no sign-in failure
    catches (the page was a 500, the traceback quoting the value); an unsuccessful answer that is
    not a JSON object is left to authlib (an OAuth error, or HTTPStatusError)."""
    try:
        document = response.json()
    except ValueError:
        document, problem = None, "is not JSON"
    else:
        problem = "is not a JSON object"
    if isinstance(document, dict):
        unreadable = [key for key in _LIFETIME_FIELDS if not _seconds(document.get(key))]
        if not unreadable or "error" in document:  # an OAuth error: authlib reads no lifetime
            return response
        problem = f"has an invalid {unreadable[0]}"
    elif not response.is_success:
        return response
    request = response.request
    raise LaunchError(
        f"the token request failed: the response to {request.method} {request.url.path} {problem}"
    )


#: The token response's fields authlib turns into numbers (``OAuth2Token``) as soon as it reads
#: the response, whatever its status; ``expires_at`` is not OAuth's, but authlib reads it first.
_LIFETIME_FIELDS = ("expires_in", "expires_at")


def _seconds(value: object) -> bool:
    """Whether ``value`` is absent, a finite JSON number or a whole number as text ("3600",
    which authlib reads as a number too), as Backend Services reads it."""
    return value is None or finite_seconds(value) is not None


async def begin(
    *,
    iss: str,
    launch: str | None,
    client_id: str,
    redirect_uri: str,
    scope_syntax: ScopeSyntax,
) -> tuple[str, str, PendingLaunch]:
    """Start a launch: ``(authorization URL, state, pending launch)``.

    ``launch`` is the EHR's launch token (EHR launch); ``None`` means a standalone launch.
    The code verifier and the nonce are random per launch and stay in the pending launch,
    server-side.
    """
    iss = check_url(iss, "FHIR server (iss)")
    scope = scope_for(scope_syntax, standalone=launch is None)
    async with _oauth_client(client_id, None, redirect_uri, scope) as client:
        endpoints = await discover(client, iss)
        verifier, nonce = generate_token(64), secrets.token_urlsafe(32)
        extra = {"aud": iss, "nonce": nonce, **({"launch": launch} if launch is not None else {})}
        url, state = client.create_authorization_url(
            endpoints.authorize, state=secrets.token_urlsafe(32), code_verifier=verifier, **extra
        )
    log.info("launch started for %s (%s)", iss, "EHR" if launch is not None else "standalone")
    return url, state, PendingLaunch(iss, endpoints, redirect_uri, scope, verifier, nonce)


async def complete(
    pending: PendingLaunch, code: str, *, client_id: str, client_secret: str | None
) -> Grant:
    """Exchange the authorization code (with the PKCE verifier) for a token and its context."""
    async with _oauth_client(client_id, client_secret, pending.redirect_uri) as client:
        try:
            token: dict[str, Any] = await client.fetch_token(
                pending.endpoints.token,
                grant_type="authorization_code",
                code=code,
                code_verifier=pending.code_verifier,
                redirect_uri=pending.redirect_uri,
            )
        except OAuthError as exc:
            raise LaunchError(f"the token request was refused: {exc.error}") from None
        except httpx.HTTPError as exc:
            raise LaunchError(f"the token request failed: {type(exc).__name__}") from None
        except ResponseTooLargeError as exc:
            raise LaunchError(f"the token request failed: {exc}") from None
    access_token, patient = token.get("access_token"), token.get("patient")
    if not isinstance(access_token, str) or not access_token:
        raise LaunchError("the token response has no access_token")
    if not isinstance(patient, str) or not patient:
        raise LaunchError("the token response has no patient in context: launch with a patient")
    expires_in = token.get("expires_in")
    seconds = finite_seconds(expires_in)
    expires_at = time.time() + seconds if seconds is not None else None
    granted, id_token = token.get("scope"), token.get("id_token")
    log.info("launch completed for %s", pending.iss)
    return Grant(
        pending.iss,
        access_token,
        patient,
        granted if isinstance(granted, str) else pending.scope,
        expires_at,
        id_token if isinstance(id_token, str) and id_token else None,
    )
