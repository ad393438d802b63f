"""Server-side sessions: the browser holds only a random id, everything else stays here.

The access token must never reach the page, a URL or a cookie the browser could leak, so the
cookie carries nothing but an unguessable id and the store keeps the token, the pending launch
state and the plan shown. Sessions expire after ``ttl`` seconds without use; the store is in
memory, which fits one ``fhir-tailor serve`` process (a restart simply means launching again).

EHRs launch apps in an iframe, and there the app is a third party: a browser keeps or sends a
``SameSite=Lax`` cookie only when the top-level page is of the app's own site, so the launch
would lose its session between ``/launch`` and ``/callback``. Over HTTPS the cookie is therefore
``SameSite=None; Secure`` (browsers accept ``None`` only with ``Secure``) and ``Partitioned``
(CHIPS): browsers that block third-party cookies (Safari, Chrome's incognito windows, the
headless Chromium of the tests) still keep a partitioned one, for this EHR's page only, which is
all a launch in its iframe needs. What stops another site from using the cookie is the CSRF token
on every form and the app's ``frame-ancestors`` policy. Over plain HTTP (loopback only) it stays
``Lax``, the one way a non-secure cookie works at all.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import Response

COOKIE_NAME = "fhir_tailor_session"
DEFAULT_TTL = 3600.0


@dataclass(slots=True)
class Session:
    """What one browser session holds: CSRF token, pending launches, grant, plan on screen.

    ``pending`` maps an OAuth ``state`` to its launch; ``grant``, ``clinician`` (who signed in)
    and ``plan`` are typed loosely here so this module knows nothing of OAuth or plans.
    """

    id: str
    csrf: str
    expires_at: float
    pending: dict[str, Any] = field(default_factory=dict)
    grant: Any = None
    clinician: Any = None
    plan: Any = None
    notice: str | None = None

    def __repr__(self) -> str:
        return "Session(<redacted>)"


class SessionStore:
    """Sessions by id, with expiry; safe to use from the event loop and worker threads."""

    def __init__(self, ttl: float = DEFAULT_TTL, clock: Callable[[], float] = time.monotonic):
        self._ttl = ttl
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def get(self, session_id: str | None) -> Session | None:
        """The live session with this id, its expiry pushed back; ``None`` if unknown or expired."""
        now = self._clock()
        with self._lock:
            self._purge(now)
            session = self._sessions.get(session_id or "")
            if session is not None:
                session.expires_at = now + self._ttl
            return session

    def create(self) -> Session:
        """A new empty session with a fresh id and CSRF token."""
        session = Session(
            id=secrets.token_urlsafe(32),
            csrf=secrets.token_urlsafe(32),
            expires_at=self._clock() + self._ttl,
        )
        with self._lock:
            self._sessions[session.id] = session
        return session

    def rotate(self, session: Session) -> Session:
        """The same session under new id and CSRF token, the old id dropped.

        Called when a user signs in, so an id planted before login (session fixation) is
        worthless after it.
        """
        with self._lock:
            self._sessions.pop(session.id, None)
            session.id = secrets.token_urlsafe(32)
            session.csrf = secrets.token_urlsafe(32)
            session.expires_at = self._clock() + self._ttl
            self._sessions[session.id] = session
        return session

    def _purge(self, now: float) -> None:
        expired = [sid for sid, s in self._sessions.items() if s.expires_at <= now]
        for sid in expired:
            del self._sessions[sid]


def set_session_cookie(response: Response, session: Session, *, https: bool) -> Response:
    """``response`` setting the session cookie: ``HttpOnly`` always; over HTTPS ``Secure``,
    ``SameSite=None`` and ``Partitioned``, so that it survives a launch in the EHR's iframe;
    ``SameSite=Lax`` otherwise."""
    attributes = "SameSite=None; Secure; Partitioned" if https else "SameSite=Lax"
    # Written out: Starlette sets Partitioned only on Python 3.14+, and the id is URL-safe.
    response.headers.append(
        "set-cookie", f"{COOKIE_NAME}={session.id}; HttpOnly; Path=/; {attributes}"
    )
    return response
