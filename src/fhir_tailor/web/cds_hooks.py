"""A CDS Hooks 2.0 service: on ``patient-view``, a card with the patient's needs and draft plan.

The EHR (the CDS client) discovers the service at ``GET /cds-services`` and calls
``POST /cds-services/fhir-tailor-care-plan`` when a chart opens. The patient's data comes from the
prefetch the client sends; whatever it left out (or could not fetch: an ``OperationOutcome`` in
place of a result) is read from ``fhirServer`` with the bearer token of ``fhirAuthorization``,
only for the missing searches. Without either, the answer is 412, which the specification allows
for data a service cannot obtain.

Decisions worth knowing:

- No plan (no care module applies), no card: ``patient-view`` fires on every chart opening, and a
  card with nothing to act on teaches clinicians to ignore the ones that matter. A patient the
  record says has died gets no plan (:mod:`fhir_tailor.life_state`), so no card either.
- The card's one suggestion creates the draft CarePlan *and* its proposed Goals and draft referral
  ServiceRequests, as actions of one suggestion. The specification processes a suggestion's
  actions as one FHIR transaction whose entries' full URLs are inferred from ``fhirServer``, type
  and id; so the parts carry a provisional id and the CarePlan references them as ``Goal/<id>``,
  which the server rewrites to the ids it assigns. A CarePlan created alone would reference
  nothing, and the goals are what make the plan measurable. The Provenance is left out: its
  ``recorded`` time would be the hook call's, not the acceptance, which the client records.
- The card links to the SMART app (``type: smart``) served by the same process, to review the plan.
- An urgent finding (:mod:`fhir_tailor.urgent`) makes the card ``critical``, whatever the need
  levels, and its summary names the most pressing finding first; the detail lists them all
  before the needs, and the suggestion creates their Tasks with the plan. Urgent findings alone
  (no care module applies) still give a card: they must reach the clinician.

Nothing the service logs holds PHI or the token: patient ids and counts only.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from ..auth import BearerTokenAuth
from ..client import AsyncFhirClient
from ..definitions import Definitions
from ..errors import FhirTailorError
from ..fhirdata import Resource, is_fhir_id
from ..mapping import DIMENSIONS, SEVERITY_RANK, Dimension
from ..pipeline import assess
from ..plan import Plan
from ..profile_model import NEED_RANK, Finding, Profile
from ..record import Located, PatientRecord, ReadIssue, group_by_patient
from ..resources import PlanResources, to_fhir
from ..retry import RetryPolicy

log = logging.getLogger("fhir_tailor.web.cds_hooks")

SERVICE_ID = "fhir-tailor-care-plan"
HOOK = "patient-view"
#: The specification asks for a summary under 140 characters.
SUMMARY_LIMIT = 139
#: How many needs the card's detail lists, most severe first.
TOP_NEEDS = 5
#: What the profile reads, by prefetch key: the resource type and whether it is indispensable.
#: The optional ones feed a few features (screenings kept as forms, discharges, polypharmacy,
#: referrals already made).
PREFETCH_TYPES: dict[str, tuple[str, bool]] = {
    "patient": ("Patient", True),
    "conditions": ("Condition", True),
    "observations": ("Observation", True),
    "questionnaireResponses": ("QuestionnaireResponse", False),
    "encounters": ("Encounter", False),
    "medicationRequests": ("MedicationRequest", False),
    "serviceRequests": ("ServiceRequest", False),
}
PREFETCH = {
    key: "Patient/{{context.patientId}}"
    if rtype == "Patient"
    else f"{rtype}?patient={{{{context.patientId}}}}"
    for key, (rtype, _) in PREFETCH_TYPES.items()
}
#: CDS hooks must answer in about a second: fail fast rather than retry for minutes.
FETCH_RETRY = RetryPolicy(max_attempts=2, base_delay=0.2, max_delay=1.0, total_budget=3.0)
FETCH_TIMEOUT = 10.0
Indicator = Literal["info", "warning", "critical"]
INDICATORS: dict[str, Indicator] = {
    "none": "info",
    "low": "info",
    "moderate": "warning",
    "high": "critical",
}


# -- the request -----------------------------------------------------------------------------


class _Open(BaseModel):
    """Hook requests may carry fields of later versions or extensions: tolerate them."""

    model_config = ConfigDict(extra="allow")


class HookContext(_Open):
    patientId: str
    userId: str | None = None
    encounterId: str | None = None


class FhirAuthorization(_Open):
    access_token: SecretStr = Field(min_length=1)
    token_type: str
    scope: str | None = None
    subject: str | None = None
    expires_in: int | None = None


class HookRequest(_Open):
    """A hook call; field names are the specification's (camelCase)."""

    hook: str
    hookInstance: str
    context: HookContext
    fhirServer: str | None = None
    fhirAuthorization: FhirAuthorization | None = None
    prefetch: dict[str, Any] | None = None


class HookError(Exception):
    """A call the service cannot answer with cards: the HTTP status and a message without PHI."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def parse_request(body: object) -> HookRequest:
    """The hook request, checked; a :class:`HookError` (400) names the field at fault."""
    try:
        call = HookRequest.model_validate(body)
    except ValidationError as exc:
        # include_input=False: the input may hold the access token or patient data.
        problems = "; ".join(
            f"field {'.'.join(str(p) for p in error['loc']) or 'body'}: {error['msg']}"
            for error in exc.errors(include_input=False, include_url=False)
        )
        raise HookError(400, f"invalid hook request: {problems}") from None
    if call.hook != HOOK:
        raise HookError(400, f"field hook: this service answers {HOOK!r}, not {call.hook[:40]!r}")
    if not is_fhir_id(call.context.patientId):
        raise HookError(400, "field context.patientId: not a valid FHIR id")
    if call.fhirServer is not None:
        try:
            server = httpx.URL(call.fhirServer)
        except httpx.InvalidURL:
            server = httpx.URL()
        if server.scheme not in ("http", "https") or not server.host:
            raise HookError(400, "field fhirServer: not an http(s) URL")
    if call.fhirAuthorization is not None:
        if call.fhirServer is None:
            raise HookError(400, "field fhirServer: required with fhirAuthorization")
        if call.fhirAuthorization.token_type.lower() != "bearer":
            raise HookError(400, "field fhirAuthorization.token_type: only Bearer is supported")
    return call


# -- the patient record ----------------------------------------------------------------------


def prefetched(
    prefetch: Mapping[str, object], on_issue: Callable[[ReadIssue], None]
) -> tuple[list[Located], list[str]]:
    """The usable prefetched resources, and the prefetch keys the client did not fulfil.

    A key that is absent, null or an ``OperationOutcome`` (how a 2.0 client reports a failed
    prefetch) is missing; so is a value of the wrong shape, which is reported as well.
    """
    items: list[Located] = []
    missing: list[str] = []
    for key, (rtype, _) in PREFETCH_TYPES.items():
        value = prefetch.get(key)
        kind = value.get("resourceType") if isinstance(value, dict) else None
        if value is None or kind == "OperationOutcome":
            missing.append(key)
        elif rtype == "Patient" and kind == "Patient":
            items.append(Located(value, f"prefetch.{key}"))
        elif rtype != "Patient" and kind == "Bundle" and isinstance(value, dict):
            items.extend(_bundle_resources(value, rtype, f"prefetch.{key}", on_issue))
        else:
            on_issue(
                ReadIssue(f"prefetch.{key}", f"not a {rtype if rtype == 'Patient' else 'Bundle'}")
            )
            missing.append(key)
    return items, missing


def _bundle_resources(
    bundle: Resource, rtype: str, location: str, on_issue: Callable[[ReadIssue], None]
) -> Iterator[Located]:
    """The searched type's resources of a search Bundle; included and outcome entries are not."""
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        on_issue(ReadIssue(location, "field entry: not a list", "Bundle"))
        return
    for index, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and resource.get("resourceType") == rtype:
            yield Located(resource, f"{location}#entry[{index}]")
        elif resource is None:
            on_issue(ReadIssue(f"{location}#entry[{index}]", "field entry.resource: missing"))


async def fetched(
    server: str,
    token: str | None,
    patient_id: str,
    keys: Collection[str],
    on_issue: Callable[[ReadIssue], None],
) -> list[Located]:
    """What the prefetch lacked, read from the client's FHIR server with its token, concurrently.

    The token goes to ``server`` only: the client never follows a link off its origin. A failure
    to read an indispensable type is raised; an optional type the server cannot search by
    patient, or fails to return, is reported and the patient profiled from the rest.
    """
    auth = BearerTokenAuth(token) if token else None

    async def read(client: AsyncFhirClient, key: str) -> list[Located]:
        rtype, required = PREFETCH_TYPES[key]
        if rtype == "Patient":
            return [Located(await client.read("Patient", patient_id), "fhirServer Patient")]
        location = f"fhirServer {rtype}?patient"
        try:
            if not required and not await client.supports_search(rtype, "patient"):
                on_issue(ReadIssue(location, "server declares no patient search", rtype))
                return []
            found = await client.search_all(rtype, {"patient": patient_id})
        except FhirTailorError as exc:
            if required:
                raise
            on_issue(ReadIssue(location, str(exc), rtype))
            return []
        return [
            Located(r, f"{location}#{n}")
            for n, r in enumerate(found)
            if r.get("resourceType") == rtype
        ]

    async with AsyncFhirClient(
        server, auth=auth, timeout=FETCH_TIMEOUT, retry=FETCH_RETRY
    ) as client:
        if any(not PREFETCH_TYPES[key][1] for key in keys):
            await client.capabilities()  # once, before the searches that consult it run at once
        found = await asyncio.gather(*(read(client, key) for key in keys))
    return [item for items in found for item in items]


def patient_record(
    items: list[Located], patient_id: str, on_issue: Callable[[ReadIssue], None]
) -> PatientRecord | None:
    """The context patient's record, grouped and checked like a file source's."""
    for record in group_by_patient(items, on_issue):
        if record.patient_id == patient_id:
            return record
        on_issue(ReadIssue("prefetch", "not the context patient", "Patient", record.patient_id))
    return None


# -- the card --------------------------------------------------------------------------------


def needs(profile: Profile) -> list[tuple[Dimension, Finding]]:
    """Current present findings, most severe first, then by their dimension's need and order."""
    found = [(name, f) for name, f in profile.findings() if f.current_present]
    return sorted(
        found,
        key=lambda item: (
            -SEVERITY_RANK[item[1].severity],
            -NEED_RANK[profile.dimension(item[0]).need],
            DIMENSIONS.index(item[0]),
            item[1].feature,
        ),
    )


def top_dimension(profile: Profile) -> Dimension:
    """The dimension with the highest need (the first in profile order on a tie)."""
    return max(
        DIMENSIONS,
        key=lambda name: (NEED_RANK[profile.dimension(name).need], -DIMENSIONS.index(name)),
    )


def _count(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def _md(text: str) -> str:
    """Text from the definitions, escaped so it shows as written in GitHub-flavoured markdown."""
    return "".join(f"\\{c}" if c in "\\`*_[]<>|~" else c for c in text)


@dataclass(frozen=True, slots=True)
class CarePlanCards:
    """Cards for one patient: the assessment of :func:`fhir_tailor.pipeline.assess`, rendered."""

    definitions: Definitions
    launch_url: str

    def summary(self, profile: Profile, plan: Plan) -> str:
        """Needs and plan in a line; an urgent finding first, when there is one (its label
        comes from the definitions: no patient data)."""
        count = len(needs(profile))
        top = top_dimension(profile)
        level = profile.dimension(top).need
        label = self.definitions.rules.dimensions[top].label.lower()
        head = (
            f"{_count(count, 'need', 'needs')}, highest {label} ({level})"
            if count
            else "No current needs"
        )
        text = f"{head}; draft care plan: {_count(len(plan.modules), 'module', 'modules')}"
        if plan.urgent:
            first = plan.urgent[0]
            more = f" (+{len(plan.urgent) - 1} more)" if len(plan.urgent) > 1 else ""
            text = f"URGENT ({first.priority}): {first.label}{more}; {text}"
        return text if len(text) <= SUMMARY_LIMIT else text[: SUMMARY_LIMIT - 1] + "…"

    def detail(self, profile: Profile, plan: Plan) -> str:
        dimensions = self.definitions.rules.dimensions
        found = needs(profile)
        lines = []
        if plan.urgent:
            lines.append(f"**Urgent** ({_count(len(plan.urgent), 'finding', 'findings')}):")
            lines.append("")
            for n, urgent in enumerate(plan.urgent, start=1):  # numbered: most pressing first
                sources = ", ".join(f"`{s}`" for s in urgent.sources) or "no source resource"
                lines.append(
                    f"{n}. **{_md(urgent.priority.upper())}: {_md(urgent.label)}**: "
                    f"{_md(urgent.request)} ({sources})"
                )
            lines.append("")
        if found:
            lines.append(f"**Top needs** ({min(len(found), TOP_NEEDS)} of {len(found)}):")
            lines.append("")
            for name, finding in found[:TOP_NEEDS]:
                sources = ", ".join(f"`{s}`" for s in finding.sources) or "no source resource"
                lines.append(
                    f"- **{_md(finding.label)}**: {_md(dimensions[name].label)}, "
                    f"{finding.severity or 'unrated'} ({sources})"
                )
            lines.append("")
        modules = ", ".join(_md(m.title) for m in plan.modules)
        lines.append(
            f"**Draft care plan** ({_md(plan.catalog)} {_md(plan.catalog_version)}): {modules}; "
            f"{_count(len(plan.goals), 'goal', 'goals')}, "
            f"{_count(len(plan.activities), 'activity', 'activities')}."
        )
        withheld = [g.description for g in plan.withheld_goals]
        withheld += [a.description for a in plan.activities if a.withheld]
        if withheld:  # what the plan says not to do, and so must not be missed
            reasons = {
                v.label for a in plan.activities for v in a.variations if v.variant in a.withheld_by
            }
            reasons |= {
                v.label
                for g in plan.withheld_goals
                for v in g.variations
                if v.variant in g.withheld_by
            }
            lines.extend(
                [
                    "",
                    f"**Withheld** ({'; '.join(_md(r) for r in sorted(reasons))}): "
                    + "; ".join(_md(w) for w in withheld)
                    + ".",
                ]
            )
        if profile.data_gaps:
            gaps = ", ".join(_md(gap.label) for gap in profile.data_gaps)
            lines.extend(["", f"**Data gaps:** {gaps}."])
        return "\n".join(lines)

    def card(self, profile: Profile, plan: Plan, resources: PlanResources) -> dict[str, Any]:
        top = profile.dimension(top_dimension(profile)).need
        catalog = self.definitions.catalog.info
        return {
            "uuid": str(uuid.uuid4()),
            "summary": self.summary(profile, plan),
            "indicator": "critical" if plan.urgent else INDICATORS[top],
            "detail": self.detail(profile, plan),
            "source": {"label": f"fhir-tailor, catalog {catalog.id} {catalog.version}"},
            "suggestions": [
                {
                    "label": "Create the draft care plan with its goals",
                    "uuid": str(uuid.uuid4()),
                    "isRecommended": True,
                    "actions": create_actions(resources),
                }
            ],
            "selectionBehavior": "at-most-one",
            "links": [
                {"label": "Review the plan in fhir-tailor", "url": self.launch_url, "type": "smart"}
            ],
        }


def create_actions(resources: PlanResources) -> list[dict[str, Any]]:
    """``create`` actions for the CarePlan, then its Goals, referrals and urgent Tasks, linked
    by local ids.

    Our ``urn:uuid`` full URLs cannot travel in an action, so each part gets the uuid as its
    provisional id and every reference to it becomes relative (``Goal/<uuid>``): the client
    infers the same full URL for the entry, and the server rewrites the reference on create.
    """
    local = {
        e.full_url: (e.resource["resourceType"], e.full_url.removeprefix("urn:uuid:"))
        for e in (*resources.parts, *resources.tasks)
    }
    refs = {url: f"{rtype}/{rid}" for url, (rtype, rid) in local.items()}

    def action(entry_resource: Resource, full_url: str, what: str) -> dict[str, Any]:
        resource = _relinked(entry_resource, refs)
        if full_url in local:
            resource = {
                "resourceType": resource["resourceType"],
                "id": local[full_url][1],
            } | resource
        return {"type": "create", "description": what, "resource": resource}

    careplan = resources.careplan
    actions = [
        action(
            careplan.resource,
            careplan.full_url,
            f"Create draft CarePlan: {careplan.resource['title']}",
        )
    ]
    for goal in resources.goals:
        actions.append(
            action(
                goal.resource,
                goal.full_url,
                f"Create proposed goal: {goal.resource['description']['text']}",
            )
        )
    for referral in resources.service_requests:
        actions.append(
            action(
                referral.resource,
                referral.full_url,
                f"Create draft referral: {referral.resource['code']['text']}",
            )
        )
    for task in resources.tasks:
        actions.append(
            action(
                task.resource,
                task.full_url,
                f"Create {task.resource['priority']} task: {task.resource['code']['text']}",
            )
        )
    return actions


def _relinked(value: Any, refs: Mapping[str, str]) -> Any:
    if isinstance(value, dict):
        return {
            k: refs.get(v, v) if k == "reference" and isinstance(v, str) else _relinked(v, refs)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_relinked(item, refs) for item in value]
    return value


# -- the service -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CarePlanService:
    """The ``patient-view`` service: reads the record, assesses it, renders the card."""

    definitions: Definitions
    launch_url: str
    today: Callable[[], date] = date.today
    fhir_servers: frozenset[str] | None = None

    def descriptor(self) -> dict[str, Any]:
        return {
            "hook": HOOK,
            "id": SERVICE_ID,
            "title": "fhir-tailor personalized care plan",
            "description": (
                "Profiles the patient in four dimensions (medical, cognitive and behavioral, "
                "social, functional) and proposes a draft personalized CarePlan with its goals."
            ),
            "prefetch": PREFETCH,
            "usageRequirements": (
                "Without prefetch, needs fhirServer and a token that reads Patient, Condition "
                "and Observation (and QuestionnaireResponse, Encounter, MedicationRequest, "
                "ServiceRequest)."
            ),
        }

    async def cards(self, call: HookRequest) -> list[dict[str, Any]]:
        """The cards for one hook call; the assessment runs in a worker thread."""
        issues: list[ReadIssue] = []
        record = await self.record(call, issues.append)
        return await run_in_threadpool(self.assessed, record, len(issues))

    def assessed(self, record: PatientRecord, read_issues: int) -> list[dict[str, Any]]:
        """The card for a record: one if a plan applies, none otherwise."""
        profile, _, plan = assess(record, self.definitions, self.today())
        patient = f"Patient/{record.patient_id}"
        log.info(
            "%s: %s: %s (%d read issues)",
            SERVICE_ID,
            patient,
            "plan" if plan else "deceased, no plan" if profile.facts.deceased else "no plan",
            read_issues,
            extra={"patient": patient, "read_issues": read_issues},
        )
        if plan is None:
            return []
        cards = CarePlanCards(self.definitions, self.launch_url)
        return [cards.card(profile, plan, to_fhir(plan, datetime.now(UTC)))]

    async def record(
        self, call: HookRequest, on_issue: Callable[[ReadIssue], None]
    ) -> PatientRecord:
        """The patient's record from the prefetch, completed from ``fhirServer`` if need be."""
        pid = call.context.patientId
        items, missing = prefetched(call.prefetch or {}, on_issue)
        if missing and call.fhirServer is not None:
            server = call.fhirServer.rstrip("/")
            if self.fhir_servers is not None and server not in self.fhir_servers:
                raise HookError(400, "field fhirServer: not a server this service may contact")
            auth = call.fhirAuthorization
            token = auth.access_token.get_secret_value() if auth else None
            try:
                items += await fetched(server, token, pid, missing, on_issue)
            except ValueError as exc:
                raise HookError(400, f"field fhirServer: {exc}") from None
            except FhirTailorError as exc:
                raise HookError(502, f"reading from fhirServer failed: {exc}") from None
            missing = []
        lacking = [key for key in missing if PREFETCH_TYPES[key][1]]
        if lacking:
            raise HookError(412, f"prefetch lacks {', '.join(lacking)} and no fhirServer was given")
        record = patient_record(items, pid, on_issue)
        if record is None:
            raise HookError(412, f"no usable Patient/{pid} in the prefetch or fhirServer data")
        return record


def cds_routes(
    definitions: Definitions,
    *,
    launch_url: str,
    today: Callable[[], date] = date.today,
    fhir_servers: Collection[str] | None = None,
) -> list[BaseRoute]:
    """The discovery endpoint and the ``patient-view`` service, to mount in a Starlette app.

    ``launch_url`` is the SMART app's launch URL, which cards link to. ``fhir_servers``, when
    given, lists the only ``fhirServer`` base URLs the service will call with a client's token.
    """
    allowed = None if fhir_servers is None else frozenset(s.rstrip("/") for s in fhir_servers)
    service = CarePlanService(definitions, launch_url, today, allowed)

    async def discovery(request: Request) -> JSONResponse:
        return JSONResponse({"services": [service.descriptor()]})

    async def call(request: Request) -> JSONResponse:
        if request.path_params["service_id"] != SERVICE_ID:
            return _error(404, f"no CDS service {request.path_params['service_id'][:64]!r}")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "the request body is not JSON")
        except RecursionError:  # Python's JSON reader, past about 1,000 levels
            return _error(400, "the request body is JSON nested too deeply")
        try:
            cards = await service.cards(parse_request(body))
        except HookError as exc:
            log.warning("%s: %d: %s", SERVICE_ID, exc.status, exc.message)
            return _error(exc.status, exc.message)
        return JSONResponse({"cards": cards})

    return [
        Route("/cds-services", discovery, methods=["GET"]),
        Route("/cds-services/{service_id}", call, methods=["POST"]),
    ]


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)
