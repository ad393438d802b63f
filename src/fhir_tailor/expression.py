"""What the two rule translators share: a rule's meaning as a test, whatever the language.

A rule is published twice (:mod:`fhir_tailor.publish`): in FHIRPath over a record Bundle
(:mod:`fhir_tailor.fhirpath`) and in CQL in Patient context (:mod:`fhir_tailor.cql`), and both
must hold exactly when the Python evaluation does. So every decision about *what* is tested is
made here, once: which rule kind becomes which test, constants folded out of ``and``, ``or``,
``not`` and counts, which bands and answers reach a severity, which patients a rule's
``applies_to`` reads, which rules share a test, which observations a feature reads and how the
newest decides, when a reading is confirmed, what closes a gap. Made in each translator, every
fix would have to be made twice, and one made once would let the two publications disagree.

A :class:`Language` says only how each test is *written*; :mod:`fhir_tailor.fhirpath` and
:mod:`fhir_tailor.cql` each define one, and a :class:`RuleTranslator` that uses it. Where a test
reads the elements of a collection one at a time, CQL names the element with an alias (``X`` a
Coding, ``F`` the first answer found, ``N`` a number, ``K`` an Observation or a component, ``A``
an answer, ``I`` an item) and FHIRPath reads it as the focus: the ``alias`` arguments below are
what CQL writes and FHIRPath ignores.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import ClassVar, Literal

from .mapping import (
    SEVERITY_RANK,
    Answer,
    AppliesTo,
    Dimension,
    Feature,
    Rule,
    Severity,
    UnitConversion,
    ValueBands,
)
from .profile import GapDefinition, ProfileRules
from .profile_model import NEED_RANK, NeedLevel
from .questionnaire import LOINC
from .rules import (
    AgeAtLeast,
    AgeBelow,
    AllOf,
    AnyOf,
    ContactPreference,
    CountAtLeast,
    FeatureRule,
    FeatureStatus,
    GapRule,
    LanguageNot,
    NeedRule,
    Not,
    RuleExpr,
)
from .terminology.valuesets import Concept

#: The day of an observation without any date: older than every dated one.
UNDATED = "'0001-01-01'"
#: A LOINC code (digits, a hyphen, a check digit): questionnaire items are named by one.
LOINC_SHAPE = "[0-9]{1,8}-[0-9]"
_SEVERITIES: tuple[Severity, ...] = ("low", "moderate", "high")

Kind = Literal["observation", "component", "answer"]
"""Where a reading looks: an Observation, one of its components, or a questionnaire item's
answer. FHIRPath reads an Observation and its components in one go, as ``observation``."""

Mark = Literal["|1", "|0"]
"""How a day is marked: ``|1`` when a reading of it passes the feature's test, else ``|0``."""

Reading = str | None | bool
"""A test on a matched element: a criterion, ``None`` (always) or ``False`` (never)."""

Test = Callable[[Rule, Kind], Reading]
"""A rule's test on an element it matches: does it read present, is it readable at all."""

CodesOf = Callable[[Rule], Sequence[Concept]]
"""The codes a rule matches (its value sets' expansions): questionnaire items are named by code
text, which a value set test cannot reach."""


# -- text --------------------------------------------------------------------------------------


def string_literal(value: str) -> str:
    """A string as both languages write one: in single quotes, ``\\`` and ``'`` escaped."""
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def number_literal(value: float) -> str:
    """A decimal number, never in exponent notation (which neither language has)."""
    text = format(Decimal(repr(value)), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def any_of(criteria: Sequence[str]) -> str:
    """The criteria joined by ``or``, each in parentheses (a single one as it is)."""
    return criteria[0] if len(criteria) == 1 else " or ".join(f"({c})" for c in criteria)


def indent(text: str) -> str:
    """Every line of ``text`` two spaces further in."""
    return "\n".join("  " + line for line in text.split("\n"))


def units_as_is(bands: ValueBands) -> list[str]:
    """The units a reading is taken in as it is, in lower case: the bands' unit and its declared
    mislabels."""
    units = [bands.unit] if bands.unit else []
    return [u.lower() for u in (*units, *(m.unit for m in bands.mislabels))]


def converted(number: str, conversion: UnitConversion) -> str:
    """``number`` (in the conversion's unit) in the bands' unit: ``number * factor + offset``."""
    arithmetic = f"{number} * {number_literal(conversion.factor)}"
    if conversion.offset:
        arithmetic += f" + {number_literal(conversion.offset)}"
    return arithmetic


def _comment(text: str | None) -> str:
    return f"/* {text.replace('*/', '* /')} */ " if text else ""


# -- the tree of a rule ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Text:
    """A Boolean expression, with a comment naming what it tests (a feature, a gap)."""

    text: str
    comment: str | None = None


@dataclass(frozen=True, slots=True)
class Junction:
    op: Literal["and", "or"]
    items: tuple[Node, ...]
    comment: str | None = None


@dataclass(frozen=True, slots=True)
class Negation:
    item: Node


Node = Text | Junction | Negation
TRUE = Text("true")
FALSE = Text("false")


def junction(op: Literal["and", "or"], items: Iterable[Node], comment: str | None = None) -> Node:
    """``and``/``or`` of the items, constants folded away."""
    absorbing, neutral = (FALSE, TRUE) if op == "and" else (TRUE, FALSE)
    kept: list[Node] = []
    for item in items:
        if item == absorbing:
            return absorbing
        if item != neutral:
            kept.append(item)
    if not kept:
        return neutral
    if len(kept) == 1 and comment is None:
        return kept[0]
    return Junction(op, tuple(kept), comment)


def negation(item: Node) -> Node:
    if item in (TRUE, FALSE):
        return FALSE if item == TRUE else TRUE
    return Negation(item)


# -- readings ----------------------------------------------------------------------------------


def and_also(test: Test, condition: str | None) -> Test:
    """``test``, and ``condition`` (a Boolean on the record) besides it."""

    def both(rule: Rule, kind: Kind) -> Reading:
        reading = test(rule, kind)
        if condition is None or reading is False:
            return False if condition is None else reading
        if reading is None or reading is True:
            return condition
        return f"({reading}) and {condition}"

    return both


def deciding_answers(answers: Sequence[Answer], wanted: set[int]) -> list[tuple[Answer, list[str]]]:
    """The answers at the ``wanted`` indexes that decide some coding (the first answer of the
    table a coding matches decides it), each with the systems it must not match: those of
    earlier answers with its code, for an answer without a system."""
    deciding: list[tuple[Answer, list[str]]] = []
    for index in sorted(wanted):
        answer = answers[index]
        earlier = [a for a in answers[:index] if a.code == answer.code]
        if any(a.system is None or a.system == answer.system for a in earlier):
            continue  # an earlier answer decides every coding this one matches
        excluded = [a.system for a in earlier if a.system] if answer.system is None else []
        deciding.append((answer, excluded))
    return deciding


class Language(ABC):
    """How one expression language writes the tests: its syntax and its paths into the record.
    The concrete methods are the logic both languages share, written with the abstract ones."""

    #: The language's name, for errors.
    name: ClassVar[str]
    #: The alias a band criterion names its number by.
    number: ClassVar[str]
    #: ``%asOf`` as a day string.
    as_of_day: ClassVar[str]
    #: The patient's birth day string (within :meth:`patient_where`).
    birth_day: ClassVar[str]
    #: The codings a Condition is matched by, by code and by category.
    condition_codes: ClassVar[str]
    condition_categories: ClassVar[str]
    #: The codings an Encounter, a ServiceRequest and a requested medicine are matched by.
    encounter_codes: ClassVar[str]
    request_codes: ClassVar[str]
    medicine_codes: ClassVar[str]
    #: A QuestionnaireResponse's items (alias ``I``), their first answer (a list, alias ``A``),
    #: and a criterion on an item: it is answered.
    items: ClassVar[str]
    first_answer: ClassVar[str]
    answered: ClassVar[str]
    #: A list holding the number of distinct active medicines.
    medication_count: ClassVar[str]
    #: A criterion on an element: it has a result, or it is no panel that only groups members.
    any_result_test: ClassVar[str]

    # -- syntax

    @abstractmethod
    def one_of(self, path: str, values: Iterable[str]) -> str:
        """``path`` equals one of the (string) values."""

    @abstractmethod
    def union(self, collections: Sequence[str]) -> str:
        """The collections (lists) one under the other, as one."""

    @abstractmethod
    def negate(self, expression: str) -> str:
        """The negation of a Boolean (written as it is, around the text)."""

    @abstractmethod
    def one_if(self, rendered: str) -> str:
        """1 when a rendered rule holds, else 0 (a term of a count)."""

    @abstractmethod
    def some(self, collection: str, criterion: str, alias: str) -> str:
        """Some element of ``collection`` (named ``alias``) passes ``criterion``."""

    @abstractmethod
    def first_where(self, collection: str, criterion: str, alias: str) -> str:
        """A collection of the first element of ``collection`` that passes ``criterion``."""

    @abstractmethod
    def nonempty(self, collection: str) -> str:
        """``collection`` has an element."""

    @abstractmethod
    def as_of_minus(self, amount: int, unit: Literal["days", "years"]) -> str:
        """A day before ``%asOf``, as a day string (calendar arithmetic)."""

    # -- codes, answers, patients

    @abstractmethod
    def member_of(self, canonical: str, alias: str) -> str:
        """A Coding is a member of a value set (``url|version``)."""

    @abstractmethod
    def coding_field(self, alias: str, name: str) -> str:
        """The ``system`` or ``code`` of a Coding."""

    @abstractmethod
    def known(self, path: str) -> str:
        """``path`` has a value."""

    @abstractmethod
    def and_reading(self, matches: str, reading: str) -> str:
        """An element's codes match and its reading passes."""

    @abstractmethod
    def born_within(self, comparisons: Sequence[str]) -> str:
        """The birth date is known and its day passes every comparison."""

    @abstractmethod
    def born_unknown_or(self, comparisons: Sequence[str]) -> str:
        """The birth date is not known, or its day passes one of the comparisons."""

    @abstractmethod
    def gender_not(self, gender: str) -> str:
        """The patient's gender is not ``gender``."""

    @abstractmethod
    def patient_where(self, tests: Sequence[str]) -> str:
        """A criterion on the record: the patient passes every test."""

    @abstractmethod
    def language_not(self, primary: str) -> str:
        """The primary subtag of the patient's preferred language is not ``primary``."""

    @abstractmethod
    def contact_preference(self, system: str) -> str:
        """The patient's first ranked telecom is of ``system``."""

    # -- readings

    @abstractmethod
    def in_unit(self, bands: ValueBands, kind: Kind) -> str:
        """The numbers of an element, in the bands' unit, as a collection."""

    @abstractmethod
    def answer_codings(self, kind: Kind) -> str:
        """The codings an element answers with."""

    @abstractmethod
    def presence(self, kind: Kind) -> str:
        """A criterion on an element read by presence: it does not say absent."""

    # -- the observations of a feature

    @abstractmethod
    def observation_criterion(self, days: ObservationDays, test: Test) -> Reading:
        """A criterion on an Observation: one of the feature's Observation rules matches it or
        one of its components and ``test`` passes there; ``False`` when no rule can."""

    @abstractmethod
    def item_code_in(self, codes: Sequence[str]) -> str:
        """A questionnaire item (``I``) is named by one of the LOINC ``codes``."""

    @abstractmethod
    def marked(self, criterion: str) -> str:
        """A day's mark: ``|1`` when ``criterion`` holds, else ``|0``."""

    @abstractmethod
    def observations(self, readable: Reading, mark: str) -> str:
        """The marked days of usable Observations passing ``readable``."""

    @abstractmethod
    def questionnaires(self, readable: Reading, mark: str) -> str:
        """The marked days of completed QuestionnaireResponses passing ``readable``."""

    @abstractmethod
    def encounters(self, readable: str, mark: str) -> str:
        """The marked days of finished Encounters passing ``readable``."""

    @abstractmethod
    def service_requests(self, readable: str, mark: str) -> str:
        """The marked days of standing ServiceRequests passing ``readable``."""

    @abstractmethod
    def medicines(self, readable: str, mark: str) -> str:
        """The marked days of active MedicationRequests passing ``readable``."""

    @abstractmethod
    def medication_days(self, read: str, mark: str) -> str:
        """The marked day of the newest active MedicationRequest, when the record has one and
        ``read`` (``""``, or `` and (…)``) holds."""

    # -- rules

    @abstractmethod
    def active_conditions(self, criterion: str, since: str | None) -> str:
        """An active Condition passes ``criterion`` (and, with ``since``, is undated or of that
        day or later)."""

    @abstractmethod
    def newest_marked(self, days: str, mark: Mark | None, since: str | None) -> str:
        """The greatest of the ``days`` is marked ``mark`` (and, with ``since``, is of that day
        or later): ``|1``, a reading of the newest day passes the test the days are marked by;
        ``|0``, none does; ``None``, whatever the mark (days may be unmarked)."""

    @abstractmethod
    def confirmed(self, readings: str, days: int) -> str:
        """Over the marked ``readings``, the earliest present day after the newest absent one
        (``'0000-00-00'`` when none), plus ``days``, is on or before the newest day."""

    @abstractmethod
    def none_since(self, screenings: Sequence[str], since: str) -> str:
        """No day of the ``screenings`` is ``since`` or later."""

    # -- the logic both share

    def render(self, node: Node, depth: int = 0) -> str:
        """One operand per line, nested ones indented, comments naming features and gaps."""
        pad = "  " * depth
        if isinstance(node, Text):
            lines = f"{_comment(node.comment)}{node.text}".split("\n")
            return "\n".join(pad + line for line in lines)
        if isinstance(node, Negation):
            return pad + self.negate(f"\n{self.render(node.item, depth + 1)}\n{pad}")
        inner = "  " * (depth + 1)
        parts = [self.render(item, depth + 1) for item in node.items]
        parts[1:] = [f"{inner}{node.op} {part[len(inner) :]}" for part in parts[1:]]
        return f"{pad}{_comment(node.comment)}(\n" + "\n".join(parts) + f"\n{pad})"

    def counted(self, items: Sequence[Node]) -> str:
        """The number of the items that hold."""
        return "\n+ ".join(self.one_if(self.render(item, 1)) for item in items)

    def count_at_least(self, items: Sequence[Node], count: int) -> Node:
        """At least ``count`` of the items hold, constants folded away: the count of the others
        compared with what the constant items leave to reach."""
        needed = count - sum(1 for item in items if item == TRUE)
        left = [item for item in items if item not in (TRUE, FALSE)]
        if needed <= 0:
            return TRUE
        if needed > len(left):
            return FALSE
        if needed == len(left):
            return junction("and", left)
        if needed == 1:
            return junction("or", left)
        return Text(f"({self.counted(left)}) >= {needed}", f"at least {needed} of {len(left)}")

    def birth_day_where(self, *comparisons: str) -> str:
        """The patient's birth day is known and passes the comparisons."""
        day = self.birth_day
        return self.patient_where([self.born_within([f"{day} {c}" for c in comparisons])])

    def applies(self, scope: AppliesTo | None) -> str | None:
        """The patient is one a rule with ``applies_to`` reads (``None``: everyone). Without a
        birth date (or with one after ``%asOf``) the patient is read as an adult: a minimum age
        holds, a maximum does not; any gender but the opposite sex's holds."""
        if scope is None:
            return None
        tests = []
        day = self.birth_day
        at_least = (
            f"{day} <= {self.as_of_minus(scope.age_at_least, 'years')}"
            if scope.age_at_least is not None
            else None
        )
        if scope.age_below is not None:
            earliest = self.as_of_minus(scope.age_below, "years")
            bounds = [f"{day} <= {self.as_of_day}", f"{day} > {earliest}"]
            tests.append(self.born_within([*bounds, *filter(None, [at_least])]))
        elif at_least is not None:
            tests.append(self.born_unknown_or([f"{day} > {self.as_of_day}", at_least]))
        if scope.sex is not None:
            tests.append(self.gender_not("male" if scope.sex == "female" else "female"))
        return self.patient_where(tests)

    def scoped(self, rule: Rule, reading: Reading) -> Reading:
        """A rule's test on a matched element, limited to the patients the rule applies to."""
        applies = self.applies(rule.applies_to)
        if applies is None or reading is False:
            return reading
        if reading is None or reading is True:
            return applies
        return f"{applies} and ({reading})"

    def coding_criterion(self, rules: Iterable[Rule], alias: str) -> str:
        """A criterion on a Coding: it is a member of one of the rules' value sets (and of none
        of the value sets a rule excludes)."""
        tests = []
        for rule in rules:
            test = any_of([self.member_of(c, alias) for c in rule.valuesets])
            if rule.excluding:
                left_out = any_of([self.member_of(c, alias) for c in rule.excluding])
                test = f"({test}) and {self.negate(left_out)}"
            tests.append(test)
        return any_of(list(dict.fromkeys(tests)))

    def matched(self, rules: Sequence[Rule], tests: dict[str, Reading], path: str) -> list[str]:
        """``codes at path match and test``, one per distinct test (rules sharing a test share
        one)."""
        groups: dict[str | None, list[Rule]] = {}
        for rule in rules:
            test = tests[rule.id]
            if test is not False:
                groups.setdefault(test if isinstance(test, str) else None, []).append(rule)
        matches = {
            test: self.some(path, self.coding_criterion(grouped, "X"), "X")
            for test, grouped in groups.items()
        }
        return [self.and_reading(m, test) if test else m for test, m in matches.items()]

    def bands_reached(self, bands: ValueBands, wanted: set[int]) -> str | None:
        """A criterion on a number: it falls in a band at one of the ``wanted`` indexes (a
        number falls in the first band whose ``min`` it reaches); ``None`` if it never can."""
        intervals: list[tuple[float | None, float | None]] = []
        upper: float | None = None
        for index, band in enumerate(bands.bands):
            if band.min is not None and upper is not None and band.min >= upper:
                continue  # unreachable: an earlier band with the same minimum takes these values
            if index in wanted:
                if intervals and intervals[-1][0] == upper:
                    intervals[-1] = (band.min, intervals[-1][1])
                else:
                    intervals.append((band.min, upper))
            if band.min is None:
                break
            upper = band.min
        tests = []
        for low, high in intervals:
            parts = [f"{self.number} >= {number_literal(low)}"] if low is not None else []
            parts += [f"{self.number} < {number_literal(high)}"] if high is not None else []
            tests.append(" and ".join(parts) or "true")
        return any_of(tests) if tests else None

    def answers_criterion(self, answers: Sequence[tuple[Answer, Sequence[str]]], alias: str) -> str:
        """A criterion on a Coding: it matches one of the answers (an answer without a system
        matches any system but the ``excluded`` ones paired with it)."""
        groups: dict[tuple[str | None, tuple[str, ...]], list[str]] = {}
        for answer, excluded in answers:
            groups.setdefault((answer.system, tuple(excluded)), []).append(answer.code)
        system_path = self.coding_field(alias, "system")
        tests = []
        for (system, excluded), codes in groups.items():
            if system:
                test = f"{system_path} = {string_literal(system)}"
            else:
                test = self.known(system_path)
            if excluded:
                test += f" and {self.negate(self.one_of(system_path, excluded))}"
            tests.append(f"{test} and {self.one_of(self.coding_field(alias, 'code'), codes)}")
        return any_of(tests)

    def known_answer(self, answers: Sequence[Answer]) -> str:
        """A criterion on a Coding ``X``: it is one of the answers of the table."""
        return self.answers_criterion([(a, ()) for a in answers], "X")

    def readable(self, rule: Rule, kind: Kind) -> Reading:
        """When an element matched by ``rule`` has a usable result: one that reads present or
        absent. A band or answer of status ``unknown`` ("Don't know", a PRAPARE answer about
        another domain) is read, but says nothing: the profile passes over it as it does an
        unreadable result, so an older result decides and a screening gap stays open."""
        if rule.resource != "Observation":
            return None  # a finished Encounter and the medication count always read
        if rule.value is not None:
            bands = rule.value.bands
            numbers = self.in_unit(rule.value, kind)
            if all(band.status != "unknown" for band in bands):
                return self.nonempty(numbers)
            known = {n for n, band in enumerate(bands) if band.status != "unknown"}
            reached = self.bands_reached(rule.value, known)
            return False if reached is None else self.some(numbers, reached, self.number)
        if rule.answers is not None:
            answers = rule.answers
            codings = self.answer_codings(kind)
            if all(answer.status != "unknown" for answer in answers):
                return self.some(codings, self.known_answer(answers), "X")
            known = {n for n, answer in enumerate(answers) if answer.status != "unknown"}
            deciding = deciding_answers(answers, known)
            if not deciding:
                return False
            first = self.first_where(codings, self.known_answer(answers), "X")
            return self.some(first, self.answers_criterion(deciding, "F"), "F")
        return None

    def any_result(self, rule: Rule, kind: Kind) -> Reading:
        """When an element matched by ``rule`` is read at all, whatever its result (a gap closed
        by any result): every matched element but a panel that only groups its members."""
        if rule.resource != "Observation" or kind != "observation":
            return None
        return self.any_result_test

    def present(self, severity: Severity | None) -> Test:
        """The test that an element matched by a rule reads present with at least
        ``severity``."""
        rank = SEVERITY_RANK[severity]

        def test(rule: Rule, kind: Kind) -> Reading:
            if rule.value is not None:
                wanted = {
                    n
                    for n, band in enumerate(rule.value.bands)
                    if band.status == "present" and SEVERITY_RANK[band.severity] >= rank
                }
                reached = self.bands_reached(rule.value, wanted)
                if reached is None:
                    return False
                if rule.resource == "MedicationRequest":
                    return self.some(self.medication_count, reached, self.number)
                return self.some(self.in_unit(rule.value, kind), reached, self.number)
            if rule.answers is not None:
                chosen = {
                    n
                    for n, answer in enumerate(rule.answers)
                    if answer.status == "present" and SEVERITY_RANK[answer.severity] >= rank
                }
                deciding = deciding_answers(rule.answers, chosen)
                if not deciding:
                    return False
                codings = self.answer_codings(kind)
                first = self.first_where(codings, self.known_answer(rule.answers), "X")
                return self.some(first, self.answers_criterion(deciding, "F"), "F")
            if SEVERITY_RANK[rule.severity] < rank:
                return False
            if rule.resource != "Observation":
                return None
            return self.presence(kind)

        return test


# -- the observations of a feature -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ObservationDays:
    """The days of a feature's readable observations, as ``'YYYY-MM-DD'`` strings; with
    ``present`` each day is marked ``|1`` when that observation reads present (by that test)
    and ``|0`` when not, so that the greatest string is the newest day, present first."""

    language: Language
    feature: Feature
    codes: CodesOf
    present: Test | None
    #: Which matched elements count as read (``any_result`` for a gap closed by any result).
    readable: Test

    def days(self) -> str:
        """The collection, or ``""`` when the feature has no rule read from observations."""
        parts = [self._observations(), self._questionnaires(), self._encounters()]
        parts.append(self._medications())
        parts.append(self._service_requests())
        kept = [p for p in parts if p]
        return self.language.union(kept) if kept else ""

    def can_be_present(self) -> bool:
        """Whether some rule read from observations can pass the ``present`` test."""
        return self.present is not None and any(
            self.present(r, "observation") is not False
            for r in self.feature.rules
            if r.resource != "Condition"
        )

    def rules(self, resource: str, match: str = "code") -> list[Rule]:
        return [r for r in self.feature.rules if r.resource == resource and r.match == match]

    def _mark(self, criterion: Reading) -> str:
        if self.present is None:
            return ""
        if criterion is None or criterion is True:
            return " + '|1'"
        if criterion is False:
            return " + '|0'"
        return self.language.marked(criterion)

    def _observations(self) -> str:
        language = self.language
        readable = language.observation_criterion(self, self.readable)
        if readable is False:
            return ""
        present = language.observation_criterion(self, self.present) if self.present else None
        return language.observations(readable, self._mark(present))

    def _item_criterion(self, test: Test) -> Reading:
        language = self.language
        groups: dict[str | None, list[str]] = {}  # item codes per answer test
        for rule in self.rules("Observation"):
            reading = language.scoped(rule, test(rule, "answer"))
            codes = [c.code for c in self.codes(rule) if c.system == LOINC]
            codes = [c for c in codes if re.fullmatch(LOINC_SHAPE, c)]
            if reading is not False and codes:
                groups.setdefault(reading if isinstance(reading, str) else None, []).extend(codes)
        if not groups:
            return False
        criteria = [
            f"{language.item_code_in(codes)} and "
            + (language.some(language.first_answer, reading, "A") if reading else language.answered)
            for reading, codes in groups.items()
        ]
        return language.some(language.items, any_of(criteria), "I")

    def _questionnaires(self) -> str:
        readable = self._item_criterion(self.readable)
        if readable is False:
            return ""
        mark = self._mark(self._item_criterion(self.present) if self.present else None)
        return self.language.questionnaires(readable, mark)

    def _coded(self, rules: Sequence[Rule], path: str) -> tuple[str, str]:
        """For resources matched by code at ``path`` (Encounters, requests, medicines): the
        criterion that one is read by some rule, and its present mark (``""`` without a test)."""
        language = self.language
        readable = {r.id: language.scoped(r, None) for r in rules}
        mark = ""
        if self.present is not None:
            present = {r.id: language.scoped(r, self.present(r, "observation")) for r in rules}
            criterion: Reading = False
            if present == readable:
                criterion = None
            elif criteria := language.matched(rules, present, path):
                criterion = any_of(criteria)
            mark = self._mark(criterion)
        return any_of(language.matched(rules, readable, path)), mark

    def _encounters(self) -> str:
        rules = self.rules("Encounter")
        if not rules:
            return ""
        return self.language.encounters(*self._coded(rules, self.language.encounter_codes))

    def _service_requests(self) -> str:
        """Standing requests (active or completed, intent not proposal) whose code is in a
        rule's value sets, each by its ``authoredOn`` day."""
        rules = self.rules("ServiceRequest")
        if not rules:
            return ""
        return self.language.service_requests(*self._coded(rules, self.language.request_codes))

    def _medications(self) -> str:
        parts = [self._medication_count(), self._medicines()]
        kept = [p for p in parts if p]
        return self.language.union(kept) if kept else ""

    def _medicines(self) -> str:
        """Active requests for a medicine in a presence rule's value sets, each by its day."""
        rules = [r for r in self.rules("MedicationRequest") if r.value is None]
        if not rules:
            return ""
        return self.language.medicines(*self._coded(rules, self.language.medicine_codes))

    def _medication_count(self) -> str:
        rules = [r for r in self.rules("MedicationRequest") if r.value is not None]
        if not rules:
            return ""
        language = self.language
        mark = ""
        if self.present is not None:
            tests = [language.scoped(r, self.present(r, "observation")) for r in rules]
            criteria = [t for t in tests if isinstance(t, str)]
            mark = self._mark(any_of(criteria) if criteria else False)
        scopes = [language.scoped(r, None) for r in rules]
        read = "" if None in scopes else f" and ({any_of([str(t) for t in scopes])})"
        return language.medication_days(read, mark)


# -- rules -------------------------------------------------------------------------------------


class RuleTranslator:
    """Translates rules into ``language``, reading the feature mappings, dimension policy and
    data gaps of ``rules``: the definitions the profile builder reads."""

    def __init__(self, rules: ProfileRules, language: Language) -> None:
        self._rules = rules
        self._gaps = {gap.id: gap for gap in rules.gaps}
        self._language = language

    def expression(self, rule: RuleExpr) -> str:
        """The expression that is true exactly when ``rule.evaluate(profile).holds``, on its
        own (every feature written out where it is tested)."""
        return self._language.render(self._node(rule, gaps_known=True))

    def _named(self, name: str, node: Node) -> Node:
        """``node``, which a language with named expressions may state once under ``name``."""
        return node

    def _named_list(self, name: str, expression: str) -> str:
        """A list ``expression``, which a language with named expressions may state once under
        ``name``; here in parentheses, one line of its own."""
        return f"(\n{indent(expression)}\n)"

    def _node(self, rule: RuleExpr, *, gaps_known: bool) -> Node:
        language = self._language
        if isinstance(rule, FeatureRule):
            return self._feature(rule.feature, rule.severity_at_least, rule.status)
        if isinstance(rule, NeedRule):
            return self._need(rule.need, rule.at_least)
        if isinstance(rule, AgeAtLeast):
            latest = language.as_of_minus(rule.age_at_least, "years")
            return Text(language.birth_day_where(f"<= {latest}"))
        if isinstance(rule, AgeBelow):
            earliest = language.as_of_minus(rule.age_below, "years")
            return Text(language.birth_day_where(f"> {earliest}", f"<= {language.as_of_day}"))
        if isinstance(rule, LanguageNot):
            return Text(language.language_not(rule.language_not.split("-")[0].lower()))
        if isinstance(rule, ContactPreference):
            return Text(language.contact_preference(rule.contact_preference))
        if isinstance(rule, GapRule):
            gap = self._gaps.get(rule.gap)
            # a gap's own rule is evaluated before gaps exist: gap references in it are false
            return self._gap(gap) if gap is not None and gaps_known else FALSE
        if isinstance(rule, AllOf):
            return junction("and", (self._node(r, gaps_known=gaps_known) for r in rule.all))
        if isinstance(rule, AnyOf):
            return junction("or", (self._node(r, gaps_known=gaps_known) for r in rule.any))
        if isinstance(rule, CountAtLeast):
            nodes = [self._node(r, gaps_known=gaps_known) for r in rule.of]
            return language.count_at_least(nodes, rule.count_at_least)
        if isinstance(rule, Not):
            return negation(self._node(rule.not_, gaps_known=gaps_known))
        raise TypeError(f"no {language.name} translation for {type(rule).__name__}")

    def _feature(
        self, feature_id: str, severity: Severity | None, status: FeatureStatus = "present"
    ) -> Node:
        """The finding is current and has ``status``, as :class:`~fhir_tailor.rules.FeatureRule`
        reads it: ``present`` at least ``severity``; ``absent``, no current diagnosis and the
        newest readable result says absent; ``recorded``, either. An absent finding has no
        severity: with one, ``absent`` never holds and ``recorded`` is ``present``."""
        entry = self._rules.index.features.get(feature_id)
        if entry is None or (status == "absent" and severity is not None):
            return FALSE
        feature = entry[0]
        if severity is not None:
            status = "present"
        label = f"feature {feature_id}" + (f", {status}" if status != "present" else "")
        label += f", {severity} or graver" if severity else ""
        if status == "absent":
            undiagnosed = negation(self._diagnosed(feature, None))
            node = junction("and", (undiagnosed, self._observed_absent(feature)), label)
        else:
            diagnosed = self._diagnosed(feature, severity)
            observed = (
                self._observed(feature, severity)
                if status == "present"
                else self._observed_recorded(feature)
            )
            node = junction("or", (diagnosed, observed), label)
        return self._named(label, node)

    def _need(self, dimension: Dimension, at_least: NeedLevel) -> Node:
        rank = NEED_RANK[at_least]
        if rank == 0:
            return TRUE
        features = [f for f, (_, owner) in self._rules.index.features.items() if owner == dimension]
        reaching = [self._feature(f, _SEVERITIES[rank - 1]) for f in features]
        definition = self._rules.dimensions.get(dimension)
        escalate = definition.escalate_at_count if definition else None
        if at_least == "high" and escalate is not None:
            counted = [n for f in features if (n := self._feature(f, "moderate")) != FALSE]
            if len(counted) >= escalate:
                label = f"{escalate} or more moderate findings"
                terms = self._language.counted(counted)
                reaching.append(Text(f"({terms}) >= {escalate}", label))
        return junction("or", reaching, f"need {dimension} at least {at_least}")

    def _gap(self, gap: GapDefinition) -> Node:
        language = self._language
        read = language.any_result if gap.any_result_closes else language.readable
        screenings = [
            days
            for feature_id in gap.features
            if (entry := self._rules.index.features.get(feature_id)) is not None
            and (days := self._days(entry[0], None, read).days())
        ]
        when = TRUE if gap.when is None else self._node(gap.when, gaps_known=False)
        recent = TRUE
        if screenings:
            since = language.as_of_minus(gap.within_days, "days")
            recent = Text(language.none_since(screenings, since), "no recent screening")
        return self._named(f"gap {gap.id}", junction("and", (when, recent), f"gap {gap.id}"))

    def _days(self, feature: Feature, present: Test | None, readable: Test) -> ObservationDays:
        return ObservationDays(self._language, feature, self._rules.index.codes, present, readable)

    def _diagnosed(self, feature: Feature, severity: Severity | None) -> Node:
        """An active Condition matches one of the feature's rules of at least ``severity`` (and,
        for a feature whose diagnoses expire, is undated or recent enough)."""
        language = self._language
        rules = [
            r
            for r in feature.rules
            if r.resource == "Condition" and SEVERITY_RANK[r.severity] >= SEVERITY_RANK[severity]
        ]
        tests: dict[str, Reading] = {r.id: language.scoped(r, None) for r in rules}
        by_code = [r for r in rules if r.match == "code"]
        by_category = [r for r in rules if r.match == "category"]
        criteria = language.matched(by_code, tests, language.condition_codes)
        criteria += language.matched(by_category, tests, language.condition_categories)
        if not criteria:
            return FALSE
        since = None
        if feature.conditions_current_for_days is not None:
            since = language.as_of_minus(feature.conditions_current_for_days, "days")
        return Text(language.active_conditions(any_of(criteria), since))

    def _observed(self, feature: Feature, severity: Severity | None) -> Node:
        """The newest readable observation of the feature reads present with at least
        ``severity``, and is current: the greatest marked day ends in ``|1`` and is recent
        enough.

        For a feature with ``confirmed_after_days`` each Observation rule is a criterion of its
        own (its newest reading decides for it, present only when confirmed), and the feature
        holds when one of them does."""
        present = self._language.present
        if feature.confirmed_after_days is None:
            return self._newest_present(feature, present(severity))
        criteria = []
        for rule in feature.rules:
            if rule.resource == "Observation":
                single = feature.model_copy(update={"rules": [rule]})
                confirmed = self._confirmed(single, feature.confirmed_after_days)
                reads = and_also(present(severity), confirmed)
                criteria.append(self._newest_present(single, reads))
        return junction("or", criteria)

    def _observed_absent(self, feature: Feature) -> Node:
        """The newest readable observations of the feature all read absent, and are current:
        the greatest day, marked by the present test at any severity, ends in ``|0``.

        For a feature with ``confirmed_after_days`` each Observation rule is a criterion of its
        own and the gravest current one decides: absent when one rule's newest reading is, and
        no rule's newest reads present, confirmed or not (an unconfirmed present reading is
        pending, which outranks absent)."""
        present = self._language.present(None)
        if feature.confirmed_after_days is None:
            return self._newest(feature, present, "|0")
        singles = [
            feature.model_copy(update={"rules": [rule]})
            for rule in feature.rules
            if rule.resource == "Observation"
        ]
        absent = junction("or", (self._newest(single, present, "|0") for single in singles))
        presents = (negation(self._newest(single, present, "|1")) for single in singles)
        return junction("and", (absent, *presents))

    def _observed_recorded(self, feature: Feature) -> Node:
        """The newest readable observation of the feature reads present or absent, and is
        current. Without ``confirmed_after_days`` every readable observation reads one or the
        other, so the newest readable day need only be current (one list of days, not two);
        with it, a pending reading may decide (the finding is then unknown), so the two are
        spelt out."""
        if feature.confirmed_after_days is None:
            return self._newest(feature, None, None)
        return junction("or", (self._observed(feature, None), self._observed_absent(feature)))

    def _newest_present(self, feature: Feature, present: Test) -> Node:
        """The newest readable observation of the feature reads present by ``present``."""
        if not self._days(feature, present, self._language.readable).can_be_present():
            return FALSE
        return self._newest(feature, present)

    def _newest(self, feature: Feature, present: Test | None, mark: Mark | None = "|1") -> Node:
        """The greatest of the feature's readable observation days, marked by ``present`` (or
        unmarked), is marked ``mark`` (or whatever its mark) and current; ``false`` when the
        feature reads no observation."""
        language = self._language
        days = self._days(feature, present, language.readable).days()
        if not days:
            return FALSE
        since = None
        if feature.current_for_days is not None:
            since = language.as_of_minus(feature.current_for_days, "days")
        return Text(language.newest_marked(days, mark, since))

    def _confirmed(self, feature: Feature, days: int) -> str | None:
        """A Boolean: the feature's one Observation rule has read present without a break for
        at least ``days``. ``None`` when the rule reads nothing."""
        language = self._language
        marked = self._days(feature, language.present(None), language.readable).days()
        if not marked:
            return None
        readings = self._named_list(f"readings {feature.id} {feature.rules[0].id}", marked)
        return language.confirmed(readings, days)
