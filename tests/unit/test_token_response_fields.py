"""A token endpoint answering the app's sign-in with a JSON object whose ``expires_in`` (or
``expires_at``) is not a finite number fails the sign-in (502, "Sign-in failed: ..."), naming the
token URL's path and the field, never quoting the answer: authlib's own ValueError, TypeError or
OverflowError for it was a 500 whose traceback quoted the value. Other fields authlib might read
(``token_type``, ``scope``) do not stop the sign-in. SMART Backend Services refuses the same
lifetimes with its SmartAuthError."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import respx
from cryptography.hazmat.primitives.asymmetric import ec
from test_smart import BASE, PATIENT
from test_smart import TOKEN_URL as BACKEND_TOKEN_URL
from test_token_response_json import FAILED, MARKER
from test_token_response_limit import backend_failure, mocked_ehr, sign_in_fails
from test_web_app import TOKEN_URL as LAUNCH_TOKEN_URL
from test_web_app import fhir_routes, signed_in, valid_identity

from fhir_tailor.definitions import Definitions
from fhir_tailor.smart import finite_seconds
from fhir_tailor.web.sessions import SessionStore


@pytest.fixture
def mocked() -> Iterator[respx.MockRouter]:
    with mocked_ehr() as router:
        yield router


def answer(expires_in: str) -> str:
    """A token response, as JSON text (so that it can hold 1e400 or NaN), with ``expires_in``."""
    return (
        f'{{"access_token": "{MARKER}", "token_type": "Bearer", "patient": "p1", '
        f'"expires_in": {expires_in}}}'
    )


@pytest.mark.parametrize(
    "expires_in",
    [
        f'"3600 {MARKER}"',
        f'["{MARKER}"]',
        f'{{"{MARKER}": 1}}',
        "true",
        "1e400",  # infinity once parsed
        "NaN",
        "1" + "0" * 400,  # past float's range
    ],
)
def test_an_expires_in_that_is_not_a_number_fails_the_sign_in(
    definitions: Definitions,
    mocked: respx.MockRouter,
    caplog: pytest.LogCaptureFixture,
    expires_in: str,
) -> None:
    mocked.post(LAUNCH_TOKEN_URL).respond(
        200, text=answer(expires_in), headers={"Content-Type": "application/json"}
    )
    with caplog.at_level(logging.DEBUG), caplog.at_level(logging.DEBUG, logger="fhir_tailor"):
        shown = sign_in_fails(definitions, SessionStore())  # asserts the 502
    assert FAILED + "has an invalid expires_in" in shown
    assert MARKER not in shown and MARKER not in caplog.text


def test_an_unreadable_expires_in_on_an_error_status_fails_the_sign_in_too(
    definitions: Definitions, mocked: respx.MockRouter
) -> None:
    """authlib makes a token of any JSON object without ``error``, whatever the status."""
    mocked.post(LAUNCH_TOKEN_URL).respond(
        400, text=answer('"soon"'), headers={"Content-Type": "application/json"}
    )
    shown = sign_in_fails(definitions, SessionStore())
    assert FAILED + "has an invalid expires_in" in shown


def test_an_oauth_error_is_reported_as_such_whatever_its_expires_in(
    definitions: Definitions, mocked: respx.MockRouter
) -> None:
    mocked.post(LAUNCH_TOKEN_URL).respond(
        400, json={"error": "invalid_grant", "expires_in": "soon"}
    )
    shown = sign_in_fails(definitions, SessionStore())
    assert "Sign-in failed: the token request was refused: invalid_grant" in shown


def test_an_unreadable_expires_at_fails_the_sign_in(
    definitions: Definitions, mocked: respx.MockRouter
) -> None:
    """authlib reads ``expires_at`` (not OAuth's) before ``expires_in``, with the same int()."""
    mocked.post(LAUNCH_TOKEN_URL).respond(
        200, text=answer("300")[:-1] + f', "expires_at": ["{MARKER}"]}}'
    )
    shown = sign_in_fails(definitions, SessionStore())
    assert FAILED + "has an invalid expires_at" in shown
    assert MARKER not in shown


@pytest.mark.parametrize(
    "fields",
    [
        {"expires_in": None},  # SMART asks for it; without it the grant has no expiry
        {"expires_in": 1e300},
        {"expires_in": "3600"},  # a whole number as text, as some authorization servers send it
        {"token_type": [MARKER]},  # authlib reads it only to sign requests, which we never do
        {"token_type": 42},
        {"scope": [MARKER]},  # the grant keeps the scope requested
    ],
)
def test_other_odd_fields_still_sign_in(
    definitions: Definitions,
    mocked: respx.MockRouter,
    caplog: pytest.LogCaptureFixture,
    fields: dict[str, Any],
) -> None:
    fhir_routes(mocked)
    with caplog.at_level(logging.DEBUG), caplog.at_level(logging.DEBUG, logger="fhir_tailor"):
        signed_in(
            definitions,
            SessionStore(),
            mocked,
            identity=lambda nonce: valid_identity(nonce) | fields,
        )
    assert MARKER not in caplog.text


# --- SMART Backend Services ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (3600, 3600.0),
        (299.5, 299.5),
        ("3599", 3599.0),  # Azure AD's v1 token endpoint sends it as text
        ("3600.5", None),
        (" 3600", None),
        ("", None),
        ("1" * 13, None),
        (True, None),
        (float("nan"), None),
        (10**400, None),
        (None, None),
    ],
)
def test_seconds_are_a_finite_number_or_a_whole_number_as_text(
    value: object, seconds: float | None
) -> None:
    assert finite_seconds(value) == seconds


@pytest.mark.parametrize(
    "expires_in",
    ['"3600.5"', f'["{MARKER}"]', "true", "0", "1e400", "-Infinity", "NaN", "1" + "0" * 400],
)
def test_backend_services_refuses_an_unreadable_expires_in(expires_in: str) -> None:
    """Its own SmartAuthError, not a traceback: a number past float's range overflowed, and an
    infinite or NaN lifetime made a token that was never renewed."""
    router = respx.Router(assert_all_mocked=True)
    router.get(f"{BASE}/Patient/p1").respond(json=PATIENT)  # reached only with a token
    router.post(BACKEND_TOKEN_URL).respond(
        200,
        text=f'{{"access_token": "{MARKER}", "token_type": "bearer", "expires_in": {expires_in}}}',
        headers={"Content-Type": "application/json"},
    )
    failed = backend_failure(router, ec.generate_private_key(ec.SECP384R1()))
    assert failed.endswith("sent an invalid expires_in") and MARKER not in failed
