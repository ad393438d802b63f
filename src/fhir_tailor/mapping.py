"""Feature mappings: which standard codes mean which profile finding.

Mappings are data (``profiles/features/*.yaml``), validated here on load. Each *feature* (e.g.
``food_insecurity``) belongs to one dimension and has *rules*, each matching a set of codes on
Conditions or Observations and saying what the match means: present with a severity, a numeric
value read through bands, or a coded answer read through an answer table.

:class:`CodeIndex` turns the rules into a dictionary keyed by ``(system, code)``, so matching a
resource costs one lookup per coding (plus one per prefix length for ICD-10-CM), never a scan
over the rules.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Dimension = Literal["medical", "cognitive_behavioral", "social", "functional"]
DIMENSIONS: tuple[Dimension, ...] = ("medical", "cognitive_behavioral", "social", "functional")
Severity = Literal["low", "moderate", "high"]
Status = Literal["present", "absent", "unknown"]
SEVERITY_RANK: dict[str | None, int] = {None: 0, "low": 1, "moderate": 2, "high": 3}

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
_ID = r"^[a-z][a-z0-9_]*$"


class Strict(BaseModel):
    """Base for definition files: unknown keys are errors, so typos cannot pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class CodeRef(Strict):
    system: str
    code: str
    display: str | None = None
    source: str | None = None
    prefix: bool = False

    @model_validator(mode="after")
    def _prefix_only_for_icd10(self) -> CodeRef:
        if self.prefix and self.system != ICD10CM:
            raise ValueError("prefix matching is only defined for ICD-10-CM codes")
        return self


class Band(Strict):
    min: float | None = None
    status: Status
    severity: Severity | None = None
    label: str | None = None


class ValueBands(Strict):
    unit: str | None = None
    bands: list[Band] = Field(min_length=1)

    @model_validator(mode="after")
    def _ordered(self) -> ValueBands:
        mins = [band.min for band in self.bands]
        if None in mins[:-1]:
            raise ValueError("only the last band may omit 'min' (it is the catch-all)")
        bounded = [m for m in mins if m is not None]
        if bounded != sorted(bounded, reverse=True):
            raise ValueError("bands must be ordered from the highest 'min' down")
        return self


class Answer(Strict):
    system: str | None = None
    code: str
    display: str | None = None
    status: Status
    severity: Severity | None = None


class Rule(Strict):
    id: str
    resource: Literal["Condition", "Observation"]
    codes: list[CodeRef] = Field(min_length=1)
    severity: Severity | None = None
    value: ValueBands | None = None
    answers: list[Answer] | None = None

    @model_validator(mode="after")
    def _one_reading(self) -> Rule:
        if self.value is not None and self.answers is not None:
            raise ValueError("a rule reads either 'value' or 'answers', not both")
        if self.resource == "Condition" and (self.value or self.answers):
            raise ValueError("Condition rules take neither 'value' nor 'answers'")
        if self.value is None and self.answers is None and self.severity is None:
            raise ValueError("a presence rule needs a 'severity'")
        return self


class Feature(Strict):
    id: str = Field(pattern=_ID)
    label: str
    current_for_days: int | None = Field(default=None, gt=0)
    rules: list[Rule] = Field(min_length=1)


class FeatureFile(Strict):
    version: str
    changelog: list[str] = Field(min_length=1)
    dimension: Dimension
    features: list[Feature]


@dataclass(frozen=True, slots=True)
class Match:
    """A rule hit: the feature, its dimension and the rule that matched a code."""

    feature: Feature
    dimension: Dimension
    rule: Rule
    code: CodeRef


def normalize_code(system: str, code: str) -> str:
    """ICD-10-CM codes are compared without the dot and in upper case (``e11.9`` == ``E119``)."""
    code = code.strip()
    return code.replace(".", "").upper() if system == ICD10CM else code


class CodeIndex:
    """Rules indexed by ``(system, code)`` and, for ICD-10-CM, by code prefix."""

    def __init__(self, files: list[FeatureFile]) -> None:
        self.features: dict[str, tuple[Feature, Dimension]] = {}
        self._exact: defaultdict[tuple[str, str], list[Match]] = defaultdict(list)
        self._prefix: defaultdict[tuple[str, str], list[Match]] = defaultdict(list)
        rule_ids: set[str] = set()
        for file in files:
            for feature in file.features:
                if feature.id in self.features:
                    raise ValueError(f"feature {feature.id!r} is defined twice")
                self.features[feature.id] = (feature, file.dimension)
                for rule in feature.rules:
                    if rule.id in rule_ids:
                        raise ValueError(f"rule {rule.id!r} is defined twice")
                    rule_ids.add(rule.id)
                    for ref in rule.codes:
                        key = (ref.system, normalize_code(ref.system, ref.code))
                        table = self._prefix if ref.prefix else self._exact
                        table[key].append(Match(feature, file.dimension, rule, ref))
        self._prefix_lengths = sorted({len(code) for _, code in self._prefix}, reverse=True)

    def lookup(self, system: str, code: str, resource_type: str) -> list[Match]:
        """Rules for one coding on a resource of ``resource_type``, exact matches first."""
        norm = normalize_code(system, code)
        hits = list(self._exact.get((system, norm), ()))
        if system == ICD10CM:
            for length in self._prefix_lengths:
                if length <= len(norm):
                    hits.extend(self._prefix.get((system, norm[:length]), ()))
        return [hit for hit in hits if hit.rule.resource == resource_type]
