"""Writing plans back to a FHIR server: one atomic transaction per patient, safely.

For each patient the sink first looks for the CarePlan an earlier run wrote (search by its
business identifier, then read its Goals and referral ServiceRequests by reference, which any
server supports), and decides:

- none: one transaction creates CarePlan, Goals, ServiceRequests and Provenance, the CarePlan
  conditional on its identifier (``ifNoneExist``), so a concurrent or replayed run cannot
  duplicate it; Goals and ServiceRequests too where the server declares their ``identifier``
  search (HAPI does; some servers do not);
- ours and the plan unchanged (same fingerprint): nothing is written, no new version appears;
- ours but the plan changed: one transaction updates CarePlan, Goals and ServiceRequests with
  ``If-Match`` on the version we read, creates new ones, withdraws dropped ones (Goals
  ``cancelled``, ServiceRequests ``revoked``) and adds a Provenance;
- changed by someone else (no fhir-tailor tag, status moved on from draft/proposed, or content
  no longer matching the digest we stored), the CarePlan or any Goal or ServiceRequest it
  references: left untouched and reported as ``skipped-edited``.

For a patient the record says has died there is no plan (:meth:`ServerSink.withdraw`): the
patient's CarePlans are searched (patient and category, US Core's search) and ours known by
their identifier, whatever catalog version wrote them; each still our draft (the checks above)
is withdrawn, all in one transaction: CarePlan ``revoked``, Goals ``cancelled``,
ServiceRequests ``revoked``, with a Provenance saying why (:mod:`fhir_tailor.withdrawal`). One
withdrawn earlier is left as it is, and a CarePlan someone else changed is never touched.

With ``dry_run`` the same decision is made and shown, with a diff per resource, and nothing is
written.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..client import AsyncFhirClient, FhirClient
from ..conformance import CAREPLAN_CATEGORY
from ..fhirdata import Resource, reference_id
from ..plan import Plan
from ..report import PatientOutcome
from ..resources import (
    CONTENT_DIGEST_URL,
    GENERATED_TAG,
    PLAN_FINGERPRINT_URL,
    PlanResources,
    content_digest,
    create_transaction,
    extension_value,
    identifier_search,
    with_digest,
)
from ..withdrawal import Withdrawal, withdrawal_provenance, withdrawn_careplan

#: The status each resource type has while it is still fhir-tailor's proposal.
OWNED_STATUS = {
    "CarePlan": ("status", "draft"),
    "Goal": ("lifecycleStatus", "proposed"),
    "ServiceRequest": ("status", "draft"),
}
#: The status fhir-tailor gives a Goal or ServiceRequest that a changed plan no longer has, and
#: a CarePlan whose patient has died (:mod:`fhir_tailor.withdrawal`).
WITHDRAWN_STATUS = {"CarePlan": "revoked", "Goal": "cancelled", "ServiceRequest": "revoked"}
#: What a CarePlan references that fhir-tailor wrote with it, and so checks and updates with it.
PART_TYPES = ("Goal", "ServiceRequest")


@dataclass(slots=True)
class ServerSink:
    client: FhirClient
    dry_run: bool = False
    echo: Callable[[str], None] = print

    @property
    def concurrent_writes(self) -> bool:
        """Patients are independent transactions; a dry run's printed diffs must not mix."""
        return not self.dry_run

    def write(self, plan: Plan, resources: PlanResources) -> PatientOutcome:
        return self.client.call(self.awrite(plan, resources))

    def submit(self, plan: Plan, resources: PlanResources) -> Future[PatientOutcome]:
        """Start writing on the client's event loop; the outcome arrives in the future."""
        return self.client.submit(self.awrite(plan, resources))

    async def awrite(self, plan: Plan, resources: PlanResources) -> PatientOutcome:
        """:meth:`write`, for callers on the client's event loop."""
        found = await stored_careplans(self.client.aio, resources)
        if len(found) > 1:
            refs = ", ".join(f"CarePlan/{r.get('id')}" for r in found)
            return PatientOutcome(
                plan.patient, "failed", f"several CarePlans share one identifier: {refs}"
            )
        if not found:
            return await self._create(plan, resources)
        current = found[0]
        ref = f"CarePlan/{current.get('id')}"
        problem = foreign_change(current)
        if problem:
            return PatientOutcome(plan.patient, "skipped-edited", f"{ref}: {problem}", ref)
        parts = await stored_parts(self.client.aio, current)
        for part in parts:
            problem = foreign_change(part)
            if problem:
                detail = f"{part['resourceType']}/{part.get('id')} of {ref}: {problem}"
                return PatientOutcome(plan.patient, "skipped-edited", detail, ref)
        if extension_value(current, PLAN_FINGERPRINT_URL) == plan.fingerprint():
            return PatientOutcome(plan.patient, "unchanged", careplan=ref)
        bundle = update_transaction(resources, current, parts)
        if self.dry_run:
            self._show_diffs(bundle, [current, *parts])
            return PatientOutcome(plan.patient, "would-update", careplan=ref)
        await self.client.aio.transaction(bundle)
        return PatientOutcome(plan.patient, "updated", careplan=ref)

    def withdraw(self, withdrawal: Withdrawal) -> PatientOutcome:
        return self.client.call(self.awithdraw(withdrawal))

    async def awithdraw(self, withdrawal: Withdrawal) -> PatientOutcome:
        """:meth:`withdraw`, for callers on the client's event loop: the patient is recorded as
        deceased, so every draft CarePlan of ours for them is withdrawn, in one transaction.
        The outcome's detail says what became of each CarePlan of ours."""
        patient = withdrawal.patient
        ours = await our_careplans(self.client.aio, withdrawal)
        identifiers = [withdrawal.identifier(careplan) for careplan in ours]
        shared = [c for c, i in zip(ours, identifiers, strict=True) if identifiers.count(i) > 1]
        if shared:
            refs = ", ".join(f"CarePlan/{c.get('id')}" for c in shared)
            return PatientOutcome(
                patient, "failed", f"several CarePlans share one identifier: {refs}"
            )
        notes: list[str] = []
        entries: list[Resource] = []
        read: list[Resource] = []
        for careplan in ours:
            ref = f"CarePlan/{careplan.get('id')}"
            problem = foreign_change(careplan)
            if problem is None and careplan.get("status") == WITHDRAWN_STATUS["CarePlan"]:
                notes.append(f"{ref} withdrawn earlier")
                continue
            parts = [] if problem else await stored_parts(self.client.aio, careplan)
            for part in parts:
                if problem is None and (edited := foreign_change(part)):
                    problem = f"{part['resourceType']}/{part.get('id')}: {edited}"
            if problem:
                notes.append(f"{ref} left untouched: {problem}")
                continue
            entries += withdrawn_entries(careplan, parts, withdrawal.recorded)
            read += [careplan, *parts]
            notes.append(f"{'would withdraw' if self.dry_run else 'withdrew'} draft {ref}")
        first = f"CarePlan/{ours[0].get('id')}" if ours else None
        outcome = PatientOutcome(patient, "skipped-deceased", "; ".join(notes) or None, first)
        if entries:
            bundle = withdraw_transaction(withdrawal, entries)
            if self.dry_run:
                self.echo(f"# {patient}: recorded as deceased; would withdraw our draft plans")
                self._show_diffs(bundle, read)
            else:
                await self.client.aio.transaction(bundle)
        return outcome

    def close(self) -> None:
        return None

    async def _create(self, plan: Plan, resources: PlanResources) -> PatientOutcome:
        unconditional = [
            t for t in PART_TYPES if not await self.client.aio.supports_search(t, "identifier")
        ]
        bundle = create_transaction(resources, unconditional=unconditional)
        if self.dry_run:
            self.echo(
                f"# {plan.patient}: would create CarePlan, {len(resources.goals)} Goals, "
                f"{len(resources.service_requests)} ServiceRequests, Provenance"
            )
            self.echo(json.dumps(bundle, indent=2))
            return PatientOutcome(plan.patient, "would-create")
        response = await self.client.aio.transaction(bundle)
        return PatientOutcome(plan.patient, "created", careplan=_location(response))

    def _show_diffs(self, bundle: Resource, current: list[Resource]) -> None:
        """A diff per resource the update would write: replaced ones against the server's
        version, new ones against nothing; the Provenance, always new, is left out."""
        stored = {f"{r['resourceType']}/{r['id']}": r for r in current}
        for entry in bundle["entry"]:
            new, url = entry["resource"], entry["request"]["url"]
            if new["resourceType"] == "Provenance":
                continue
            before = _comparable(stored[url]) if url in stored else []
            label = url if url in stored else f"{url} {entry['fullUrl']}"
            diff = difflib.unified_diff(
                before,
                _comparable(new),
                f"{label} (server)" if before else "/dev/null",
                f"{label} (new plan)",
                lineterm="",
            )
            text = "\n".join(diff)
            if text:
                self.echo(text)


async def stored_careplans(client: AsyncFhirClient, resources: PlanResources) -> list[Resource]:
    """The CarePlans on the server with the business identifier of ``resources``' CarePlan:
    none yet, the one an earlier run wrote, or (a conflict the caller reports) several."""
    careplan_search = identifier_search(resources.careplan.resource)
    assert careplan_search is not None
    stored = await client.search_all("CarePlan", {"identifier": careplan_search.split("=", 1)[1]})
    return [r for r in stored if r.get("resourceType") == "CarePlan"]


async def our_careplans(client: AsyncFhirClient, withdrawal: Withdrawal) -> list[Resource]:
    """The CarePlans of ours for the withdrawal's patient, whatever catalog version wrote them,
    in identifier order: searched by patient and the US Core ``assess-plan`` category ours carry
    (the search US Core CarePlan requires servers to support), known as ours by identifier."""
    found = await client.search_all(
        "CarePlan",
        {
            "patient": withdrawal.patient.removeprefix("Patient/"),
            "category": f"{CAREPLAN_CATEGORY}|assess-plan",
        },
    )
    ours = [r for r in found if r.get("resourceType") == "CarePlan" and withdrawal.identifier(r)]
    return sorted(ours, key=lambda r: (withdrawal.identifier(r) or "", str(r.get("id"))))


async def stored_parts(client: AsyncFhirClient, careplan: Resource) -> list[Resource]:
    """The Goals and referral ServiceRequests a stored CarePlan references, read by id."""
    references = [
        *(careplan.get("goal") or ()),
        *(a.get("reference") for a in careplan.get("activity") or () if isinstance(a, dict)),
    ]
    return [
        await client.read(rtype, rid)
        for reference in references
        for rtype in PART_TYPES
        if (rid := reference_id(reference, rtype))
    ]


def foreign_change(resource: Resource) -> str | None:
    """Why a stored resource is no longer fhir-tailor's to change, or ``None`` if it still is."""
    tags = (resource.get("meta") or {}).get("tag") or ()
    if not any(
        t.get("system") == GENERATED_TAG["system"] and t.get("code") == GENERATED_TAG["code"]
        for t in tags
        if isinstance(t, dict)
    ):
        return "not generated by fhir-tailor (no fhir-tailor tag)"
    rtype = str(resource.get("resourceType"))
    field, owned = OWNED_STATUS[rtype]
    if resource.get(field) not in {owned, WITHDRAWN_STATUS.get(rtype, owned)}:
        return f"{field} is {resource.get(field)!r}, no longer {owned!r}"
    if extension_value(resource, CONTENT_DIGEST_URL) != content_digest(resource):
        return "edited since fhir-tailor wrote it (content digest differs)"
    return None


def update_transaction(
    resources: PlanResources, current: Resource, current_parts: list[Resource]
) -> Resource:
    """A transaction replacing our earlier CarePlan, Goals and ServiceRequests with the new
    plan's, matched by identifier; references between them are rewritten to the stored ids."""
    by_identifier = {identifier_search(part): part for part in current_parts}
    targets = {resources.careplan.full_url: f"CarePlan/{current['id']}"}
    entries: list[Resource] = []
    for part in resources.parts:
        existing = by_identifier.pop(identifier_search(part.resource), None)
        if existing is not None:
            targets[part.full_url] = f"{existing['resourceType']}/{existing['id']}"
    entries.append(_put(resources.careplan.resource, current, targets))
    for part in resources.parts:
        if part.full_url in targets:
            existing_part = _by_id(current_parts, targets[part.full_url])
            entries.append(_put(part.resource, existing_part, targets))
        else:
            entries.append(
                {
                    "fullUrl": part.full_url,
                    "resource": _rewrite(part.resource, targets),
                    "request": {"method": "POST", "url": part.resource["resourceType"]},
                }
            )
    for dropped in by_identifier.values():
        field, _ = OWNED_STATUS[dropped["resourceType"]]
        withdrawn = with_digest({**dropped, field: WITHDRAWN_STATUS[dropped["resourceType"]]})
        entries.append(_put(withdrawn, dropped, {}))
    provenance = _rewrite(resources.provenance.resource, targets)
    entries.append(
        {
            "fullUrl": resources.provenance.full_url,
            "resource": provenance,
            "request": {"method": "POST", "url": "Provenance"},
        }
    )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def withdrawn_entries(
    careplan: Resource, parts: list[Resource], recorded: datetime
) -> list[Resource]:
    """The entries withdrawing a stored draft CarePlan of ours and its parts not yet
    withdrawn, each a ``PUT`` under ``If-Match`` on the version read."""
    entries = [_put(withdrawn_careplan(careplan, recorded), careplan, {})]
    for part in parts:
        rtype = part["resourceType"]
        field, _ = OWNED_STATUS[rtype]
        if part.get(field) != WITHDRAWN_STATUS[rtype]:
            entries.append(_put(with_digest({**part, field: WITHDRAWN_STATUS[rtype]}), part, {}))
    return entries


def withdraw_transaction(withdrawal: Withdrawal, entries: list[Resource]) -> Resource:
    """A transaction of the withdrawal entries and a Provenance saying why, targeting them."""
    targets = [entry["request"]["url"] for entry in entries]
    provenance = {
        "resource": withdrawal_provenance(withdrawal, targets),
        "request": {"method": "POST", "url": "Provenance"},
    }
    return {"resourceType": "Bundle", "type": "transaction", "entry": [*entries, provenance]}


def _put(new: Resource, current: Resource, targets: dict[str, str]) -> Resource:
    """A conditional replace of ``current`` by ``new``, guarded by the version we read."""
    rtype, rid = current["resourceType"], current["id"]
    resource = {**_rewrite(new, targets), "id": rid}
    request: Resource = {"method": "PUT", "url": f"{rtype}/{rid}"}
    version = (current.get("meta") or {}).get("versionId")
    if version:
        request["ifMatch"] = f'W/"{version}"'
    return {"resource": resource, "request": request}


def _by_id(resources: list[Resource], reference: str) -> Resource:
    return next(r for r in resources if f"{r['resourceType']}/{r['id']}" == reference)


def _rewrite(value: Any, targets: dict[str, str]) -> Any:
    """A copy of ``value`` with every ``reference`` found in ``targets`` replaced."""
    if isinstance(value, dict):
        return {
            key: targets.get(item, item)
            if key == "reference" and isinstance(item, str)
            else _rewrite(item, targets)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_rewrite(item, targets) for item in value]
    return value


def _location(response: Resource) -> str | None:
    entries = response.get("entry") or ()
    location = ((entries[0] if entries else {}).get("response") or {}).get("location")
    if not isinstance(location, str):
        return None
    parts = location.split("/_history/")[0].split("/")
    return "/".join(parts[-2:])


def _comparable(resource: Resource) -> list[str]:
    """Pretty JSON lines of a resource without server-managed fields, for diffs."""
    trimmed = {k: v for k, v in resource.items() if k not in ("meta", "id", "text")}
    return json.dumps(trimmed, indent=2, sort_keys=True).splitlines()
