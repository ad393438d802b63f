"""A small rule language over profiles, shared by data gaps, segments, modules and variants.

A rule is a YAML mapping with one key naming the test::

    {feature: food_insecurity}                      # present and current
    {feature: hba1c_above_target, severity_at_least: high}
    {feature: depression, status: recorded}         # a current result, present or absent
    {need: social, at_least: moderate}              # a dimension's need level
    {age_at_least: 65} / {age_below: 18}
    {language_not: en}                              # preferred language differs (primary subtag)
    {contact_preference: sms}                       # the telecom system the patient ranked first
    {gap: no_sdoh_screening}                        # a data gap is open
    {all: [...]} / {any: [...]} / {not: {...}}
    {count_at_least: 3, of: [...]}                  # at least 3 of the rules hold

Evaluating a rule gives a :class:`Verdict` with the *evidence* that made it true (the findings
and their source resources), which is how every plan choice carries its stated reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from .mapping import SEVERITY_RANK, Dimension, Severity
from .profile_model import NEED_RANK, NeedLevel, Profile


@dataclass(frozen=True, slots=True)
class Evidence:
    """Why a rule held: a finding, a need level, a patient fact or a data gap."""

    kind: Literal["finding", "need", "fact", "gap"]
    id: str
    label: str
    sources: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Verdict:
    holds: bool
    evidence: tuple[Evidence, ...] = ()


FALSE = Verdict(False)


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def evaluate(self, profile: Profile) -> Verdict:
        raise NotImplementedError

    def leaves(self) -> Iterator[_Rule]:
        yield self


FeatureStatus = Literal["present", "absent", "recorded"]
"""What a feature rule asks of a current finding: present, absent, or either."""


class FeatureRule(_Rule):
    """A current finding: present (the default, optionally at a severity), absent, or known
    either way (``recorded``: a current screening result exists, whatever it said)."""

    feature: str
    severity_at_least: Severity | None = None
    status: FeatureStatus = "present"

    def evaluate(self, profile: Profile) -> Verdict:
        finding = profile.finding(self.feature)
        if finding is None or finding.stale or finding.status == "unknown":
            return FALSE
        if self.status != "recorded" and finding.status != self.status:
            return FALSE
        if SEVERITY_RANK[finding.severity] < SEVERITY_RANK[self.severity_at_least]:
            return FALSE
        return Verdict(
            True, (Evidence("finding", finding.feature, finding.label, finding.sources),)
        )


class NeedRule(_Rule):
    need: Dimension
    at_least: NeedLevel

    def evaluate(self, profile: Profile) -> Verdict:
        dimension = profile.dimension(self.need)
        if NEED_RANK[dimension.need] < NEED_RANK[self.at_least]:
            return FALSE
        sources = tuple(s for f in dimension.current_present() for s in f.sources)
        label = f"{self.need} need {dimension.need}"
        return Verdict(True, (Evidence("need", self.need, label, sources),))


class AgeAtLeast(_Rule):
    age_at_least: int

    def evaluate(self, profile: Profile) -> Verdict:
        age = profile.facts.age
        if age is None or age < self.age_at_least:
            return FALSE
        return Verdict(True, (Evidence("fact", "age", f"age {age}", (profile.patient,)),))


class AgeBelow(_Rule):
    age_below: int

    def evaluate(self, profile: Profile) -> Verdict:
        age = profile.facts.age
        if age is None or age >= self.age_below:
            return FALSE
        return Verdict(True, (Evidence("fact", "age", f"age {age}", (profile.patient,)),))


class LanguageNot(_Rule):
    language_not: str

    def evaluate(self, profile: Profile) -> Verdict:
        language = profile.facts.preferred_language
        if language is None:
            return FALSE
        if language.split("-")[0].lower() == self.language_not.split("-")[0].lower():
            return FALSE
        label = f"preferred language {language}"
        return Verdict(True, (Evidence("fact", "preferred_language", label, (profile.patient,)),))


class ContactPreference(_Rule):
    contact_preference: Literal["phone", "sms", "email", "fax", "pager", "url", "other"]

    def evaluate(self, profile: Profile) -> Verdict:
        if profile.facts.contact_preference != self.contact_preference:
            return FALSE
        label = f"prefers contact by {self.contact_preference}"
        return Verdict(True, (Evidence("fact", "contact_preference", label, (profile.patient,)),))


class GapRule(_Rule):
    gap: str

    def evaluate(self, profile: Profile) -> Verdict:
        for gap in profile.data_gaps:
            if gap.id == self.gap:
                return Verdict(True, (Evidence("gap", gap.id, gap.label, (profile.patient,)),))
        return FALSE


class AllOf(_Rule):
    all: list[RuleExpr] = Field(min_length=1)

    def evaluate(self, profile: Profile) -> Verdict:
        evidence: list[Evidence] = []
        for rule in self.all:
            verdict = rule.evaluate(profile)
            if not verdict.holds:
                return FALSE
            evidence.extend(verdict.evidence)
        return Verdict(True, tuple(evidence))

    def leaves(self) -> Iterator[_Rule]:
        for rule in self.all:
            yield from rule.leaves()


class AnyOf(_Rule):
    any: list[RuleExpr] = Field(min_length=1)

    def evaluate(self, profile: Profile) -> Verdict:
        verdicts = [rule.evaluate(profile) for rule in self.any]
        held = [v for v in verdicts if v.holds]
        return Verdict(True, tuple(e for v in held for e in v.evidence)) if held else FALSE

    def leaves(self) -> Iterator[_Rule]:
        for rule in self.any:
            yield from rule.leaves()


class CountAtLeast(_Rule):
    """At least ``count_at_least`` of the rules hold: multimorbidity is several chronic
    conditions at once (three or more coexisting chronic illnesses in the ADA Standards of Care,
    section 13), which ``all``/``any`` cannot say without listing every combination."""

    count_at_least: int = Field(ge=1)
    of: list[RuleExpr] = Field(min_length=1)

    @model_validator(mode="after")
    def _reachable(self) -> CountAtLeast:
        if self.count_at_least > len(self.of):
            raise ValueError(f"'count_at_least' {self.count_at_least} exceeds the rules listed")
        return self

    def evaluate(self, profile: Profile) -> Verdict:
        held = [v for v in (rule.evaluate(profile) for rule in self.of) if v.holds]
        if len(held) < self.count_at_least:
            return FALSE
        return Verdict(True, tuple(e for v in held for e in v.evidence))

    def leaves(self) -> Iterator[_Rule]:
        for rule in self.of:
            yield from rule.leaves()


class Not(_Rule):
    not_: RuleExpr = Field(alias="not")

    def evaluate(self, profile: Profile) -> Verdict:
        return FALSE if self.not_.evaluate(profile).holds else Verdict(True)

    def leaves(self) -> Iterator[_Rule]:
        yield from self.not_.leaves()


_KINDS: dict[str, type[_Rule]] = {
    "feature": FeatureRule,
    "need": NeedRule,
    "age_at_least": AgeAtLeast,
    "age_below": AgeBelow,
    "language_not": LanguageNot,
    "contact_preference": ContactPreference,
    "gap": GapRule,
    "all": AllOf,
    "any": AnyOf,
    "count_at_least": CountAtLeast,
    "not": Not,
}


def _tag(value: Any) -> str | None:
    """The rule kind: the first key of a raw mapping that names a test, or a model's kind."""
    if isinstance(value, dict):
        return next((key for key in value if key in _KINDS), None)
    return next((key for key, model in _KINDS.items() if isinstance(value, model)), None)


RuleExpr = Annotated[
    Annotated[FeatureRule, Tag("feature")]
    | Annotated[NeedRule, Tag("need")]
    | Annotated[AgeAtLeast, Tag("age_at_least")]
    | Annotated[AgeBelow, Tag("age_below")]
    | Annotated[LanguageNot, Tag("language_not")]
    | Annotated[ContactPreference, Tag("contact_preference")]
    | Annotated[GapRule, Tag("gap")]
    | Annotated[AllOf, Tag("all")]
    | Annotated[AnyOf, Tag("any")]
    | Annotated[CountAtLeast, Tag("count_at_least")]
    | Annotated[Not, Tag("not")],
    Discriminator(
        _tag,
        custom_error_type="invalid_rule",
        custom_error_message=f"a rule needs one of the keys: {', '.join(_KINDS)}",
    ),
]

for _model in (AllOf, AnyOf, CountAtLeast, Not):
    _model.model_rebuild()


def referenced(rule: _Rule) -> Iterator[tuple[str, str]]:
    """``(kind, id)`` of every feature and gap a rule refers to, so loading can check them."""
    for leaf in rule.leaves():
        if isinstance(leaf, FeatureRule):
            yield "feature", leaf.feature
        elif isinstance(leaf, GapRule):
            yield "gap", leaf.gap
