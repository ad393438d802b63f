"""How requests to the FHIR server authenticate.

Every scheme is an :class:`httpx.Auth`, handed to :class:`~fhir_tailor.client.FhirClient`,
which never looks inside it. The static schemes live here; SMART Backend Services
(:class:`~fhir_tailor.smart.SmartBackendAuth`) uses the same seam: its ``auth_flow`` yields the
token request itself and retries after a 401, so no other module needed to change.

Credentials never appear in ``repr`` or ``str``, so logging a client or an auth object is safe.
"""

from __future__ import annotations

from collections.abc import Generator

import httpx


class BearerTokenAuth(httpx.Auth):
    """A static bearer token, e.g. one issued out of band for a test server."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("bearer token must not be empty")
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._token}"
        yield request

    def __repr__(self) -> str:
        return "BearerTokenAuth(token=<redacted>)"


def auth_from_settings(
    token: str | None, username: str | None, password: str | None
) -> httpx.Auth | None:
    """The auth for the given settings: a bearer token, HTTP basic, or none at all.

    Empty strings count as unset, because that is what an exported-but-empty environment
    variable looks like. Ambiguous settings are refused rather than guessed at.
    """
    if token and username:
        raise ValueError("give either a bearer token or a username and password, not both")
    if token:
        return BearerTokenAuth(token)
    if username:
        return httpx.BasicAuth(username, password or "")
    if password:
        raise ValueError("a password was given without a username")
    return None
