"""Approval: a clinician's choice of activities written back as the patient's active CarePlan.

The write follows the same decisions as :class:`~fhir_tailor.sinks.server.ServerSink` and
reuses its transactions, so an approved plan is as safe to write as a synced draft:

- no CarePlan with our identifier yet: one transaction creates CarePlan, Goals, referrals and
  Provenance, the CarePlan conditional on its identifier (a double click creates one, not two);
- our draft, unchanged by anyone else: one transaction replaces it with ``If-Match`` on the
  version read, withdraws the parts the approved plan no longer has, and adds a Provenance;
- already active with exactly this plan: nothing is written (approving twice is harmless);
- anything else (edited, moved on, or approved with other choices): refused with a message
  saying which resource and why, since the plan now belongs to the clinicians.

Approved resources are *active*: CarePlan ``active``, Goals ``active``, referral
ServiceRequests ``active`` with intent ``order`` (a clinician authorized them, as in the SDOH
Clinical Care IG's active referral example) and the requester of the plan approved, which is the
approving deployment's (``serve --requester``); their content digests are recomputed so a later
sync still tells our writing from a person's edit.

The approving clinician (``Practitioner/<id>`` or ``PractitionerRole/<id>``, from the signed-in
user's ``fhirUser``) is the CarePlan's ``author`` and an ``author`` agent of the Provenance,
beside fhir-tailor as ``assembler``. The author is part of the CarePlan's content digest: what
was approved, and by whom, is what a later edit is measured against.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from .client import FhirClient
from .errors import ConflictError, FhirTailorError, PreconditionFailedError
from .fhirdata import Resource
from .plan import Plan
from .resources import (
    CONTENT_DIGEST_URL,
    GENERATED_TAG,
    PLAN_FINGERPRINT_URL,
    Entry,
    PlanResources,
    approver_agent,
    content_digest,
    create_transaction,
    extension_value,
    to_fhir,
    with_digest,
)
from .sinks.server import (
    PART_TYPES,
    foreign_change,
    stored_careplans,
    stored_parts,
    update_transaction,
)
from .validation import validate

log = logging.getLogger("fhir_tailor.approval")

#: The status each resource type takes when a clinician approves the plan.
APPROVED_STATUS = {
    "CarePlan": ("status", "active"),
    "Goal": ("lifecycleStatus", "active"),
    "ServiceRequest": ("status", "active"),
}
#: What else approval changes: a proposed referral (intent ``plan``) becomes an order.
APPROVED_FIELDS: dict[str, dict[str, str]] = {"ServiceRequest": {"intent": "order"}}


class ApprovalError(FhirTailorError):
    """The plan could not be approved; the message says which resource and why."""


@dataclass(frozen=True, slots=True)
class Approval:
    outcome: Literal["created", "updated", "unchanged"]
    careplan: str
    activities: int


def approve(
    client: FhirClient,
    plan: Plan,
    dropped: set[str],
    recorded: datetime,
    *,
    approver: str | None = None,
) -> Approval:
    """Write ``plan`` without the ``dropped`` activities as the patient's active CarePlan,
    authored by ``approver`` (a Practitioner or PractitionerRole reference) when given."""
    try:
        approved = plan.without_activities(dropped)
    except ValueError as exc:
        raise ApprovalError(f"{plan.patient}: {exc}; reload the page") from None
    resources = activate(to_fhir(approved, recorded), approver=approver)
    current = _stored_careplan(client, resources)
    if current is None:
        unconditional = [t for t in PART_TYPES if not client.supports_search(t, "identifier")]
        _transaction(client, create_transaction(resources, unconditional=unconditional))
        outcome: Literal["created", "updated", "unchanged"] = "created"
    else:
        ref = f"CarePlan/{current.get('id')}"
        if _approved_as(current, approved):
            log.info("%s already approved as is", ref)
            return Approval("unchanged", ref, len(approved.activities))
        problem = foreign_change(current)
        if problem:
            raise ApprovalError(f"{ref} was not changed: {problem}")
        parts = client.call(stored_parts(client.aio, current))
        for part in parts:
            problem = foreign_change(part)
            if problem:
                part_ref = f"{part['resourceType']}/{part.get('id')}"
                raise ApprovalError(f"{ref} was not changed: {part_ref}: {problem}")
        _transaction(client, update_transaction(resources, current, parts))
        outcome = "updated"
    written = _stored_careplan(client, resources)
    if written is None or not _approved_as(written, approved):
        raise ApprovalError(
            f"{approved.patient}: the server does not hold the approved CarePlan after writing "
            "(changed concurrently?); reload and approve again"
        )
    ref = f"CarePlan/{written.get('id')}"
    log.info("%s %s as active with %d activities", ref, outcome, len(approved.activities))
    return Approval(outcome, ref, len(approved.activities))


def activate(resources: PlanResources, *, approver: str | None = None) -> PlanResources:
    """The plan's resources in their approved status, digests recomputed and validated; the
    CarePlan authored by ``approver`` and the Provenance naming them, when given."""

    def approved(entry: Entry, extra: Resource | None = None) -> Entry:
        rtype = entry.resource["resourceType"]
        field, status = APPROVED_STATUS[rtype]
        changes = {field: status, **APPROVED_FIELDS.get(rtype, {}), **(extra or {})}
        resource = with_digest({**entry.resource, **changes})
        validate(resource)
        return replace(entry, resource=resource)

    provenance = resources.provenance
    if approver is not None:
        agents = [*provenance.resource["agent"], approver_agent(approver)]
        provenance = replace(provenance, resource={**provenance.resource, "agent": agents})
        validate(provenance.resource)
    author = {"author": {"reference": approver}} if approver is not None else None
    return replace(
        resources,
        careplan=approved(resources.careplan, author),
        goals=tuple(approved(e) for e in resources.goals),
        service_requests=tuple(approved(e) for e in resources.service_requests),
        provenance=provenance,
    )


def _approved_as(careplan: Resource, plan: Plan) -> bool:
    """Whether the stored CarePlan is ours, active, unedited, and exactly ``plan``."""
    tags = (careplan.get("meta") or {}).get("tag") or ()
    return (
        any(
            isinstance(t, dict)
            and t.get("system") == GENERATED_TAG["system"]
            and t.get("code") == GENERATED_TAG["code"]
            for t in tags
        )
        and careplan.get("status") == APPROVED_STATUS["CarePlan"][1]
        and extension_value(careplan, CONTENT_DIGEST_URL) == content_digest(careplan)
        and extension_value(careplan, PLAN_FINGERPRINT_URL) == plan.fingerprint()
    )


def _stored_careplan(client: FhirClient, resources: PlanResources) -> Resource | None:
    found = client.call(stored_careplans(client.aio, resources))
    if len(found) > 1:
        refs = ", ".join(f"CarePlan/{r.get('id')}" for r in found)
        raise ApprovalError(f"several CarePlans share one identifier: {refs}")
    return found[0] if found else None


def _transaction(client: FhirClient, bundle: Resource) -> None:
    try:
        client.transaction(bundle)
    except (PreconditionFailedError, ConflictError):
        # a stale If-Match: 412 per the spec, 409 from HAPI FHIR (docs/servers.md)
        raise ApprovalError(
            "the stored plan changed while approving (version mismatch); reload and try again"
        ) from None
