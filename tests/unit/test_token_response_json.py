"""A token endpoint answering the app's sign-in successfully with something that is not a JSON
object fails the sign-in (502, "Sign-in failed: ..."), naming the token URL's path, never quoting
the answer; authlib's own error for it was a 500."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import respx
from test_token_response_limit import mocked_ehr, sign_in_fails
from test_web_app import TOKEN_URL as LAUNCH_TOKEN_URL

from fhir_tailor.definitions import Definitions
from fhir_tailor.web.sessions import SessionStore

MARKER = "Quinn-Zebulon-1961"  # stands for what an answer may hold: never shown or logged
FAILED = "Sign-in failed: the token request failed: the response to POST /token "


@pytest.fixture
def mocked() -> Iterator[respx.MockRouter]:
    with mocked_ehr() as router:
        yield router


@pytest.mark.parametrize(
    ("answer", "content_type", "problem"),
    [
        (f"<html><p>Gateway page for {MARKER}</p></html>", "text/html", "is not JSON"),
        (f'{{"access_token": "{MARKER}"', "application/json", "is not JSON"),  # cut short
        (f'["{MARKER}"]', "application/json", "is not a JSON object"),
        ("", "application/json", "is not JSON"),
    ],
)
def test_a_token_response_that_is_not_a_json_object_fails_the_sign_in(
    definitions: Definitions,
    mocked: respx.MockRouter,
    caplog: pytest.LogCaptureFixture,
    answer: str,
    content_type: str,
    problem: str,
) -> None:
    mocked.post(LAUNCH_TOKEN_URL).respond(200, text=answer, headers={"Content-Type": content_type})
    with caplog.at_level(logging.DEBUG), caplog.at_level(logging.DEBUG, logger="fhir_tailor"):
        shown = sign_in_fails(definitions, SessionStore())  # asserts the 502
    assert FAILED + problem in shown
    assert MARKER not in shown and MARKER not in caplog.text
