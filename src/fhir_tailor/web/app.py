"""The SMART on FHIR app: routes, sessions and the glue between launch, page and approval.

Routes:

- ``GET /launch``: EHR launch (``iss`` and ``launch``) or, without them, a standalone launch
  against the configured FHIR server; redirects to the authorization server.
- ``GET /callback``: checks ``state``, exchanges the code, verifies the id_token, keeps the
  token and the signed-in clinician in the session.
- ``GET /app``: the launched patient's profile and proposed plan, and who is signed in.
- ``POST /approve``: writes the plan, less the dropped activities, as the active CarePlan,
  authored by the signed-in clinician. Its form is read only for a live session, and only up to
  :data:`APPROVE_BODY_LIMIT` (:mod:`fhir_tailor.web.request_body`); past it the answer is 413.
- ``/static``: the stylesheet, served from the package (nothing is loaded from elsewhere).
- the CDS Hooks service of :mod:`fhir_tailor.web.cds_hooks`, whose cards link to ``/launch``.

FHIR calls use the synchronous client in Starlette's thread pool, so a slow server holds a
worker thread, never the event loop.

EHRs show apps in an iframe. Pages may be framed only by the EHRs the app trusts
(``Content-Security-Policy: frame-ancestors``): the origins given, or else those of the FHIR
servers allowed to launch it, so no other site can frame the Approve button (clickjacking). The
session cookie is made for a cross-site iframe when the app is served over HTTPS
(:func:`~fhir_tailor.web.sessions.set_session_cookie`).
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from ..approval import Approval, approve
from ..definitions import Definitions
from ..errors import FhirTailorError
from ..pipeline import assess
from ..plan import Plan
from .cds_cors import cds_cors
from .cds_hooks import CdsSettings, cds_routes
from .identity import Clinician, IdentityError, KeySets, display_name, identify
from .launch import Grant, LaunchError, ScopeSyntax, begin, check_url, complete, origin
from .page import PageView, message_page, plan_page
from .patient_data import fhir_client, read_record
from .request_body import BodyTooLargeError, read_form
from .sessions import COOKIE_NAME, DEFAULT_TTL, Session, SessionStore, set_session_cookie

log = logging.getLogger("fhir_tailor.web")

STATIC = Path(__file__).resolve().parent / "static"
#: Launches a session may have under way at once (tabs, retries); older ones are forgotten.
MAX_PENDING = 5
#: The largest approval form read, in bytes. It holds the CSRF token (43 characters), the plan's
#: fingerprint (64) and one ``drop`` per activity left out: all 129 activities of the bundled
#: catalog dropped at once make 6.4 KB, and 64 KiB is ten times that.
APPROVE_BODY_LIMIT = 64 * 2**10
_CONTENT_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "base-uri 'none'"
)
_SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


@dataclass(frozen=True, slots=True)
class AppConfig:
    """How the app is reached and whom it trusts.

    ``public_url`` is where browsers reach the app; the redirect URI registered with the
    authorization server is ``{public_url}/callback``; an ``https`` one makes the session
    cookie fit for an EHR's iframe. ``fhir_server`` is the server a standalone launch uses.
    Launches name their ``iss``: only ``allowed_issuers`` (plus ``fhir_server``) are accepted,
    and one of them must be given unless ``allow_any_issuer`` says, explicitly, that any FHIR
    server may launch the app. ``frame_ancestors`` are the origins whose pages may embed the
    app; by default the origins of the allowed servers (none with ``allow_any_issuer``). ``as_of``
    pins the profile date (tests, demos); by default it is the day of the request. ``requester``
    (``Organization/<id>`` or ``PractitionerRole/<id>``) requests the referrals of the plans
    shown, and so of the plans approved here. ``cds`` configures the CDS Hooks service: the
    clients it trusts, CORS origins, where feedback goes.
    """

    client_id: str
    definitions: Definitions
    public_url: str = "http://127.0.0.1:8000"
    fhir_server: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    scope_syntax: ScopeSyntax = "v1"
    allowed_issuers: frozenset[str] = frozenset()
    as_of: date | None = None
    session_ttl: float = DEFAULT_TTL
    requester: str | None = None
    allow_any_issuer: bool = False
    frame_ancestors: frozenset[str] = frozenset()
    cds: CdsSettings = field(default_factory=CdsSettings)

    @property
    def issuers(self) -> frozenset[str]:
        given = {*self.allowed_issuers, *([self.fhir_server] if self.fhir_server else [])}
        return frozenset(url.rstrip("/") for url in given)

    def embedders(self) -> list[str]:
        """The origins allowed to frame the app, sorted; a :class:`LaunchError` for a bad one."""
        given = self.frame_ancestors or self.issuers
        return sorted({origin(url, "origin allowed to embed the app") for url in given})


class ConfigError(FhirTailorError):
    """The app cannot start as configured (no EHR allow-list, a malformed URL)."""


def create_app(config: AppConfig, sessions: SessionStore | None = None) -> Starlette:
    """The ASGI app for ``config``; ``sessions`` lets tests look into the session store.

    A :class:`ConfigError` when no FHIR server is allowed to launch it and
    ``allow_any_issuer`` is not set, or a URL is malformed.
    """
    if not config.issuers and not config.allow_any_issuer:
        raise ConfigError(
            "no FHIR server is allowed to launch the app: name the EHRs' FHIR servers "
            "(fhir_server, allowed_issuers), or accept any with allow_any_issuer"
        )
    store = sessions if sessions is not None else SessionStore(config.session_ttl)
    key_sets = KeySets()
    try:
        public_url = check_url(config.public_url, "public URL of the app")
        embedders = config.embedders()
    except LaunchError as exc:
        raise ConfigError(str(exc)) from None
    redirect_uri = f"{public_url}/callback"
    https = public_url.startswith("https://")
    headers = {
        **_SECURITY_HEADERS,
        "Content-Security-Policy": f"{_CONTENT_POLICY}; frame-ancestors "
        + (" ".join(embedders) or "'none'"),
    }

    def session_of(request: Request) -> Session | None:
        return store.get(request.cookies.get(COOKIE_NAME))

    def with_cookie(response: Response, session: Session) -> Response:
        return set_session_cookie(response, session, https=https)

    def html(content: str, status: int = 200) -> HTMLResponse:
        return HTMLResponse(content, status, headers=headers)

    def error(status: int, message: str) -> HTMLResponse:
        return html(message_page("Something went wrong", message), status)

    def relaunch_page(status: int, message: str) -> Response:
        link = ("/launch", "Launch again") if config.fhir_server else None
        return html(message_page("Launch needed", message, link), status)

    async def home(request: Request) -> Response:
        if config.fhir_server is None:
            return html(message_page("fhir-tailor", "Open this app from your EHR."))
        return html(
            message_page(
                "fhir-tailor", "Review a patient's personalized care plan.", ("/launch", "Launch")
            )
        )

    async def launch(request: Request) -> Response:
        iss, launch_token = request.query_params.get("iss"), request.query_params.get("launch")
        if iss is None:
            if launch_token is not None or config.fhir_server is None:
                return error(400, "The launch has no iss: which FHIR server to use is unknown.")
            iss = config.fhir_server
        if not config.allow_any_issuer and iss.rstrip("/") not in config.issuers:
            return error(400, "The launch names a FHIR server this app is not set up for.")
        try:
            url, state, pending = await begin(
                iss=iss,
                launch=launch_token,
                client_id=config.client_id,
                redirect_uri=redirect_uri,
                scope_syntax=config.scope_syntax,
            )
        except LaunchError as exc:
            log.warning("launch failed: %s", exc)
            return error(502, f"The launch could not start: {exc}")
        session = session_of(request) or store.create()
        session.pending[state] = pending
        while len(session.pending) > MAX_PENDING:
            session.pending.pop(next(iter(session.pending)))
        return with_cookie(RedirectResponse(url, 302), session)

    async def callback(request: Request) -> Response:
        session = session_of(request)
        state = request.query_params.get("state", "")
        pending = session.pending.pop(state, None) if session is not None else None
        if session is None or pending is None:
            log.warning("callback with an unknown state refused")
            return error(400, "This sign-in does not match a launch of this browser session.")
        problem = request.query_params.get("error")
        if problem is not None:
            return error(403, f"The authorization server refused access ({problem[:64]}).")
        code = request.query_params.get("code")
        if not code:
            return error(400, "The authorization server sent no code.")
        try:
            grant = await complete(
                pending, code, client_id=config.client_id, client_secret=config.client_secret
            )
            clinician = await identify(
                grant, pending, client_id=config.client_id, key_sets=key_sets
            )
        except IdentityError as exc:
            log.warning("sign-in refused: %s", exc)
            return error(403, f"Sign-in refused: {exc}.")
        except LaunchError as exc:
            log.warning("token exchange failed: %s", exc)
            return error(502, f"Sign-in failed: {exc}")
        if clinician is not None:
            clinician = await run_in_threadpool(named, grant, clinician)
        log.info("signed in as %s", clinician.kind if clinician else "an unknown user")
        session.pending.clear()
        session.grant, session.clinician, session.plan = grant, clinician, None
        store.rotate(session)
        return with_cookie(RedirectResponse("/app", 303), session)

    async def app_page(request: Request) -> Response:
        session = session_of(request)
        grant = session.grant if session is not None else None
        if session is None or not isinstance(grant, Grant) or grant.expired():
            return relaunch_page(401, "Your session has ended or was never started.")
        try:
            view = await run_in_threadpool(load_view, config, grant, session.csrf)
        except FhirTailorError as exc:
            log.warning("loading the patient failed: %s", exc)
            return error(502, f"The patient's data could not be read: {exc}")
        session.plan = view.plan
        notice, session.notice = session.notice, None
        return html(plan_page(replace(view, notice=notice, clinician=_signed_in(session))))

    async def approve_plan(request: Request) -> Response:
        session = session_of(request)
        grant = session.grant if session is not None else None
        if session is None or not isinstance(grant, Grant) or grant.expired():
            return relaunch_page(401, "Your session has ended; nothing was approved.")
        try:
            form = await read_form(request, APPROVE_BODY_LIMIT)
        except BodyTooLargeError as exc:
            log.warning("approval refused: %s", exc)
            reason = str(exc)
            return error(413, f"{reason[0].upper()}{reason[1:]}; nothing was approved.")
        token, shown = form.get("csrf"), form.get("plan")
        if not isinstance(token, str) or not secrets.compare_digest(token, session.csrf):
            return error(403, "The form is not from this session; nothing was approved.")
        plan = session.plan
        if not isinstance(plan, Plan) or shown != plan.fingerprint():
            return error(409, "The plan changed since it was shown; reload and review it again.")
        clinician = session.clinician
        if not isinstance(clinician, Clinician):
            return error(403, f"{_UNKNOWN_USER} Nothing was approved.")
        dropped = {value for value in form.getlist("drop") if isinstance(value, str)}
        try:
            approval = await run_in_threadpool(write_approval, grant, plan, dropped, clinician)
        except FhirTailorError as exc:
            log.warning("approval failed: %s", exc)
            return error(409, f"The plan was not approved: {exc}")
        session.notice = _notice(approval)
        return RedirectResponse("/app", 303)

    routes: list[BaseRoute] = [
        Route("/", home),
        Route("/launch", launch),
        Route("/callback", callback, name="callback"),
        Route("/app", app_page),
        Route("/approve", approve_plan, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
        *cds_routes(
            config.definitions,
            public_url=public_url,
            auth=config.cds.auth(),
            feedback=config.cds.feedback_log(),
            fhir_servers=config.issuers or None,
        ),
    ]
    return Starlette(routes=routes, middleware=[cds_cors(config.cds.cors_origins)])


def load_view(config: AppConfig, grant: Grant, csrf: str) -> PageView:
    """Read the patient in context and run the pipeline on it (in a worker thread)."""
    patient_id = grant.patient.removeprefix("Patient/")
    with fhir_client(grant.iss, grant.access_token) as client:
        record, issues = read_record(client, patient_id)
    profile, segments, plan = assess(record, config.definitions, config.as_of or date.today())
    if plan is not None:
        plan = plan.requested_by(config.requester)
    labels = {name: d.label for name, d in config.definitions.rules.dimensions.items()}
    return PageView(record.patient, profile, labels, segments, plan, grant.iss, csrf, len(issues))


def write_approval(grant: Grant, plan: Plan, dropped: set[str], clinician: Clinician) -> Approval:
    """Write the approved plan with the user's token (in a worker thread)."""
    with fhir_client(grant.iss, grant.access_token) as client:
        return approve(client, plan, dropped, datetime.now(UTC), approver=clinician.reference)


def named(grant: Grant, clinician: Clinician) -> Clinician:
    """``clinician`` with the name the FHIR server gives (in a worker thread); as it was when
    the resource cannot be read, since the reference alone identifies the approver."""
    rtype, _, rid = clinician.reference.partition("/")
    try:
        with fhir_client(grant.iss, grant.access_token) as client:
            resource = client.read(rtype, rid)
    except FhirTailorError as exc:
        log.info("the signed-in %s could not be read: %s", rtype, type(exc).__name__)
        return clinician
    return replace(clinician, display=display_name(resource))


_UNKNOWN_USER = (
    "The EHR did not say who you are (no id_token with fhirUser), and an approved plan must "
    "name the clinician who approved it."
)


def _signed_in(session: Session) -> str:
    """Who is signed in, for the page: the clinician's name and reference, or why unknown."""
    clinician = session.clinician
    if not isinstance(clinician, Clinician):
        return f"Signed in without a clinician identity. {_UNKNOWN_USER} Review only."
    if clinician.display:
        return f"Signed in as {clinician.display} ({clinician.reference})"
    return f"Signed in as {clinician.reference}"


def _notice(approval: Approval) -> str:
    done = {
        "created": "Approved",
        "updated": "Approved",
        "unchanged": "Already approved",
    }[approval.outcome]
    return f"{done}: {approval.careplan} is active with {approval.activities} activities."
