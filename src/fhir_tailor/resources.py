"""FHIR resources for a plan: a CarePlan, its Goals, its referrals, its urgent Tasks and a
Provenance.

Output is R4 JSON conforming to US Core 7.0.0 and, for social needs, the SDOH Clinical Care IG
STU 2.3.0; :mod:`fhir_tailor.conformance` says which profiles each resource claims and why. A
social-care referral (a ``ServiceRequest`` activity with an SDOH category) becomes a
ServiceRequest of its own, which the CarePlan activity references, so that referral platforms can
find and track it; other activities stay inline as ``CarePlan.activity.detail``. An urgent
finding (:mod:`fhir_tailor.urgent`) becomes a ``Task`` a clinician's worklist finds, with its
priority, listed first among the CarePlan's activities. Every resource
we write is validated with the strict ``fhir.resources`` R4B models: an invalid one is a bug in
fhir-tailor, raised as :class:`InvalidOutputError`.

Idempotence rests on three markers every written resource carries:

- a business ``identifier`` in fhir-tailor's system, derived from patient and catalog version,
  so a re-run finds what an earlier run wrote;
- a ``meta.tag`` saying fhir-tailor generated it;
- a *content digest* extension over the fields a clinician edits (status, text of activities,
  targets, what a referral asks for and of whom): if the stored digest no longer matches the
  resource, someone changed it, and fhir-tailor leaves it alone. The CarePlan also carries the
  plan fingerprint, so an unchanged plan is not written again.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import Any

from .conformance import (
    CAREPLAN_CATEGORY,
    CONTACTING_SUBJECT_PROHIBITED,
    GOAL_CATEGORY,
    PERTAINS_TO_GOAL,
    SDOH_CATEGORY,
    SOCIAL_SERVICE_PROCEDURE,
    US_CORE_CAREPLAN,
    goal_profiles,
    referral_profiles,
)
from .fhirdata import Resource
from .mapping import Code
from .plan import EvidenceRef, Plan, PlannedActivity, PlannedGoal, Variation
from .rules import Evidence
from .sdoh import CATEGORY_DISPLAY
from .urgent import UrgentFinding
from .validation import ShapeValidator
from .version import __version__

TAILOR = "https://fhir-tailor.dev/fhir"
CAREPLAN_ID_SYSTEM = f"{TAILOR}/id/careplan"
GOAL_ID_SYSTEM = f"{TAILOR}/id/goal"
SERVICEREQUEST_ID_SYSTEM = f"{TAILOR}/id/servicerequest"
TASK_ID_SYSTEM = f"{TAILOR}/id/task"
#: fhir-tailor's code for an urgent finding: the id of its rule in profiles/urgent.yaml.
URGENT_CODE_SYSTEM = f"{TAILOR}/CodeSystem/urgent-finding"
SOFTWARE_ID_SYSTEM = f"{TAILOR}/id/software"
GENERATED_TAG = {"system": f"{TAILOR}/CodeSystem/tag", "code": "generated"}
PLAN_FINGERPRINT_URL = f"{TAILOR}/StructureDefinition/plan-fingerprint"
CONTENT_DIGEST_URL = f"{TAILOR}/StructureDefinition/content-digest"
UCUM = "http://unitsofmeasure.org"
PARTICIPANT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
REASON_TYPES = ("Condition/", "Observation/")
#: The fields a person edits, by resource type; CarePlan activities are digested apart.
EDITABLE = {
    "Goal": ("lifecycleStatus", "description", "target"),
    "ServiceRequest": (
        "status",
        "intent",
        "category",
        "priority",
        "doNotPerform",
        "code",
        "occurrenceDateTime",
        "occurrencePeriod",
        "occurrenceTiming",
        "requester",
        "performerType",
        "performer",
        "reasonCode",
        "reasonReference",
        "note",
        "patientInstruction",
    ),
}


#: What marks a CarePlan activity withheld: edits to them are a person's, as any other.
WITHHELD_DETAIL = ("doNotPerform", "statusReason")


#: Edited fields digested only when the resource has them (see :func:`content_digest`): a
#: referral's ``orderDetail`` says the patient must not be contacted, an edit to respect.
EDITABLE_WHEN_PRESENT = {"ServiceRequest": ("orderDetail",)}


@dataclass(frozen=True, slots=True)
class Entry:
    """A resource to write and the ``urn:uuid`` other entries use to reference it."""

    full_url: str
    resource: Resource


@dataclass(frozen=True, slots=True)
class PlanResources:
    careplan: Entry
    goals: tuple[Entry, ...]
    service_requests: tuple[Entry, ...]
    provenance: Entry
    #: The urgent findings' Tasks. The CarePlan lists them, but they are not among its
    #: :attr:`parts`: a clinician acting on a Task is its purpose, not an edit of our draft,
    #: and a Task is written once and never updated or withdrawn by fhir-tailor.
    tasks: tuple[Entry, ...] = ()

    @property
    def parts(self) -> tuple[Entry, ...]:
        """The resources the CarePlan references and fhir-tailor owns: Goals, then referrals."""
        return (*self.goals, *self.service_requests)

    @property
    def entries(self) -> tuple[Entry, ...]:
        return (self.careplan, *self.parts, *self.tasks, self.provenance)


def careplan_identifier(plan: Plan) -> str:
    """``<patient id>/<catalog id>/<catalog version>``: one CarePlan per patient and catalog.

    ``/`` cannot occur in FHIR ids and, unlike ``|`` or ``,``, has no meaning in token search.
    The patient comes first (:func:`careplan_identifier_prefix`), so that our CarePlans for a
    patient are known whatever catalog version wrote them.
    """
    return f"{careplan_identifier_prefix(plan.patient)}{plan.catalog}/{plan.catalog_version}"


def careplan_identifier_prefix(patient: str) -> str:
    """``<patient id>/``: how the identifier of every CarePlan of ours for ``patient`` begins."""
    return f"{patient.removeprefix('Patient/')}/"


#: Plans of a population share few shapes: each is validated strictly once (see validation).
_validate_output = ShapeValidator()


def to_fhir(plan: Plan, recorded: datetime) -> PlanResources:
    """Render a plan as validated CarePlan, Goal, ServiceRequest and Provenance resources."""
    careplan_id = careplan_identifier(plan)
    goals = tuple(_goal_entry(plan, goal, careplan_id) for goal in plan.goals)
    goal_urls = {goal.key: entry.full_url for goal, entry in zip(plan.goals, goals, strict=True)}
    referrals = {
        activity.key: _service_request_entry(plan, activity, careplan_id, goal_urls)
        for activity in plan.activities
        if activity.is_referral
    }
    referral_urls = {key: entry.full_url for key, entry in referrals.items()}
    tasks = tuple(_task_entry(plan, finding) for finding in plan.urgent)
    careplan = Entry(
        _urn(CAREPLAN_ID_SYSTEM, careplan_id),
        _careplan(plan, careplan_id, goal_urls, referral_urls, tasks),
    )
    targets = (careplan, *goals, *referrals.values(), *tasks)
    provenance = Entry(_urn("Provenance", careplan_id), _provenance(plan, targets, recorded))
    result = PlanResources(careplan, goals, tuple(referrals.values()), provenance, tasks)
    for entry in result.entries:
        _validate_output(entry.resource)
    return result


def content_digest(resource: Resource) -> str:
    """Digest of the fields a person would edit; server-assigned ids and meta do not count.

    References the server rewrites (our ``urn:uuid`` links between entries) are left out.
    """
    rtype = str(resource.get("resourceType"))
    if rtype == "CarePlan":
        content: Any = [
            resource.get("status"),
            resource.get("intent"),
            resource.get("title"),
            [
                [
                    a.get("detail", {}).get(key)
                    for key in ("kind", "status", "description", "code", "scheduledString")
                ]
                # added later, digested only when present (as below): a withheld activity
                + [a["detail"][key] for key in WITHHELD_DETAIL if key in a.get("detail", {})]
                for a in resource.get("activity") or ()
            ],
        ]
        if "note" in resource:  # types not read, withheld goals
            content.append(resource["note"])
        if "author" in resource:  # the approving clinician (approval), part of what they approved
            content.append({"author": resource["author"]})
    else:
        content = [resource.get(key) for key in EDITABLE[rtype]]
        # added later: digested only when present, so the digests of resources written
        # without them still match
        content += [
            resource[key] for key in EDITABLE_WHEN_PRESENT.get(rtype, ()) if key in resource
        ]
    canonical = json.dumps(numbers_as_floats(content), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def numbers_as_floats(value: Any) -> Any:
    """Servers may store ``7.0`` as ``7`` or ``8.10`` as ``8.1``: digest numbers by value.

    Every resource written is digested, so strings, the most of what it holds, are tested first
    and returned as they are."""
    kind = type(value)
    if kind is str:
        return value
    if kind is dict or isinstance(value, dict):
        return {
            key: item if type(item) is str else numbers_as_floats(item)
            for key, item in value.items()
        }
    if kind is list or isinstance(value, list):
        return [item if type(item) is str else numbers_as_floats(item) for item in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value


def extension_value(resource: Resource, url: str) -> str | None:
    for extension in resource.get("extension") or ():
        if isinstance(extension, dict) and extension.get("url") == url:
            value = extension.get("valueString")
            return value if isinstance(value, str) else None
    return None


def with_digest(resource: Resource) -> Resource:
    """The resource with its content digest extension (re)computed."""
    others = [e for e in resource.get("extension") or () if e.get("url") != CONTENT_DIGEST_URL]
    digest = {"url": CONTENT_DIGEST_URL, "valueString": content_digest(resource)}
    return {**resource, "extension": [*others, digest]}


def identifier_search(resource: Resource) -> str | None:
    """The search that finds a resource by its fhir-tailor identifier (``identifier=sys|value``)."""
    for identifier in resource.get("identifier") or ():
        if identifier.get("system") in (
            CAREPLAN_ID_SYSTEM,
            GOAL_ID_SYSTEM,
            SERVICEREQUEST_ID_SYSTEM,
            TASK_ID_SYSTEM,
        ):
            return f"identifier={identifier['system']}|{identifier['value']}"
    return None


def create_transaction(
    resources: PlanResources, *, unconditional: Collection[str] = ()
) -> Resource:
    """A transaction Bundle creating the plan's resources, conditional on their identifiers.

    The CarePlan is always created conditionally (``ifNoneExist`` on its identifier). Goals,
    ServiceRequests and Tasks are too, except the types in ``unconditional``: those a server
    declares no ``identifier`` search for (a conditional create on an undeclared parameter fails
    the whole transaction).
    """
    entries = []
    for entry in resources.entries:
        rtype = entry.resource["resourceType"]
        request = {"method": "POST", "url": rtype}
        search = identifier_search(entry.resource)
        if search and (rtype == "CarePlan" or rtype not in unconditional):
            request["ifNoneExist"] = search
        entries.append({"fullUrl": entry.full_url, "resource": entry.resource, "request": request})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _urn(system: str, value: str) -> str:
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'{system}|{value}')}"


def _ref(reference: str) -> dict[str, str]:
    return {"reference": reference}


def _sdoh_coding(category: str | None) -> Resource:
    """The SDOHCC category coding, with the code system's display."""
    assert category is not None, "a referral or social goal has an SDOH category"
    return {"system": SDOH_CATEGORY, "code": category, "display": CATEGORY_DISPLAY[category]}


def _coding(code: Code) -> Resource:
    return {
        "system": code.system,
        "code": code.code,
        **({"display": code.display} if code.display else {}),
    }


def _careplan(
    plan: Plan,
    identifier: str,
    goal_urls: dict[str, str],
    referral_urls: dict[str, str],
    tasks: tuple[Entry, ...] = (),
) -> Resource:
    title = "Personalized care plan: " + ", ".join(m.title for m in plan.modules)
    resource: Resource = {
        "resourceType": "CarePlan",
        "meta": {"profile": [US_CORE_CAREPLAN], "tag": [GENERATED_TAG]},
        "extension": [{"url": PLAN_FINGERPRINT_URL, "valueString": plan.fingerprint()}],
        "identifier": [{"system": CAREPLAN_ID_SYSTEM, "value": identifier}],
        "instantiatesCanonical": [module.canonical for module in plan.modules],
        "status": "draft",
        "intent": "plan",
        "category": [{"coding": [{"system": CAREPLAN_CATEGORY, "code": "assess-plan"}]}],
        "title": title if plan.modules else "Urgent findings for clinician review",
        "subject": _ref(plan.patient),
        "created": plan.as_of.isoformat(),
        "text": {"status": "generated", "div": _narrative(plan)},
    }
    if plan.addresses:
        resource["addresses"] = [_ref(r) for r in plan.addresses]
    if plan.supporting_info:
        resource["supportingInfo"] = [_ref(r) for r in plan.supporting_info]
    if goal_urls:
        resource["goal"] = [_ref(url) for url in goal_urls.values()]
    resource["activity"] = [{"reference": _ref(task.full_url)} for task in tasks] + [
        {"reference": _ref(referral_urls[a.key])}
        if a.key in referral_urls
        else _activity(plan, a, goal_urls)
        for a in plan.activities
    ]
    if not plan.modules:  # no module instantiated: nothing to name (FHIR has no empty lists)
        del resource["instantiatesCanonical"]
    if not resource["activity"]:
        del resource["activity"]
    notes = [unread_text(plan.unread_types)] if plan.unread_types else []
    notes += [_withheld_goal_text(goal) for goal in plan.withheld_goals]
    if notes:
        resource["note"] = [{"text": text} for text in notes]
    return with_digest(resource)


def unread_text(types: tuple[str, ...]) -> str:
    """What a plan decided without ``types`` says to its reviewer (a CarePlan note, the
    narrative, the SMART page): the run report and exit code 5 reach the operator, not the
    clinician who approves the draft."""
    named = types[0] if len(types) == 1 else f"{', '.join(types[:-1])} and {types[-1]}"
    return (
        f"Drafted without the patient's {named} resources: the server offers no way to read "
        "them for a patient, so nothing they record is considered in this plan."
    )


def _withheld_goal_text(goal: PlannedGoal) -> str:
    """A CarePlan note for a goal a variant withheld: what it was, and why it is not set."""
    why = "; ".join(_withheld_because(goal.variations, goal.withheld_by))
    return f"Goal withheld, not set: {goal.description} (module {goal.module}). {why}"


def _withheld_because(variations: tuple[Variation, ...], by: tuple[str, ...]) -> list[str]:
    """``Withheld by <variant> (<reason>): <evidence> [sources]`` for each withholding variant."""
    texts: list[str] = []
    for variation in variations:
        if variation.variant in by:
            prefix = f"Withheld by {variation.variant} ({variation.reason})"
            texts += [_reason_text(prefix, e) for e in variation.evidence] or [prefix]
    return list(dict.fromkeys(texts))


def _activity(plan: Plan, activity: PlannedActivity, goal_urls: dict[str, str]) -> Resource:
    module = next((m for m in plan.modules if m.id == activity.module), None)
    references = _reason_references(activity)
    detail: Resource = {
        "kind": activity.kind,
        "code": {"coding": _activity_codings(activity), "text": activity.key},
        "status": "not-started",
        "description": activity.description,
        "reasonCode": [{"text": text} for text in _reasons(activity)],
    }
    if module is not None:
        detail["instantiatesCanonical"] = [module.canonical]
        goals = [url for key, url in goal_urls.items() if key.startswith(f"{module.id}.")]
        if goals:
            detail["goal"] = [_ref(url) for url in goals]
    if references:
        detail["reasonReference"] = [_ref(r) for r in references]
    if activity.withheld:
        # kept in the plan as a "do not": a clinician sees what was left out and why
        detail["doNotPerform"] = True
        reasons = dict.fromkeys(
            f"{v.label}: {v.reason}"
            for v in activity.variations
            if v.variant in activity.withheld_by
        )
        detail["statusReason"] = {"text": "Withheld. " + "; ".join(reasons)}
    return {"detail": detail}


def _activity_codings(activity: PlannedActivity) -> list[Resource]:
    """The standard code first, where there is one, and always the catalog's own code."""
    catalog = {"system": activity.code.system, "code": activity.code.code}
    if activity.standard_code is None:
        return [catalog]
    return [_coding(activity.standard_code), catalog]


def _reasons(activity: PlannedActivity) -> list[str]:
    """Why the activity is there: its module's evidence, then each variation's."""
    reasons = []
    if activity.module is not None:  # else a variant added it: its reasons are listed below
        reasons += [_reason_text(f"Module {activity.module}", e) for e in activity.reasons]
    reasons += [
        _reason_text(f"Variation {v.variant} ({v.reason})", e)
        for v in activity.variations
        for e in v.evidence
    ]
    return list(dict.fromkeys(reasons))


def _reason_references(activity: PlannedActivity) -> list[str]:
    """The Conditions and Observations behind the activity and its variations."""
    return sorted(
        {
            source
            for ref in (*activity.reasons, *(e for v in activity.variations for e in v.evidence))
            for source in ref.sources
            if source.startswith(REASON_TYPES)
        }
    )


def _reason_text(prefix: str, evidence: EvidenceRef) -> str:
    sources = f" [{', '.join(evidence.sources)}]" if evidence.sources else ""
    return f"{prefix}: {evidence.label}{sources}"


def _goal_entry(plan: Plan, goal: PlannedGoal, careplan_id: str) -> Entry:
    identifier = f"{careplan_id}/{goal.key}"
    target: Resource = {"measure": {"coding": [_coding(goal.target.measure)]}}
    if goal.due_date:
        target["dueDate"] = goal.due_date.isoformat()
    if goal.target.value is not None:
        quantity: Resource = {
            "value": goal.target.value,
            "unit": goal.target.unit,
            "system": UCUM,
            "code": goal.target.unit,
        }
        if goal.target.comparator:
            quantity["comparator"] = goal.target.comparator
        target["detailQuantity"] = quantity
    elif goal.target.answer is not None:
        # a coded answer, as the SDOH Clinical Care IG's SDOHCC Goal example (LA19983-8)
        answer = goal.target.answer
        target["detailCodeableConcept"] = {
            "coding": [_coding(answer)],
            **({"text": answer.display} if answer.display else {}),
        }
    else:
        target["detailString"] = goal.target.text
    categories = []
    if goal.category:
        categories.append({"coding": [{"system": GOAL_CATEGORY, "code": goal.category}]})
    if goal.sdoh_category:
        categories.append({"coding": [_sdoh_coding(goal.sdoh_category)]})
    description: Resource = {"text": goal.description}
    if goal.code is not None:
        description = {"coding": [_coding(goal.code)], **description}
    resource: Resource = {
        "resourceType": "Goal",
        "meta": {"profile": goal_profiles(goal), "tag": [GENERATED_TAG]},
        "identifier": [{"system": GOAL_ID_SYSTEM, "value": identifier}],
        # a proposal until a clinician accepts it, like the draft CarePlan that holds it
        "lifecycleStatus": "proposed",
        **({"category": categories} if categories else {}),
        "description": description,
        "subject": _ref(plan.patient),
        "startDate": plan.as_of.isoformat(),
        "target": [target],
    }
    if goal.addresses:
        resource["addresses"] = [_ref(r) for r in goal.addresses]
    return Entry(_urn(GOAL_ID_SYSTEM, identifier), with_digest(resource))


def _service_request_entry(
    plan: Plan, activity: PlannedActivity, careplan_id: str, goal_urls: dict[str, str]
) -> Entry:
    """A social-care referral per SDOHCC ServiceRequest: a draft, like the CarePlan holding it.

    Its intent is ``plan``, as the CarePlan's: fhir-tailor proposes, and a clinician's approval
    makes it an active order (:mod:`fhir_tailor.approval`). The requester is the plan's (the
    organization or practitioner role the deployment names), absent when none is named; there is
    neither performer nor occurrence, which we do not know. The reasons are the activity's
    evidence: the Conditions and Observations as ``reasonReference`` and every module and
    variation reason, with its sources, as a note. A referral the patient must not be contacted
    about carries the IG's ``orderDetail`` contacting-subject-prohibited.
    """
    identifier = f"{careplan_id}/{activity.key}"
    module = next((m for m in plan.modules if m.id == activity.module), None)
    profiles = referral_profiles(activity)
    goals = [
        goal_urls[goal.key]
        for goal in plan.goals
        if goal.module == activity.module and goal.sdoh_category
    ]
    resource: Resource = {
        "resourceType": "ServiceRequest",
        "meta": {**({"profile": profiles} if profiles else {}), "tag": [GENERATED_TAG]},
        "extension": [{"url": PERTAINS_TO_GOAL, "valueReference": _ref(url)} for url in goals],
        "identifier": [{"system": SERVICEREQUEST_ID_SYSTEM, "value": identifier}],
        **({"instantiatesCanonical": [module.canonical]} if module else {}),
        "status": "draft",
        "intent": "plan",
        "category": [
            {"coding": [SOCIAL_SERVICE_PROCEDURE]},
            {"coding": [_sdoh_coding(activity.sdoh_category)]},
        ],
        "code": {"coding": _activity_codings(activity), "text": activity.description},
        **(
            {"orderDetail": [{"coding": [CONTACTING_SUBJECT_PROHIBITED]}]}
            if activity.contact_prohibited
            else {}
        ),
        "subject": _ref(plan.patient),
        "authoredOn": plan.as_of.isoformat(),
        **({"requester": _ref(plan.requester)} if plan.requester else {}),
    }
    references = _reason_references(activity)
    if references:
        resource["reasonReference"] = [_ref(r) for r in references]
    resource["note"] = [{"text": reason} for reason in _reasons(activity)]
    return Entry(_urn(SERVICEREQUEST_ID_SYSTEM, identifier), with_digest(resource))


def task_identifier(plan: Plan, finding: UrgentFinding) -> str:
    """``<patient id>/<rule>/<digest of the evidence>``: one Task per patient, rule and
    evidence. No catalog version: a new catalog does not repeat a request already made."""
    return f"{plan.patient.removeprefix('Patient/')}/{finding.key}"


#: What a Task's ``reasonReference`` (one reference in R4) may point at among the sources.
_TASK_REASON_TYPES = ("Observation/", "Condition/", "QuestionnaireResponse/")


def _task_entry(plan: Plan, finding: UrgentFinding) -> Entry:
    """An urgent finding as a FHIR R4 Task for a clinician's worklist.

    ``status`` is ``requested`` (ready to be acted on; ``draft`` would keep it off worklists) and
    ``intent`` ``proposal``: fhir-tailor suggests and authorizes nothing (request-intent:
    "a suggestion made by someone/something that does not have an intention to ensure it occurs
    and without providing an authorization to act"). ``priority`` is the rule's. The code is the
    step to take (a standard code where the rule has one) and the rule, in fhir-tailor's code
    system; ``reasonReference`` (a single reference in R4) the first deciding resource, the
    notes every piece of evidence with its resources and the guideline followed.
    """
    identifier = task_identifier(plan, finding)
    codings = [_coding(finding.code)] if finding.code is not None else []
    codings.append({"system": URGENT_CODE_SYSTEM, "code": finding.rule, "display": finding.label})
    resource: Resource = {
        "resourceType": "Task",
        "meta": {"tag": [GENERATED_TAG]},
        "identifier": [{"system": TASK_ID_SYSTEM, "value": identifier}],
        "status": "requested",
        "intent": "proposal",
        "priority": finding.priority,
        "code": {"coding": codings, "text": finding.label},
        "description": f"{finding.label}: {finding.request}",
        "for": _ref(plan.patient),
        "authoredOn": plan.as_of.isoformat(),
        **({"requester": _ref(plan.requester)} if plan.requester else {}),
        "reasonCode": {"text": finding.reason},
    }
    deciding = next((s for s in finding.sources if s.startswith(_TASK_REASON_TYPES)), None)
    if deciding is not None:
        resource["reasonReference"] = _ref(deciding)
    resource["note"] = [
        *({"text": _evidence_text(e)} for e in finding.evidence),
        {"text": f"Source: {finding.source}"},
    ]
    return Entry(_urn(TASK_ID_SYSTEM, identifier), resource)


def _evidence_text(evidence: Evidence) -> str:
    sources = f" [{', '.join(evidence.sources)}]" if evidence.sources else ""
    return f"Evidence: {evidence.label}{sources}"


def _provenance(plan: Plan, targets: tuple[Entry, ...], recorded: datetime) -> Resource:
    sources = sorted({plan.patient, *plan.addresses, *plan.supporting_info})
    return {
        "resourceType": "Provenance",
        "meta": {"tag": [GENERATED_TAG]},
        "target": [_ref(target.full_url) for target in targets],
        "recorded": recorded.isoformat(),
        "agent": [software_agent()],
        "entity": [{"role": "source", "what": _ref(source)} for source in sources],
    }


def software_agent() -> Resource:
    """``Provenance.agent``: fhir-tailor, this version, assembled what the Provenance targets."""
    return {
        "type": {"coding": [{"system": PARTICIPANT_TYPE, "code": "assembler"}]},
        "who": {
            "type": "Device",
            "identifier": {"system": SOFTWARE_ID_SYSTEM, "value": f"fhir-tailor/{__version__}"},
            "display": f"fhir-tailor {__version__}",
        },
    }


def approver_agent(reference: str) -> Resource:
    """``Provenance.agent``: the clinician who approved the plan, by a ``Practitioner`` or
    ``PractitionerRole`` reference. Type ``author`` of the code system
    http://terminology.hl7.org/CodeSystem/provenance-participant-type (FHIR R4 4.0.1,
    Provenance.agent.type): the party that originates the resource and so has responsibility
    for its content and owns it. Approving, the clinician chose the activities and took the
    plan over (it is no longer fhir-tailor's to change), so they are its author, as in
    ``CarePlan.author``; fhir-tailor stays the ``assembler``."""
    return {
        "type": {"coding": [{"system": PARTICIPANT_TYPE, "code": "author", "display": "Author"}]},
        "who": _ref(reference),
    }


def _narrative(plan: Plan) -> str:
    """XHTML narrative: modules, goals and each activity with its variations and reasons.

    Referrals are ServiceRequests of their own, so this is where a CarePlan reader sees why.
    """
    parts = ['<div xmlns="http://www.w3.org/1999/xhtml">']
    parts.append(
        f"<p>Personalized care plan ({escape(plan.catalog)} {escape(plan.catalog_version)})"
    )
    parts.append(f" as of {plan.as_of.isoformat()}.</p>")
    if plan.unread_types:  # before the urgent findings: the record may have held more of them
        parts.append(
            f"<p><strong>Incomplete record.</strong> {escape(unread_text(plan.unread_types))}</p>"
        )
    if plan.urgent:  # first: what cannot wait for the plan's review
        parts.append("<p><strong>Urgent findings</strong> (a Task each):</p><ul>")
        parts.extend(
            f"<li><strong>{escape(f.priority.upper())}: {escape(f.label)}</strong>. "
            f"{escape(f.request)} <em>({escape(f.source)})</em></li>"
            for f in plan.urgent
        )
        parts.append("</ul>")
    parts.append("<p>Modules: " + escape(", ".join(m.title for m in plan.modules)) + "</p>")
    if plan.goals:
        parts.append("<p>Goals:</p><ul>")
        parts.extend(f"<li>{escape(goal.description)}</li>" for goal in plan.goals)
        parts.append("</ul>")
    if plan.withheld_goals:
        parts.append("<p>Goals withheld (not set):</p><ul>")
        parts.extend(f"<li>{escape(_withheld_goal_text(g))}</li>" for g in plan.withheld_goals)
        parts.append("</ul>")
    parts.append("<p>Activities:</p><ul>")
    for activity in plan.activities:
        withheld = "<strong>Withheld, do not do:</strong> " if activity.withheld else ""
        parts.append(f"<li>{withheld}{escape(activity.description)}")
        for variation in activity.variations:
            parts.append(
                f" <em>(adapted: {escape(variation.label)}; {escape(variation.reason)})</em>"
            )
        reasons = _reasons(activity)
        if reasons:
            parts.append("<br/>Reasons: " + escape("; ".join(reasons)))
        parts.append("</li>")
    parts.append("</ul></div>")
    return "".join(parts)
