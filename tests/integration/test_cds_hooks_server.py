"""The CDS Hooks service against a real FHIR server: no prefetch, the record and the stored plan
read live, and each card's suggestion applied to the server as a CDS client applies it (CDS Hooks
2.0, "Suggestion": as a FHIR transaction, or action by action), then checked: every reference
resolves, a second card suggests no new plan, a second application leaves one CarePlan, and
``fhir-tailor sync`` for the patient finds its plan and is content with it.

Calls carry a client JWT signed with an EC key whose JWK Set the service was given as a file
(keys exchanged out of band); test_cds_security.py covers the refusals."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import ec
from fhir.resources.R4B.careplan import CarePlan
from starlette.applications import Starlette
from starlette.testclient import TestClient

from fhir_tailor.cli import main
from fhir_tailor.definitions import Definitions, bundled_path, load_definitions
from fhir_tailor.pipeline import assess
from fhir_tailor.resources import CAREPLAN_ID_SYSTEM, PLAN_FINGERPRINT_URL, to_fhir
from fhir_tailor.sources import BundleSource
from fhir_tailor.web.cds_auth import ClientAuth, TrustedClient
from fhir_tailor.web.cds_cors import cds_cors
from fhir_tailor.web.cds_hooks import cds_routes

AS_OF = date(2026, 11, 15)
FIXTURES = bundled_path("fixtures") / "bundles"
BUNDLE = FIXTURES / "01-diabetes-transport-insecurity.json"
#: Patients the tests write plans for, one each: referrals; urgent Tasks; an update.
STEMS = ("01", "34", "09")
PUBLIC = "https://tailor.example"
SERVICE = "/cds-services/fhir-tailor-care-plan"
ISS = "https://ehr.example"
KID = "ehr-2026"
FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


class Conflict(Exception):
    """The server refused a write under If-Match: the resource has a newer version."""


def bundle_of(stem: str) -> Path:
    return next(FIXTURES.glob(f"{stem}-*.json"))


def patient_of(stem: str) -> str:
    (record,) = BundleSource(bundle_of(stem)).records(lambda issue: None)
    return record.patient_id


@pytest.fixture(scope="module")
def definitions() -> Definitions:
    return load_definitions(bundled_path("profiles"))


@pytest.fixture(scope="module")
def loaded(own_server: str) -> str:
    """A server of this module's own with the fixture patients (their transaction Bundles PUT
    client ids): the plans the cards write must not meet other tests' syncs of the fixtures."""
    for stem in STEMS:
        response = httpx.post(
            own_server, content=bundle_of(stem).read_bytes(), headers=FHIR_JSON, timeout=60
        )
        assert response.status_code == 200, response.text[:500]
    return own_server


@pytest.fixture(scope="module")
def ehr_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture(scope="module")
def service(
    definitions: Definitions, ehr_key: ec.EllipticCurvePrivateKey, tmp_path_factory: Any
) -> TestClient:
    public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ehr_key.public_key()))
    keys = tmp_path_factory.mktemp("ehr") / "jwks.json"
    keys.write_text(json.dumps({"keys": [public | {"kid": KID, "use": "sig", "alg": "ES384"}]}))
    routes = cds_routes(
        definitions,
        public_url=PUBLIC,
        auth=ClientAuth([TrustedClient(ISS, str(keys))]),
        today=lambda: AS_OF,
    )
    return TestClient(Starlette(routes=routes, middleware=[cds_cors()]), base_url=PUBLIC)


@pytest.fixture
def http(loaded: str) -> httpx.Client:
    return httpx.Client(base_url=loaded + "/", headers=FHIR_JSON, timeout=60)


def signed(ehr_key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    """A fresh client JWT for the service endpoint, as a CDS client signs one per call."""
    now = int(time.time())
    claims = {
        "iss": ISS,
        "aud": f"{PUBLIC}{SERVICE}",
        "iat": now,
        "exp": now + 300,
        "jti": str(uuid.uuid4()),
    }
    token = jwt.encode(claims, ehr_key, algorithm="ES384", headers={"kid": KID, "typ": "JWT"})
    return {"Authorization": f"Bearer {token}"}


def card_for(
    service: TestClient, key: ec.EllipticCurvePrivateKey, server: str, pid: str
) -> dict[str, Any]:
    call = {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "fhirServer": server,
        "context": {"userId": "Practitioner/example", "patientId": pid},
    }
    response = service.post(SERVICE, json=call, headers=signed(key))
    assert response.status_code == 200, response.text
    (card,) = response.json()["cards"]
    return dict(card)


def apply(http: httpx.Client, suggestion: dict[str, Any], *, transaction: bool) -> None:
    """Apply a suggestion's actions as a CDS client does: one FHIR transaction whose entries'
    URLs are inferred from type and id, or each action in order; ``update`` is a PUT, with
    If-Match on the ``meta.versionId`` the resource carries."""
    requests = []
    for action in suggestion["actions"]:
        assert action["type"] == "update", action["type"]
        resource = action["resource"]
        version = resource.get("meta", {}).get("versionId")
        url = f"{resource['resourceType']}/{resource['id']}"
        requests.append((url, resource, f'W/"{version}"' if version else None))
    if transaction:
        entries = [
            {
                "resource": resource,
                "request": {"method": "PUT", "url": url} | ({"ifMatch": tag} if tag else {}),
            }
            for url, resource, tag in requests
        ]
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        response = http.post("", json=bundle)
        if response.status_code in (409, 412):
            raise Conflict(response.status_code)
        assert response.status_code == 200, response.text[:500]
        return
    for url, resource, tag in requests:
        response = http.put(url, json=resource, headers={"If-Match": tag} if tag else {})
        if response.status_code in (409, 412):  # sekmet 412, HAPI 409 (docs/servers.md)
            raise Conflict(response.status_code)
        assert response.status_code in (200, 201), f"{url}: {response.text[:500]}"


def our_careplans(http: httpx.Client, pid: str, definitions: Definitions) -> list[dict[str, Any]]:
    info = definitions.catalog.info
    identifier = f"{CAREPLAN_ID_SYSTEM}|{pid}/{info.id}/{info.version}"
    found = http.get("CarePlan", params={"identifier": identifier}).raise_for_status().json()
    return [e["resource"] for e in found.get("entry", [])]


def references(value: Any) -> list[str]:
    if isinstance(value, dict):
        found = [value["reference"]] if isinstance(value.get("reference"), str) else []
        return found + [r for v in value.values() for r in references(v)]
    if isinstance(value, list):
        return [r for v in value for r in references(v)]
    return []


def unresolved(http: httpx.Client, careplan: dict[str, Any]) -> list[str]:
    """References from the CarePlan and from what it references, read back from the server,
    that the server cannot resolve."""
    missing, seen, todo = [], set(), [careplan]
    while todo:
        resource = todo.pop()
        for ref in references(resource):
            if ref in seen or ref.startswith(("urn:", "#")):
                continue
            seen.add(ref)
            response = http.get(ref)
            if response.status_code != 200:
                missing.append(ref)
            elif ref.startswith(("Goal/", "ServiceRequest/", "Task/")):
                todo.append(response.json())
    return missing


def sync_patient(server: str, pid: str, tmp_path: Path) -> dict[str, Any]:
    report = tmp_path / "report.json"
    result = CliRunner().invoke(
        main,
        [
            "--as-of",
            AS_OF.isoformat(),
            "sync",
            "--server",
            server,
            "--patient",
            pid,
            "--report",
            str(report),
        ],
    )
    assert result.exit_code == 0, result.stderr
    (outcome,) = json.loads(report.read_text())["patients"]
    return dict(outcome)


def test_patient_view_without_prefetch_reads_the_server_and_answers_the_pipelines_card(
    loaded: str, definitions: Definitions, service: TestClient, ehr_key: Any
) -> None:
    (record,) = BundleSource(BUNDLE).records(lambda issue: None)
    profile, _, plan = assess(record, definitions, AS_OF)
    assert plan is not None
    card = card_for(service, ehr_key, loaded, record.patient_id)
    needs = [f for _, f in profile.findings() if f.current_present]
    assert card["summary"].startswith(f"{len(needs)} need") and len(card["summary"]) < 140
    assert 0 < len(needs) <= 5  # so the detail lists every one
    assert all(source in card["detail"] for f in needs for source in f.sources)
    careplan = card["suggestions"][0]["actions"][-1]["resource"]
    CarePlan.model_validate(careplan)
    expected = to_fhir(plan, datetime.now(UTC)).careplan.resource
    # Read live, the record gives the same plan as the Bundle file: same content, same digest.
    assert json.dumps(careplan["extension"]) == json.dumps(expected["extension"])


@pytest.mark.parametrize(
    ("stem", "transaction"),
    [("01", True), ("34", False)],
    ids=["referrals-as-transaction", "urgent-tasks-one-by-one"],
)
def test_a_card_applied_twice_leaves_one_plan_whose_references_resolve(
    loaded: str,
    http: httpx.Client,
    definitions: Definitions,
    service: TestClient,
    ehr_key: Any,
    tmp_path: Path,
    stem: str,
    transaction: bool,
) -> None:
    pid = patient_of(stem)
    (record,) = BundleSource(bundle_of(stem)).records(lambda issue: None)
    _, _, plan = assess(record, definitions, AS_OF)
    assert plan is not None
    assert not our_careplans(http, pid, definitions)
    card = card_for(service, ehr_key, loaded, pid)
    (suggestion,) = card["suggestions"]
    apply(http, suggestion, transaction=transaction)
    (careplan,) = our_careplans(http, pid, definitions)
    assert not unresolved(http, careplan)
    assert len(careplan.get("goal", [])) == len(plan.goals)
    tasks = [a for a in careplan.get("activity", []) if "Task/" in str(a.get("reference"))]
    assert len(tasks) == len(plan.urgent)
    # The chart opened again: the draft is found, nothing new is suggested.
    again = card_for(service, ehr_key, loaded, pid)
    assert "suggestions" not in again
    assert f"CarePlan/{careplan['id']} is up to date" in again["detail"]
    # The first card accepted once more (a stale card, a second click): the same resources.
    apply(http, suggestion, transaction=False)
    (after,) = our_careplans(http, pid, definitions)
    assert after["id"] == careplan["id"] and not unresolved(http, after)
    # sync finds the plan the card wrote and has nothing to change.
    outcome = sync_patient(loaded, pid, tmp_path)
    assert outcome["outcome"] == "unchanged", outcome
    assert outcome["careplan"] == f"CarePlan/{careplan['id']}"


def test_a_stored_draft_is_updated_under_if_match_and_a_clinicians_plan_is_left_alone(
    loaded: str,
    http: httpx.Client,
    definitions: Definitions,
    service: TestClient,
    ehr_key: Any,
    tmp_path: Path,
) -> None:
    pid = patient_of("09")
    apply(http, card_for(service, ehr_key, loaded, pid)["suggestions"][0], transaction=True)
    (careplan,) = our_careplans(http, pid, definitions)
    # A draft written for other data (an older plan): its fingerprint differs, nobody edited it.
    older = careplan | {
        "extension": [
            e | {"valueString": "older"} if e["url"] == PLAN_FINGERPRINT_URL else e
            for e in careplan["extension"]
        ]
    }
    http.put(f"CarePlan/{careplan['id']}", json=older).raise_for_status()
    card = card_for(service, ehr_key, loaded, pid)
    (suggestion,) = card["suggestions"]
    assert suggestion["label"].startswith(f"Update the draft care plan (CarePlan/{careplan['id']})")
    versions = [a["resource"].get("meta", {}).get("versionId") for a in suggestion["actions"]]
    assert all(versions), "every action updates a stored resource under its version"
    apply(http, suggestion, transaction=False)
    (updated,) = our_careplans(http, pid, definitions)
    assert updated["id"] == careplan["id"] and not unresolved(http, updated)
    with pytest.raises(Conflict):  # the same update again: the versions moved on
        apply(http, suggestion, transaction=False)
    assert sync_patient(loaded, pid, tmp_path)["outcome"] == "unchanged"
    # A clinician approves the plan: the card informs and suggests nothing.
    (current,) = our_careplans(http, pid, definitions)
    http.put(f"CarePlan/{current['id']}", json=current | {"status": "active"}).raise_for_status()
    info = card_for(service, ehr_key, loaded, pid)
    assert "suggestions" not in info and info["indicator"] == "info"
    assert f"CarePlan/{current['id']} is a clinician's now" in info["detail"]
    assert [link["type"] for link in info["links"]] == ["smart"]
