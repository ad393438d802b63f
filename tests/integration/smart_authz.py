"""A small SMART authorization server for browser tests and demos, and a way to run ASGI apps.

``oidc-provider-mock`` was considered first: it checks no PKCE verifier (no code challenge
extension registered) and cannot add SMART's ``patient`` launch context to the token response,
so this one is written for the purpose. It is an EHR in miniature:

- ``{root}/fhir`` is the FHIR base (the ``iss``): it announces ``/.well-known/smart-configuration``
  and forwards every other request to the real loopback FHIR server, but only with a bearer
  token this server issued (so the test proves the app uses the token it was given);
- ``/authorize`` auto-approves one registered client for one patient, checking the request as a
  strict server would (redirect URI, PKCE S256 challenge, ``aud``, ``launch``, ``state``);
- ``/token`` checks the code once, with its redirect URI and PKCE verifier (authlib's S256), and
  when ``openid`` was asked for answers an OpenID Connect id_token signed RS256 with its own
  RSA key, naming the ``practitioner`` as ``fhirUser`` and echoing the request's ``nonce``;
- ``/jwks`` publishes that key, announced as ``jwks_uri`` with the ``issuer`` (its root) in the
  SMART configuration;
- ``/ehr`` is the EHR's page: it embeds the app's launch URL in an iframe, as EHRs do.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
import uvicorn
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

FORWARDED_REQUEST_HEADERS = ("accept", "content-type", "if-match", "if-none-exist", "prefer")
FORWARDED_RESPONSE_HEADERS = ("content-type", "location", "etag", "last-modified")


@dataclass
class SmartAuthServer:
    root: str
    upstream: str
    client_id: str
    redirect_uri: str
    patient: str
    #: ``Practitioner/<id>`` (or any reference) the id_token names as fhirUser.
    practitioner: str | None = None
    launch_token: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    issued: list[str] = field(default_factory=list)
    codes: dict[str, dict[str, str]] = field(default_factory=dict)
    authorize_params: list[dict[str, str]] = field(default_factory=list)
    #: The app's launch URL the EHR page frames (set by the test).
    app_launch_url: str = ""
    key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
        repr=False,
    )
    kid: str = field(default_factory=lambda: secrets.token_hex(8))

    @property
    def fhir_base(self) -> str:
        return f"{self.root}/fhir"

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/fhir/.well-known/smart-configuration", self.smart_configuration),
                Route("/authorize", self.authorize),
                Route("/token", self.token, methods=["POST"]),
                Route("/jwks", self.jwks),
                Route("/ehr", self.ehr_page),
                Route("/fhir", self.proxy, methods=["POST"]),  # transactions and batches
                Route("/fhir/{path:path}", self.proxy, methods=["GET", "POST", "PUT", "DELETE"]),
            ]
        )

    async def smart_configuration(self, request: Request) -> Response:
        return JSONResponse(
            {
                "issuer": self.root,
                "jwks_uri": f"{self.root}/jwks",
                "authorization_endpoint": f"{self.root}/authorize",
                "token_endpoint": f"{self.root}/token",
                "grant_types_supported": ["authorization_code"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": ["none"],
                "capabilities": [
                    "launch-ehr",
                    "launch-standalone",
                    "client-public",
                    "context-ehr-patient",
                    "context-standalone-patient",
                    "permission-patient",
                    "permission-v1",
                    "permission-v2",
                    "sso-openid-connect",
                ],
            }
        )

    async def jwks(self, request: Request) -> Response:
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return JSONResponse({"keys": [{**public, "kid": self.kid, "alg": "RS256", "use": "sig"}]})

    async def ehr_page(self, request: Request) -> Response:
        """The EHR's page with the app in an iframe (the launch URL set by the test)."""
        return HTMLResponse(
            '<!DOCTYPE html><html lang="en"><head><title>EHR</title></head><body>'
            "<h1>EHR</h1>"
            f'<iframe id="app" title="fhir-tailor" src="{escape(self.app_launch_url)}" '
            'width="1200" height="900"></iframe></body></html>'
        )

    def id_token(self, nonce: str | None) -> str:
        now = int(time.time())
        claims = {
            "iss": self.root,
            "sub": "clinician-1",
            "aud": self.client_id,
            "iat": now,
            "exp": now + 300,
            **({"nonce": nonce} if nonce else {}),
            **({"fhirUser": self.practitioner} if self.practitioner else {}),
        }
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})

    async def authorize(self, request: Request) -> Response:
        params = dict(request.query_params)
        self.authorize_params.append(params)
        problems = [
            f"{key} is {params.get(key)!r}"
            for key, wanted in (
                ("response_type", "code"),
                ("client_id", self.client_id),
                ("redirect_uri", self.redirect_uri),
                ("code_challenge_method", "S256"),
                ("aud", self.fhir_base),
            )
            if params.get(key) != wanted
        ]
        scopes = params.get("scope", "").split()
        if "launch" in scopes and params.get("launch") != self.launch_token:
            problems.append("unknown launch")
        if not {"launch", "launch/patient"} & set(scopes):
            problems.append("no launch scope")
        if not params.get("code_challenge") or not params.get("state"):
            problems.append("no code_challenge or state")
        if problems:  # never redirect to an unchecked redirect_uri: answer here
            return JSONResponse({"error": "invalid_request", "problems": problems}, 400)
        code = secrets.token_urlsafe(24)
        self.codes[code] = {
            "challenge": params["code_challenge"],
            "scope": params["scope"],
            "nonce": params.get("nonce", ""),
        }
        query = urlencode({"code": code, "state": params["state"]})
        return RedirectResponse(f"{self.redirect_uri}?{query}", 302)

    async def token(self, request: Request) -> Response:
        form = await request.form()
        grant = self.codes.pop(str(form.get("code")), None)  # a code works once
        verifier = str(form.get("code_verifier", ""))
        if (
            grant is None
            or form.get("grant_type") != "authorization_code"
            or form.get("client_id") != self.client_id
            or form.get("redirect_uri") != self.redirect_uri
            or create_s256_code_challenge(verifier) != grant["challenge"]
        ):
            return JSONResponse({"error": "invalid_grant"}, 400)
        access_token = secrets.token_urlsafe(32)
        self.issued.append(access_token)
        identity = (
            {"id_token": self.id_token(grant["nonce"])}
            if "openid" in grant["scope"].split()
            else {}
        )
        return JSONResponse(
            {
                "access_token": access_token,
                "token_type": "Bearer",
                "expires_in": 3600,
                "scope": grant["scope"],
                "patient": self.patient,
                **identity,
            },
            headers={"Cache-Control": "no-store"},
        )

    async def proxy(self, request: Request) -> Response:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or token not in self.issued:
            return JSONResponse({"resourceType": "OperationOutcome"}, 401)
        path = request.path_params.get("path", "")
        url = f"{self.upstream}/{path}" if path else self.upstream
        headers = {k: v for k, v in request.headers.items() if k in FORWARDED_REQUEST_HEADERS}
        async with httpx.AsyncClient(timeout=60) as client:
            upstream = await client.request(
                request.method,
                url,
                params=list(request.query_params.multi_items()),
                content=await request.body(),
                headers=headers,
            )
        body = upstream.content.replace(self.upstream.encode(), self.fhir_base.encode())
        out = {
            k: v.replace(self.upstream, self.fhir_base)
            for k, v in upstream.headers.items()
            if k in FORWARDED_RESPONSE_HEADERS
        }
        return Response(body, upstream.status_code, headers=out)


@contextmanager
def serving(app: Any, port: int, tls: tuple[Path, Path] | None = None) -> Iterator[str]:
    """Run ``app`` with uvicorn on 127.0.0.1:``port`` in a thread; yields its base URL.

    ``tls`` (certificate, key) serves HTTPS, with the options ``fhir-tailor serve`` gives
    uvicorn for ``--tls-cert`` and ``--tls-key``.
    """
    certfile, keyfile = tls if tls else (None, None)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
            ssl_certfile=certfile,
            ssl_keyfile=keyfile,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:  # uvicorn offers no start callback: poll its flag, bounded
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the server on port {port} did not start")
        time.sleep(0.02)
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
