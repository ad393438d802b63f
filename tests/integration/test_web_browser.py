"""The SMART app end to end in headless Chromium: EHR launch, review, drop, approve.

Real pieces throughout: the app on uvicorn, a SMART authorization server that checks PKCE,
signs id_tokens and forwards FHIR calls only with the token it issued (``smart_authz``), the
loopback FHIR server, and Debian's Chromium driven by Playwright (never a downloaded browser).

The iframe tests launch the app as EHRs do, inside the EHR's page on another site: the EHR (its
page, authorization server and FHIR base) on ``https://localhost:PORT``, the app on
``https://127.0.0.1:PORT``, both with a self-signed certificate the test makes (SameSite's "site"
is scheme and registrable domain, so these are two sites; ports would not be). Run with ``-s`` to
see the launch-to-page times and the page weight.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from certificates import self_signed_certificate
from conftest import free_loopback_port
from smart_authz import SmartAuthServer, serving

from fhir_tailor.definitions import bundled_path, load_definitions
from fhir_tailor.pipeline import assess
from fhir_tailor.record import PatientRecord
from fhir_tailor.resources import CAREPLAN_ID_SYSTEM
from fhir_tailor.web.app import AppConfig, create_app

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
AS_OF = date(2026, 11, 15)
# The fixture patient under ids of its own, so other tests' syncs of ft-01 do not meet ours.
FIXTURE = bundled_path("fixtures") / "bundles" / "01-diabetes-transport-insecurity.json"
PATIENT = "webapp-01"
# The same record again for the iframe launch, whose approval must not meet the first test's.
FRAMED_PATIENT = "webapp-02"
PRACTITIONER = {
    "resourceType": "Practitioner",
    "id": "webapp-clinician-1",
    "name": [{"prefix": ["Dr."], "given": ["Rosalind"], "family": "Franklin"}],
}
CLIENT_ID = "fhir-tailor-browser-test"
ARTIFACTS = Path(
    os.environ.get("FHIR_TAILOR_ARTIFACTS") or Path(__file__).resolve().parents[1] / "artifacts"
)

playwright_api = pytest.importorskip("playwright.sync_api")
# Skipped only outside CI: scripts/test installs chromium, so in CI a missing browser fails.
pytestmark = pytest.mark.skipif(
    shutil.which("chromium") is None and not os.environ.get("CI"),
    reason="chromium is not installed (run scripts/browser install)",
)


def fixture_bundle(patient: str = PATIENT) -> dict[str, Any]:
    bundle: dict[str, Any] = json.loads(FIXTURE.read_text().replace("ft-01", patient))
    return bundle


@pytest.fixture(scope="module")
def patient_server(own_server: str) -> str:
    """A server of this module's own: an approved CarePlan must not surprise other tests'
    counts of fhir-tailor's CarePlans, nor theirs ours. It holds both patients and the
    Practitioner the authorization server signs in as."""
    for patient in (PATIENT, FRAMED_PATIENT):
        response = httpx.post(
            own_server,
            json=fixture_bundle(patient),
            headers={"Content-Type": "application/fhir+json"},
            timeout=60,
        )
        assert response.status_code == 200, response.text[:500]
    response = httpx.put(
        f"{own_server}/Practitioner/{PRACTITIONER['id']}",
        json=PRACTITIONER,
        headers={"Content-Type": "application/fhir+json"},
        timeout=30,
    )
    assert response.status_code in (200, 201), response.text[:500]
    return own_server


def expected_plan() -> Any:
    """The plan the pipeline makes from the same data read from the file."""
    resources = [entry["resource"] for entry in fixture_bundle()["entry"]]
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    record = PatientRecord(patient, tuple(r for r in resources if r is not patient))
    profile, _, plan = assess(record, load_definitions(bundled_path("profiles")), AS_OF)
    assert plan is not None and len(plan.activities) > 1
    return profile, plan


def stored_careplans(fhir_server: str, patient: str = PATIENT) -> list[dict[str, Any]]:
    bundle = httpx.get(
        f"{fhir_server}/CarePlan",
        params={"identifier": f"{CAREPLAN_ID_SYSTEM}|", "subject": f"Patient/{patient}"},
        headers={"Accept": "application/fhir+json"},
        timeout=30,
    ).json()
    return [e["resource"] for e in bundle.get("entry", [])]


def activity_texts(fhir_server: str, careplan: dict[str, Any]) -> list[str]:
    texts = []
    for activity in careplan["activity"]:
        if "reference" in activity:
            referral = httpx.get(
                f"{fhir_server}/{activity['reference']['reference']}",
                headers={"Accept": "application/fhir+json"},
            ).json()
            texts.append(referral["code"]["text"])
        else:
            texts.append(activity["detail"]["description"])
    return texts


def test_ehr_launch_review_drop_and_approve_in_chromium(patient_server: str) -> None:
    profile, plan = expected_plan()
    dropped = next(a for a in plan.activities if a.is_referral)
    app_port, auth_port = free_loopback_port(), free_loopback_port()
    app_url = f"http://127.0.0.1:{app_port}"
    authz = SmartAuthServer(
        root=f"http://127.0.0.1:{auth_port}",
        upstream=patient_server,
        client_id=CLIENT_ID,
        redirect_uri=f"{app_url}/callback",
        patient=PATIENT,
        practitioner=f"Practitioner/{PRACTITIONER['id']}",
    )
    config = AppConfig(
        client_id=CLIENT_ID,
        definitions=load_definitions(bundled_path("profiles")),
        public_url=app_url,
        allowed_issuers=frozenset({authz.fhir_base}),
        as_of=AS_OF,
    )
    with (
        serving(authz.app(), auth_port),
        serving(create_app(config), app_port),
        playwright_api.sync_playwright() as pw,
    ):
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(20_000)
            requests: list[Any] = []
            page.on("requestfinished", lambda request: requests.append(request))
            launch = f"{app_url}/launch?iss={authz.fhir_base}&launch={authz.launch_token}"
            started = time.perf_counter()
            page.goto(launch)
            page.get_by_role("heading", name="Personalized care plan proposal").wait_for()
            render_seconds = time.perf_counter() - started
            assert page.url == f"{app_url}/app"
            html = page.content()
            page_requests = [r for r in requests if r.url.startswith(app_url)]
            app_document = next(r for r in page_requests if r.url == f"{app_url}/app")
            assets = [r for r in page_requests if "/static/" in r.url]
            html_bytes = app_document.sizes()["responseBodySize"]
            weight = html_bytes + sum(r.sizes()["responseBodySize"] for r in assets)

            # PKCE S256 went out, the token never reached the page or any URL
            assert authz.authorize_params[-1]["code_challenge_method"] == "S256"
            assert len(authz.issued) == 1
            token = authz.issued[0]
            assert token not in html
            assert all(token not in r.url for r in requests)
            # nothing but the app, the authorization server and its FHIR base was contacted
            assert {r.url.split("/")[2] for r in requests} <= {
                f"127.0.0.1:{app_port}",
                f"127.0.0.1:{auth_port}",
            }

            # the patient's current findings, each linked to its source on the FHIR server
            for _, finding in profile.findings():
                if finding.current_present:
                    row = page.locator("tr.finding", has_text=finding.statement).first
                    for source in finding.sources:
                        link = row.get_by_role("link", name=source)
                        assert link.get_attribute("href") == f"{authz.fhir_base}/{source}"

            page.get_by_label(f"Drop: {dropped.description}").check()
            page.get_by_role("button", name="Approve plan").click()
            notice = page.get_by_role("status")
            notice.wait_for()
            assert "Approved" in notice.inner_text()
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shot = ARTIFACTS / "web-app-approved.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()

    careplans = stored_careplans(patient_server)
    assert len(careplans) == 1
    careplan = careplans[0]
    assert careplan["status"] == "active"
    texts = activity_texts(patient_server, careplan)
    assert len(texts) == len(plan.activities) - 1
    assert dropped.description not in texts
    print(
        f"\nweb app: launch-to-page {render_seconds * 1000:.0f} ms; page weight {weight} bytes "
        f"(HTML {html_bytes} + {len(assets)} asset(s)); "
        f"screenshot {shot}"
    )


# -- the launch in the EHR's iframe, across two sites, over HTTPS --------------------------------


@pytest.fixture
def certificate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A self-signed certificate for ``localhost`` and ``127.0.0.1`` and its key. The app's own
    HTTP clients (discovery, token, key set, FHIR) trust it as they would a real CA's
    (SSL_CERT_FILE, which httpx reads); Chromium is told to ignore certificate errors."""
    cert_path, key_path = self_signed_certificate(tmp_path, ["localhost", "127.0.0.1"], ca=True)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_path))
    return cert_path, key_path


class CookieAs:
    """The app with its HTTPS session cookie's attributes replaced by ``attributes``: how it
    was before the fix (``SameSite=Lax``), or without ``Partitioned``."""

    def __init__(self, attributes: bytes) -> None:
        self.attributes = attributes

    def __call__(self, app: Any) -> Any:
        async def wrapped(scope: Any, receive: Any, send: Any) -> None:
            async def rewrite(message: Any) -> None:
                if message["type"] == "http.response.start":
                    message["headers"] = [
                        (k, v.replace(b"SameSite=None; Secure; Partitioned", self.attributes))
                        if k == b"set-cookie"
                        else (k, v)
                        for k, v in message["headers"]
                    ]
                await send(message)

            await app(scope, receive, rewrite)

        return wrapped


class FramedLaunch:
    """The EHR (https://localhost) framing the app (https://127.0.0.1) in Chromium."""

    def __init__(self, fhir_server: str, tls: tuple[Path, Path]) -> None:
        app_port, ehr_port = free_loopback_port(), free_loopback_port()
        self.app_url = f"https://127.0.0.1:{app_port}"
        self.ports, self.tls = (app_port, ehr_port), tls
        self.ehr = SmartAuthServer(
            root=f"https://localhost:{ehr_port}",
            upstream=fhir_server,
            client_id=CLIENT_ID,
            redirect_uri=f"{self.app_url}/callback",
            patient=FRAMED_PATIENT,
            practitioner=f"Practitioner/{PRACTITIONER['id']}",
        )
        query = urlencode({"iss": self.ehr.fhir_base, "launch": self.ehr.launch_token})
        self.ehr.app_launch_url = f"{self.app_url}/launch?{query}"
        # no frame_ancestors given: the allowed iss's origin, https://localhost:PORT, is the EHR's
        self.config = AppConfig(
            client_id=CLIENT_ID,
            definitions=load_definitions(bundled_path("profiles")),
            public_url=self.app_url,
            allowed_issuers=frozenset({self.ehr.fhir_base}),
            as_of=AS_OF,
        )

    @contextmanager
    def open(self, wrap: Any = None) -> Iterator[tuple[Any, Any]]:
        """Serve both sites in Chromium; yields (a blank page, a function opening the EHR's
        page with the app framed in it and answering the app's frame)."""
        app = create_app(self.config)
        with (
            serving(self.ehr.app(), self.ports[1], self.tls),
            serving(wrap(app) if wrap else app, self.ports[0], self.tls),
            playwright_api.sync_playwright() as pw,
        ):
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                context = browser.new_context(ignore_https_errors=True)
                page = context.new_page()
                page.set_default_timeout(20_000)

                def open_ehr() -> Any:
                    page.goto(f"{self.ehr.root}/ehr")
                    return page.frame_locator("#app")

                yield page, open_ehr
            finally:
                browser.close()


def test_iframe_launch_across_sites_signs_in_the_clinician_and_approves(
    patient_server: str, certificate: tuple[Path, Path]
) -> None:
    launch = FramedLaunch(patient_server, certificate)
    reference = f"Practitioner/{PRACTITIONER['id']}"
    with launch.open() as (page, open_ehr):
        started = time.perf_counter()
        frame = open_ehr()
        frame.get_by_role("heading", name="Personalized care plan proposal").wait_for()
        framed_seconds = time.perf_counter() - started
        assert page.url == f"{launch.ehr.root}/ehr"  # the EHR's page stayed on top
        (app_frame,) = [f for f in page.frames if f.url.startswith(launch.app_url)]
        assert app_frame.url == f"{launch.app_url}/app"
        # the nonce went out and the id_token came back with it, checked against the EHR's keys
        assert launch.ehr.authorize_params[-1]["nonce"]
        signed_in = frame.locator(".signed-in").inner_text()
        assert signed_in == f"Signed in as Dr. Rosalind Franklin ({reference})"
        frame.get_by_role("button", name="Approve plan").click()
        notice = frame.get_by_role("status")
        notice.wait_for()
        assert "Approved" in notice.inner_text()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "web-app-iframe-approved.png"
        frame.locator(".signed-in").scroll_into_view_if_needed()
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(shot))

    (careplan,) = stored_careplans(patient_server, FRAMED_PATIENT)
    assert careplan["status"] == "active"
    assert careplan["author"] == {"reference": reference}
    provenances = httpx.get(
        f"{patient_server}/Provenance",
        params={"target": f"CarePlan/{careplan['id']}"},
        headers={"Accept": "application/fhir+json"},
        timeout=30,
    ).json()
    (provenance,) = [e["resource"] for e in provenances.get("entry", [])]
    agents = {a["type"]["coding"][0]["code"]: a["who"] for a in provenance["agent"]}
    assert agents["author"] == {"reference": reference}
    assert agents["assembler"]["display"].startswith("fhir-tailor")
    print(
        "\nweb app in the EHR's iframe (HTTPS, two sites): "
        f"launch-to-page {framed_seconds * 1000:.0f} ms"
    )


@pytest.mark.parametrize(
    "attributes",
    [
        pytest.param(b"SameSite=Lax; Secure", id="lax-as-before"),
        # Chromium here blocks third-party cookies unless partitioned (CHIPS), as Safari and
        # Chrome's incognito windows do: SameSite=None alone is not enough in every browser.
        pytest.param(b"SameSite=None; Secure", id="not-partitioned"),
    ],
)
def test_iframe_launch_fails_without_a_partitioned_cross_site_cookie(
    patient_server: str, certificate: tuple[Path, Path], attributes: bytes
) -> None:
    """What EHRs met before the fix: the cookie is not stored from a cross-site iframe, so the
    callback finds no launch of this browser session."""
    launch = FramedLaunch(patient_server, certificate)
    with launch.open(wrap=CookieAs(attributes)) as (_page, open_ehr):
        frame = open_ehr()
        message = frame.get_by_text("This sign-in does not match a launch of this browser session")
        message.wait_for()
    assert len(launch.ehr.authorize_params) == 1  # the launch went out; the way back failed
    assert launch.ehr.issued == []  # no code was exchanged: the app stopped at the state check
