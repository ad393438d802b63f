"""``fhir-tailor serve``: the EHR allow-list it requires, TLS, and what it hands to uvicorn.

uvicorn.run is replaced by a recorder, so nothing listens; the app it would serve is real.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
import uvicorn
from certificates import self_signed_certificate
from click.testing import CliRunner
from starlette.testclient import TestClient

from fhir_tailor.cli import main

EHR = "https://ehr.example.org/fhir"
SERVE = ["serve", "--client-id", "app"]
USAGE_ERROR = 2


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What ``uvicorn.run`` would have been called with, one dict per call."""
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append({"app": app, **kw}))
    return calls


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, [*SERVE, *args])
    return result.exit_code, result.stderr


def test_serve_refuses_to_start_without_an_allow_list(served: list[dict[str, Any]]) -> None:
    code, err = invoke()
    assert code == USAGE_ERROR
    assert "--fhir-server, --allow-iss" in err and "--allow-any-iss" in err
    assert not served


def test_any_iss_must_be_asked_for_and_not_mixed_with_a_list(
    served: list[dict[str, Any]],
) -> None:
    code, err = invoke("--allow-any-iss")
    assert code == 0, err
    assert "any FHIR server may launch this app" in err
    code, err = invoke("--allow-any-iss", "--allow-iss", EHR)
    assert code == USAGE_ERROR and "give no --allow-iss" in err
    assert len(served) == 1


def test_plain_http_by_default_with_a_lax_cookie_framed_by_the_ehr(
    served: list[dict[str, Any]],
) -> None:
    code, err = invoke("--allow-iss", EHR)
    assert code == 0, err
    (call,) = served
    assert call["ssl_certfile"] is None and call["ssl_keyfile"] is None
    client = TestClient(call["app"], base_url="http://127.0.0.1:8000")
    home = client.get("/")
    assert "frame-ancestors https://ehr.example.org" in home.headers["content-security-policy"]


def launch_cookie(app: Any, base_url: str) -> set[str]:
    """The attributes of the session cookie an EHR launch of ``app`` sets."""
    with respx.mock:
        respx.get(f"{EHR}/.well-known/smart-configuration").mock(
            return_value=httpx.Response(
                200,
                json={
                    "authorization_endpoint": "https://auth.example.org/authorize",
                    "token_endpoint": "https://auth.example.org/token",
                },
            )
        )
        client = TestClient(app, base_url=base_url, follow_redirects=False)
        response = client.get("/launch", params={"iss": EHR, "launch": "L"})
    assert response.status_code == 302
    return {part.strip().lower() for part in response.headers["set-cookie"].split(";")}


def test_tls_serves_https_and_the_cookie_follows(
    served: list[dict[str, Any]], tmp_path: Path
) -> None:
    cert, key = self_signed_certificate(tmp_path, ["127.0.0.1"])
    code, err = invoke(
        "--fhir-server",
        EHR,
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
        "--frame-ancestor",
        "https://portal.example.org",
    )
    assert code == 0, err
    (call,) = served
    assert (call["ssl_certfile"], call["ssl_keyfile"]) == (str(cert), str(key))
    policy = TestClient(call["app"]).get("/").headers["content-security-policy"]
    assert "frame-ancestors https://portal.example.org" in policy
    assert {"samesite=none", "secure", "partitioned", "httponly"} <= launch_cookie(
        call["app"], "https://127.0.0.1:8000"
    )


def test_behind_a_tls_proxy_the_public_url_decides_the_cookie(
    served: list[dict[str, Any]],
) -> None:
    code, err = invoke("--fhir-server", EHR, "--public-url", "https://tailor.example.org")
    assert code == 0, err
    (call,) = served
    assert call["ssl_certfile"] is None
    attributes = launch_cookie(call["app"], "https://tailor.example.org")
    assert {"samesite=none", "secure", "partitioned", "httponly"} <= attributes
    code, err = invoke("--fhir-server", EHR)
    assert code == 0, err
    attributes = launch_cookie(served[-1]["app"], "http://127.0.0.1:8000")
    assert "samesite=lax" in attributes and "secure" not in attributes


def test_tls_needs_both_files_and_files_that_work(
    served: list[dict[str, Any]], tmp_path: Path
) -> None:
    cert, key = self_signed_certificate(tmp_path, ["127.0.0.1"])
    code, err = invoke("--fhir-server", EHR, "--tls-cert", str(cert))
    assert code == USAGE_ERROR and "go together" in err
    code, err = invoke("--fhir-server", EHR, "--tls-cert", str(key), "--tls-key", str(cert))
    assert code == USAGE_ERROR and "not a PEM certificate and its private key" in err
    assert "Traceback" not in err
    assert not served


def test_an_insecure_frame_ancestor_is_a_usage_error(served: list[dict[str, Any]]) -> None:
    code, err = invoke("--fhir-server", EHR, "--frame-ancestor", "http://ehr.example.org")
    assert code == USAGE_ERROR and "https" in err
    assert not served


@pytest.mark.parametrize(
    ("option", "value"),
    [("--fhir-server", "127.0.0.1:8080/fhir"), ("--allow-iss", "ftp://ehr.example.org/fhir")],
)
def test_an_ehr_url_without_an_http_scheme_is_a_usage_error_naming_the_option(
    served: list[dict[str, Any]], option: str, value: str
) -> None:
    code, stderr = invoke(option, value)
    assert code == USAGE_ERROR
    assert option in stderr and "not an http(s) URL" in stderr
    assert served == []
