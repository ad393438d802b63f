"""Fetching a JSON object for the SMART app: what comes back, and how each failure is told in
the caller's error and wording (the messages launch and identity gave before sharing it)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import respx

from fhir_tailor.web.fetch import DOCUMENT, REQUEST, Wording, get_json_object
from fhir_tailor.web.identity import IdentityError
from fhir_tailor.web.launch import LaunchError

URL = "https://ehr.test/.well-known/openid-configuration"


def fetch(answer: dict[str, Any], error: type[Exception], wording: Wording) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        async with httpx.AsyncClient() as http:
            return await get_json_object(http, URL, what="the thing", error=error, wording=wording)

    with respx.mock() as router:
        route = router.get(URL).mock(**answer)
        try:
            return asyncio.run(run())
        finally:
            assert route.calls.last.request.headers["accept"] == "application/json"


def test_a_json_object_is_returned() -> None:
    assert fetch(
        {"return_value": httpx.Response(200, json={"issuer": "x"})}, IdentityError, DOCUMENT
    ) == {"issuer": "x"}


#: (the answer, as a DOCUMENT tells it, as a REQUEST tells it)
FAILURES = [
    (
        {"side_effect": httpx.ConnectError("the exception's text")},
        "could not be read: ConnectError",
        "failed: ConnectError",
    ),
    ({"return_value": httpx.Response(404)}, "answered HTTP 404", "answered HTTP 404"),
    ({"return_value": httpx.Response(201, json={})}, "answered HTTP 201", "answered HTTP 201"),
    ({"return_value": httpx.Response(200, text="<html>")}, "is not JSON", "did not return JSON"),
    (
        {"return_value": httpx.Response(200, json=[1])},
        "is not a JSON object",
        "did not return a JSON object",
    ),
]


@pytest.mark.parametrize(("answer", "as_document", "as_request"), FAILURES)
def test_each_failure_is_the_callers_error_in_its_wording(
    answer: dict[str, Any], as_document: str, as_request: str
) -> None:
    cases = ((IdentityError, DOCUMENT, as_document), (LaunchError, REQUEST, as_request))
    for error, wording, told in cases:
        with pytest.raises(error) as caught:
            fetch(answer, error, wording)
        assert type(caught.value) is error
        assert str(caught.value) == f"the thing at {URL} {told}"
        assert caught.value.__cause__ is None
