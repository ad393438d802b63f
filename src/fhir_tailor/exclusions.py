"""Features that exclude each other must not share codes.

A feature may declare ``excludes: [feature ids]``: findings that cannot hold together (type 1 and
type 2 diabetes). A code in the value sets of both features, after each rule's ``excluding``, is
a mapping error: a record carrying it would make the patient both. :func:`check_exclusions`
finds those codes (and ``excludes`` naming no feature) so that loading the definitions fails
with the pair, each shared code and the rules and value sets it comes from.

A shared code is a conflict only where both rules can read *present* from one coding: two rules
reading the same questionnaire question through answer tables with no present answer in common
(lives alone / caregiver present on LOINC 85950-4), or the same measurement through value bands
whose present ranges do not meet, exclude each other by construction and are not reported. Every
other pairing of readings is reported, erring on the side of a report.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from .mapping import CodeIndex, Feature, Rule
from .terminology.valuesets import Concept

#: Shared codes listed per pair of features; the rest are counted.
MAX_LISTED_CODES = 10


class ExclusionError(ValueError):
    """``excludes`` names unknown features, or features that exclude each other share codes."""


@dataclass(frozen=True, slots=True)
class Source:
    """Where a feature gets a code: the rule and the value set holding it."""

    rule: Rule
    valueset: str

    def __str__(self) -> str:
        return f"{self.rule.id} ({self.valueset})"


@dataclass(frozen=True, slots=True)
class SharedCode:
    """A code both features of an exclusion match, and where each gets it."""

    concept: Concept
    first: tuple[Source, ...]
    second: tuple[Source, ...]

    @property
    def sources(self) -> str:
        """Where both features get the code, in words."""
        first = ", ".join(str(s) for s in self.first)
        second = ", ".join(str(s) for s in self.second)
        return f"in {first} and in {second}"

    def __str__(self) -> str:
        display = f' "{self.concept.display}"' if self.concept.display else ""
        return f"{self.concept.system}|{self.concept.code}{display}"


@dataclass(frozen=True, slots=True)
class Conflict:
    """Two features that exclude each other, and the codes they share."""

    first: str
    second: str
    codes: tuple[SharedCode, ...]

    def lines(self, limit: int = MAX_LISTED_CODES) -> list[str]:
        """The pair, then the shared codes under the rules and value sets they come from (a
        whole value set in both features makes one group), at most ``limit`` codes."""
        count = len(self.codes)
        lines = [f"{self.first} / {self.second}: {count} shared code{'s' if count > 1 else ''}"]
        groups: dict[str, list[SharedCode]] = {}
        for code in self.codes:
            groups.setdefault(code.sources, []).append(code)
        listed = 0
        for sources, codes in groups.items():
            if listed == limit:
                break
            lines.append(f"  {sources}:")
            lines += [f"    {code}" for code in codes[: limit - listed]]
            listed += min(len(codes), limit - listed)
        if count > listed:
            lines.append(f"  ... and {count - listed} more")
        return lines


def unknown_exclusions(index: CodeIndex) -> list[str]:
    """Problems with what ``excludes`` names: features that do not exist, or the feature itself."""
    problems = []
    for feature, _ in index.features.values():
        for name in feature.excludes:
            if name == feature.id:
                problems.append(f"feature {feature.id!r} excludes itself")
            elif name not in index.features:
                problems.append(f"feature {feature.id!r} excludes unknown feature {name!r}")
    return problems


def exclusion_pairs(index: CodeIndex) -> list[tuple[Feature, Feature]]:
    """Each pair of known features where one excludes the other, once, in declaration order."""
    pairs: dict[frozenset[str], tuple[Feature, Feature]] = {}
    for feature, _ in index.features.values():
        for name in feature.excludes:
            other = index.features.get(name)
            if other is not None and name != feature.id:
                pairs.setdefault(frozenset((feature.id, name)), (feature, other[0]))
    return list(pairs.values())


def conflicts(index: CodeIndex) -> list[Conflict]:
    """The codes shared by features that exclude each other, pair by pair.

    Each feature's codes are gathered once as a set of keys, and the rules and value sets are
    traced only for the codes two features share, so a clean check costs one set intersection
    per pair."""
    keys: dict[str, frozenset[tuple[str, str]]] = {}
    found = []
    for first, second in exclusion_pairs(index):
        for feature in (first, second):
            if feature.id not in keys:
                keys[feature.id] = frozenset(_codes(index, feature))
        common = keys[first.id] & keys[second.id]
        if not common:
            continue
        mine, theirs = _sources(index, first, common), _sources(index, second, common)
        shared = []
        for key in sorted(common):
            concept, ours = mine[key]
            other = theirs[key][1]
            first_sources = tuple(s for s in ours if any(_both(s.rule, o.rule) for o in other))
            second_sources = tuple(o for o in other if any(_both(s.rule, o.rule) for s in ours))
            if first_sources:
                shared.append(SharedCode(concept, first_sources, second_sources))
        if shared:
            found.append(Conflict(first.id, second.id, tuple(shared)))
    return found


def check_exclusions(index: CodeIndex) -> None:
    """Raise :class:`ExclusionError` listing every problem, or return when there is none."""
    problems = unknown_exclusions(index)
    found = conflicts(index)
    if found:
        problems.append(
            "features that exclude each other share codes (a record with one of them would make "
            "the patient both; take them out of one value set, or leave them out with the rule's "
            "'excluding'):"
        )
        problems += [f"  {line}" for conflict in found for line in conflict.lines()]
    if problems:
        raise ExclusionError("\n".join(problems))


def _matched(index: CodeIndex, rule: Rule) -> Iterator[tuple[str, Concept]]:
    """The codes a rule matches, each with the value set it comes from: its value sets'
    expansions less the ``excluding`` ones (a code in two of its value sets comes twice)."""
    left_out: set[tuple[str, str]] = set()
    for canonical in rule.excluding:
        left_out.update(concept.key for concept in _concepts(index, canonical))
    for canonical in rule.valuesets:
        for concept in _concepts(index, canonical):
            if concept.key not in left_out:
                yield canonical, concept


def _codes(index: CodeIndex, feature: Feature) -> Iterator[tuple[str, str]]:
    for rule in feature.rules:
        for _, concept in _matched(index, rule):
            yield concept.key


def _sources(
    index: CodeIndex, feature: Feature, wanted: frozenset[tuple[str, str]]
) -> dict[tuple[str, str], tuple[Concept, list[Source]]]:
    """Of the ``wanted`` codes, where the feature gets each (rule and value set)."""
    found: dict[tuple[str, str], tuple[Concept, list[Source]]] = {}
    for rule in feature.rules:
        for canonical, concept in _matched(index, rule):
            if concept.key in wanted:
                found.setdefault(concept.key, (concept, []))[1].append(Source(rule, canonical))
    return found


def _concepts(index: CodeIndex, canonical: str) -> tuple[Concept, ...]:
    valueset = index.library.find(canonical)
    return (valueset.concepts if valueset else None) or ()


def _both(first: Rule, second: Rule) -> bool:
    """Whether one coding can read present for both rules (see the module docstring)."""
    if first.answers is not None and second.answers is not None:
        return any(
            a.code == b.code and (a.system is None or b.system is None or a.system == b.system)
            for a in first.answers
            if a.status == "present"
            for b in second.answers
            if b.status == "present"
        )
    values = first.value, second.value
    if values[0] is not None and values[1] is not None and values[0].unit == values[1].unit:
        return any(
            low < high_b and low_b < high
            for low, high in _present_ranges(first)
            for low_b, high_b in _present_ranges(second)
        )
    return True


def _present_ranges(rule: Rule) -> Iterator[tuple[float, float]]:
    """The ranges ``[low, high)`` of numbers the rule's bands read present (a number falls in the
    first band, from the top, whose ``min`` it reaches)."""
    assert rule.value is not None
    high = float("inf")
    for band in rule.value.bands:
        low = band.min if band.min is not None else float("-inf")
        if band.status == "present" and low < high:
            yield low, high
        high = min(high, low)
