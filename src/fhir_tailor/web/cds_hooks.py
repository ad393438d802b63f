"""A CDS Hooks 2.0 service: on ``patient-view``, a card with the patient's needs and draft plan.

The EHR (the CDS client) discovers the service at ``GET /cds-services`` and calls
``POST /cds-services/fhir-tailor-care-plan`` when a chart opens. The patient's data comes from the
prefetch the client sends; whatever it left out (or could not fetch: an ``OperationOutcome`` in
place of a result) is read from ``fhirServer`` with the bearer token of ``fhirAuthorization``,
only for the missing searches, each type the way ``sync`` reads it (a type the server offers
no way to read leaves the plan with a note saying it was made without it). Without either, the
answer is 412, which the specification allows for data a service cannot obtain.

Decisions worth knowing:

- No plan (no care module applies), no card: ``patient-view`` fires on every chart opening, and a
  card with nothing to act on teaches clinicians to ignore the ones that matter. A patient the
  record says has died gets no plan (:mod:`fhir_tailor.life_state`), so no card either.
- The card never makes a second CarePlan of ours. The service first looks up what the client's
  server holds of the plan (prefetch keys ``ourCarePlan``, ``goals``, ``tasks``, or
  ``fhirServer``), and the card's one suggestion is what ``sync`` would do: create the draft
  CarePlan with its Goals, referrals and urgent Tasks, or update our stored draft in place under
  its version; a plan a clinician approved or changed gets an information card with no
  suggestion. Every action is an ``update`` at an id the service chooses, so references between
  the resources resolve however the client applies them, and applying twice writes nothing twice
  (:mod:`fhir_tailor.web.cds_suggestion` says why).
- Calls are answered only for CDS clients whose signed JWT verifies
  (:mod:`fhir_tailor.web.cds_auth`), unless the service runs with client authentication off for
  local development. Discovery is open: it tells nothing about any patient.
- ``POST /cds-services/{id}/feedback`` records what clinicians did with the cards, ids and
  outcomes only (:mod:`fhir_tailor.web.cds_feedback`); card and suggestion uuids are derived from
  the hook instance and the plan, so a retried call names the same card.
- Browser-based clients are served with CORS (:mod:`fhir_tailor.web.cds_cors`).
- A body is read only once the client is authenticated, and only up to a limit
  (:data:`HOOK_BODY_LIMIT`, :data:`FEEDBACK_BODY_LIMIT`); past it the answer is 413, the rest
  of the body unread by the service (:mod:`fhir_tailor.web.request_body`). The connection stays
  open: uvicorn drops the rest as it arrives, holding none of it, and the client, which sends
  its whole body before reading the answer (httpx does), then reads the 413. Closing it at once
  made such a client see a broken connection instead (measured: 1 GiB sent past a 413 was
  dropped in 1.3 s, client and server in one process peaking at 92 MiB).
- The card links to the SMART app (``type: smart``) served by the same process, to review the plan.
- An urgent finding (:mod:`fhir_tailor.urgent`) makes the card ``critical``, whatever the need
  levels, and its summary names the most pressing finding first; the detail lists them all
  before the needs, and the suggestion creates their Tasks with the plan. Urgent findings alone
  (no care module applies) still give a card: they must reach the clinician.

Nothing the service logs holds PHI or the token: patient ids and counts only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
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
from ..resources import TAILOR, PlanResources, to_fhir
from ..retry import RetryPolicy
from ..sources.server import patient_requests, reading_of
from .cds_auth import WWW_AUTHENTICATE, ClientAuth, ClientAuthError, TrustedClient
from .cds_cors import ANY_ORIGIN
from .cds_feedback import FeedbackError, FeedbackLog, IssuedCard, parse_feedback
from .cds_suggestion import (
    SUGGESTING,
    Proposal,
    completed,
    from_prefetch,
    plan_prefetch,
    propose,
)
from .request_body import BodyTooLargeError, read_body

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
#: The types without which the service cannot profile a patient.
INDISPENSABLE = frozenset(rtype for rtype, required in PREFETCH_TYPES.values() if required)
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
#: The largest hook request read, in bytes. The prefetch carries the patient's record, every
#: Condition, Observation, Encounter and MedicationRequest unpaged: for a patient with decades of
#: care that is several MB (in a 13-patient Synthea export, one patient's Encounters alone were
#: 1.1 MB and their MedicationRequests 1.2 MB, Observations not counted). 16 MiB leaves room
#: for such a record and still refuses a client sending gigabytes, which Starlette read whole
#: before this limit.
HOOK_BODY_LIMIT = 16 * 2**20
#: The largest feedback request read, in bytes. An item is about 190 bytes (accepted, one
#: suggestion) or 260 (overridden, with a reason code and its display) and a body holds at most
#: 100 items (:mod:`~fhir_tailor.web.cds_feedback`): 26 KB at most without comments, and 64 KiB
#: leaves room for a 350-character comment on every one of the 100 (61.5 KB, measured).
FEEDBACK_BODY_LIMIT = 64 * 2**10
#: Card and suggestion uuids are name-based (RFC 4122 version 5) in this namespace.
CARD_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, f"{TAILOR}/cds-hooks/card")
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

    A key that is absent or an ``OperationOutcome`` (how a 2.0 client reports a failed
    prefetch) is missing; so is a value of the wrong shape, which is reported as well. A null
    value is a search that found nothing (CDS Hooks 2.0, "Prefetch Template": "If the CDS Client
    has no data to populate a template prefetch key, the prefetch template key MUST have a value
    of null"), except for the Patient, which the service cannot do without: missing.
    """
    items: list[Located] = []
    missing: list[str] = []
    for key, (rtype, _) in PREFETCH_TYPES.items():
        value = prefetch.get(key)
        kind = value.get("resourceType") if isinstance(value, dict) else None
        if key not in prefetch or kind == "OperationOutcome" or (value, rtype) == (None, "Patient"):
            missing.append(key)
        elif value is None:
            continue
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
    client: AsyncFhirClient,
    patient_id: str,
    keys: Collection[str],
    on_issue: Callable[[ReadIssue], None],
) -> tuple[list[Located], tuple[str, ...]]:
    """What the prefetch lacked, read from the client's FHIR server with its token, concurrently,
    and the types the server gives no way to read for a patient.

    Each type is read as ``sync`` reads it (:func:`~fhir_tailor.sources.server.reading_of`): by
    ``patient`` search, ``subject`` search or ``Patient/$everything``, the first the server
    declares; a type it offers none of is reported and named on the record, so the plan says it
    was made without it. The token goes to the server only: the client never follows a link off
    its origin. A failure to read an indispensable type is raised; an optional type the server
    fails to return is reported and the patient profiled from the rest.
    """
    reading = await reading_of(
        client, [PREFETCH_TYPES[key][0] for key in keys if PREFETCH_TYPES[key][0] != "Patient"]
    )
    for rtype in reading.unreadable:
        on_issue(ReadIssue(f"fhirServer {rtype}", "server declares no way to read it", rtype))
    requests = patient_requests(client, patient_id, reading, None)
    if "patient" in keys:
        requests["Patient"] = _patient(client, patient_id)
    answers = await asyncio.gather(*requests.values(), return_exceptions=True)
    items: list[Located] = []
    for request, answer in zip(requests, answers, strict=True):
        location = f"fhirServer {request}"
        types = ("Patient",) if request == "Patient" else reading.types_at(request)
        if isinstance(answer, FhirTailorError):
            if any(rtype in INDISPENSABLE for rtype in types):
                raise answer
            for rtype in types:
                on_issue(ReadIssue(location, str(answer), rtype))
            continue
        if isinstance(answer, BaseException):
            raise answer
        found = {"Patient": answer} if request == "Patient" else reading.answered(request, answer)
        items += (Located(r, f"{location}#{n}") for rs in found.values() for n, r in enumerate(rs))
    return items, reading.unreadable


async def _patient(client: AsyncFhirClient, patient_id: str) -> list[Resource]:
    return [await client.read("Patient", patient_id)]


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
                    f"- **{_md(finding.statement)}**: {_md(dimensions[name].label)}, "
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

    def card(
        self, profile: Profile, plan: Plan, proposal: Proposal, card_id: uuid.UUID
    ) -> dict[str, Any]:
        """The card; ``proposal`` says what it suggests for the stored plan, if anything."""
        top = profile.dimension(top_dimension(profile)).need
        catalog = self.definitions.catalog.info
        card: dict[str, Any] = {
            "uuid": str(card_id),
            "summary": self.summary(profile, plan),
            "indicator": "critical" if plan.urgent else INDICATORS[top],
            "detail": self.detail(profile, plan) + _stored_line(proposal),
            "source": {"label": f"fhir-tailor, catalog {catalog.id} {catalog.version}"},
        }
        if proposal.kind in SUGGESTING:
            card["suggestions"] = [
                {
                    "label": (
                        "Create the draft care plan with its goals"
                        if proposal.kind == "create"
                        else f"Update the draft care plan ({proposal.careplan}) to this assessment"
                    ),
                    "uuid": str(suggestion_uuid(card_id, proposal)),
                    "isRecommended": True,
                    "actions": list(proposal.actions),
                }
            ]
            card["selectionBehavior"] = "at-most-one"
        elif not plan.urgent:
            card["indicator"] = "info"  # nothing to accept: what is stored is to be reviewed
        card["links"] = [
            {"label": "Review the plan in fhir-tailor", "url": self.launch_url, "type": "smart"}
        ]
        return card


def card_uuid(hook_instance: str, plan: Plan, proposal: Proposal) -> uuid.UUID:
    """The card's uuid: the same for the same hook instance, plan and proposal (a client retrying
    a call gets the card it may already have sent feedback on), different otherwise."""
    name = f"{hook_instance}|{plan.patient}|{plan.fingerprint()}|{proposal.kind}"
    return uuid.uuid5(CARD_NAMESPACE, f"{name}|{proposal.careplan or ''}")


def suggestion_uuid(card_id: uuid.UUID, proposal: Proposal) -> uuid.UUID:
    return uuid.uuid5(card_id, f"suggestion/{proposal.kind}")


def _stored_line(proposal: Proposal) -> str:
    """What the card says of the stored plan (references and status codes: no PHI)."""
    ref = _md(proposal.careplan or "")
    reason = _md(proposal.reason or "")
    text = {
        "create": "",
        "update": f"**Stored draft:** {ref} differs from this assessment; the suggestion updates "
        "it, its goals and referrals in place.",
        "current": f"**Stored draft:** {ref} is up to date; review and approve it in fhir-tailor.",
        "clinician": f"**Stored plan:** {ref} is a clinician's now ({reason}); fhir-tailor "
        "suggests no change to it. Compare it with this assessment in fhir-tailor.",
        "conflict": f"**Stored plans:** {reason}; fhir-tailor suggests nothing until one is left.",
        "unchecked": f"**Not checked:** {reason} could not be read (no prefetch, no fhirServer); "
        "fhir-tailor suggests nothing. Review the plan in fhir-tailor.",
    }[proposal.kind]
    return f"\n\n{text}" if text else ""


# -- the service -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CdsSettings:
    """How the CDS Hooks service trusts its callers and what it keeps.

    ``clients`` are the CDS clients whose JWT is accepted; none and
    ``insecure_no_client_auth`` unset means every call is refused (discovery stays open).
    ``insecure_no_client_auth`` answers anyone, for local development only. ``cors_origins``
    (default any) are the browser origins allowed to call. ``feedback_file``, when set, gets one
    JSON line per feedback item.
    """

    clients: tuple[TrustedClient, ...] = ()
    insecure_no_client_auth: bool = False
    cors_origins: tuple[str, ...] = ANY_ORIGIN
    feedback_file: Path | None = None

    def auth(self) -> ClientAuth:
        """The verifier (reads JWK Set files now: a bad one is a :class:`ConfigError`)."""
        if self.insecure_no_client_auth:
            return ClientAuth.insecure_no_client_auth()
        return ClientAuth(self.clients)

    def feedback_log(self) -> FeedbackLog:
        return FeedbackLog(self.feedback_file)


@dataclass(frozen=True, slots=True)
class CarePlanService:
    """The ``patient-view`` service: reads the record, assesses it, looks up what is stored,
    renders the card."""

    definitions: Definitions
    launch_url: str
    today: Callable[[], date] = date.today
    fhir_servers: frozenset[str] | None = None
    feedback: FeedbackLog = field(default_factory=FeedbackLog)

    def descriptor(self) -> dict[str, Any]:
        return {
            "hook": HOOK,
            "id": SERVICE_ID,
            "title": "fhir-tailor personalized care plan",
            "description": (
                "Profiles the patient in four dimensions (medical, cognitive and behavioral, "
                "social, functional) and proposes a draft personalized CarePlan with its goals."
            ),
            "prefetch": PREFETCH | plan_prefetch(self.definitions),
            "usageRequirements": (
                "Without prefetch, needs fhirServer and a token that reads Patient, Condition "
                "and Observation (and QuestionnaireResponse, Encounter, MedicationRequest, "
                "ServiceRequest, and CarePlan, Goal and Task to find the plan already stored). "
                "Calls carry the client's signed JWT (CDS Hooks 2.0, Trusting CDS Clients)."
            ),
        }

    async def cards(self, call: HookRequest) -> list[dict[str, Any]]:
        """The cards for one hook call; the assessment runs in a worker thread. One client of
        ``fhirServer`` (when the call names one this service may contact) serves the call."""
        async with contextlib.AsyncExitStack() as stack:
            client = await self.client(call, stack)
            issues: list[ReadIssue] = []
            record = await self.record(call, client, issues.append)
            assessed = await run_in_threadpool(self.assessed, record, len(issues))
            if assessed is None:
                return []
            profile, plan, resources = assessed
            stored = from_prefetch(call.prefetch or {}, resources)
            if not stored.complete and client is not None:
                stored = await completed(client, plan.patient, resources, stored)
        proposal = propose(resources, stored)
        card_id = card_uuid(call.hookInstance, plan, proposal)
        card = CarePlanCards(self.definitions, self.launch_url).card(
            profile, plan, proposal, card_id
        )
        suggestions = tuple(s["uuid"] for s in card.get("suggestions", ()))
        self.feedback.issued.add(str(card_id), IssuedCard(proposal.kind, suggestions))
        log.info(
            "%s: %s: card %s (%s%s)",
            SERVICE_ID,
            plan.patient,
            card_id,
            proposal.kind,
            f" {proposal.careplan}" if proposal.careplan else "",
            extra={"patient": plan.patient, "card": str(card_id), "card_kind": proposal.kind},
        )
        return [card]

    def assessed(
        self, record: PatientRecord, read_issues: int
    ) -> tuple[Profile, Plan, PlanResources] | None:
        """The assessment of a record and its plan's resources; ``None`` when no plan applies."""
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
            return None
        return profile, plan, to_fhir(plan, datetime.now(UTC))

    async def record(
        self,
        call: HookRequest,
        client: AsyncFhirClient | None,
        on_issue: Callable[[ReadIssue], None],
    ) -> PatientRecord:
        """The patient's record from the prefetch, completed from ``fhirServer`` if need be."""
        pid = call.context.patientId
        items, missing = prefetched(call.prefetch or {}, on_issue)
        unread: tuple[str, ...] = ()
        if missing and call.fhirServer is not None:
            if client is None:
                raise HookError(400, "field fhirServer: not a server this service may contact")
            try:
                read, unread = await fetched(client, pid, missing, on_issue)
            except FhirTailorError as exc:
                raise HookError(502, f"reading from fhirServer failed: {exc}") from None
            items += read
            missing = []
        lacking = [key for key in missing if PREFETCH_TYPES[key][1]]
        if lacking:
            raise HookError(412, f"prefetch lacks {', '.join(lacking)} and no fhirServer was given")
        record = patient_record(items, pid, on_issue)
        if record is None:
            raise HookError(412, f"no usable Patient/{pid} in the prefetch or fhirServer data")
        return replace(record, unread_types=unread) if unread else record

    async def client(
        self, call: HookRequest, stack: contextlib.AsyncExitStack
    ) -> AsyncFhirClient | None:
        """A client of ``fhirServer`` with the call's token, closed with ``stack``; ``None``
        without ``fhirServer`` or when it is not one this service may contact (an error only
        if the record needs it: the plan lookup then stays unknown)."""
        if call.fhirServer is None:
            return None
        server = call.fhirServer.rstrip("/")
        if self.fhir_servers is not None and server not in self.fhir_servers:
            return None
        auth = call.fhirAuthorization
        token = auth.access_token.get_secret_value() if auth else None
        try:
            client = AsyncFhirClient(
                server,
                auth=BearerTokenAuth(token) if token else None,
                timeout=FETCH_TIMEOUT,
                retry=FETCH_RETRY,
            )
        except ValueError as exc:
            raise HookError(400, f"field fhirServer: {exc}") from None
        return await stack.enter_async_context(client)


def cds_routes(
    definitions: Definitions,
    *,
    public_url: str,
    auth: ClientAuth,
    feedback: FeedbackLog | None = None,
    today: Callable[[], date] = date.today,
    fhir_servers: Collection[str] | None = None,
) -> list[BaseRoute]:
    """Discovery, the ``patient-view`` service and its feedback endpoint, to mount in a
    Starlette app (with :func:`fhir_tailor.web.cds_cors.cds_cors` for browser clients).

    ``public_url`` is where clients reach the app: the JWT audience is the endpoint's URL under
    it, and cards link to the SMART app's ``{public_url}/launch``. ``auth`` checks each call's
    client; ``feedback`` records feedback (a fresh in-memory log by default). ``fhir_servers``,
    when given, lists the only ``fhirServer`` base URLs the service will call with a client's
    token.
    """
    base = public_url.rstrip("/")
    service_url = f"{base}/cds-services/{SERVICE_ID}"
    allowed = None if fhir_servers is None else frozenset(s.rstrip("/") for s in fhir_servers)
    kept = feedback if feedback is not None else FeedbackLog()
    service = CarePlanService(definitions, f"{base}/launch", today, allowed, kept)

    async def client_of(request: Request, *audiences: str) -> str | None:
        """The calling client's ``iss``, ``None`` without client authentication; a 401
        :class:`HookError` for a client not trusted (the reason is logged, never answered)."""
        if auth.insecure:
            return None
        try:
            client = await auth.verify(request.headers, audiences)
        except ClientAuthError as exc:
            log.warning("%s: call refused: %s", SERVICE_ID, exc)
            raise HookError(401, "the CDS client is not authenticated") from None
        log.debug(
            "%s: client %s (kid %s, jti %s, tenant %s)",
            SERVICE_ID,
            client.iss,
            client.kid,
            client.jti,
            client.tenant,
        )
        return client.iss

    async def discovery(request: Request) -> JSONResponse:
        return JSONResponse({"services": [service.descriptor()]})

    async def call(request: Request) -> JSONResponse:
        if request.path_params["service_id"] != SERVICE_ID:
            return _error(404, f"no CDS service {request.path_params['service_id'][:64]!r}")
        try:
            await client_of(request, service_url)
            cards = await service.cards(parse_request(await _json(request, HOOK_BODY_LIMIT)))
        except HookError as exc:
            log.warning("%s: %d: %s", SERVICE_ID, exc.status, exc.message)
            return _error(exc.status, exc.message)
        return JSONResponse({"cards": cards})

    async def feedback_call(request: Request) -> JSONResponse:
        if request.path_params["service_id"] != SERVICE_ID:
            return _error(404, f"no CDS service {request.path_params['service_id'][:64]!r}")
        try:
            # The audience is the endpoint called; the service's own URL is accepted too, for
            # clients that sign feedback for the service it is about.
            client = await client_of(request, f"{service_url}/feedback", service_url)
            items = parse_feedback(await _json(request, FEEDBACK_BODY_LIMIT))
        except HookError as exc:
            log.warning("%s feedback: %d: %s", SERVICE_ID, exc.status, exc.message)
            return _error(exc.status, exc.message)
        except FeedbackError as exc:
            log.warning("%s feedback: 400: %s", SERVICE_ID, exc)
            return _error(400, str(exc))
        await run_in_threadpool(kept.record, kept.records(SERVICE_ID, items, client))
        return JSONResponse({"recorded": len(items)})

    return [
        Route("/cds-services", discovery, methods=["GET"]),
        Route("/cds-services/{service_id}", call, methods=["POST"]),
        Route("/cds-services/{service_id}/feedback", feedback_call, methods=["POST"]),
    ]


async def _json(request: Request, limit: int) -> object:
    """The request's JSON body, read up to ``limit`` bytes; a :class:`HookError`, 413 past the
    limit and 400 when the body is not JSON."""
    try:
        return json.loads(await read_body(request, limit))
    except BodyTooLargeError as exc:
        raise HookError(413, str(exc)) from None
    except ValueError:
        raise HookError(400, "the request body is not JSON") from None
    except RecursionError:  # Python's JSON reader, past about 1,000 levels
        raise HookError(400, "the request body is JSON nested too deeply") from None


def _error(status: int, message: str) -> JSONResponse:
    headers = WWW_AUTHENTICATE if status == 401 else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)
