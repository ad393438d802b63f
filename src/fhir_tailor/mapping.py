"""Feature mappings: which value sets mean which profile finding.

Mappings are data (``profiles/features/*.yaml``, format in ``docs/mapping-format.md``),
validated here on load. Each *feature* (e.g. ``food_insecurity``) belongs to one dimension and
has *rules*, each naming value sets (by canonical ``url|version``) of codes (or category codes) on
one resource type and saying what a match means: present with a severity, a numeric value read
through bands, or a coded answer read through an answer table.

:class:`CodeIndex` turns the rules and the expansions of their value sets
(:mod:`fhir_tailor.terminology.valuesets`) into one dictionary keyed by ``(system, code)``, so
matching a resource costs one lookup per coding, never a scan over rules or value sets.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .sdoh import SdohCategory
from .terminology.valuesets import Concept, ValueSet, ValueSetLibrary, normalize_code

Dimension = Literal["medical", "cognitive_behavioral", "social", "functional"]
DIMENSIONS: tuple[Dimension, ...] = ("medical", "cognitive_behavioral", "social", "functional")
Severity = Literal["low", "moderate", "high"]
Status = Literal["present", "absent", "unknown"]
SEVERITY_RANK: dict[str | None, int] = {None: 0, "low": 1, "moderate": 2, "high": 3}

_ID = r"^[a-z][a-z0-9_]*$"
#: A value set canonical: an absolute URL, optionally ``|version``.
_CANONICAL = r"^https?://[^\s|]+(\|[^\s|]+)?$"


class Strict(BaseModel):
    """Base for definition files: unknown keys are errors, so typos cannot pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Code(Strict):
    """A coded concept as definition files write it (a module's goal measure, an urgent
    finding's request): here, below the catalog and the urgent rules, which both name codes."""

    system: str
    code: str
    display: str | None = None


class Band(Strict):
    min: float | None = None
    status: Status
    severity: Severity | None = None
    label: str | None = None
    #: What a value in the band means, said after the value (``HbA1c 5.4%: at target``): the
    #: words a clinician reads for the finding (:mod:`fhir_tailor.statement`). Every shipped
    #: band has one; without it the band's ``label`` is said.
    meaning: str | None = Field(default=None, min_length=1)


class UnitConversion(Strict):
    """An analyte-specific conversion into the bands' unit: ``value x factor + offset``.

    For what UCUM cannot derive: molar to mass concentration needs the analyte's molar mass, and
    HbA1c IFCC ``mmol/mol`` to NGSP ``%`` is an equation between two scales. ``source`` cites it.
    """

    from_: str = Field(alias="from", min_length=1)
    factor: float = Field(gt=0, allow_inf_nan=False)
    offset: float = Field(default=0.0, allow_inf_nan=False)
    source: str = Field(min_length=1)


class Mislabel(Strict):
    """A unit records send in place of the bands' unit for the same number (eGFR as ``mL/min``
    under a code that is per 1.73 m2): read as the bands' unit, with a data issue."""

    unit: str = Field(min_length=1)
    source: str = Field(min_length=1)


class ValueBands(Strict):
    """Bands over a number in ``unit`` (UCUM), and the other units a record may send it in
    (:mod:`fhir_tailor.terminology.units` reads them)."""

    unit: str | None = None
    conversions: list[UnitConversion] = Field(default_factory=list)
    mislabels: list[Mislabel] = Field(default_factory=list)
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

    @model_validator(mode="after")
    def _other_units(self) -> ValueBands:
        others = [c.from_ for c in self.conversions] + [m.unit for m in self.mislabels]
        if others and self.unit is None:
            raise ValueError("'conversions' and 'mislabels' need the bands' 'unit'")
        if self.unit in others:
            raise ValueError(f"{self.unit!r} is the bands' own unit, not one to convert from")
        repeated = sorted({unit for unit in others if others.count(unit) > 1})
        if repeated:
            raise ValueError(f"units declared more than once: {', '.join(repeated)}")
        return self


class Answer(Strict):
    system: str | None = None
    code: str
    display: str | None = None
    status: Status
    severity: Severity | None = None
    #: The SDOH domain this answer speaks to, where it is narrower than its rule's
    #: (``I do not have a steady place to live``: homelessness); see :mod:`fhir_tailor.sdoh`.
    sdoh_category: SdohCategory | None = None


ResourceKind = Literal[
    "Condition", "Observation", "Encounter", "MedicationRequest", "ServiceRequest"
]
MatchOn = Literal["code", "category"]
Sex = Literal["female", "male"]


class AppliesTo(Strict):
    """Whom a rule reads: an age range (whole years, ``age_at_least`` <= age < ``age_below``) and a
    sex (``Patient.gender``). A rule that does not apply to the patient reads nothing.

    A patient without a (usable) birth date is read as an adult, as every rule was before rules
    had ages: a minimum age holds, a maximum (``age_below``, the pediatric rules) does not.
    ``sex: female`` leaves out only a patient recorded ``male`` (and the reverse), so with
    ``other``, ``unknown`` or no gender both sex-specific readings of a measurement apply and
    the graver wins (for AUDIT-C, the lower cut point). ``source`` cites why the rule is limited
    (the instrument's or guideline's population).
    """

    age_at_least: int | None = Field(default=None, ge=0)
    age_below: int | None = Field(default=None, gt=0)
    sex: Sex | None = None
    source: str = Field(min_length=1)

    @model_validator(mode="after")
    def _bounded(self) -> AppliesTo:
        if self.age_at_least is None and self.age_below is None and self.sex is None:
            raise ValueError("'applies_to' needs age_at_least, age_below or sex")
        if (
            self.age_at_least is not None
            and self.age_below is not None
            and self.age_below <= self.age_at_least
        ):
            raise ValueError("'age_below' must be greater than 'age_at_least'")
        return self

    def admits(self, age: int | None, gender: str | None) -> bool:
        """Whether a patient of this age and ``Patient.gender`` is one the rule reads."""
        if age is None:
            aged = self.age_below is None  # read as an adult
        else:
            aged = (self.age_at_least is None or age >= self.age_at_least) and (
                self.age_below is None or age < self.age_below
            )
        other = {"female": "male", "male": "female"}
        return aged and (self.sex is None or gender != other[self.sex])

    def describe(self) -> str:
        """``ages 2 to 19``, ``ages 20 and over``, ``female`` ...: for labels and reports."""
        parts = []
        if self.age_at_least is not None and self.age_below is not None:
            parts.append(f"ages {self.age_at_least} to {self.age_below - 1}")
        elif self.age_at_least is not None:
            parts.append(f"ages {self.age_at_least} and over")
        elif self.age_below is not None:
            parts.append(f"ages below {self.age_below}")
        if self.sex is not None:
            parts.append(self.sex)
        return ", ".join(parts)


class Rule(Strict):
    """Value sets of codes on one resource type, and how a match is read (presence, value or
    answer). ``excluding`` names value sets whose codes the rule does not match even where its
    own value sets hold them (a published grouping wider than the rule's meaning)."""

    id: str
    resource: ResourceKind
    match: MatchOn = "code"
    valuesets: list[str] = Field(default_factory=list)
    excluding: list[str] = Field(default_factory=list)
    severity: Severity | None = None
    value: ValueBands | None = None
    answers: list[Answer] | None = None
    #: The SDOH Clinical Care IG domain of what the rule matches (:mod:`fhir_tailor.sdoh`);
    #: social goals and referrals take the domain of the evidence that put them in a plan.
    sdoh_category: SdohCategory | None = None
    #: Whom the rule reads (ages, sex); ``None``: everyone.
    applies_to: AppliesTo | None = None
    #: Where the rule's meaning comes from (guideline or instrument, year, section): its codes'
    #: sources are in its value sets, its cut points and answers are cited here.
    source: str | None = None
    #: What a rule reading a value or an answer reads, named for a clinician (``HbA1c``,
    #: ``Hunger Vital Sign, worried food would run out``): a finding's statement puts the value
    #: or answer after it. Every shipped value and answer rule has one; without it the matched
    #: code's display is said.
    measure: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_reading(self) -> Rule:
        for canonical in (*self.valuesets, *self.excluding):
            if not re.match(_CANONICAL, canonical):
                raise ValueError(f"{canonical!r} is not a value set canonical (url or url|version)")
        if self.value is not None and self.answers is not None:
            raise ValueError("a rule reads either 'value' or 'answers', not both")
        if self.resource in ("Condition", "Encounter", "ServiceRequest") and (
            self.value or self.answers
        ):
            raise ValueError(f"{self.resource} rules take neither 'value' nor 'answers'")
        if self.resource == "MedicationRequest":
            # Either the count of active medicines (polypharmacy) read through bands, or the
            # presence of an active request for a medicine in the rule's value sets.
            if self.answers is not None or (self.value is None) == (not self.valuesets):
                raise ValueError(
                    "a MedicationRequest rule either counts active medications ('value' bands, "
                    "no 'valuesets') or reads the presence of one in its 'valuesets' (no 'value')"
                )
        elif not self.valuesets:
            raise ValueError(f"a {self.resource} rule needs at least one value set")
        if self.match == "category" and self.resource not in ("Condition", "Observation"):
            raise ValueError("'match: category' is defined for Condition and Observation rules")
        if self.measure is not None and self.reads_presence:
            raise ValueError("'measure' names what a 'value' or 'answers' rule reads")
        return self

    @property
    def reads_absent(self) -> bool:
        """Whether a reading of this rule can make its feature absent other than through a
        band (which says its own meaning): an answer, or a negative presence Observation."""
        if self.answers is not None:
            return any(answer.status == "absent" for answer in self.answers)
        return self.resource == "Observation" and self.reads_presence

    @property
    def reads_presence(self) -> bool:
        return self.value is None and self.answers is None


class Feature(Strict):
    """A profile feature. An *asset* (a strength such as a caregiver) is present or absent but
    never has a severity, so it never raises a need level; neither does a *state* (pregnancy), a
    condition of life that decides which goals and steps fit rather than a need. ``excludes``
    names features that cannot hold together with this one (type 1 and type 2 diabetes): a code
    in the value sets of both is a mapping error, which ``validate-profiles`` reports.

    ``current_for_days`` ages observations; a diagnosis on the problem list never goes stale
    unless ``conditions_current_for_days`` is set, for states that end by themselves (a
    pregnancy Condition older than a pregnancy lasts is no longer current).

    ``confirmed_after_days`` makes a measurement count only when it persists: an Observation
    rule's present reading is *pending* (the finding is unknown, never present) until the same
    rule has read present without a break (no absent reading of that rule in between) over at
    least that many days, first to newest reading. A chronic condition defined by duration (CKD:
    abnormal kidney markers for more than 3 months, KDIGO 2024 chapter 1) is then not started by
    one reading, which may be an acute change. Diagnoses are not affected."""

    id: str = Field(pattern=_ID)
    label: str
    current_for_days: int | None = Field(default=None, gt=0)
    conditions_current_for_days: int | None = Field(default=None, gt=0)
    confirmed_after_days: int | None = Field(default=None, gt=0)
    asset: bool = False
    state: bool = False
    excludes: tuple[str, ...] = ()
    rules: list[Rule] = Field(min_length=1)
    #: What an absent finding says (``No food insecurity``), for features an answer or a
    #: negative observation can make absent; ``label`` says what a present one is. Every such
    #: shipped feature has one; without it, ``<label> not found`` is said.
    absent_label: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _severities(self) -> Feature:
        if self.asset and self.state:
            raise ValueError(f"feature {self.id!r} is an asset or a state, not both")
        ungraded = self.asset or self.state
        kind = "an asset" if self.asset else "a state"
        for rule in self.rules:
            graded = [rule.severity] if rule.reads_presence else []
            graded += [band.severity for band in rule.value.bands] if rule.value else []
            graded += [answer.severity for answer in rule.answers or ()]
            if ungraded and any(graded):
                raise ValueError(f"rule {rule.id!r}: {kind} feature takes no severities")
            if not ungraded and rule.reads_presence and rule.severity is None:
                raise ValueError(f"rule {rule.id!r}: a presence rule needs a 'severity'")
        return self

    @model_validator(mode="after")
    def _absent_said(self) -> Feature:
        if self.absent_label is not None and not any(rule.reads_absent for rule in self.rules):
            raise ValueError(
                f"feature {self.id!r}: no rule reads it absent through an answer or a negative "
                "observation, so 'absent_label' would never be said (bands say their 'meaning')"
            )
        return self

    @model_validator(mode="after")
    def _confirmable(self) -> Feature:
        if self.confirmed_after_days is not None and any(
            rule.resource not in ("Condition", "Observation") for rule in self.rules
        ):
            raise ValueError(
                f"feature {self.id!r}: 'confirmed_after_days' confirms measurements; its rules "
                "read Conditions and Observations only"
            )
        return self


class FeatureFile(Strict):
    version: str
    changelog: list[str] = Field(min_length=1)
    dimension: Dimension
    features: list[Feature]


#: The pseudo-code a polypharmacy finding names: the count of active MedicationRequests.
_ACTIVE_MEDICATIONS = Concept(
    system="https://fhir-tailor.dev/fhir/CodeSystem/derived",
    code="active-medication-count",
    display="Number of active MedicationRequests",
)


@dataclass(frozen=True, slots=True)
class Match:
    """A rule hit: the feature, its dimension, the rule, and the value set code that matched."""

    feature: Feature
    dimension: Dimension
    rule: Rule
    code: Concept
    valueset: str | None = None


#: Codings whose lookup :class:`CodeIndex` remembers at most (then it starts over).
MAX_REMEMBERED_CODINGS = 65_536


#: Value sets an unresolved-value-sets message lists per kind, and rules per value set.
LISTED_VALUESETS, LISTED_RULES = 10, 3


class UnresolvedValueSets(ValueError):
    """Rules name value sets the library lacks, or holds without an expansion.

    The message lists each value set with the rules that name it, one per line, at most
    :data:`LISTED_VALUESETS` of each kind and :data:`LISTED_RULES` rules per value set (a folder
    of VSAC references without ``--terminology`` misses dozens, and the first say what to do).
    """

    def __init__(
        self, missing: list[str], unexpanded: list[str], named_by: Mapping[str, list[str]]
    ) -> None:
        self.missing = missing
        self.unexpanded = unexpanded
        parts = []
        if missing:
            parts.append(_listing(f"value sets not found ({len(missing)}):", missing, named_by))
        if unexpanded:
            heading = (
                f"value sets without an expansion ({len(unexpanded)}); ship an expansion, or "
                "give --terminology URL to expand them:"
            )
            parts.append(_listing(heading, unexpanded, named_by))
        super().__init__("\n".join(parts))


def _listing(heading: str, canonicals: list[str], named_by: Mapping[str, list[str]]) -> str:
    lines = [heading]
    for canonical in canonicals[:LISTED_VALUESETS]:
        rules = named_by.get(canonical, [])
        shown = ", ".join(rules[:LISTED_RULES])
        more = f" and {len(rules) - LISTED_RULES} more" if len(rules) > LISTED_RULES else ""
        lines.append(f"  {canonical}, named by rule{'s' if len(rules) > 1 else ''} {shown}{more}")
    if len(canonicals) > LISTED_VALUESETS:
        lines.append(f"  ... and {len(canonicals) - LISTED_VALUESETS} more value sets")
    return "\n".join(lines)


def rules_by_valueset(features: Iterable[Feature]) -> dict[str, list[str]]:
    """Every value set the rules name (in ``valuesets`` or ``excluding``), in first-seen order,
    with the ids of the rules naming it."""
    found: dict[str, list[str]] = {}
    for feature in features:
        for rule in feature.rules:
            for canonical in dict.fromkeys((*rule.valuesets, *rule.excluding)):
                found.setdefault(canonical, []).append(rule.id)
    return found


def unresolved(
    files: Iterable[FeatureFile], library: ValueSetLibrary
) -> UnresolvedValueSets | None:
    """What the rules name that ``library`` cannot serve, or ``None`` when it serves them all."""
    named_by = rules_by_valueset(feature for file in files for feature in file.features)
    missing, unexpanded = [], []
    for canonical in named_by:
        valueset = library.find(canonical)
        if valueset is None:
            missing.append(canonical)
        elif not valueset.expanded:
            unexpanded.append(canonical)
    if not (missing or unexpanded):
        return None
    return UnresolvedValueSets(missing, unexpanded, named_by)


class CodeIndex:
    """Rules indexed by the ``(system, code)`` keys of their value sets' expansions.

    Code rules and category rules live in separate tables, so a category code never matches a
    resource's ``code`` (or the reverse). MedicationRequest rules that count medicines need no
    codes and are kept apart in :attr:`medication_counts`; those reading a medicine's presence
    are indexed like the others (:attr:`reads_medicines` says whether there are any).
    """

    def __init__(self, files: list[FeatureFile], library: ValueSetLibrary) -> None:
        problem = unresolved(files, library)
        if problem is not None:
            raise problem
        self.library = library
        self.features: dict[str, tuple[Feature, Dimension]] = {}
        self.medication_counts: list[Match] = []
        self._codes: dict[str, tuple[Concept, ...]] = {}
        self._tables: dict[MatchOn, defaultdict[tuple[str, str], list[Match]]] = {
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
                    if rule.resource == "MedicationRequest" and rule.value is not None:
                        self.medication_counts.append(
                            Match(feature, file.dimension, rule, _ACTIVE_MEDICATIONS)
                        )
                    self._codes[rule.id] = self._index_rule(feature, file.dimension, rule)
        self._found: dict[tuple[str, str, str, MatchOn], tuple[Match, ...]] = {}
        #: Whether some rule reads the presence of a medicine: otherwise MedicationRequests are
        #: only counted, and their codings never looked up.
        self.reads_medicines = any(
            rule.resource == "MedicationRequest" and rule.value is None
            for feature, _ in self.features.values()
            for rule in feature.rules
        )
        #: Resource types some rule matches by category: the others skip reading categories,
        #: which every Observation carries (vital-signs, laboratory) and no rule may need.
        self.category_types = frozenset(
            rule.resource
            for feature, _ in self.features.values()
            for rule in feature.rules
            if rule.match == "category"
        )

    def _index_rule(
        self, feature: Feature, dimension: Dimension, rule: Rule
    ) -> tuple[Concept, ...]:
        excluded = {key for c in rule.excluding for key in self._valueset(c).members()}
        concepts: dict[tuple[str, str], Concept] = {}
        for canonical in rule.valuesets:
            for concept in self._valueset(canonical).concepts or ():
                key = concept.key
                if key in excluded or key in concepts:
                    continue
                concepts[key] = concept
                match = Match(feature, dimension, rule, concept, canonical)
                self._tables[rule.match][key].append(match)
        return tuple(concepts.values())

    def _valueset(self, canonical: str) -> ValueSet:
        valueset = self.library.find(canonical)
        assert valueset is not None  # checked by unresolved() before indexing
        return valueset

    def valuesets(self) -> list[ValueSet]:
        """The value sets the rules name (``valuesets`` and ``excluding``), in first-seen order."""
        features = (feature for feature, _ in self.features.values())
        return [self._valueset(canonical) for canonical in rules_by_valueset(features)]

    def codes(self, rule: Rule) -> tuple[Concept, ...]:
        """The codes a rule matches: its value sets' expansions less its exclusions."""
        return self._codes.get(rule.id, ())

    def lookup(
        self, system: str, code: str, resource_type: str, on: MatchOn = "code"
    ) -> tuple[Match, ...]:
        """Rules for one coding on a resource of ``resource_type``.

        Remembered per coding: a population repeats a few hundred codings millions of times,
        most of them matching nothing.
        """
        key = (system, code, resource_type, on)
        found = self._found.get(key)
        if found is None:
            if len(self._found) >= MAX_REMEMBERED_CODINGS:
                self._found.clear()
            hits = self._tables[on].get((system, normalize_code(system, code)), ())
            found = tuple(hit for hit in hits if hit.rule.resource == resource_type)
            self._found[key] = found
        return found
