"""Who signed in: the OpenID Connect id_token of a SMART launch, verified, and its ``fhirUser``.

The app asks for ``openid fhirUser`` so that an approved plan names the clinician who approved
it (its Provenance and the CarePlan's ``author``). A name taken from an unchecked token would be
anyone's claim, so the id_token is checked as OpenID Connect Core 1.0 section 3.1.3.7 asks:

- its signature, against the issuer's JSON Web Key Set: ``jwks_uri`` from the SMART
  configuration, or else from the OpenID configuration ``{issuer}/.well-known/openid-configuration``
  (SMART App Launch 2.x, Conformance: ``issuer`` and ``jwks_uri`` are required with
  ``sso-openid-connect``); asymmetric algorithms only, never ``none`` or a shared secret;
- ``iss`` (the issuer the configuration names), ``aud`` (this app's client id, and ``azp`` when
  there are other audiences), ``exp`` and ``iat``, with a minute's leeway for clock skew;
- ``nonce``: the random value this launch sent in its authorization request, so a token issued
  for another sign-in cannot be replayed into this one.

``fhirUser`` (SMART App Launch 2.x, Scopes and Launch Context: "fhirUser") must be a Practitioner
or a PractitionerRole on the launch's own FHIR server, given relative or absolute; it becomes the
relative reference that is written. Any check failing raises :class:`IdentityError`, whose message
says which check and never contains the token.

The keys are JOSE work done by PyJWT; this module only fetches the key sets (with ``httpx``,
never with the user's access token) and keeps them for a few minutes, fetching again when a
token names a key id not yet seen (the issuer rotated its keys). The OpenID configuration and
the key sets are read up to :data:`~fhir_tailor.web.fetch.MAX_DOCUMENT_BYTES` (1 MiB); a larger
one refuses the sign-in, naming the URL path and the limit.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

from .fetch import DOCUMENT, get_json_object
from .launch import Grant, LaunchError, PendingLaunch, check_url

log = logging.getLogger("fhir_tailor.web.identity")

#: Signature algorithms accepted on an id_token. RS256 is the one SMART requires servers to
#: support; the others are the asymmetric JWS algorithms of RFC 7518. Never HS* or none.
ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384"})
#: The resource types a clinician signs in as (SMART: fhirUser is a Practitioner,
#: PractitionerRole, Patient, Person or RelatedPerson; only the first two approve care plans).
CLINICIAN_TYPES = frozenset({"Practitioner", "PractitionerRole"})
#: Seconds of clock skew allowed between the issuer and this app on exp and iat.
LEEWAY = 60
#: Seconds a fetched key set is used before it is fetched again.
KEYS_TTL = 300.0
_REFERENCE = re.compile(r"([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class IdentityError(LaunchError):
    """The id_token is missing, invalid, or names a user this app does not accept."""


@dataclass(frozen=True, slots=True)
class Clinician:
    """The signed-in clinician: a relative ``Practitioner/<id>`` or ``PractitionerRole/<id>``
    reference, and the name to show (from the FHIR server), kept out of ``repr`` and logs."""

    reference: str
    display: str | None = None

    @property
    def kind(self) -> str:
        """The reference's resource type: what logs may say about who signed in."""
        return self.reference.partition("/")[0]

    def __repr__(self) -> str:
        return f"Clinician(kind={self.kind!r}, display=<redacted>)"


class KeySets:
    """The issuers' JSON Web Key Sets by URL, each kept ``ttl`` seconds.

    Shared by every launch of one app; ``clock`` exists so tests can move time forward.
    """

    def __init__(self, ttl: float = KEYS_TTL, clock: Callable[[], float] = time.monotonic):
        self._ttl = ttl
        self._clock = clock
        self._sets: dict[str, tuple[float, list[dict[str, Any]]]] = {}

    async def keys(self, http: httpx.AsyncClient, url: str, *, fresh: bool) -> list[dict[str, Any]]:
        """The keys at ``url``, from the cache unless ``fresh`` or expired."""
        cached = self._sets.get(url)
        if cached is not None and not fresh and self._clock() - cached[0] < self._ttl:
            return cached[1]
        document = await get_json_object(
            http, url, what="the issuer's key set (jwks_uri)", error=IdentityError, wording=DOCUMENT
        )
        keys = document.get("keys")
        if not isinstance(keys, list):
            raise IdentityError(f"the issuer's key set at {url} has no keys")
        usable = [k for k in keys if isinstance(k, dict) and k.get("use", "sig") == "sig"]
        self._sets[url] = (self._clock(), usable)
        return usable


async def identify(
    grant: Grant, pending: PendingLaunch, *, client_id: str, key_sets: KeySets
) -> Clinician | None:
    """The clinician who signed in, or ``None`` when the user's identity was not shared.

    The choice made for each case: an id_token that fails any check refuses the sign-in; so
    does a token response without id_token when ``openid`` was granted (the server promised an
    identity and did not give it). When ``openid`` was not granted, or the id_token has no
    ``fhirUser`` (that scope was not granted), the sign-in stands with an unknown user: the
    plan can be reviewed, but approving needs to name who approves, so the app refuses it.
    """
    if grant.id_token is None:
        if "openid" in grant.scope.split():
            raise IdentityError("the authorization server granted openid but sent no id_token")
        return None
    return await verify_id_token(
        grant.id_token,
        issuer=pending.endpoints.issuer,
        jwks_uri=pending.endpoints.jwks_uri,
        client_id=client_id,
        nonce=pending.nonce,
        fhir_base=pending.iss,
        key_sets=key_sets,
    )


async def verify_id_token(
    id_token: str,
    *,
    issuer: str,
    jwks_uri: str | None,
    client_id: str,
    nonce: str,
    fhir_base: str,
    key_sets: KeySets,
) -> Clinician | None:
    """The clinician an id_token names, after every check of the module docstring.

    ``None`` when the token is valid but carries no ``fhirUser`` (the scope was not granted):
    the user is then unknown, which the app allows for reviewing but not for approving.
    """
    try:
        header = jwt.get_unverified_header(id_token)
    except jwt.PyJWTError:
        raise IdentityError("the id_token is not a signed JWT") from None
    algorithm = header.get("alg")
    if algorithm not in ALGORITHMS:
        raise IdentityError(
            f"the id_token is signed with {str(algorithm)[:16]!r}; only asymmetric signatures "
            f"({', '.join(sorted(ALGORITHMS))}) are accepted"
        )
    async with httpx.AsyncClient(timeout=30.0) as http:
        jwks_uri = jwks_uri or await _discover_jwks_uri(http, issuer)
        key = await _signing_key(http, key_sets, jwks_uri, header.get("kid"), str(algorithm))
    claims = _decode(id_token, key, issuer, client_id)
    sent = claims.get("nonce")
    if not isinstance(sent, str) or not secrets.compare_digest(sent, nonce):
        raise IdentityError("the id_token's nonce does not match this sign-in (replayed token?)")
    fhir_user = claims.get("fhirUser")
    if fhir_user is None:
        return None
    return Clinician(clinician_reference(fhir_user, fhir_base))


def clinician_reference(fhir_user: object, fhir_base: str) -> str:
    """``fhirUser`` as a relative reference to a Practitioner or PractitionerRole on
    ``fhir_base``; an absolute URL must lie under ``fhir_base`` (scheme, host, port, path)."""
    if not isinstance(fhir_user, str) or not fhir_user:
        raise IdentityError("the id_token's fhirUser is not a reference")
    reference = fhir_user
    if "://" in fhir_user:
        reference = _under_base(fhir_user, fhir_base)
    match = _REFERENCE.fullmatch(reference)
    if match is None:
        raise IdentityError("the id_token's fhirUser is not a reference to a FHIR resource")
    if match[1] not in CLINICIAN_TYPES:
        raise IdentityError(
            f"the signed-in user is a {match[1]}, not a Practitioner or PractitionerRole: "
            "this app is for clinicians"
        )
    return reference


def display_name(resource: dict[str, Any]) -> str | None:
    """A name to show for a Practitioner (its first usable HumanName) or a PractitionerRole
    (its practitioner's display); ``None`` when the resource gives none."""
    if resource.get("resourceType") == "PractitionerRole":
        practitioner = resource.get("practitioner")
        display = practitioner.get("display") if isinstance(practitioner, dict) else None
        return display if isinstance(display, str) and display.strip() else None
    for name in resource.get("name") or ():
        if not isinstance(name, dict):
            continue
        if isinstance(name.get("text"), str) and name["text"].strip():
            return str(name["text"])
        parts = [p for p in (*(name.get("prefix") or ()), *(name.get("given") or ())) if p]
        family = name.get("family")
        full = " ".join(str(p) for p in (*parts, family or "") if isinstance(p, str)).strip()
        if full:
            return full
    return None


def _under_base(url: str, fhir_base: str) -> str:
    """The part of ``url`` after ``fhir_base/``; an :class:`IdentityError` if elsewhere."""
    try:
        given, base = httpx.URL(url), httpx.URL(fhir_base.rstrip("/"))
    except httpx.InvalidURL:
        raise IdentityError("the id_token's fhirUser is not a valid URL") from None
    prefix = base.path.rstrip("/") + "/"
    same_server = (
        given.scheme == base.scheme
        and given.host == base.host
        and (given.port or _DEFAULT_PORTS.get(given.scheme))
        == (base.port or _DEFAULT_PORTS.get(base.scheme))
        and given.path.startswith(prefix)
        and not given.query
        and not given.fragment
    )
    if not same_server:
        raise IdentityError(
            "the signed-in user (fhirUser) is on another FHIR server than the launch's: "
            "this app only accepts a user of the server it was launched from"
        )
    return given.path[len(prefix) :]


async def _discover_jwks_uri(http: httpx.AsyncClient, issuer: str) -> str:
    """``jwks_uri`` from the issuer's OpenID configuration (OpenID Connect Discovery 1.0)."""
    url = f"{issuer.rstrip('/')}/.well-known/openid-configuration"
    document = await get_json_object(
        http, url, what="the OpenID configuration", error=IdentityError, wording=DOCUMENT
    )
    announced = document.get("issuer")
    if isinstance(announced, str) and announced.rstrip("/") != issuer.rstrip("/"):
        raise IdentityError(f"the OpenID configuration at {url} is for another issuer")
    jwks_uri = document.get("jwks_uri")
    if not isinstance(jwks_uri, str):
        raise IdentityError(
            "the issuer announces no jwks_uri (neither in its SMART configuration nor at "
            f"{url}), so the id_token cannot be verified"
        )
    return check_url(jwks_uri, "jwks_uri")


async def _signing_key(
    http: httpx.AsyncClient, key_sets: KeySets, jwks_uri: str, kid: object, algorithm: str
) -> jwt.PyJWK:
    """The key the token's header names (``kid``), fetched again once if not yet seen."""
    for fresh in (False, True):
        keys = await key_sets.keys(http, jwks_uri, fresh=fresh)
        candidates = [k for k in keys if kid is None or k.get("kid") == kid]
        if len(candidates) == 1:
            jwk = candidates[0]
            if jwk.get("alg", algorithm) != algorithm:
                raise IdentityError(
                    f"the id_token is signed with {algorithm}, its key is for {jwk.get('alg')}"
                )
            try:
                return jwt.PyJWK(jwk, algorithm=algorithm)
            except (jwt.PyJWTError, ValueError, KeyError, TypeError):
                raise IdentityError("the issuer's key for the id_token is not usable") from None
        if kid is None and candidates:
            raise IdentityError("the id_token names no key (kid) and the issuer has several")
    raise IdentityError("the id_token is signed with a key the issuer does not publish")


def _decode(id_token: str, key: jwt.PyJWK, issuer: str, client_id: str) -> dict[str, Any]:
    try:
        claims: dict[str, Any] = jwt.decode(
            id_token,
            key,
            algorithms=[key.algorithm_name],
            audience=client_id,
            issuer=issuer,
            leeway=LEEWAY,
            options={"require": ["iss", "sub", "aud", "exp", "iat"]},
        )
    except jwt.InvalidSignatureError:
        raise IdentityError(
            "the id_token's signature does not verify with the issuer's key"
        ) from None
    except jwt.ExpiredSignatureError:
        raise IdentityError("the id_token has expired") from None
    except jwt.InvalidAudienceError:
        raise IdentityError("the id_token is for another client (aud is not this app)") from None
    except jwt.InvalidIssuerError:
        raise IdentityError(f"the id_token was not issued by {issuer} (iss)") from None
    except jwt.MissingRequiredClaimError as exc:
        raise IdentityError(f"the id_token has no {exc.claim} claim") from None
    except (jwt.ImmatureSignatureError, jwt.InvalidIssuedAtError):
        raise IdentityError("the id_token is not valid yet (iat or nbf in the future)") from None
    except jwt.PyJWTError:
        raise IdentityError("the id_token could not be verified") from None
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    if len(audiences) > 1 and claims.get("azp") != client_id:
        raise IdentityError("the id_token has several audiences and azp is not this app")
    return claims
