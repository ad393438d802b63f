"""Fetching a JSON object the web app needs from a server it does not control: the SMART
configuration (:mod:`.launch`), the OpenID configuration and key sets (:mod:`.identity`), and
the CDS clients' key sets (:mod:`.cds_auth`).

Each of them must answer ``200`` with a JSON object; anything else stops the launch or the
sign-in (or refuses the call) with the caller's own error, whose message names what was fetched,
the URL and what went wrong (an exception's type, never its text, nor the server's body).
Timeouts are the client's. The body is read under :data:`MAX_DOCUMENT_BYTES` with the FHIR
client's mechanism (:func:`fhir_tailor.client.read_within`), so a server cannot fill memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from ..client import read_within
from ..errors import ResponseTooLargeError

#: The largest answer read, in bytes: a configuration or a key set is a few KB, so 1 MiB (the
#: token response's limit, :data:`~fhir_tailor.smart.MAX_TOKEN_RESPONSE_BYTES`) is hundreds of
#: times one and still refuses a server sending gigabytes, which was read whole before.
MAX_DOCUMENT_BYTES = 2**20


@dataclass(frozen=True, slots=True)
class Wording:
    """How a failure reads after ``"<what> at <url> "``: ``failed`` (then ``": <exception
    type>"``) when no answer came, ``not_json`` and ``not_object`` when the answer was not one.
    The status case always reads ``"answered HTTP <status>"``."""

    failed: str
    not_json: str
    not_object: str


#: For ``what`` naming a document ("the OpenID configuration at ... is not JSON").
DOCUMENT = Wording("could not be read", "is not JSON", "is not a JSON object")
#: For ``what`` naming a request ("SMART discovery at ... did not return JSON").
REQUEST = Wording("failed", "did not return JSON", "did not return a JSON object")


async def get_json_object(
    http: httpx.AsyncClient,
    url: str,
    *,
    what: str,
    error: type[Exception],
    wording: Wording,
    **options: Any,
) -> dict[str, Any]:
    """The JSON object at ``url`` (GET, ``Accept: application/json``); ``error`` with a message
    in ``wording`` when the request fails, the status is not 200 (the body then unread), the body
    is larger than :data:`MAX_DOCUMENT_BYTES` (the message names the URL path and the limit), or
    it is not a JSON object. ``options`` go to ``http.stream`` (an authlib client's
    ``withhold_token``)."""
    prefix = f"{what} at {url}"
    headers = {"Accept": "application/json"}
    try:
        async with http.stream("GET", url, headers=headers, **options) as response:
            if response.status_code != 200:
                raise error(f"{prefix} answered HTTP {response.status_code}")
            await read_within(response, MAX_DOCUMENT_BYTES)
    except httpx.HTTPError as exc:
        raise error(f"{prefix} {wording.failed}: {type(exc).__name__}") from None
    except ResponseTooLargeError as exc:  # from read_within, or a client's own response hook
        raise error(f"{prefix} {wording.failed}: {exc}") from None
    try:
        document: Any = response.json()
    except ValueError:
        raise error(f"{prefix} {wording.not_json}") from None
    if not isinstance(document, dict):
        raise error(f"{prefix} {wording.not_object}")
    return document
