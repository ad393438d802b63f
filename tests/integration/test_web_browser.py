"""The SMART app end to end in headless Chromium: EHR launch, review, drop, approve.

Real pieces throughout: the app on uvicorn, a SMART authorization server that checks PKCE and
forwards FHIR calls only with the token it issued (``smart_authz``), the loopback FHIR server,
and Debian's Chromium driven by Playwright (never a downloaded browser). Run with ``-s`` to see
the launch-to-page time and the page weight.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
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


def fixture_bundle() -> dict[str, Any]:
    bundle: dict[str, Any] = json.loads(FIXTURE.read_text().replace("ft-01", PATIENT))
    return bundle


@pytest.fixture(scope="module")
def patient_server(own_server: str) -> str:
    """A server of this module's own: an approved CarePlan must not surprise other tests'
    counts of fhir-tailor's CarePlans, nor theirs ours."""
    response = httpx.post(
        own_server,
        json=fixture_bundle(),
        headers={"Content-Type": "application/fhir+json"},
        timeout=60,
    )
    assert response.status_code == 200, response.text[:500]
    return own_server


def expected_plan() -> Any:
    """The plan the pipeline makes from the same data read from the file."""
    resources = [entry["resource"] for entry in fixture_bundle()["entry"]]
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    record = PatientRecord(patient, tuple(r for r in resources if r is not patient))
    profile, _, plan = assess(record, load_definitions(bundled_path("profiles")), AS_OF)
    assert plan is not None and len(plan.activities) > 1
    return profile, plan


def stored_careplans(fhir_server: str) -> list[dict[str, Any]]:
    bundle = httpx.get(
        f"{fhir_server}/CarePlan",
        params={"identifier": f"{CAREPLAN_ID_SYSTEM}|", "subject": f"Patient/{PATIENT}"},
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
                    row = page.locator("tr.finding", has_text=finding.label).first
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
