"""The standardized four-dimension patient profile as data: findings, need levels, facts, gaps.

Kept apart from the builder (:mod:`fhir_tailor.profile`): the rule language
(:mod:`fhir_tailor.rules`) reads profiles and the builder evaluates rules (a data gap's
``when``), so the model sits below both and imports neither.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from functools import cached_property
from typing import Literal

from pydantic import BaseModel, ConfigDict

from .mapping import DIMENSIONS, Dimension, Severity, Status
from .sdoh import SdohCategory

NeedLevel = Literal["none", "low", "moderate", "high"]
NEED_RANK: dict[str, int] = {"none": 0, "low": 1, "moderate": 2, "high": 3}


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Coding(Model):
    system: str
    code: str
    display: str | None = None


class Finding(Model):
    """One feature of the patient, with the evidence that decided it."""

    feature: str
    label: str
    #: What was found, in words for a clinician (``HbA1c 5.4%: at target``): the value or answer
    #: read and what it means (:mod:`fhir_tailor.statement`); the fields beside it are for programs.
    statement: str
    status: Status
    severity: Severity | None = None
    value: float | None = None
    unit: str | None = None
    answer: str | None = None
    effective: date | None = None
    stale: bool = False
    code: Coding
    rule: str
    sources: tuple[str, ...]
    #: The SDOH Clinical Care IG domain of a present social finding, from the evidence that
    #: decided it (:mod:`fhir_tailor.sdoh`): homelessness and housing instability are one feature
    #: but two domains.
    sdoh_category: SdohCategory | None = None

    @property
    def current_present(self) -> bool:
        return self.status == "present" and not self.stale


class DimensionProfile(Model):
    need: NeedLevel
    findings: tuple[Finding, ...]

    def current_present(self) -> Iterator[Finding]:
        return (f for f in self.findings if f.current_present)


class PatientFacts(Model):
    age: int | None = None
    gender: str | None = None
    preferred_language: str | None = None
    contact_preference: str | None = None
    #: The record says the patient has died (:mod:`fhir_tailor.life_state`): no plan is made.
    deceased: bool = False


class DataGap(Model):
    id: str
    label: str


class Profile(Model):
    """A patient's standardized profile: facts, four dimensions and data gaps."""

    patient: str
    as_of: date
    facts: PatientFacts
    medical: DimensionProfile
    cognitive_behavioral: DimensionProfile
    social: DimensionProfile
    functional: DimensionProfile
    data_gaps: tuple[DataGap, ...]

    def dimension(self, name: Dimension) -> DimensionProfile:
        profile: DimensionProfile = getattr(self, name)
        return profile

    def findings(self) -> Iterator[tuple[Dimension, Finding]]:
        for name in DIMENSIONS:
            for finding in self.dimension(name).findings:
                yield name, finding

    @cached_property
    def _by_feature(self) -> dict[str, Finding]:
        return {finding.feature: finding for _, finding in self.findings()}

    def finding(self, feature: str) -> Finding | None:
        return self._by_feature.get(feature)
