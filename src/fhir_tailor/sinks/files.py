"""File and stdout sinks."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal, Protocol, runtime_checkable

import orjson

from ..plan import Plan
from ..report import PatientOutcome
from ..resources import PlanResources, create_transaction
from ..withdrawal import Withdrawal

FileFormat = Literal["bundles", "ndjson"]
StdoutFormat = Literal["summary", "ndjson"]


def _compact(resource: object) -> str:
    """One-line JSON, UTF-8 as is: what json.dumps with compact separators writes, 5x faster."""
    return orjson.dumps(resource).decode()


@dataclass(frozen=True, slots=True)
class Rendered:
    """A patient's plan as the text a file or stdout sink writes: ``(where, text)`` pairs (a
    file's name, a resource type's NDJSON file, or nothing for stdout)."""

    patient: str
    texts: tuple[tuple[str, str], ...]


Render = Callable[[Plan, PlanResources], Rendered]


@runtime_checkable
class Rendering(Protocol):
    """A sink that writes text made from the plan alone: any process can make it (a worker,
    :mod:`fhir_tailor.workers`) with :meth:`renderer`; the sink writes it with :meth:`put`.
    Its ``write`` is the two in one, so output is the same wherever the text was made."""

    def renderer(self) -> Render: ...

    def put(self, rendered: Rendered) -> PatientOutcome: ...


@dataclass(frozen=True, slots=True)
class FolderRenderer:
    """What :class:`FolderSink` writes for a plan."""

    format: FileFormat

    def __call__(self, plan: Plan, resources: PlanResources) -> Rendered:
        if self.format == "bundles":
            name = f"{plan.patient.removeprefix('Patient/')}.json"
            return Rendered(plan.patient, ((name, _compact(create_transaction(resources)) + "\n"),))
        lines: defaultdict[str, list[str]] = defaultdict(list)
        for entry in resources.entries:
            lines[entry.resource["resourceType"]].append(_compact(entry.resource) + "\n")
        texts = tuple((rtype, "".join(text)) for rtype, text in lines.items())
        return Rendered(plan.patient, texts)


@dataclass(frozen=True, slots=True)
class StdoutRenderer:
    """What :class:`StdoutSink` prints for a plan."""

    format: StdoutFormat

    def __call__(self, plan: Plan, resources: PlanResources) -> Rendered:
        if self.format == "ndjson":
            return Rendered(plan.patient, (("", _compact(create_transaction(resources))),))
        return Rendered(plan.patient, (("", summarize(plan)),))


@dataclass(slots=True)
class FolderSink:
    """Writes ``<patient id>.json`` transaction Bundles, or one ``<type>.ndjson`` per resource
    type: ``CarePlan``, ``Goal``, ``ServiceRequest`` (referrals, when a plan has any), ``Task``
    (urgent findings, when it has any) and ``Provenance`` (Bulk Data layout, ready for ``$import``
    or a later load)."""

    folder: Path
    format: FileFormat = "bundles"
    _handles: dict[str, IO[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)

    def write(self, plan: Plan, resources: PlanResources) -> PatientOutcome:
        return self.put(self.renderer()(plan, resources))

    def renderer(self) -> FolderRenderer:
        return FolderRenderer(self.format)

    def put(self, rendered: Rendered) -> PatientOutcome:
        """Write a plan's text: ``<patient id>.json`` whole, or lines added to each type's
        NDJSON file."""
        for where, text in rendered.texts:
            if self.format == "bundles":
                (self.folder / where).write_text(text, "utf-8")
            else:
                self._handle(where).write(text)
        return PatientOutcome(rendered.patient, "written", careplan=f"{self.folder}")

    def withdraw(self, withdrawal: Withdrawal) -> PatientOutcome:
        """Nothing is written for a patient recorded as deceased (files hold no earlier draft)."""
        return PatientOutcome(withdrawal.patient, "skipped-deceased")

    def _handle(self, resource_type: str) -> IO[str]:
        if resource_type not in self._handles:
            path = self.folder / f"{resource_type}.ndjson"
            self._handles[resource_type] = path.open("w", encoding="utf-8")
        return self._handles[resource_type]

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()


@dataclass(slots=True)
class StdoutSink:
    """Prints each patient's transaction Bundle as one NDJSON line, or a readable summary."""

    echo: Callable[[str], None]
    format: StdoutFormat = "summary"

    def write(self, plan: Plan, resources: PlanResources) -> PatientOutcome:
        return self.put(self.renderer()(plan, resources))

    def renderer(self) -> StdoutRenderer:
        return StdoutRenderer(self.format)

    def put(self, rendered: Rendered) -> PatientOutcome:
        for _, text in rendered.texts:
            self.echo(text)
        return PatientOutcome(rendered.patient, "written")

    def withdraw(self, withdrawal: Withdrawal) -> PatientOutcome:
        """No plan for a patient recorded as deceased: a line saying so in a summary, nothing
        in NDJSON (stdout is data there)."""
        if self.format == "summary":
            self.echo(f"{withdrawal.patient}  recorded as deceased: no plan\n")
        return PatientOutcome(withdrawal.patient, "skipped-deceased")

    def close(self) -> None:
        return None


def summarize(plan: Plan) -> str:
    """A plan as text: urgent findings first, then modules, goals, and each activity with why
    it was adapted."""
    lines = [f"{plan.patient}  (catalog {plan.catalog} {plan.catalog_version})"]
    for finding in plan.urgent:
        lines.append(
            f"  URGENT ({finding.priority}): {finding.label} [{', '.join(finding.sources)}]"
        )
    if plan.segments:
        lines.append(f"  segments: {', '.join(plan.segments)}")
    lines.append("  modules:  " + ", ".join(f"{m.id} {m.version}" for m in plan.modules))
    for goal in plan.goals:
        due = f" (by {goal.due_date.isoformat()})" if goal.due_date else ""
        lines.append(f"  goal:     {goal.description}{due}")
    for goal in plan.withheld_goals:
        lines.append(
            f"  goal WITHHELD, not set: {goal.description} ({', '.join(goal.withheld_by)})"
        )
    for activity in plan.activities:
        referral = f"  [referral: {activity.sdoh_category}]" if activity.is_referral else ""
        withheld = "WITHHELD, do not: " if activity.withheld else ""
        lines.append(f"  - {withheld}{activity.description}{referral}")
        for variation in activity.variations:
            sources = sorted({s for e in variation.evidence for s in e.sources})
            how = "withheld" if variation.variant in activity.withheld_by else "adapted"
            lines.append(
                f"      {how} by {variation.variant}: {variation.reason} [{', '.join(sources)}]"
            )
    return "\n".join(lines) + "\n"
