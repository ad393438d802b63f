"""SMART Backend Services against a real FHIR server that requires access tokens.

The server (scripts/fhir-server start --smart-clients) registers three clients, one credential
each, because sekmet ignores a JWT's ``kid`` and tries every key of a client. The command line
runs as a subprocess, as in production: what it prints and logs is exactly what a user sees.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import running_server
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm
from searching import search_all

from fhir_tailor.definitions import bundled_path
from fhir_tailor.resources import CAREPLAN_ID_SYSTEM

FIXTURES = bundled_path("fixtures") / "bundles"
AS_OF = "2026-11-15"
CLI = Path(sys.executable).with_name("fhir-tailor")
# sekmet checks a transaction Bundle (POST to the base URL) against scopes on "*", not on each
# entry's type, so the default per-type write scopes are refused there with 403.
SCOPE = "system/*.read system/*.write"
EXIT_CANNOT_START = 3
# A compact JWS (client assertion or sekmet access token) anywhere in a text.
JWT = re.compile(r"eyJ[\w-]+\.[\w-]+\.")


@dataclass(frozen=True)
class Credentials:
    """The key files and secret the clients use, and every string that must never leak."""

    rsa_pem: Path
    ec_jwks: Path
    ec_kid: str
    other_rsa_pem: Path
    secret: str
    wrong_secret: str
    leaks: tuple[str, ...]


def _pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _pem_lines(pem: bytes) -> list[str]:
    """The base64 lines of a PEM key: any one of them showing up is a leak."""
    return [line for line in pem.decode().splitlines() if not line.startswith("-----")]


@pytest.fixture(scope="module")
def credentials(tmp_path_factory: pytest.TempPathFactory) -> tuple[Credentials, Path]:
    """Fresh keys and a secret, and the smart_clients file registering their public halves."""
    folder = tmp_path_factory.mktemp("smart")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other_rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP384R1())

    rsa_pem, other_rsa_pem = folder / "rs384.pem", folder / "other.pem"
    rsa_pem.write_bytes(_pem(rsa_key))
    other_rsa_pem.write_bytes(_pem(other_rsa_key))
    rsa_public = folder / "rs384.pub.pem"
    rsa_public.write_bytes(
        rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    ec_kid = "es384-key-1"
    ec_private_jwk = {**ECAlgorithm.to_jwk(ec_key, as_dict=True), "kid": ec_kid, "alg": "ES384"}
    ec_public_jwk = {k: v for k, v in ec_private_jwk.items() if k != "d"}
    ec_jwks = folder / "es384.jwks.json"
    ec_jwks.write_text(json.dumps({"keys": [ec_private_jwk]}))

    secret, wrong_secret = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    clients = [
        {"client_id": "rs384-client", "public_key_path": str(rsa_public)},
        {"client_id": "es384-client", "jwks": {"keys": [ec_public_jwk]}},
        {"client_id": "secret-client", "client_secret": secret},
    ]
    clients_file = folder / "smart-clients.json"
    clients_file.write_text(json.dumps(clients))
    leaks = (
        *_pem_lines(_pem(rsa_key)),
        *_pem_lines(_pem(other_rsa_key)),
        str(ec_private_jwk["d"]),
        secret,
        wrong_secret,
    )
    return (
        Credentials(rsa_pem, ec_jwks, ec_kid, other_rsa_pem, secret, wrong_secret, leaks),
        clients_file,
    )


@pytest.fixture(scope="module")
def keys(credentials: tuple[Credentials, Path]) -> Credentials:
    return credentials[0]


@pytest.fixture(scope="module")
def smart_server(credentials: tuple[Credentials, Path]) -> Iterator[str]:
    with running_server(smart_clients=credentials[1]) as url:
        yield url


@pytest.fixture(scope="module")
def reader(smart_server: str, keys: Credentials) -> Iterator[httpx.Client]:
    """An HTTP client with a read token of its own, to see what the runs wrote."""
    with httpx.Client(timeout=30) as plain:
        config = plain.get(f"{smart_server}/.well-known/smart-configuration")
        token_url = config.raise_for_status().json()["token_endpoint"]
        granted = plain.post(
            token_url,
            data={"grant_type": "client_credentials", "scope": "system/*.read"},
            auth=("secret-client", keys.secret),
        )
        token = granted.raise_for_status().json()["access_token"]
    headers = {"Accept": "application/fhir+json", "Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=smart_server + "/", headers=headers, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def eligible() -> list[str]:
    """Patient ids the fixtures give a plan, from a run that writes to stdout."""
    result = subprocess.run(
        [str(CLI), "--as-of", AS_OF, "sync", "--input", str(FIXTURES), "--out", "-"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    ids = {
        json.loads(line)["entry"][0]["resource"]["subject"]["reference"].removeprefix("Patient/")
        for line in result.stdout.splitlines()
    }
    assert len(ids) >= 3
    return sorted(ids)


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str
    report: dict[str, Any] | None
    report_text: str


def sync(server: str, tmp_path: Path, *args: str) -> Run:
    """``fhir-tailor sync`` of the fixture files into ``server``, logging at DEBUG."""
    report = tmp_path / "report.json"
    result = subprocess.run(
        [
            str(CLI),
            "--as-of",
            AS_OF,
            "--log-level",
            "DEBUG",
            "sync",
            "--input",
            str(FIXTURES),
            "--server",
            server,
            "--report",
            str(report),
            *args,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    text = report.read_text() if report.exists() else ""
    return Run(
        result.returncode, result.stdout, result.stderr, json.loads(text) if text else None, text
    )


def assert_nothing_leaked(run: Run, keys: Credentials) -> None:
    for name, text in (("stdout", run.stdout), ("stderr", run.stderr), ("report", run.report_text)):
        assert not JWT.search(text), f"a JWT (token or assertion) in {name}"
        for leak in keys.leaks:
            assert leak not in text, f"key material or a secret in {name}"


def careplan_subjects(reader: httpx.Client) -> set[str]:
    """Patient ids that have a CarePlan written by fhir-tailor on the server."""
    return {
        careplan["subject"]["reference"].removeprefix("Patient/")
        for careplan in search_all(reader, "CarePlan?_count=100")
        if any(i.get("system") == CAREPLAN_ID_SYSTEM for i in careplan.get("identifier", []))
    }


def test_without_credentials_the_server_refuses_and_the_run_stops(
    smart_server: str, tmp_path: Path
) -> None:
    assert httpx.get(f"{smart_server}/metadata", timeout=30).status_code == 200
    assert httpx.get(f"{smart_server}/Patient", timeout=30).status_code == 401

    result = subprocess.run(
        [str(CLI), "--as-of", AS_OF, "sync", "--server", smart_server, "--all"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == EXIT_CANNOT_START, result.stderr
    assert result.stderr.startswith("error: ") and "HTTP 401" in result.stderr
    assert "Traceback" not in result.stderr


def test_without_credentials_no_plan_is_written(
    smart_server: str, tmp_path: Path, eligible: list[str], reader: httpx.Client, keys: Credentials
) -> None:
    before = careplan_subjects(reader)
    run = sync(smart_server, tmp_path, "--patient", eligible[0])
    assert run.returncode != 0
    assert run.report is not None
    assert run.report["counts"] == {"failed": 1}
    assert "HTTP 401" in run.report["patients"][0]["detail"]
    assert careplan_subjects(reader) == before
    assert_nothing_leaked(run, keys)


# A PEM key needs --kid (it carries none), though sekmet does not look at it.
CREDENTIALS: dict[str, Callable[[Credentials], list[str]]] = {
    "rs384-pem": lambda k: [
        "--client-id",
        "rs384-client",
        "--private-key",
        str(k.rsa_pem),
        "--kid",
        "rs384-key-1",
    ],
    "es384-jwks": lambda k: [
        "--client-id",
        "es384-client",
        "--private-key",
        str(k.ec_jwks),
        "--kid",
        k.ec_kid,
    ],
    "client-secret": lambda k: ["--client-id", "secret-client", "--client-secret", k.secret],
}


@pytest.mark.parametrize("method", sorted(CREDENTIALS))
def test_sync_with_credentials_writes_plans_with_one_token(
    method: str,
    smart_server: str,
    tmp_path: Path,
    eligible: list[str],
    reader: httpx.Client,
    keys: Credentials,
) -> None:
    # Each method writes its own third of the patients, so each run must create its plans.
    mine = eligible[sorted(CREDENTIALS).index(method) :: len(CREDENTIALS)]
    patients = [arg for patient in mine for arg in ("--patient", patient)]

    run = sync(smart_server, tmp_path, *CREDENTIALS[method](keys), "--scope", SCOPE, *patients)

    assert run.returncode == 0, run.stderr
    assert run.report is not None
    assert run.report["counts"] == {"created": len(mine)}
    assert set(mine) <= careplan_subjects(reader)
    # one token for the whole run (many requests), never renewed
    assert run.stderr.count("access token obtained") == 1, run.stderr
    assert "requesting a new access token" not in run.stderr
    assert_nothing_leaked(run, keys)


WRONG: dict[str, Callable[[Credentials], list[str]]] = {
    "wrong-key": lambda k: [
        "--client-id",
        "rs384-client",
        "--private-key",
        str(k.other_rsa_pem),
        "--kid",
        "rs384-key-1",
    ],
    "wrong-secret": lambda k: ["--client-id", "secret-client", "--client-secret", k.wrong_secret],
}


@pytest.mark.parametrize("method", sorted(WRONG))
def test_wrong_credentials_name_the_token_endpoint(
    method: str,
    smart_server: str,
    tmp_path: Path,
    reader: httpx.Client,
    keys: Credentials,
) -> None:
    before = careplan_subjects(reader)
    run = sync(smart_server, tmp_path, *WRONG[method](keys), "--scope", SCOPE)

    assert run.returncode == EXIT_CANNOT_START, run.stderr
    token_url = smart_server.removesuffix("/fhir") + "/auth/token"
    assert f"the token endpoint {token_url} refused the request (HTTP 401)" in run.stderr
    assert "invalid_client" in run.stderr
    assert "Traceback" not in run.stderr
    assert careplan_subjects(reader) == before
    assert_nothing_leaked(run, keys)
