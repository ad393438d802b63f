"""Feature mappings: which standard codes mean which profile finding.

Mappings are data (``profiles/features/*.yaml``, format in ``docs/mapping-format.md``),
validated here on load. Each *feature* (e.g. ``food_insecurity``) belongs to one dimension and
has *rules*, each matching a set of codes (or category codes) on one resource type and saying
what the match means: present with a severity, a numeric value read through bands, or a coded
answer read through an answer table.

:class:`CodeIndex` turns the rules into dictionaries keyed by ``(system, code)``, so matching a
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


ResourceKind = Literal["Condition", "Observation", "Encounter", "MedicationRequest"]
MatchOn = Literal["code", "category"]


class Rule(Strict):
    """Codes on one resource type, and how a match is read (presence, value or answer)."""

    id: str
    resource: ResourceKind
    match: MatchOn = "code"
    codes: list[CodeRef] = Field(default_factory=list)
    severity: Severity | None = None
    value: ValueBands | None = None
    answers: list[Answer] | None = None

    @model_validator(mode="after")
    def _one_reading(self) -> Rule:
        if self.value is not None and self.answers is not None:
            raise ValueError("a rule reads either 'value' or 'answers', not both")
        if self.resource in ("Condition", "Encounter") and (self.value or self.answers):
            raise ValueError(f"{self.resource} rules take neither 'value' nor 'answers'")
        if self.resource == "MedicationRequest":
            if self.value is None or self.codes:
                raise ValueError(
                    "a MedicationRequest rule counts active medications: it takes 'value' bands "
                    "and no 'codes'"
                )
        elif not self.codes:
            raise ValueError(f"a {self.resource} rule needs at least one code")
        if self.match == "category" and self.resource not in ("Condition", "Observation"):
            raise ValueError("'match: category' is defined for Condition and Observation rules")
        return self

    @property
    def reads_presence(self) -> bool:
        return self.value is None and self.answers is None


class Feature(Strict):
    """A profile feature. An *asset* (a strength such as a caregiver) is present or absent but
    never has a severity, so it never raises a need level."""

    id: str = Field(pattern=_ID)
    label: str
    current_for_days: int | None = Field(default=None, gt=0)
    asset: bool = False
    rules: list[Rule] = Field(min_length=1)

    @model_validator(mode="after")
    def _severities(self) -> Feature:
        for rule in self.rules:
            graded = [rule.severity] if rule.reads_presence else []
            graded += [band.severity for band in rule.value.bands] if rule.value else []
            graded += [answer.severity for answer in rule.answers or ()]
            if self.asset and any(graded):
                raise ValueError(f"rule {rule.id!r}: an asset feature takes no severities")
            if not self.asset and rule.reads_presence and rule.severity is None:
                raise ValueError(f"rule {rule.id!r}: a presence rule needs a 'severity'")
        return self


class FeatureFile(Strict):
    version: str
    changelog: list[str] = Field(min_length=1)
    dimension: Dimension
    features: list[Feature]


#: The pseudo-code a polypharmacy finding names: the count of active MedicationRequests.
_ACTIVE_MEDICATIONS = CodeRef(
    system="https://fhir-tailor.dev/fhir/CodeSystem/derived",
    code="active-medication-count",
    display="Number of active MedicationRequests",
)


@dataclass(frozen=True, slots=True)
class Match:
    """A rule hit: the feature, its dimension and the rule that matched a code."""

    feature: Feature
    dimension: Dimension
    rule: Rule
    code: CodeRef


#: Codings whose lookup :class:`CodeIndex` remembers at most (then it starts over).
MAX_REMEMBERED_CODINGS = 65_536


def normalize_code(system: str, code: str) -> str:
    """ICD-10-CM codes are compared without the dot and in upper case (``e11.9`` == ``E119``)."""
    code = code.strip()
    return code.replace(".", "").upper() if system == ICD10CM else code


class CodeIndex:
    """Rules indexed by ``(system, code)`` and, for ICD-10-CM, by code prefix.

    Code rules and category rules live in separate tables, so a category code never matches a
    resource's ``code`` (or the reverse). MedicationRequest rules need no codes and are kept
    apart in :attr:`medication_counts`.
    """

    def __init__(self, files: list[FeatureFile]) -> None:
        self.features: dict[str, tuple[Feature, Dimension]] = {}
        self.medication_counts: list[Match] = []
        self._exact: dict[MatchOn, defaultdict[tuple[str, str], list[Match]]] = {
            "code": defaultdict(list),
            "category": defaultdict(list),
        }
        self._prefix: dict[MatchOn, defaultdict[tuple[str, str], list[Match]]] = {
            "code": defaultdict(list),
            "category": defaultdict(list),
        }
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
                    if rule.resource == "MedicationRequest":
                        self.medication_counts.append(
                            Match(feature, file.dimension, rule, _ACTIVE_MEDICATIONS)
                        )
                    for ref in rule.codes:
                        key = (ref.system, normalize_code(ref.system, ref.code))
                        table = (self._prefix if ref.prefix else self._exact)[rule.match]
                        table[key].append(Match(feature, file.dimension, rule, ref))
        self._found: dict[tuple[str, str, str, MatchOn], tuple[Match, ...]] = {}
        self._prefix_lengths = sorted(
            {len(code) for table in self._prefix.values() for _, code in table}, reverse=True
        )

    def lookup(
        self, system: str, code: str, resource_type: str, on: MatchOn = "code"
    ) -> tuple[Match, ...]:
        """Rules for one coding on a resource of ``resource_type``, exact matches first.

        Remembered per coding: a population repeats a few hundred codings millions of times,
        most of them matching nothing.
        """
        key = (system, code, resource_type, on)
        found = self._found.get(key)
        if found is None:
            if len(self._found) >= MAX_REMEMBERED_CODINGS:
                self._found.clear()
            found = self._found[key] = self._search(system, code, resource_type, on)
        return found

    def _search(self, system: str, code: str, resource_type: str, on: MatchOn) -> tuple[Match, ...]:
        norm = normalize_code(system, code)
        hits = list(self._exact[on].get((system, norm), ()))
        if system == ICD10CM:
            prefixes = self._prefix[on]
            for length in self._prefix_lengths:
                if length <= len(norm):
                    hits.extend(prefixes.get((system, norm[:length]), ()))
        return tuple(hit for hit in hits if hit.rule.resource == resource_type)
