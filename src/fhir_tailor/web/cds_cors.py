"""CORS for the CDS Hooks endpoints, so that browser-based CDS clients can call them.

CDS Hooks 2.0 ("Cross-Origin Resource Sharing"): "CDS Services and browser-based CDS Clients
will require CORS support", with the secure implementation left to the OWASP HTML5 Security
Cheat Sheet. What that gives here, on ``/cds-services`` and below only (the SMART app's pages
send no CORS headers and stay same-origin):

- Any origin by default (``Access-Control-Allow-Origin: *``). The cheat sheet's concern with a
  wildcard is a browser sending ambient credentials (cookies) cross-origin; these endpoints read
  no cookie and credentials are never allowed (no ``Access-Control-Allow-Credentials``). What
  authenticates a call is the client's signed JWT (:mod:`fhir_tailor.web.cds_auth`), which a page
  must hold to send, so the origin adds nothing to trust; and EHR web clients are served from
  origins the service cannot list in advance. ``--cds-cors-origin`` restricts it to listed
  origins where a deployment prefers.
- Methods ``GET``, ``POST`` and ``OPTIONS``; request headers ``Authorization`` and
  ``Content-Type`` (a JSON body makes the browser preflight); ``WWW-Authenticate`` exposed, so a
  client's script can read why a call was refused; preflights cached 10 minutes.

Starlette's :class:`~starlette.middleware.cors.CORSMiddleware` does the work.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

PREFIX = "/cds-services"
ANY_ORIGIN = ("*",)
MAX_AGE = 600


class CdsCors:
    """ASGI middleware: CORS for requests under :data:`PREFIX`, the app alone for the rest."""

    def __init__(self, app: ASGIApp, origins: Sequence[str] = ANY_ORIGIN) -> None:
        self.app = app
        self.cors = CORSMiddleware(
            app,
            allow_origins=list(origins),
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=["WWW-Authenticate"],
            allow_credentials=False,
            max_age=MAX_AGE,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path == PREFIX or path.startswith(PREFIX + "/"):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def cds_cors(origins: Sequence[str] = ANY_ORIGIN) -> Middleware:
    """The middleware to add to the app that mounts the CDS Hooks routes."""
    return Middleware(CdsCors, origins=tuple(origins) or ANY_ORIGIN)
