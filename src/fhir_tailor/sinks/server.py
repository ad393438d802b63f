"""Writing plans back to a FHIR server: one atomic transaction per patient, safely.

For each patient the sink first looks for the CarePlan an earlier run wrote (search by its
business identifier, then read its Goals by reference, which any server supports), and decides:

- none: one transaction creates CarePlan, Goals and Provenance, the CarePlan conditional on
  its identifier (``ifNoneExist``), so a concurrent or replayed run cannot duplicate it; Goals
  too where the server declares Goal's ``identifier`` search (HAPI does; some servers do not);
- ours and the plan unchanged (same fingerprint): nothing is written, no new version appears;
- ours but the plan changed: one transaction updates CarePlan and Goals with ``If-Match`` on
  the version we read, creates new Goals, cancels dropped ones and adds a Provenance;
- changed by someone else (no fhir-tailor tag, status moved on from draft/proposed, or content
  no longer matching the digest we stored): left untouched and reported as ``skipped-edited``.

With ``dry_run`` the same decision is made and shown, with a diff, and nothing is written.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..client import FhirClient
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

#: The status each resource type has while it is still fhir-tailor's proposal.
OWNED_STATUS = {"CarePlan": ("status", "draft"), "Goal": ("lifecycleStatus", "proposed")}


@dataclass(slots=True)
class ServerSink:
    client: FhirClient
    dry_run: bool = False
    echo: Callable[[str], None] = print

    def write(self, plan: Plan, resources: PlanResources) -> PatientOutcome:
        careplan_search = identifier_search(resources.careplan.resource)
        assert careplan_search is not None
        found = [
            r
            for r in self.client.search(
                "CarePlan", {"identifier": careplan_search.split("=", 1)[1]}
            )
            if r.get("resourceType") == "CarePlan"
        ]
        if len(found) > 1:
            refs = ", ".join(f"CarePlan/{r.get('id')}" for r in found)
            return PatientOutcome(
                plan.patient, "failed", f"several CarePlans share one identifier: {refs}"
            )
        if not found:
            return self._create(plan, resources)
        current = found[0]
        ref = f"CarePlan/{current.get('id')}"
        problem = foreign_change(current)
        if problem:
            return PatientOutcome(plan.patient, "skipped-edited", f"{ref}: {problem}", ref)
        goals = self._current_goals(current)
        for goal in goals:
            problem = foreign_change(goal)
            if problem:
                detail = f"Goal/{goal.get('id')} of {ref}: {problem}"
                return PatientOutcome(plan.patient, "skipped-edited", detail, ref)
        if extension_value(current, PLAN_FINGERPRINT_URL) == plan.fingerprint():
            return PatientOutcome(plan.patient, "unchanged", careplan=ref)
        bundle = update_transaction(resources, current, goals)
        if self.dry_run:
            self._show_diff(current, bundle["entry"][0]["resource"])
            return PatientOutcome(plan.patient, "would-update", careplan=ref)
        self.client.transaction(bundle)
        return PatientOutcome(plan.patient, "updated", careplan=ref)

    def close(self) -> None:
        return None

    def _create(self, plan: Plan, resources: PlanResources) -> PatientOutcome:
        conditional_goals = self.client.supports_search("Goal", "identifier")
        bundle = create_transaction(resources, conditional_goals=conditional_goals)
        if self.dry_run:
            self.echo(
                f"# {plan.patient}: would create CarePlan, {len(resources.goals)} Goals, Provenance"
            )
            self.echo(json.dumps(bundle, indent=2))
            return PatientOutcome(plan.patient, "would-create")
        response = self.client.transaction(bundle)
        return PatientOutcome(plan.patient, "created", careplan=_location(response))

    def _current_goals(self, careplan: Resource) -> list[Resource]:
        goals = []
        for reference in careplan.get("goal") or ():
            goal_id = reference_id(reference, "Goal")
            if goal_id:
                goals.append(self.client.read("Goal", goal_id))
        return goals

    def _show_diff(self, current: Resource, new: Resource) -> None:
        before, after = _comparable(current), _comparable(new)
        ref = f"CarePlan/{current.get('id')}"
        diff = difflib.unified_diff(
            before, after, f"{ref} (server)", f"{ref} (new plan)", lineterm=""
        )
        self.echo("\n".join(diff))


def foreign_change(resource: Resource) -> str | None:
    """Why a stored resource is no longer fhir-tailor's to change, or ``None`` if it still is."""
    tags = (resource.get("meta") or {}).get("tag") or ()
    if not any(
        t.get("system") == GENERATED_TAG["system"] and t.get("code") == GENERATED_TAG["code"]
        for t in tags
        if isinstance(t, dict)
    ):
        return "not generated by fhir-tailor (no fhir-tailor tag)"
    field, owned = OWNED_STATUS[str(resource.get("resourceType"))]
    if resource.get(field) != owned and resource.get(field) != "cancelled":
        return f"{field} is {resource.get(field)!r}, no longer {owned!r}"
    if extension_value(resource, CONTENT_DIGEST_URL) != content_digest(resource):
        return "edited since fhir-tailor wrote it (content digest differs)"
    return None


def update_transaction(
    resources: PlanResources, current: Resource, current_goals: list[Resource]
) -> Resource:
    """A transaction replacing our earlier CarePlan and Goals with the new plan's."""
    by_identifier = {identifier_search(goal): goal for goal in current_goals}
    targets = {resources.careplan.full_url: f"CarePlan/{current['id']}"}
    entries: list[Resource] = []
    for goal in resources.goals:
        existing = by_identifier.pop(identifier_search(goal.resource), None)
        if existing is not None:
            targets[goal.full_url] = f"Goal/{existing['id']}"
    entries.append(_put(resources.careplan.resource, current, targets))
    for goal in resources.goals:
        if goal.full_url in targets:
            existing_goal = _by_id(current_goals, targets[goal.full_url])
            entries.append(_put(goal.resource, existing_goal, targets))
        else:
            entries.append(
                {
                    "fullUrl": goal.full_url,
                    "resource": goal.resource,
                    "request": {"method": "POST", "url": "Goal"},
                }
            )
    for dropped in by_identifier.values():
        cancelled = with_digest({**dropped, "lifecycleStatus": "cancelled"})
        entries.append(_put(cancelled, dropped, {}))
    provenance = _rewrite(resources.provenance.resource, targets)
    entries.append(
        {
            "fullUrl": resources.provenance.full_url,
            "resource": provenance,
            "request": {"method": "POST", "url": "Provenance"},
        }
    )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


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
