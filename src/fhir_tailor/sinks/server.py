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

Urgent findings' Tasks (:mod:`fhir_tailor.urgent`) are written with the plan, in the same
transaction, and once: each has an identifier per patient, rule and evidence; the Tasks already
stored are looked up first (those the stored CarePlan lists, read by id, and a search by
identifier, or by patient where the server declares no identifier search) and only the missing
ones are created (conditionally, where the server can). A Task is never updated or withdrawn:
acting on it is a clinician's work. A CarePlan a clinician changed does not hold an urgent
request back: the missing Tasks are written on their own, with a Provenance, where the server can
be searched for Tasks (otherwise the detail says they were not written: a Task the clinician's
plan does not list could not be told from one never written, and would be written every run).

For a patient the record says has died there is no plan (:meth:`ServerSink.withdraw`): the
patient's CarePlans are searched (patient and category, US Core's search) and ours known by
their identifier, whatever catalog version wrote them; each still our draft (the checks above)
is withdrawn, all in one transaction: CarePlan ``revoked``, Goals ``cancelled``,
ServiceRequests ``revoked``, with a Provenance saying why (:mod:`fhir_tailor.withdrawal`). One
withdrawn earlier is left as it is, and a CarePlan someone else changed is never touched.

With ``dry_run`` the same decision is made and shown, with a diff per resource, and nothing is
written.

A transaction whose answer is lost (the connection reset) or does not confirm it (a body cut
short, an OperationOutcome) may have been applied: the patient is reported failed with a
message saying so (:class:`UnconfirmedTransactionError`), which holds the run's state and
watermark, and the next run finds what was written by its identifiers and reconciles it.
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
from ..errors import FhirServerError, FhirTailorError, UnconfirmedWriteError, UnsafeToRetryError
from ..fhirdata import Resource, reference_id
from ..plan import Plan
from ..report import PatientOutcome
from ..resources import (
    CONTENT_DIGEST_URL,
    GENERATED_TAG,
    PLAN_FINGERPRINT_URL,
    Entry,
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


class UnconfirmedTransactionError(FhirTailorError):
    """A plan's transaction that the server may have applied though nothing confirmed it."""

    def __init__(self, failure: UnconfirmedWriteError | UnsafeToRetryError) -> None:
        super().__init__(
            f"{failure.method} {failure.url_path}: {failure.failure}; the server may have "
            "applied the transaction, and the next run finds what it wrote and reconciles"
        )


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
            detail = await self._urgent_alone(plan, resources, current, f"{ref}: {problem}")
            return PatientOutcome(plan.patient, "skipped-edited", detail, ref)
        parts = await stored_parts(self.client.aio, current)
        for part in parts:
            problem = foreign_change(part)
            if problem:
                detail = f"{part['resourceType']}/{part.get('id')} of {ref}: {problem}"
                detail = await self._urgent_alone(plan, resources, current, detail)
                return PatientOutcome(plan.patient, "skipped-edited", detail, ref)
        if extension_value(current, PLAN_FINGERPRINT_URL) == plan.fingerprint():
            return PatientOutcome(plan.patient, "unchanged", careplan=ref)
        bundle = update_transaction(resources, current, parts)
        bundle = await self._with_tasks(bundle, plan, resources, current)
        if self.dry_run:
            self._show_diffs(bundle, [current, *parts])
            return PatientOutcome(plan.patient, "would-update", careplan=ref)
        await self._transaction(bundle)
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
                await self._transaction(bundle)
        return outcome

    def close(self) -> None:
        return None

    async def _create(self, plan: Plan, resources: PlanResources) -> PatientOutcome:
        unconditional = [
            t for t in PART_TYPES if not await self.client.aio.supports_search(t, "identifier")
        ]
        bundle = create_transaction(resources, unconditional=unconditional)
        bundle = await self._with_tasks(bundle, plan, resources, None)
        if self.dry_run:
            tasks = sum(1 for e in bundle["entry"] if e["resource"]["resourceType"] == "Task")
            self.echo(
                f"# {plan.patient}: would create CarePlan, {len(resources.goals)} Goals, "
                f"{len(resources.service_requests)} ServiceRequests, "
                + (f"{tasks} urgent Tasks, " if tasks else "")
                + "Provenance"
            )
            self.echo(json.dumps(bundle, indent=2))
            return PatientOutcome(plan.patient, "would-create")
        response = await self._transaction(bundle)
        return PatientOutcome(plan.patient, "created", careplan=_location(response))

    async def _transaction(self, bundle: Resource) -> Resource:
        """Send one of the plan's transactions; an unconfirmed one raises saying so."""
        try:
            return await self.client.aio.transaction(bundle)
        except (UnconfirmedWriteError, UnsafeToRetryError) as exc:
            raise UnconfirmedTransactionError(exc) from exc

    async def _with_tasks(
        self, bundle: Resource, plan: Plan, resources: PlanResources, careplan: Resource | None
    ) -> Resource:
        """``bundle`` (a create or update transaction) with the urgent Tasks not yet stored, and
        references to the stored ones by their id."""
        if not resources.tasks:
            return bundle
        stored, _ = await stored_tasks(self.client.aio, plan.patient, resources.tasks, careplan)
        conditional = await self.client.aio.supports_search("Task", "identifier")
        return with_tasks(bundle, resources.tasks, stored, conditional=conditional)

    async def _urgent_alone(
        self, plan: Plan, resources: PlanResources, careplan: Resource, detail: str
    ) -> str:
        """Write the urgent Tasks not yet stored, on their own (the CarePlan is a clinician's
        now and is left alone); ``detail`` with what was done."""
        if not resources.tasks:
            return detail
        client = self.client.aio
        stored, searched = await stored_tasks(client, plan.patient, resources.tasks, careplan)
        missing = [t for t in resources.tasks if identifier_search(t.resource) not in stored]
        if not missing:
            return detail
        if not searched:
            # Written here, a Task the clinician's CarePlan does not list would be written again
            # on every run: without a search, it cannot be told apart from one never written.
            return (
                f"{detail}; {len(missing)} urgent Tasks not written: the server declares no "
                "identifier or patient search for Task"
            )
        conditional = await client.supports_search("Task", "identifier")
        bundle = tasks_transaction(missing, resources.provenance, conditional=conditional)
        if self.dry_run:
            self.echo(f"# {plan.patient}: would create {len(missing)} urgent Tasks")
            self.echo(json.dumps(bundle, indent=2))
            return f"{detail}; would write {len(missing)} urgent Tasks"
        await self._transaction(bundle)
        return f"{detail}; wrote {len(missing)} urgent Tasks"

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


async def stored_tasks(
    client: AsyncFhirClient, patient: str, tasks: tuple[Entry, ...], careplan: Resource | None
) -> tuple[dict[str, str], bool]:
    """``identifier search -> Task/<id>`` for the Tasks among ``tasks`` the server holds, and
    whether the server could be searched for them.

    The stored CarePlan lists our earlier Tasks (read by id, as any server allows); a search by
    their identifiers, or by the patient where ``identifier`` is not declared, finds the ones it
    does not (its CarePlan deleted, or a clinician's now). A server declaring neither search
    gives what the CarePlan lists only.
    """
    wanted = {identifier_search(task.resource) for task in tasks}
    found: list[Resource] = []
    for activity in (careplan or {}).get("activity") or ():
        listed = activity.get("reference") if isinstance(activity, dict) else None
        if task_id := reference_id(listed, "Task"):
            try:
                found.append(await client.read("Task", task_id))
            except FhirServerError as exc:
                if exc.status not in (404, 410):  # deleted: as if never written
                    raise
    searched = True
    if await client.supports_search("Task", "identifier"):
        tokens = ",".join(sorted(str(w).split("=", 1)[1] for w in wanted))
        found += await client.search_all("Task", {"identifier": tokens})
    elif await client.supports_search("Task", "patient"):
        found += await client.search_all("Task", {"patient": patient.removeprefix("Patient/")})
    else:
        searched = False
    stored: dict[str, str] = {}
    for task in found:
        search = identifier_search(task) if task.get("resourceType") == "Task" else None
        if search in wanted and search is not None:
            stored.setdefault(search, f"Task/{task.get('id')}")
    return stored, searched


def with_tasks(
    bundle: Resource, tasks: tuple[Entry, ...], stored: dict[str, str], *, conditional: bool
) -> Resource:
    """A create or update transaction that writes the Tasks among ``tasks`` not yet stored
    (conditional on their identifier when ``conditional``) and refers to the stored ones by id:
    their entries are dropped, references to them rewritten, and the Provenance no longer
    targets them (this transaction does not write them)."""
    targets = {
        task.full_url: stored[search]
        for task in tasks
        if (search := identifier_search(task.resource)) in stored
    }
    new = [_task_post(t, conditional=conditional) for t in tasks if t.full_url not in targets]
    task_urls = {task.full_url for task in tasks}
    entries, provenances = [], []
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if entry.get("fullUrl") in task_urls:
            continue  # written as ``new``, or stored already
        if resource["resourceType"] == "Provenance":
            kept = [t for t in resource["target"] if t["reference"] not in targets]
            provenances.append({**entry, "resource": {**resource, "target": kept}})
        else:
            entries.append(entry)
    return {**bundle, "entry": _rewrite([*entries, *new, *provenances], targets)}


def tasks_transaction(tasks: list[Entry], provenance: Entry, *, conditional: bool) -> Resource:
    """A transaction creating ``tasks`` alone, with a Provenance targeting only them."""
    entries = [_task_post(task, conditional=conditional) for task in tasks]
    resource = {**provenance.resource, "target": [{"reference": t.full_url} for t in tasks]}
    entries.append(
        {
            "fullUrl": provenance.full_url,
            "resource": resource,
            "request": {"method": "POST", "url": "Provenance"},
        }
    )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _task_post(task: Entry, *, conditional: bool) -> Resource:
    request: Resource = {"method": "POST", "url": "Task"}
    search = identifier_search(task.resource)
    if conditional and search:
        request["ifNoneExist"] = search
    return {"fullUrl": task.full_url, "resource": task.resource, "request": request}


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
