"""The run report: what happened to every patient and every unreadable resource.

It holds resource ids, outcomes and counts only, never names, birth dates or tokens, so it can
be written to disk (``--report FILE``) and shared with operators.

A run is complete (:attr:`RunReport.failed` false) only when every patient was read and every
input was read: a failed patient, or an input left unread (a file that is not FHIR, a listing
search that failed), means some patients may have been missed. Apart from that, a record can
lack a resource type the server gives no way to read (:attr:`RunReport.not_read`): its plan is
made, but named in the report, because it was made without data that can carry urgent
findings (a PHQ-9 kept as a QuestionnaireResponse).

A patient asked for by id that the source does not hold is ``not-found``, its own outcome:
not a failed patient (there is nothing to retry, and no rerun mends it), nor an unreadable
resource. The command still exits 3 for it (:mod:`fhir_tailor.cli.not_found`).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from .record import ReadIssue

Outcome = Literal[
    "created",  # a new CarePlan was written
    "updated",  # our earlier CarePlan was replaced by a changed plan
    "unchanged",  # the plan already on the server is the same
    "skipped-edited",  # someone else changed the CarePlan; left untouched
    "written",  # written to a file or stdout
    "would-create",  # dry run
    "would-update",  # dry run
    "no-plan",  # no module applies to this patient
    "skipped-deceased",  # recorded as deceased: no plan; our draft, if any, withdrawn (see detail)
    "done-earlier",  # finished by an earlier attempt of this run (--state); not redone
    "not-found",  # asked for by id (--patient), not in the source; see detail
    "failed",  # an error; see detail
]


@dataclass(frozen=True, slots=True)
class PatientOutcome:
    patient: str
    outcome: Outcome
    detail: str | None = None
    careplan: str | None = None


@dataclass(slots=True)
class RunReport:
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished_at: datetime | None = None
    patients: list[PatientOutcome] = field(default_factory=list)
    read_issues: list[ReadIssue] = field(default_factory=list)
    data_issues: list[tuple[str, str]] = field(default_factory=list)
    retries: int = 0
    #: What a ``--bulk`` run's ``$export`` did (see :meth:`ExportResult.summary`), else None.
    bulk: dict[str, Any] | None = None
    #: The urgent findings (rule ids, :mod:`fhir_tailor.urgent`) of each patient that has any.
    urgent: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: The resource types the record of each patient whose plan was decided (planned, or found
    #: to need none) lacked because the source could not read them.
    not_read: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def add(self, outcome: PatientOutcome) -> None:
        self.patients.append(outcome)

    def read_issue(self, issue: ReadIssue) -> None:
        self.read_issues.append(issue)
        if issue.unread_patient is not None:
            patient = f"Patient/{issue.unread_patient}"
            if issue.not_found:
                self.add(PatientOutcome(patient, "not-found", issue.reason))
            else:
                detail = f"could not be read ({issue.location}): {issue.reason}"
                self.add(PatientOutcome(patient, "failed", detail))

    def data_issue(self, reference: str, problem: str) -> None:
        self.data_issues.append((reference, problem))

    def urgent_findings(self, patient: str, rules: tuple[str, ...]) -> None:
        """Record a patient's urgent findings by rule id (ids only: no finding, no value)."""
        if rules:
            self.urgent[patient] = rules

    def unread_types(self, patient: str, types: tuple[str, ...]) -> None:
        """Record the resource types a patient's record lacks (see :attr:`not_read`)."""
        if types:
            self.not_read[patient] = types

    @property
    def unread_inputs(self) -> list[ReadIssue]:
        """The inputs left unread whole: files that are not FHIR, listing searches that failed."""
        return [issue for issue in self.read_issues if issue.unread_input]

    @property
    def incomplete(self) -> bool:
        """Some plans were made from records lacking a type the source could not read."""
        return bool(self.not_read)

    @property
    def urgent_counts(self) -> Counter[str]:
        """Urgent findings per rule id, over the patients of the run."""
        return Counter(rule for rules in self.urgent.values() for rule in rules)

    @property
    def counts(self) -> Counter[str]:
        return Counter(p.outcome for p in self.patients)

    @property
    def failed(self) -> bool:
        """A patient failed, or an input was left unread: the run did not cover everything."""
        return self.counts["failed"] > 0 or bool(self.unread_inputs)

    def finish(self) -> None:
        self.finished_at = datetime.now(UTC)

    def to_dict(self) -> dict[str, Any]:
        finished = self.finished_at or datetime.now(UTC)
        return {
            "started_at": self.started_at.isoformat(),
            "finished_at": finished.isoformat(),
            "duration_seconds": round((finished - self.started_at).total_seconds(), 3),
            "counts": dict(sorted(self.counts.items())),
            "patients_total": len(self.patients),
            "retries": self.retries,
            "urgent": dict(sorted(self.urgent_counts.items())),
            "unread_inputs": len(self.unread_inputs),
            "not_read": dict(sorted(self._not_read_counts.items())),
            **({"bulk": self.bulk} if self.bulk is not None else {}),
            "read_issues": [asdict(issue) for issue in self.read_issues],
            "data_issues": [{"resource": ref, "problem": p} for ref, p in self.data_issues],
            "patients": [self._patient(p) for p in self.patients],
        }

    def _patient(self, outcome: PatientOutcome) -> dict[str, Any]:
        entry = asdict(outcome)
        if outcome.patient in self.urgent:
            entry["urgent"] = list(self.urgent[outcome.patient])
        if outcome.patient in self.not_read:
            entry["not_read"] = list(self.not_read[outcome.patient])
        return entry

    @property
    def _not_read_counts(self) -> Counter[str]:
        """Patients whose record lacks each type."""
        return Counter(rtype for types in self.not_read.values() for rtype in types)

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    def summary(self) -> str:
        counts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(self.counts.items()))
        unread = len(self.unread_inputs)
        # a patient not found is counted among the patients (``not-found``), not as a resource
        skipped = sum(not (i.unread_input or i.not_found) for i in self.read_issues)
        return (
            f"{len(self.patients)} patients ({counts or 'none'}); "
            + (f"{unread} inputs unreadable; " if unread else "")
            + f"{skipped} unreadable resources skipped; "
            f"{len(self.data_issues)} data issues; {self.retries} retries"
            + self._not_read_summary()
            + self._urgent_summary()
        )

    def _not_read_summary(self) -> str:
        if not self.not_read:
            return ""
        by_type = ", ".join(f"{t} {n}" for t, n in sorted(self._not_read_counts.items()))
        return (
            f"; {len(self.not_read)} patients' plans decided without types not readable from "
            f"this server ({by_type})"
        )

    def _urgent_summary(self) -> str:
        counts = self.urgent_counts
        if not counts:
            return ""
        by_rule = ", ".join(f"{rule} {n}" for rule, n in sorted(counts.items()))
        return f"; {sum(counts.values())} urgent findings ({by_rule})"
