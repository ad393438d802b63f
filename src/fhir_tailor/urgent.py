"""Urgent findings: what must reach a clinician at once, whatever else the plan proposes.

A care plan is a draft that waits for a clinician's review; some findings cannot wait with it
(a positive suicide risk screen, blood pressure of 180/120, an eGFR below 30 that nobody has
referred). ``profiles/urgent.yaml`` states them as rules over the profile, in the rule language
of :mod:`fhir_tailor.rules`, each with a FHIR request priority (``urgent``, ``asap``, ``stat``),
the step to request, the reason and the guideline it follows. :func:`urgent_findings` is a pure
function of the profile and the rules: each finding carries the evidence that made its rule hold
(the findings and their source resources), which is what identifies it, so the same evidence
always gives the same request (:attr:`UrgentFinding.key`) and a new result gives a new one.

The plan carries the findings (:attr:`fhir_tailor.plan.Plan.urgent`), even when no care module
applies; :mod:`fhir_tailor.resources` writes each as a ``Task`` a clinician's worklist finds.
"""

from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .mapping import Code, Strict
from .profile_model import Profile
from .rules import Evidence, RuleExpr

#: FHIR request priorities (http://hl7.org/fhir/request-priority) above ``routine``.
Priority = Literal["urgent", "asap", "stat"]
#: Most pressing first: ``stat`` (immediately), ``asap``, ``urgent`` (promptly).
PRIORITY_ORDER: dict[str, int] = {"stat": 0, "asap": 1, "urgent": 2}


class UrgentRequest(Strict):
    """The step a finding asks for: a text, and a standard code where one fits (with where
    the code was checked)."""

    code: Code | None = None
    code_source: str | None = Field(default=None, min_length=1)
    description: str = Field(min_length=1)

    @model_validator(mode="after")
    def _cited(self) -> UrgentRequest:
        if (self.code is None) != (self.code_source is None):
            raise ValueError("a request 'code' needs its 'code_source', and only a code has one")
        return self


class UrgentRule(Strict):
    """One urgent finding: when it holds, how soon (and why that soon), what to request, and
    the guideline (year, section) it follows. No source, no rule."""

    id: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    label: str = Field(min_length=1)
    when: RuleExpr
    priority: Priority
    priority_reason: str = Field(min_length=1)
    request: UrgentRequest
    reason: str = Field(min_length=1)
    source: str = Field(min_length=1)


class UrgentFile(Strict):
    version: str
    changelog: list[str] = Field(min_length=1)
    rules: list[UrgentRule]


class UrgentFinding(BaseModel):
    """A rule that holds for a patient, with the evidence that made it hold."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rule: str
    label: str
    priority: Priority
    code: Code | None = None
    request: str
    reason: str
    source: str
    evidence: tuple[Evidence, ...]

    @property
    def sources(self) -> tuple[str, ...]:
        """The resources behind the finding, sorted, each once."""
        return tuple(sorted({s for e in self.evidence for s in e.sources}))

    @property
    def key(self) -> str:
        """``<rule>/<digest of the sources>``: the same rule on the same evidence is the same
        request, run after run; a new result (another resource) is a new request."""
        digest = hashlib.sha256("\n".join(self.sources).encode()).hexdigest()[:16]
        return f"{self.rule}/{digest}"


def urgent_findings(profile: Profile, rules: tuple[UrgentRule, ...]) -> tuple[UrgentFinding, ...]:
    """The rules that hold for ``profile``, most pressing first (``stat``, ``asap``, ``urgent``;
    in definition order within one priority)."""
    found = []
    for rule in rules:
        verdict = rule.when.evaluate(profile)
        if not verdict.holds:
            continue
        found.append(
            UrgentFinding(
                rule=rule.id,
                label=rule.label,
                priority=rule.priority,
                code=rule.request.code,
                request=rule.request.description,
                reason=rule.reason,
                source=rule.source,
                evidence=verdict.evidence,
            )
        )
    return tuple(sorted(found, key=lambda f: PRIORITY_ORDER[f.priority]))
