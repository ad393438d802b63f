"""The CDS Hooks service: every answer checked against the specification's shapes (CDS Hooks 2.0,
written below as pydantic models), cards checked against the pipeline run independently, the
fallback fetch checked with respx for where the token goes, and each card's suggestion applied to
a FHIR store as a client would (:class:`ClientStore`) to check it never makes a second plan.

Client authentication, CORS and feedback: test_cds_security.py."""

from __future__ import annotations

import json
import logging
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
import respx
from fhir.resources.R4B.careplan import CarePlan
from fhir.resources.R4B.goal import Goal
from fhir.resources.R4B.servicerequest import ServiceRequest
from fhir.resources.R4B.task import Task
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.applications import Starlette
from starlette.testclient import TestClient

from fhir_tailor.definitions import Definitions, bundled_path
from fhir_tailor.pipeline import assess
from fhir_tailor.profile_model import Finding, Profile
from fhir_tailor.record import PatientRecord
from fhir_tailor.resources import (
    CAREPLAN_ID_SYSTEM,
    PLAN_FINGERPRINT_URL,
    identifier_search,
    to_fhir,
    unread_text,
)
from fhir_tailor.sources import BundleSource
from fhir_tailor.sources.server import EVERYTHING
from fhir_tailor.web.cds_auth import ClientAuth
from fhir_tailor.web.cds_hooks import cds_routes

AS_OF = date(2026, 11, 15)
RECORDED = datetime(2026, 11, 15, tzinfo=UTC)
PUBLIC = "https://tailor.example"
LAUNCH = f"{PUBLIC}/launch"
EHR = "https://ehr.example/fhir/r4"
TOKEN = "secret-token-abc123"
SERVICE = "/cds-services/fhir-tailor-care-plan"
BUNDLES = sorted((bundled_path("fixtures") / "bundles").glob("*.json"))
TYPES = {
    "conditions": "Condition",
    "observations": "Observation",
    "questionnaireResponses": "QuestionnaireResponse",
    "encounters": "Encounter",
    "medicationRequests": "MedicationRequest",
    "serviceRequests": "ServiceRequest",
}
SEVERITY = {None: 0, "low": 1, "moderate": 2, "high": 3}
QuestionnaireWay = Literal["patient", "subject", "everything"] | None


# -- the specification's shapes ------------------------------------------------------------


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Service(Spec):
    hook: str
    id: str
    title: str | None = None
    description: str
    prefetch: dict[str, str] | None = None
    usageRequirements: str | None = None


class Discovery(Spec):
    services: list[Service]


class Source(Spec):
    label: str
    url: str | None = None
    icon: str | None = None
    topic: dict[str, Any] | None = None


class Action(Spec):
    type: Literal["create", "update", "delete"]
    description: str
    resource: dict[str, Any] | None = None
    resourceId: str | None = None


class Suggestion(Spec):
    label: str
    uuid: str | None = None
    isRecommended: bool | None = None
    actions: list[Action] | None = None


class Link(Spec):
    label: str
    url: str
    type: Literal["absolute", "smart"]
    appContext: str | None = None


class Card(Spec):
    uuid: str | None = None
    summary: str = Field(max_length=139)
    detail: str | None = None
    indicator: Literal["info", "warning", "critical"]
    source: Source
    suggestions: list[Suggestion] | None = None
    selectionBehavior: Literal["at-most-one", "any"] | None = None
    links: list[Link] | None = None

    @model_validator(mode="after")
    def _selection_with_suggestions(self) -> Card:
        if self.suggestions and self.selectionBehavior is None:
            raise ValueError("selectionBehavior is required when there are suggestions")
        return self


class Response(Spec):
    cards: list[Card]
    systemActions: list[Action] | None = None


# -- helpers ---------------------------------------------------------------------------------


def resources_of(path: Path) -> list[dict[str, Any]]:
    return [e["resource"] for e in json.loads(path.read_text(encoding="utf-8"))["entry"]]


def searchset(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [{"resource": r, "search": {"mode": "match"}} for r in resources],
    }


def prefetch_for(path: Path) -> dict[str, Any]:
    """What a CDS client would prefetch for the service's templates, from a fixture Bundle."""
    resources = resources_of(path)
    prefetch: dict[str, Any] = {
        key: searchset([r for r in resources if r["resourceType"] == rtype])
        for key, rtype in TYPES.items()
    }
    prefetch["patient"] = next(r for r in resources if r["resourceType"] == "Patient")
    # Nothing of ours stored yet: null, as the specification has a client say "no data".
    prefetch |= {"ourCarePlan": None, "goals": None, "tasks": searchset([])}
    return prefetch


def patient_id(path: Path) -> str:
    return str(prefetch_for(path)["patient"]["id"])


def hook_call(pid: str, **fields: Any) -> dict[str, Any]:
    return {
        "hook": "patient-view",
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": {"userId": "Practitioner/example", "patientId": pid},
        **fields,
    }


def record_of(path: Path) -> PatientRecord:
    (record,) = BundleSource(path).records(lambda issue: None)
    return record


def current_needs(profile: Profile) -> list[Finding]:
    return [f for _, f in profile.findings() if f.current_present]


def cards_of(response: httpx.Response) -> list[Card]:
    assert response.status_code == 200, response.text
    return Response.model_validate(response.json()).cards


def with_plan(definitions: Definitions) -> list[Path]:
    return [p for p in BUNDLES if assess(record_of(p), definitions, AS_OF)[2] is not None]


def service(definitions: Definitions) -> TestClient:
    """The service, without client authentication (test_cds_security.py tests that)."""
    routes = cds_routes(
        definitions,
        public_url=PUBLIC,
        auth=ClientAuth.insecure_no_client_auth(),
        today=lambda: AS_OF,
    )
    return TestClient(Starlette(routes=routes))


@pytest.fixture(scope="module")
def client(definitions: Definitions) -> TestClient:
    return service(definitions)


def check_card(card: Card, path: Path, definitions: Definitions) -> None:
    """The card says what the pipeline, run on the same Bundle, finds and plans."""
    profile, _, plan = assess(record_of(path), definitions, AS_OF)
    assert plan is not None
    needs = current_needs(profile)
    summary = card.summary
    if plan.urgent:  # an urgent finding comes first, and makes the card critical
        first = plan.urgent[0]
        assert summary.startswith(f"URGENT ({first.priority}): {first.label}")
        summary = summary.split("; ", 1)[1]
    assert summary.startswith(f"{len(needs)} need" if needs else "No current needs")
    top_level = max(("none", "low", "moderate", "high").index(d.need) for d in _dimensions(profile))
    levels = ("info", "info", "warning", "critical")
    assert card.indicator == ("critical" if plan.urgent else levels[top_level])
    assert card.source.label.startswith("fhir-tailor")
    assert definitions.catalog.info.version in card.source.label
    # The detail lists the most severe needs first, each with the resource it came from.
    assert card.detail is not None
    listed = [line for line in card.detail.splitlines() if line.startswith("- **")]
    assert len(listed) == min(5, len(needs))
    by_statement = {f.statement: f for f in needs}
    shown = [by_statement[line[4 : line.index("**", 4)]] for line in listed]
    for finding, line in zip(shown, listed, strict=True):
        assert all(source in line for source in finding.sources)
    ranks = [SEVERITY[f.severity] for f in shown]
    assert ranks == sorted(ranks, reverse=True)
    left_out = [f for f in needs if f not in shown]
    assert all(SEVERITY[f.severity] <= min(ranks, default=0) for f in left_out)
    # One suggestion: the CarePlan, its Goals, referrals and Tasks, each an update (PUT) at the
    # id its identifier determines, referenced as Type/id, what is referenced listed first.
    assert card.suggestions is not None and card.selectionBehavior == "at-most-one"
    (suggestion,) = card.suggestions
    assert suggestion.actions is not None
    assert {a.type for a in suggestion.actions} == {"update"}
    written = [a.resource for a in suggestion.actions if a.resource]
    assert len(written) == len(suggestion.actions)
    assert [r["resourceType"] for r in written].count("CarePlan") == 1
    assert written[-1]["resourceType"] == "CarePlan"
    careplan = CarePlan.model_validate(written[-1]).model_dump(mode="json", exclude_none=True)
    rendered = to_fhir(plan, RECORDED)
    expected = rendered.careplan.resource
    assert careplan["title"] == expected["title"]
    assert careplan["subject"] == {"reference": f"Patient/{patient_id(path)}"}
    assert careplan["status"] == "draft"
    goals = [Goal.model_validate(r) for r in written if r["resourceType"] == "Goal"]
    referrals = [
        ServiceRequest.model_validate(r) for r in written if r["resourceType"] == "ServiceRequest"
    ]
    tasks = [Task.model_validate(r) for r in written if r["resourceType"] == "Task"]
    assert len(goals) == len(plan.goals) and len(referrals) == len(expected_referrals(plan))
    assert [t.priority for t in tasks] == [f.priority for f in plan.urgent]
    ids = [f"{r['resourceType']}/{r['id']}" for r in written]
    assert ids_of(rendered.entries[:-1]) == set(ids)  # all but the Provenance
    for n, resource in enumerate(written):  # each refers only to what is listed before it
        ours = {r for r in _references(resource) if r in ids}
        assert ours <= set(ids[:n]), resource["resourceType"]
    references = set(_references(careplan))
    assert {
        r for r in references if not r.startswith(("Patient/", "Condition/", "Observation/"))
    } == set(ids[:-1])
    assert not any(r.startswith("urn:") for r in references)
    assert card.links is not None
    assert [(link.type, link.url) for link in card.links] == [("smart", LAUNCH)]


def ids_of(entries: Any) -> set[str]:
    """``Type/uuid`` of entries: the ids their business identifiers determine."""
    return {f"{e.resource['resourceType']}/{e.full_url.removeprefix('urn:uuid:')}" for e in entries}


def expected_referrals(plan: Any) -> list[Any]:
    return [a for a in plan.activities if a.is_referral]


def _dimensions(profile: Profile) -> list[Any]:
    return [profile.medical, profile.cognitive_behavioral, profile.social, profile.functional]


def _references(value: Any) -> list[str]:
    if isinstance(value, dict):
        found = [value["reference"]] if isinstance(value.get("reference"), str) else []
        return found + [r for v in value.values() for r in _references(v)]
    if isinstance(value, list):
        return [r for v in value for r in _references(v)]
    return []


# -- discovery -------------------------------------------------------------------------------


def test_discovery_lists_the_patient_view_service_with_prefetch_templates(
    client: TestClient,
) -> None:
    response = client.get("/cds-services")
    assert response.status_code == 200
    (service,) = Discovery.model_validate(response.json()).services
    assert (service.hook, service.id) == ("patient-view", "fhir-tailor-care-plan")
    assert service.prefetch is not None
    templates = set(service.prefetch.values())
    assert {
        "Patient/{{context.patientId}}",
        "Condition?patient={{context.patientId}}",
        "Observation?patient={{context.patientId}}",
    } <= templates


# -- with prefetch ---------------------------------------------------------------------------


def test_prefetched_call_returns_a_card_with_the_pipelines_needs_and_plan(
    client: TestClient, definitions: Definitions
) -> None:
    path = with_plan(definitions)[0]
    response = client.post(SERVICE, json=hook_call(patient_id(path), prefetch=prefetch_for(path)))
    (card,) = cards_of(response)
    check_card(card, path, definitions)


@pytest.mark.parametrize("path", BUNDLES, ids=lambda p: p.stem[:2])
def test_every_fixture_patient_gets_a_valid_answer(
    client: TestClient, definitions: Definitions, path: Path
) -> None:
    """A card with a summary under 140 characters when a plan applies; no card otherwise."""
    _, _, plan = assess(record_of(path), definitions, AS_OF)
    response = client.post(SERVICE, json=hook_call(patient_id(path), prefetch=prefetch_for(path)))
    cards = cards_of(response)
    assert len(cards) == (plan is not None)
    for card in cards:
        assert len(card.summary) < 140
        check_card(card, path, definitions)


def test_no_plan_means_no_card(client: TestClient, definitions: Definitions) -> None:
    without = [p for p in BUNDLES if p not in with_plan(definitions)]
    assert without, "the fixtures should hold a patient without a plan"
    response = client.post(
        SERVICE, json=hook_call(patient_id(without[0]), prefetch=prefetch_for(without[0]))
    )
    assert cards_of(response) == []


def test_operation_outcome_in_place_of_a_prefetch_counts_as_missing(
    client: TestClient, definitions: Definitions
) -> None:
    path = with_plan(definitions)[0]
    prefetch = prefetch_for(path)
    prefetch["observations"] = {"resourceType": "OperationOutcome", "issue": []}
    response = client.post(SERVICE, json=hook_call(patient_id(path), prefetch=prefetch))
    assert response.status_code == 412
    assert "observations" in response.json()["error"]


# -- without prefetch: the fallback fetch ----------------------------------------------------


def mock_ehr(
    router: respx.MockRouter, path: Path, questionnaires: QuestionnaireWay = "patient"
) -> None:
    """A FHIR server holding one fixture patient; it answers only requests with the token.
    ``questionnaires`` is the one way it declares to read QuestionnaireResponses (every other
    type: a ``patient`` search); it answers no other way for them."""
    resources = resources_of(path)
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    searchable = [{"name": "patient", "type": "reference"}]
    by_identifier = [{"name": "identifier", "type": "token"}]
    declared = {t: searchable for t in TYPES.values()}
    declared["QuestionnaireResponse"] = (
        [{"name": "subject", "type": "reference"}] if questionnaires == "subject" else []
    )
    if questionnaires == "patient":
        declared["QuestionnaireResponse"] = searchable
    everything = [{"name": "everything", "definition": EVERYTHING}]
    capabilities = {
        "resourceType": "CapabilityStatement",
        "fhirVersion": "4.0.1",
        "rest": [
            {
                "mode": "server",
                "resource": [{"type": t, "searchParam": p} for t, p in declared.items()]
                + [{"type": t, "searchParam": by_identifier} for t in ("CarePlan", "Task")]
                + [{"type": "Patient", "operation": everything}] * (questionnaires == "everything"),
            }
        ],
    }

    def authorized(body: dict[str, Any]) -> Any:
        def respond(request: httpx.Request) -> httpx.Response:
            if request.headers.get("Authorization") != f"Bearer {TOKEN}":
                return httpx.Response(401)
            return httpx.Response(200, json=body)

        return respond

    router.get(f"{EHR}/metadata").mock(side_effect=authorized(capabilities))
    router.get(f"{EHR}/Patient/{patient['id']}").mock(side_effect=authorized(patient))
    for rtype in TYPES.values():
        matches = [r for r in resources if r["resourceType"] == rtype]
        if rtype != "QuestionnaireResponse" or questionnaires == "patient":
            router.get(f"{EHR}/{rtype}", params={"patient": patient["id"]}).mock(
                side_effect=authorized(searchset(matches))
            )
    answers = [r for r in resources if r["resourceType"] == "QuestionnaireResponse"]
    if questionnaires == "subject":
        router.get(
            f"{EHR}/QuestionnaireResponse",
            params={"subject": f"Patient/{patient['id']}"},
            name="questionnaires",
        ).mock(side_effect=authorized(searchset(answers)))
    if questionnaires == "everything":  # with the Patient too: a server may ignore _type
        router.get(
            f"{EHR}/Patient/{patient['id']}/$everything",
            params={"_type": "QuestionnaireResponse"},
            name="questionnaires",
        ).mock(side_effect=authorized(searchset([patient, *answers])))
    for rtype in ("CarePlan", "Task"):  # the plan already stored: none
        router.get(f"{EHR}/{rtype}").mock(side_effect=authorized(searchset([])))


def authorization() -> dict[str, Any]:
    return {
        "fhirServer": EHR,
        "fhirAuthorization": {
            "access_token": TOKEN,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/*.read",
            "subject": "cds-service",
        },
    }


@respx.mock(assert_all_called=False)
def test_without_prefetch_the_service_reads_fhir_server_with_the_token(
    respx_mock: respx.MockRouter,
    client: TestClient,
    definitions: Definitions,
    caplog: pytest.LogCaptureFixture,
    phi: set[str],
) -> None:
    path = with_plan(definitions)[0]
    pid = patient_id(path)
    mock_ehr(respx_mock, path)
    with caplog.at_level(logging.DEBUG):
        response = client.post(SERVICE, json=hook_call(pid, **authorization()))
    (card,) = cards_of(response)
    check_card(card, path, definitions)
    assert respx_mock.calls and all(
        c.request.headers["Authorization"] == f"Bearer {TOKEN}" for c in respx_mock.calls
    )
    assert {c.request.url.host for c in respx_mock.calls} == {"ehr.example"}
    assert TOKEN not in caplog.text
    assert not [value for value in phi if value in caplog.text]


@respx.mock(assert_all_called=False)
def test_partial_prefetch_fetches_only_what_is_missing(
    respx_mock: respx.MockRouter, client: TestClient, definitions: Definitions
) -> None:
    path = with_plan(definitions)[0]
    pid = patient_id(path)
    mock_ehr(respx_mock, path)
    prefetch = prefetch_for(path)
    del prefetch["observations"], prefetch["encounters"]
    response = client.post(SERVICE, json=hook_call(pid, prefetch=prefetch, **authorization()))
    (card,) = cards_of(response)
    check_card(card, path, definitions)
    fetched = {c.request.url.path.rsplit("/", 1)[-1] for c in respx_mock.calls}
    assert fetched >= {"Observation", "Encounter"}
    assert not fetched & {"Condition", pid, "MedicationRequest"}


#: A fixture patient whose QuestionnaireResponses change the plan.
QUESTIONNAIRES = (
    bundled_path("fixtures") / "bundles" / "18-questionnaires-ahc-phq9-gad7-obesity.json"
)


def questionnaires_card(
    router: respx.MockRouter, client: TestClient, way: QuestionnaireWay
) -> Card:
    """The one card for :data:`QUESTIONNAIRES`' patient from a server that declares ``way`` to
    read QuestionnaireResponses (``None``: no way), nothing prefetched."""
    mock_ehr(router, QUESTIONNAIRES, questionnaires=way)
    response = client.post(SERVICE, json=hook_call(patient_id(QUESTIONNAIRES), **authorization()))
    (card,) = cards_of(response)
    return card


@pytest.mark.parametrize("way", ["subject", "everything"])
@respx.mock(assert_all_called=False)
def test_questionnaire_responses_are_read_the_way_the_server_declares(
    respx_mock: respx.MockRouter,
    client: TestClient,
    definitions: Definitions,
    way: QuestionnaireWay,
) -> None:
    path = QUESTIONNAIRES
    assert [r for r in resources_of(path) if r["resourceType"] == "QuestionnaireResponse"]
    card = questionnaires_card(respx_mock, client, way)
    check_card(card, path, definitions)  # the plan of the whole record, its forms included
    assert respx_mock.routes["questionnaires"].call_count == 1
    assert "note" not in careplan_of(card)


@respx.mock(assert_all_called=False)
def test_a_type_the_server_gives_no_way_to_read_is_noted_on_the_cards_careplan(
    respx_mock: respx.MockRouter, client: TestClient, definitions: Definitions
) -> None:
    path = QUESTIONNAIRES
    card = questionnaires_card(respx_mock, client, None)
    without = PatientRecord(
        record_of(path).patient,
        tuple(r for r in record_of(path).resources if r["resourceType"] != "QuestionnaireResponse"),
    )
    _, _, plan = assess(without, definitions, AS_OF)
    assert plan is not None and plan.unread_types == ()
    expected = to_fhir(plan.decided_without(("QuestionnaireResponse",)), RECORDED)
    careplan = careplan_of(card)
    assert careplan["note"][0] == {"text": unread_text(("QuestionnaireResponse",))}
    assert careplan["note"] == expected.careplan.resource["note"]
    assert careplan["title"] == expected.careplan.resource["title"]
    assert "QuestionnaireResponse" not in {
        c.request.url.path.split("/")[-1] for c in respx_mock.calls
    }


@respx.mock(assert_all_called=False)
def test_a_server_declaring_patient_search_is_read_as_before(
    respx_mock: respx.MockRouter, client: TestClient, definitions: Definitions
) -> None:
    path = QUESTIONNAIRES
    pid = patient_id(path)
    card = questionnaires_card(respx_mock, client, "patient")
    check_card(card, path, definitions)
    assert "note" not in careplan_of(card)
    reads = sorted(
        (c.request.url.path.removeprefix("/fhir/r4/"), str(c.request.url.params))
        for c in respx_mock.calls
        if c.request.url.path.rsplit("/", 1)[-1] in {"metadata", pid, *TYPES.values()}
    )
    assert reads == sorted(
        [("metadata", ""), (f"Patient/{pid}", "")]
        + [(rtype, f"patient={pid}") for rtype in TYPES.values()]
    )


def careplan_of(card: Card) -> dict[str, Any]:
    """The CarePlan the card's suggestion writes."""
    assert card.suggestions is not None and card.suggestions[0].actions is not None
    (careplan,) = [
        a.resource
        for a in card.suggestions[0].actions
        if a.resource and a.resource["resourceType"] == "CarePlan"
    ]
    return careplan


@respx.mock(assert_all_called=False)
def test_token_is_not_sent_to_a_paging_link_off_the_server(
    respx_mock: respx.MockRouter, client: TestClient, definitions: Definitions
) -> None:
    path = with_plan(definitions)[0]
    pid = patient_id(path)
    mock_ehr(respx_mock, path)
    elsewhere = respx_mock.get(host="attacker.example").respond(json=searchset([]))
    page = searchset([])
    page["link"] = [{"relation": "next", "url": "https://attacker.example/fhir/Condition?page=2"}]
    respx_mock.get(f"{EHR}/Condition", params={"patient": pid}).respond(json=page)
    response = client.post(SERVICE, json=hook_call(pid, **authorization()))
    assert response.status_code == 502
    assert not elsewhere.called
    assert TOKEN not in response.text


# -- refused calls ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (hook_call("ft-01") | {"context": {"userId": "Practitioner/x"}}, "context.patientId"),
        (hook_call("ft-01") | {"hook": "order-select"}, "hook"),
        (hook_call("not/an id"), "context.patientId"),
        ({k: v for k, v in hook_call("ft-01").items() if k != "hookInstance"}, "hookInstance"),
        (
            hook_call("ft-01", fhirAuthorization=authorization()["fhirAuthorization"]),
            "fhirServer",
        ),
        (
            hook_call("ft-01", fhirServer=EHR)
            | {"fhirAuthorization": {"access_token": TOKEN, "token_type": "MAC"}},
            "fhirAuthorization.token_type",
        ),
        (hook_call("ft-01", fhirServer="file:///etc/passwd"), "fhirServer"),
        (hook_call("ft-01") | {"prefetch": [TOKEN]}, "prefetch"),
    ],
    ids=[
        "no-patient",
        "wrong-hook",
        "bad-id",
        "no-hookInstance",
        "auth-without-server",
        "not-bearer",
        "not-http",
        "prefetch-list",
    ],
)
def test_bad_requests_are_refused_with_400_naming_the_field(
    client: TestClient, body: dict[str, Any], field: str
) -> None:
    response = client.post(SERVICE, json=body)
    assert response.status_code == 400
    assert f"field {field}" in response.json()["error"]
    assert TOKEN not in response.text


def test_a_body_that_is_not_json_is_refused(client: TestClient) -> None:
    response = client.post(
        SERVICE, content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert "not JSON" in response.json()["error"]


@pytest.mark.parametrize("depth", [2_000, 100_000])
def test_a_body_nested_too_deeply_is_refused(client: TestClient, depth: int) -> None:
    body = json.dumps(hook_call("ft-01")).encode()[:-1] + b', "x": '
    body += b"[" * depth + b"]" * depth + b"}"
    response = client.post(SERVICE, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert "nested too deeply" in response.json()["error"]


def test_an_unknown_service_is_404(client: TestClient) -> None:
    response = client.post("/cds-services/other", json=hook_call("ft-01"))
    assert response.status_code == 404


@pytest.mark.parametrize("keep", [(), ("patient",), ("patient", "conditions")])
def test_missing_prefetch_without_fhir_server_is_412(
    client: TestClient, keep: tuple[str, ...]
) -> None:
    prefetch = {k: v for k, v in prefetch_for(BUNDLES[0]).items() if k in keep}
    response = client.post(SERVICE, json=hook_call(patient_id(BUNDLES[0]), prefetch=prefetch))
    assert response.status_code == 412
    error = response.json()["error"]
    assert "observations" in error and "fhirServer" in error


def test_prefetch_of_another_patient_is_412(client: TestClient) -> None:
    response = client.post(
        SERVICE, json=hook_call("someone-else", prefetch=prefetch_for(BUNDLES[0]))
    )
    assert response.status_code == 412
    assert "Patient/someone-else" in response.json()["error"]


def test_a_null_prefetch_is_a_search_that_found_nothing(
    client: TestClient, definitions: Definitions
) -> None:
    """CDS Hooks 2.0: a client with no data for a template sends null, not an empty Bundle."""
    path = with_plan(definitions)[0]
    prefetch = prefetch_for(path) | {"encounters": None, "medicationRequests": None}
    (card,) = cards_of(client.post(SERVICE, json=hook_call(patient_id(path), prefetch=prefetch)))
    assert card.suggestions  # answered, no fhirServer needed
    prefetch["patient"] = None  # the Patient read found nothing: nothing to profile
    response = client.post(SERVICE, json=hook_call(patient_id(path), prefetch=prefetch))
    assert response.status_code == 412


# -- what the card suggests for the plan already stored ----------------------------------------


class Conflict(Exception):
    """The store refused a write whose If-Match names an older version."""


class ClientStore:
    """A CDS client's FHIR store, applying a suggestion as a client does: each action in order,
    ``update`` as ``PUT`` (creating at the id when absent), with ``If-Match`` on the
    ``meta.versionId`` the resource carries."""

    def __init__(self) -> None:
        self.resources: dict[str, dict[str, Any]] = {}

    def apply(self, suggestion: Suggestion) -> None:
        for action in suggestion.actions or ():
            assert action.type == "update" and action.resource is not None
            resource = action.resource
            key = f"{resource['resourceType']}/{resource['id']}"
            stored = self.resources.get(key)
            if_match = resource.get("meta", {}).get("versionId")
            if if_match is not None and (stored is None or stored["meta"]["versionId"] != if_match):
                raise Conflict(key)
            version = int(stored["meta"]["versionId"]) + 1 if stored else 1
            self.resources[key] = resource | {
                "meta": resource.get("meta", {}) | {"versionId": str(version)}
            }

    def of_type(self, rtype: str) -> list[dict[str, Any]]:
        return [r for r in self.resources.values() if r["resourceType"] == rtype]

    def ours(self) -> list[dict[str, Any]]:
        return [
            c
            for c in self.of_type("CarePlan")
            if any(i["system"] == CAREPLAN_ID_SYSTEM for i in c["identifier"])
        ]

    def prefetch(self, path: Path) -> dict[str, Any]:
        """What a client answers the service's templates with, this store included."""
        prefetch = prefetch_for(path)
        (careplan_search,) = {identifier_search(c) for c in self.ours()} or {None}
        prefetch["ourCarePlan"] = searchset(
            [c for c in self.ours() if identifier_search(c) == careplan_search]
        )
        prefetch["goals"] = searchset(self.of_type("Goal"))
        prefetch["tasks"] = searchset(self.of_type("Task"))
        prefetch["serviceRequests"]["entry"] += searchset(self.of_type("ServiceRequest"))["entry"]
        return prefetch

    def unresolved(self) -> list[str]:
        """References between stored resources of ours that name nothing stored."""
        types = ("CarePlan/", "Goal/", "ServiceRequest/", "Task/")
        return [
            ref
            for resource in self.resources.values()
            for ref in _references(resource)
            if ref.startswith(types) and ref not in self.resources
        ]


def suggestion_of(card: Card) -> Suggestion:
    assert card.suggestions is not None
    (suggestion,) = card.suggestions
    return suggestion


@pytest.mark.parametrize("stem", ["01", "34"], ids=["referrals", "urgent-tasks"])
def test_applying_a_card_twice_leaves_one_plan_and_then_nothing_is_suggested(
    client: TestClient, definitions: Definitions, stem: str
) -> None:
    path = next(p for p in BUNDLES if p.stem.startswith(stem))
    pid = patient_id(path)
    (card,) = cards_of(client.post(SERVICE, json=hook_call(pid, prefetch=prefetch_for(path))))
    store = ClientStore()
    store.apply(suggestion_of(card))
    store.apply(suggestion_of(card))  # accepted twice (two clicks, two clinicians)
    (careplan,) = store.ours()
    assert careplan["meta"]["versionId"] == "2"  # the same resource, written again
    assert not store.unresolved()
    _, _, plan = assess(record_of(path), definitions, AS_OF)
    assert plan is not None
    assert len(store.of_type("Goal")) == len(plan.goals)
    assert len(store.of_type("Task")) == len(plan.urgent)
    # Called again, the stored draft is found and is current: no suggestion, the app's link.
    again = hook_call(pid, prefetch=store.prefetch(path))
    (second,) = cards_of(client.post(SERVICE, json=again))
    assert second.suggestions is None and second.selectionBehavior is None
    assert second.indicator == ("critical" if plan.urgent else "info")
    assert second.detail is not None
    assert f"**Stored draft:** CarePlan/{careplan['id']} is up to date" in second.detail
    assert second.links is not None and second.links[0].url == LAUNCH
    assert second.uuid != card.uuid


def test_a_changed_plan_updates_the_stored_draft_under_its_version(
    client: TestClient, definitions: Definitions
) -> None:
    path = next(p for p in BUNDLES if p.stem.startswith("01"))
    pid = patient_id(path)
    (card,) = cards_of(client.post(SERVICE, json=hook_call(pid, prefetch=prefetch_for(path))))
    store = ClientStore()
    store.apply(suggestion_of(card))
    (careplan,) = store.ours()
    # The stored draft was made from other data (its fingerprint differs; nobody edited it).
    key = f"CarePlan/{careplan['id']}"
    store.resources[key]["extension"] = [
        e | {"valueString": "older"} if e["url"] == PLAN_FINGERPRINT_URL else e
        for e in careplan["extension"]
    ]
    before = {k: r["meta"]["versionId"] for k, r in store.resources.items()}
    (update,) = cards_of(client.post(SERVICE, json=hook_call(pid, prefetch=store.prefetch(path))))
    suggestion = suggestion_of(update)
    assert suggestion.label == f"Update the draft care plan ({key}) to this assessment"
    assert update.detail is not None and f"**Stored draft:** {key} differs" in update.detail
    written = {
        f"{a.resource['resourceType']}/{a.resource['id']}": a
        for a in suggestion.actions or ()
        if a.resource
    }
    assert set(written) == set(before)  # the same resources, no new ones
    for ref, action in written.items():
        assert action.resource is not None
        assert action.resource["meta"]["versionId"] == before[ref]  # If-Match on what was read
        assert action.description.startswith("Update ")
    store.apply(suggestion)
    assert len(store.ours()) == 1 and not store.unresolved()
    with pytest.raises(Conflict):  # the same update again: the version moved on, refused
        store.apply(suggestion)


@pytest.mark.parametrize(
    "change",
    ["approved", "edited-goal", "untagged"],
)
def test_a_plan_a_clinician_changed_gets_an_information_card_without_suggestion(
    client: TestClient, definitions: Definitions, change: str
) -> None:
    path = next(p for p in BUNDLES if p.stem.startswith("01"))
    pid = patient_id(path)
    (card,) = cards_of(client.post(SERVICE, json=hook_call(pid, prefetch=prefetch_for(path))))
    store = ClientStore()
    store.apply(suggestion_of(card))
    (careplan,) = store.ours()
    key = f"CarePlan/{careplan['id']}"
    if change == "approved":
        store.resources[key]["status"] = "active"
    elif change == "edited-goal":
        goal = store.of_type("Goal")[0]
        goal["description"] = {"text": "A goal the clinician rewrote"}
    else:
        store.resources[key]["meta"] = {"versionId": "1"}
    (info,) = cards_of(client.post(SERVICE, json=hook_call(pid, prefetch=store.prefetch(path))))
    assert info.suggestions is None and info.indicator == "info"
    assert info.detail is not None and f"**Stored plan:** {key} is a clinician's now" in info.detail
    assert "A goal the clinician rewrote" not in info.detail
    assert info.links is not None and [link.type for link in info.links] == ["smart"]


def test_several_careplans_with_our_identifier_get_no_suggestion(
    client: TestClient, definitions: Definitions
) -> None:
    path = next(p for p in BUNDLES if p.stem.startswith("01"))
    pid = patient_id(path)
    (card,) = cards_of(client.post(SERVICE, json=hook_call(pid, prefetch=prefetch_for(path))))
    store = ClientStore()
    store.apply(suggestion_of(card))
    (careplan,) = store.ours()
    store.resources["CarePlan/copy"] = careplan | {"id": "copy"}
    (info,) = cards_of(client.post(SERVICE, json=hook_call(pid, prefetch=store.prefetch(path))))
    assert info.suggestions is None
    assert info.detail is not None and "several CarePlans share its identifier" in info.detail
    assert "CarePlan/copy" in info.detail


def test_without_the_plan_prefetch_or_a_server_the_card_suggests_nothing(
    client: TestClient, definitions: Definitions
) -> None:
    """Whether the plan is stored cannot be told: creating could make a second one."""
    path = with_plan(definitions)[0]
    prefetch = {k: v for k, v in prefetch_for(path).items() if k != "ourCarePlan"}
    (card,) = cards_of(client.post(SERVICE, json=hook_call(patient_id(path), prefetch=prefetch)))
    assert card.suggestions is None
    assert card.detail is not None and "**Not checked:**" in card.detail


def test_card_and_suggestion_uuids_are_stable_for_a_hook_instance(
    client: TestClient, definitions: Definitions
) -> None:
    path = with_plan(definitions)[0]
    call = hook_call(patient_id(path), prefetch=prefetch_for(path))
    (first,) = cards_of(client.post(SERVICE, json=call))
    (retried,) = cards_of(client.post(SERVICE, json=call))
    other = call | {"hookInstance": "0b7c5f3e-6a6e-4d8e-9a43-4d7d2f1f0c55"}
    (elsewhere,) = cards_of(client.post(SERVICE, json=other))
    assert first.uuid == retried.uuid != elsewhere.uuid
    assert suggestion_of(first).uuid == suggestion_of(retried).uuid != suggestion_of(elsewhere).uuid
