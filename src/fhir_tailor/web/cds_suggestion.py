"""What a CDS card suggests for the patient's plan, given what the client's FHIR server holds.

The card must never make a second CarePlan of ours: ``sync`` refuses a patient whose CarePlans
share one identifier, and a clinician would not know which to trust. So before suggesting, the
service looks up what ``sync`` looks up (:mod:`fhir_tailor.sinks.server`): our CarePlan by its
business identifier, the Goals and referrals it references, the urgent Tasks already written.
They come from the prefetch (:func:`plan_prefetch`) or, for what the client did not prefetch,
from ``fhirServer``; and the suggestion is ``sync``'s decision for the patient:

- no CarePlan of ours: create it, with its Goals, referrals and urgent Tasks;
- our draft, and the plan changed: update it in place, under its version (its Goals and
  referrals too; new ones created, dropped ones withdrawn), the transaction ``sync`` would write;
- our draft, unchanged: nothing to suggest (the card says the draft is there to review);
- changed by someone else (:func:`~fhir_tailor.sinks.server.foreign_change`: approved, edited,
  untagged), several CarePlans with our identifier, or nothing could be read to tell: an
  information card with the app's link and no suggestion.

How the actions are written, so that the result is right however a client applies them. CDS
Hooks 2.0 ("Suggestion") says a suggestion's actions SHOULD be processed as a FHIR transaction
whose entries' full URLs are ``{fhirServer}/{type}/{id}``; in practice clients also apply them
one by one, and a ``create`` is a ``POST``, for which the server assigns a new id. So a
``create`` action cannot be referenced by its siblings (our CarePlan's links to its Goals
dangled), and accepting a card twice creates everything twice. Instead every action is an
``update`` (``PUT``) of the whole resource at an id the service chooses:

- a resource not yet stored gets the uuid its business identifier determines (the uuid of its
  ``urn:uuid`` full URL in :mod:`fhir_tailor.resources`): the same plan always lands on the same
  ids, so applying the suggestion twice rewrites the same resources (FHIR update-as-create,
  which sekmet and HAPI FHIR both allow: ``updateCreate``, HAPI's client id strategy);
- a stored resource keeps its id and carries ``meta.versionId`` as read, so a client sending
  ``If-Match`` with it cannot overwrite a newer version (the If-Match ``sync`` sends);
- references between them are plain ``Type/id``, which resolve once the actions are applied,
  in a transaction or in order: the actions list what is referenced before what references it
  (Goals, referrals, Tasks, then the CarePlan), for servers that check references on each write.

A conditional update (``PUT CarePlan?identifier=...``) would say "create unless it exists" too,
but an action carries a resource, not a URL. The Provenance ``sync`` writes is left out: its
``recorded`` time would be the hook call's, not the acceptance, which the client records.

What remains: a card created before the plan was stored and accepted after a clinician approved
it would rewrite the approved plan as a draft (there is no "create only if absent" for an
update). Clients replace a service's cards when the hook fires again (the specification's
"Update stale guidance"), which keeps such a card from lingering.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..client import AsyncFhirClient
from ..definitions import Definitions
from ..errors import FhirTailorError
from ..fhirdata import Resource, reference_id
from ..resources import (
    CAREPLAN_ID_SYSTEM,
    PLAN_FINGERPRINT_URL,
    PlanResources,
    create_transaction,
    extension_value,
    identifier_search,
)
from ..sinks.server import (
    PART_TYPES,
    WITHDRAWN_STATUS,
    foreign_change,
    stored_careplans,
    stored_parts,
    stored_tasks,
    update_transaction,
    with_tasks,
)

log = logging.getLogger("fhir_tailor.web.cds_suggestion")

Kind = Literal["create", "update", "current", "clinician", "conflict", "unchecked"]
#: Kinds whose card carries a suggestion.
SUGGESTING: frozenset[Kind] = frozenset({"create", "update"})
#: The order actions are listed in: what is referenced before what references it.
_ORDER = {"Goal": 0, "ServiceRequest": 1, "Task": 2, "CarePlan": 3}
#: The prefetch keys the lookup reads (besides ``serviceRequests``, which the record reads).
CAREPLAN_KEY, GOALS_KEY, TASKS_KEY = "ourCarePlan", "goals", "tasks"


def plan_prefetch(definitions: Definitions) -> dict[str, str]:
    """Prefetch templates for what the lookup needs: our CarePlan by its identifier (the
    patient's, for this catalog version), the patient's Goals and Tasks (token and reference
    searches, within the specification's recommended prefetch subset)."""
    info = definitions.catalog.info
    return {
        CAREPLAN_KEY: (
            f"CarePlan?identifier={CAREPLAN_ID_SYSTEM}|{{{{context.patientId}}}}/"
            f"{info.id}/{info.version}"
        ),
        GOALS_KEY: "Goal?patient={{context.patientId}}",
        TASKS_KEY: "Task?patient={{context.patientId}}",
    }


@dataclass(frozen=True, slots=True)
class Stored:
    """What the server holds of the plan; ``None`` where it is not known."""

    careplans: tuple[Resource, ...] | None = None
    #: The Goals and ServiceRequests the one stored CarePlan references.
    parts: tuple[Resource, ...] | None = None
    #: ``identifier search -> Task/<id>`` of the plan's urgent Tasks already stored.
    tasks: Mapping[str, str] | None = None

    @property
    def complete(self) -> bool:
        return None not in (self.careplans, self.parts, self.tasks)


def from_prefetch(prefetch: Mapping[str, object], resources: PlanResources) -> Stored:
    """What the prefetch tells of the stored plan (see :func:`plan_prefetch`)."""
    wanted = identifier_search(resources.careplan.resource)
    found = _searched(prefetch, CAREPLAN_KEY, "CarePlan")
    careplans = None if found is None else tuple(c for c in found if identifier_search(c) == wanted)
    parts = None
    if careplans is not None and len(careplans) == 1:
        goals = _searched(prefetch, GOALS_KEY, "Goal")
        referrals = _searched(prefetch, "serviceRequests", "ServiceRequest")
        parts = _referenced(careplans[0], [*(goals or ()), *(referrals or ())])
    elif careplans is not None:
        parts = ()  # nothing stored, or several: no parts to check
    tasks = None
    searched = _searched(prefetch, TASKS_KEY, "Task")
    if searched is not None or not resources.tasks:
        wanted_tasks = {identifier_search(t.resource) for t in resources.tasks}
        tasks = {
            search: f"Task/{task.get('id')}"
            for task in searched or ()
            if (search := identifier_search(task)) in wanted_tasks and search is not None
        }
    return Stored(careplans, parts, tasks)


async def completed(
    client: AsyncFhirClient, patient: str, resources: PlanResources, stored: Stored
) -> Stored:
    """``stored`` with what it lacks read from the server (the searches ``sync`` makes); what
    cannot be read stays unknown, and the card will not suggest."""
    careplans, parts, tasks = stored.careplans, stored.parts, stored.tasks
    try:
        if careplans is None:
            careplans = tuple(await stored_careplans(client, resources))
        one = careplans[0] if len(careplans) == 1 else None
        if parts is None:
            if one is None:
                parts = ()
            elif foreign_change(one) is None:  # a clinician's plan: its parts are not read
                parts = tuple(await stored_parts(client, one))
        if tasks is None:
            found, searched = await stored_tasks(client, patient, resources.tasks, one)
            tasks = found if searched else None
    except FhirTailorError as exc:
        log.warning("reading the stored plan of %s failed: %s", patient, exc)
    return Stored(careplans, parts, tasks)


@dataclass(frozen=True, slots=True)
class Proposal:
    """What the card offers: its kind, the stored CarePlan it concerns, why it suggests
    nothing (no PHI: references and status codes), and the actions of its suggestion."""

    kind: Kind
    careplan: str | None = None
    reason: str | None = None
    actions: tuple[dict[str, Any], ...] = field(default=())


def propose(resources: PlanResources, stored: Stored) -> Proposal:
    """``sync``'s decision for the patient, as a card's suggestion (see the module docstring)."""
    if stored.careplans is None:
        return Proposal("unchecked", reason="whether the patient has this plan already")
    if len(stored.careplans) > 1:
        refs = ", ".join(f"CarePlan/{c.get('id')}" for c in stored.careplans)
        return Proposal("conflict", reason=f"several CarePlans share its identifier: {refs}")
    # Unknown Tasks (no prefetch, no server) are all written: their ids are the ones their
    # identifiers determine, so one a card wrote is rewritten, not repeated.
    tasks = dict(stored.tasks or {})
    if not stored.careplans:
        bundle = create_transaction(resources)
        bundle = with_tasks(bundle, resources.tasks, tasks, conditional=False)
        return Proposal("create", actions=tuple(actions_of(bundle)))
    current = stored.careplans[0]
    ref = f"CarePlan/{current.get('id')}"
    problem = foreign_change(current)
    if problem:
        return Proposal("clinician", ref, problem)
    if stored.parts is None:
        return Proposal("unchecked", ref, "the goals and referrals of the stored draft")
    for part in stored.parts:
        if edited := foreign_change(part):
            return Proposal("clinician", ref, f"{part['resourceType']}/{part.get('id')}: {edited}")
    fingerprint = extension_value(resources.careplan.resource, PLAN_FINGERPRINT_URL)
    if extension_value(current, PLAN_FINGERPRINT_URL) == fingerprint:
        return Proposal("current", ref)
    bundle = update_transaction(resources, current, list(stored.parts))
    bundle = with_tasks(bundle, resources.tasks, tasks, conditional=False)
    return Proposal("update", ref, actions=tuple(actions_of(bundle)))


def actions_of(bundle: Resource) -> list[dict[str, Any]]:
    """A ``sync`` transaction as CDS ``update`` actions (see the module docstring): new
    resources at the ids their identifiers determine, stored ones with their ``versionId``;
    the Provenance left out."""
    entries = [e for e in bundle["entry"] if e["resource"]["resourceType"] != "Provenance"]
    ids = {
        e["fullUrl"]: f"{e['resource']['resourceType']}/{e['fullUrl'].removeprefix('urn:uuid:')}"
        for e in entries
        if e["request"]["method"] == "POST"
    }
    actions = []
    for entry in entries:
        resource = _relinked(entry["resource"], ids)
        request = entry["request"]
        if request["method"] == "POST":
            new = True
            rid = ids[entry["fullUrl"]].split("/", 1)[1]
            resource = {"resourceType": resource["resourceType"], "id": rid} | resource
        else:
            new = False
            version = str(request.get("ifMatch", "")).removeprefix('W/"').removesuffix('"')
            if version:
                resource = {**resource, "meta": {**resource.get("meta", {}), "versionId": version}}
        actions.append(
            {"type": "update", "description": _description(resource, new), "resource": resource}
        )
    return sorted(actions, key=lambda a: _ORDER[a["resource"]["resourceType"]])


def _description(resource: Resource, new: bool) -> str:
    """What an action does, in the words of the plan (definitions' text, no patient data)."""
    rtype = resource["resourceType"]
    where = "" if new else f" {rtype}/{resource['id']}"
    if rtype == "CarePlan":
        return f"{'Create' if new else 'Update'} draft CarePlan{where}: {resource['title']}"
    if rtype == "Goal":
        text = resource["description"]["text"]
        if resource.get("lifecycleStatus") == WITHDRAWN_STATUS["Goal"]:
            return f"Cancel goal{where}, no longer in the plan: {text}"
        return f"{'Create' if new else 'Update'} proposed goal{where}: {text}"
    if rtype == "ServiceRequest":
        text = resource["code"]["text"]
        if resource.get("status") == WITHDRAWN_STATUS["ServiceRequest"]:
            return f"Revoke referral{where}, no longer in the plan: {text}"
        return f"{'Create' if new else 'Update'} draft referral{where}: {text}"
    return f"Create {resource['priority']} task: {resource['code']['text']}"


def _searched(prefetch: Mapping[str, object], key: str, rtype: str) -> list[Resource] | None:
    """The ``rtype`` resources of a prefetched search: ``[]`` for null (the client found none),
    ``None`` if the key is absent, an ``OperationOutcome`` (a failed prefetch) or not a Bundle."""
    value = prefetch.get(key)
    if key in prefetch and value is None:
        return []
    if not isinstance(value, dict) or value.get("resourceType") != "Bundle":
        return None
    entries = value.get("entry") or []
    if not isinstance(entries, list):
        return None
    return [
        e["resource"]
        for e in entries
        if isinstance(e, dict)
        and isinstance(e.get("resource"), dict)
        and e["resource"].get("resourceType") == rtype
    ]


def _referenced(careplan: Resource, pool: list[Resource]) -> tuple[Resource, ...] | None:
    """The Goals and ServiceRequests ``careplan`` references, from ``pool``; ``None`` if one
    is not there (not prefetched: it must be read, as ``sync`` does, or left unknown)."""
    by_ref = {f"{r.get('resourceType')}/{r.get('id')}": r for r in pool}
    references = [
        *(careplan.get("goal") or ()),
        *(a.get("reference") for a in careplan.get("activity") or () if isinstance(a, dict)),
    ]
    found = []
    for reference in references:
        for rtype in PART_TYPES:
            if (rid := reference_id(reference, rtype)) is not None:
                part = by_ref.get(f"{rtype}/{rid}")
                if part is None:
                    return None
                found.append(part)
    return tuple(found)


def _relinked(value: Any, refs: Mapping[str, str]) -> Any:
    if isinstance(value, dict):
        return {
            k: refs.get(v, v) if k == "reference" and isinstance(v, str) else _relinked(v, refs)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_relinked(item, refs) for item in value]
    return value
