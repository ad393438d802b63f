"""Rules as CQL expressions, so a standard clinical reasoning engine can apply a published module.

:mod:`fhir_tailor.fhirpath` states a rule over a collection Bundle of the patient's record. A
clinical reasoning engine (HAPI FHIR's ``PlanDefinition/$apply``, cqf-fhir-cr) has no such
Bundle: it evaluates a condition in the patient's context and reads the record from its own
server. FHIRPath cannot search a server, but CQL can (a *retrieve*, ``[Observation]``, is the
patient's Observations), and ``text/cql-expression`` is the language those engines evaluate
(HL7 Using CQL with FHIR, Expression languages; CPG ``cpg-computablePlanDefinition``). So each
condition is published twice, equivalently (:mod:`fhir_tailor.publish`): a define of a CQL
Library (:func:`library`, :meth:`Translator.defines`) named by the condition, the FHIRPath beside
it in the ``cqf-alternativeExpression`` extension.

**Evaluation context.** ``context Patient`` (a retrieve is the patient's resources of that type,
``Patient`` the patient) with FHIRHelpers, and one parameter: ``%asOf``, a ``Date``, the day the
plan is made for (given to ``$apply`` in its ``parameters`` as ``%asOf``). HAPI FHIR 8.8.0 with
cqf-fhir-cr 4.4.0 agrees with the Python evaluation on every module for the 237 patients of
scripts/compare-apply (docs/benchmarks.md). The result is a single Boolean, never null: every
test that may meet a missing element is made inside ``exists``/``where`` or with ``is true``/
``is false``.

**Translation.** The semantics are those of :mod:`fhir_tailor.fhirpath`, read there: active
Conditions by value set (``X in System.ValueSet { id, version }`` on each Coding), the newest
readable observation of a feature deciding (days written ``'YYYY-MM-DD'`` marked ``|1``/``|0``,
the greatest wins), recency windows, value bands with declared unit conversions and mislabels,
answer tables, ``applies_to`` scopes, ages against ``%asOf - N years``, gaps, counts,
confirmation over time, language and contact preference. The construction follows the FHIRPath
one fragment by fragment, so that the two can be compared side by side.

**Known differences from the FHIRPath** (besides those it has from Python):

- Questionnaire items are read to three levels of nesting (an item, its items and its answers'
  items, and theirs): CQL has no ``repeat()``.
- A day is the written date's first ten characters as the engine prints its date (CQL
  ``ToString``), which keeps the date's own offset.
- The panel that dates an undated member is the first such panel the server returns, not the
  first in the record's order.
- ``valueDecimal`` on an Observation is not an R4 choice: CQL does not read it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from .mapping import (
    SEVERITY_RANK,
    Answer,
    AppliesTo,
    Dimension,
    Feature,
    Rule,
    Severity,
    ValueBands,
)
from .profile import (
    ACTIVE_CLINICAL,
    NEGATIVE_INTERPRETATION,
    STANDING_REQUEST,
    VOID_OBSERVATION,
    VOID_VERIFICATION,
    GapDefinition,
    ProfileRules,
)
from .profile_model import NEED_RANK, NeedLevel
from .questionnaire import LOINC, USABLE_STATUSES
from .rules import (
    AgeAtLeast,
    AgeBelow,
    AllOf,
    AnyOf,
    ContactPreference,
    CountAtLeast,
    FeatureRule,
    GapRule,
    LanguageNot,
    NeedRule,
    Not,
    RuleExpr,
)
from .terminology.units import SPELLINGS
from .terminology.valuesets import Concept

#: ``Expression.language`` of the translations (an inline CQL expression, as CPG names it).
LANGUAGE = "text/cql-expression"
#: True unless the patient is recorded as deceased (``deceased[x]`` present and not the boolean
#: false): the CQL twin of :data:`fhir_tailor.fhirpath.NOT_DECEASED`.
NOT_DECEASED = "Patient.deceased is null or (Patient.deceased as FHIR.boolean).value is false"
_UNDATED = "'0001-01-01'"
_LOINC_SHAPE = "[0-9]{1,8}-[0-9]"
_SEVERITIES: tuple[Severity, ...] = ("low", "moderate", "high")
_UCUM = "http://unitsofmeasure.org"

Kind = Literal["observation", "component", "answer"]
"""Where a reading looks: an Observation, one of its components, or a questionnaire answer."""

Reading = str | None | bool
"""A test on a matched element: a CQL criterion, ``None`` (always) or ``False`` (never)."""

CodesOf = Callable[[Rule], Sequence[Concept]]
"""The codes a rule matches (its value sets' expansions): questionnaire items are named by code
text, which a value set test cannot reach."""

#: The alias a reading test reads its element by, per kind.
_ELEMENT: dict[Kind, str] = {"observation": "K", "component": "K", "answer": "A"}


# -- literals and dates ------------------------------------------------------------------------


def _string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def _one_of(path: str, values: Iterable[str]) -> str:
    """``path = 'a'`` or ``path in {'a', 'b'}``."""
    unique = list(dict.fromkeys(values))
    if len(unique) == 1:
        return f"{path} = {_string(unique[0])}"
    return f"{path} in {{{', '.join(_string(v) for v in unique)}}}"


def _number(value: float) -> str:
    """A CQL number literal (never in exponent notation, which CQL lacks)."""
    text = format(Decimal(repr(value)), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _any_of(criteria: Sequence[str]) -> str:
    return criteria[0] if len(criteria) == 1 else " or ".join(f"({c})" for c in criteria)


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.split("\n"))


def _union(collections: Sequence[str]) -> str:
    """The lists one under the other, joined by ``union``."""
    if len(collections) == 1:
        return collections[0]
    parts = [f"({c})" for c in collections]
    return "(\n" + _indent("\nunion ".join(parts)) + "\n)"


def _day(value: str) -> str:
    """The day a Date or DateTime is written for, as ``'YYYY-MM-DD'`` (a partial date filled in
    with the first month and day), which sorts as the days do; null for a null value."""
    return f"Substring(ToString({value}) + '-01-01', 0, 10)"


def _day_or_undated(value: str) -> str:
    return f"Coalesce({_day(value)}, {_UNDATED})"


def _as_of_minus(amount: int, unit: Literal["days", "years"]) -> str:
    """A day before ``%asOf``, as a day string (calendar arithmetic, as in FHIRPath)."""
    return f"ToString(%asOf - {amount} {unit})"


def _valueset(canonical: str) -> str:
    """A value set as CQL names one: its url, and the version after ``|``."""
    url, _, version = canonical.partition("|")
    pinned = f", version: {_string(version)}" if version else ""
    return f"System.ValueSet {{ id: {_string(url)}{pinned} }}"


# -- the record --------------------------------------------------------------------------------


def _codings_where(path: str, test: str, alias: str = "X") -> str:
    return f"exists (({path}) {alias} where {test})"


_CONDITION_HOLDS = (
    "not "
    + _codings_where(
        "R.verificationStatus.coding",
        f"X.system.value is not null and {_one_of('X.code.value', sorted(VOID_VERIFICATION))}",
    )
    + "\n  and ((not "
    + _codings_where(
        "R.clinicalStatus.coding", "X.system.value is not null and X.code.value is not null"
    )
    + "\n      and R.abatement is null)\n    or "
    + _codings_where(
        "R.clinicalStatus.coding",
        f"X.system.value is not null and {_one_of('X.code.value', sorted(ACTIVE_CLINICAL))}",
    )
    + ")"
)
#: A Condition's day: its onset (dateTime or Period start), else ``recordedDate``.
_CONDITION_DAY = (
    "Coalesce((R.onset as FHIR.dateTime).value, (R.onset as FHIR.Period).start.value,"
    " R.recordedDate.value)"
)
_OBSERVATION_USABLE = f"({_one_of('R.status.value', sorted(VOID_OBSERVATION))}) is not true"


def _own_date(alias: str) -> str:
    """An Observation's own date: ``effective[x]`` (dateTime, instant, Period start), else
    ``issued``."""
    return (
        f"Coalesce(({alias}.effective as FHIR.dateTime).value,"
        f" ({alias}.effective as FHIR.instant).value,"
        f" ({alias}.effective as FHIR.Period).start.value, {alias}.issued.value)"
    )


_OBSERVATION_REF = "'^(.*/)?Observation/([^/]+)/*(/_history/.*)?$'"
#: An Observation's day: its own date, else that of the first dated panel listing it in
#: ``hasMember``, else undated.
_OBSERVATION_DAY = (
    f"Coalesce({_day(_own_date('R'))},\n"
    f"  First([Observation] P where {_own_date('P')} is not null\n"
    "    and exists (P.hasMember M where ReplaceMatches(M.reference.value, "
    f"{_OBSERVATION_REF}, 'Observation/$2') = 'Observation/' + R.id.value)\n"
    f"    return {_day(_own_date('P'))}),\n"
    f"  {_UNDATED})"
)


def _active_medications(alias: str) -> str:
    return (
        f"[MedicationRequest] {alias} where {alias}.status.value = 'active'"
        f" and ({alias}.intent.value = 'proposal') is not true"
    )


_STANDING_REQUESTS = (
    f"[ServiceRequest] R where {_one_of('R.status.value', sorted(STANDING_REQUEST))}"
    " and (R.intent.value = 'proposal') is not true"
)
_CODED_MEDICINE = (
    "(Q.medication as FHIR.CodeableConcept).coding X"
    " where X.system.value is not null and X.code.value is not null"
)
_MEDICATION_REF = "'^(.*/)?Medication/([^/]+)/*(/_history/.*)?$'"
_MEDICATION_REFERENCE = "(Q.medication as FHIR.Reference).reference.value"
#: What an active MedicationRequest ``Q`` prescribes: its first coding, else its Medication,
#: else itself.
_MEDICINE = (
    f"if exists ({_CODED_MEDICINE})\n"
    f"  then First({_CODED_MEDICINE} return all X.system.value + '|' + X.code.value)\n"
    f"  else if Matches({_MEDICATION_REFERENCE}, {_MEDICATION_REF})\n"
    f"    then ReplaceMatches({_MEDICATION_REFERENCE}, {_MEDICATION_REF}, 'Medication/$2')\n"
    "    else 'MedicationRequest/' + Q.id.value"
)
_MEDICATION_COUNT = (
    f"Count(({_active_medications('Q')}\n  return (\n{_indent(_indent(_MEDICINE))}\n  )))"
)
_MEDICATION_DAY = (
    f"Coalesce(Max({_active_medications('Q')} return {_day('Q.authoredOn.value')}), {_UNDATED})"
)
#: The codings of the medicine an active MedicationRequest ``R`` asks for: its CodeableConcept,
#: else, for a local (``#``) reference, the code of the Medications it contains.
_REQUESTED_MEDICINE = (
    "if R.medication is FHIR.CodeableConcept then (R.medication as FHIR.CodeableConcept).coding\n"
    "  else if StartsWith((R.medication as FHIR.Reference).reference.value, '#')\n"
    "    then Flatten(R.contained C where C is FHIR.Medication"
    " return all (C as FHIR.Medication).code.coding)\n"
    "    else null"
)


def _numbers(kind: Kind) -> tuple[str, list[str]]:
    """The element's Quantity and its bare numbers (integer, and decimal in an answer)."""
    alias = _ELEMENT[kind]
    bare = [f"ToDecimal(({alias}.value as FHIR.integer).value)"]
    if kind == "answer":
        bare.append(f"({alias}.value as FHIR.decimal).value")
    return f"({alias}.value as FHIR.Quantity)", bare


# -- codes -------------------------------------------------------------------------------------


def _coding_criterion(rules: Iterable[Rule], alias: str = "X") -> str:
    """A criterion on a Coding: it is a member of one of the rules' value sets (and of none of
    the value sets a rule excludes)."""
    tests = []
    for rule in rules:
        test = _any_of([f"{alias} in {_valueset(c)}" for c in rule.valuesets])
        if rule.excluding:
            left_out = _any_of([f"{alias} in {_valueset(c)}" for c in rule.excluding])
            test = f"({test}) and not ({left_out})"
        tests.append(test)
    return _any_of(list(dict.fromkeys(tests)))


def _concept_matches(path: str, rules: Iterable[Rule]) -> str:
    return _codings_where(path, _coding_criterion(rules))


def _item_code_in(codes: Sequence[str]) -> str:
    """A questionnaire item ``I`` names one of ``codes``: by the last ``/`` segment of its
    ``linkId`` when that is a LOINC code, else by the last ``#`` or ``/`` segment of its
    ``definition``."""
    link = f"Matches(I.linkId.value, '^(.*/)?{_LOINC_SHAPE}/*$')"
    named = f"if {link} then I.linkId.value else I.definition.value"
    return _one_of(f"ReplaceMatches({named}, '^(.*[#/])?([^#/]*)/*$', '$2')", codes)


def _matched(rules: Sequence[Rule], tests: dict[str, Reading], path: str) -> list[str]:
    """``codes match and test``, one per distinct test (rules sharing a test share one)."""
    groups: dict[str | None, list[Rule]] = {}
    for rule in rules:
        test = tests[rule.id]
        if test is not False:
            groups.setdefault(test if isinstance(test, str) else None, []).append(rule)
    return [
        f"{_concept_matches(path, grouped)} and ({test})"
        if test
        else _concept_matches(path, grouped)
        for test, grouped in groups.items()
    ]


def _applies(scope: AppliesTo | None) -> str | None:
    """The patient is one a rule with ``applies_to`` reads (``None``: everyone), as in
    :func:`fhir_tailor.fhirpath._applies`."""
    if scope is None:
        return None
    tests = []
    day = _day("Patient.birthDate.value")
    at_least = (
        f"{day} <= {_as_of_minus(scope.age_at_least, 'years')}"
        if scope.age_at_least is not None
        else None
    )
    if scope.age_below is not None:
        bounds = [f"{day} <= ToString(%asOf)", f"{day} > {_as_of_minus(scope.age_below, 'years')}"]
        tests.append(f"({' and '.join([*bounds, *filter(None, [at_least])])}) is true")
    elif at_least is not None:
        tests.append(
            f"(Patient.birthDate.value is null or {day} > ToString(%asOf) or {at_least}) is true"
        )
    if scope.sex is not None:
        other = "male" if scope.sex == "female" else "female"
        tests.append(f"(Patient.gender.value = {_string(other)}) is not true")
    return " and ".join(tests)


def _scoped(rule: Rule, reading: Reading) -> Reading:
    """A rule's test on a matched element, limited to the patients the rule applies to."""
    applies = _applies(rule.applies_to)
    if applies is None or reading is False:
        return reading
    if reading is None or reading is True:
        return applies
    return f"{applies} and ({reading})"


# -- readings ----------------------------------------------------------------------------------


def _quantity_unit(quantity: str) -> str:
    """A Quantity's unit as the Python reader takes it: the UCUM ``code``, else the free text
    ``unit``, else a code of another system; spellings that are no UCUM code (``mmHg``) as the
    one they mean; in lower case."""
    unit = (
        f"if {quantity}.system.value = '{_UCUM}' and {quantity}.code.value is not null"
        f" then {quantity}.code.value else Coalesce({quantity}.unit.value, {quantity}.code.value)"
    )
    for seen, ucum in SPELLINGS.items():
        pattern = "".join(f"\\\\{c}" if not c.isalnum() and c != " " else c for c in seen)
        unit = f"ReplaceMatches({unit}, '{pattern}', {_string(ucum)})"
    return f"Lower({unit})"


def _in_unit(bands: ValueBands, kind: Kind) -> str:
    """The numbers of a reading expressed in the bands' unit, as a list (nulls for what does not
    apply): a Quantity in that unit (or in none) or in a declared mislabel of it as it is, one
    in a declared conversion's unit converted, and a bare number as it is."""
    quantity, bare = _numbers(kind)
    if not bands.unit:
        return "({" + ", ".join([f"{quantity}.value.value", *bare]) + "})"
    unit = _quantity_unit(quantity)
    same = [u.lower() for u in (bands.unit, *(m.unit for m in bands.mislabels))]
    parts = [f"if {unit} is null or {_one_of(unit, same)} then {quantity}.value.value else null"]
    for conversion in bands.conversions:
        arithmetic = f"{quantity}.value.value * {_number(conversion.factor)}"
        if conversion.offset:
            arithmetic += f" + {_number(conversion.offset)}"
        parts.append(f"if {unit} = {_string(conversion.from_.lower())} then {arithmetic} else null")
    return "({\n" + _indent(",\n".join([*parts, *bare])) + "\n})"


def _bands_reached(bands: ValueBands, wanted: set[int]) -> str | None:
    """A criterion on a number ``N``: it falls in a band at one of the ``wanted`` indexes (a
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
        parts = [f"N >= {_number(low)}"] if low is not None else []
        parts += [f"N < {_number(high)}"] if high is not None else []
        tests.append(" and ".join(parts) or "true")
    return _any_of(tests) if tests else None


def _answer_codings(kind: Kind) -> str:
    if kind == "answer":
        return "{A.value as FHIR.Coding}"
    return "(K.value as FHIR.CodeableConcept).coding"


def _answers_criterion(answers: Sequence[tuple[Answer, Sequence[str]]], alias: str) -> str:
    """A criterion on a Coding: it matches one of the answers (an answer without a system
    matches any system but the ``excluded`` ones paired with it)."""
    groups: dict[tuple[str | None, tuple[str, ...]], list[str]] = {}
    for answer, excluded in answers:
        groups.setdefault((answer.system, tuple(excluded)), []).append(answer.code)
    tests = []
    for (system, excluded), codes in groups.items():
        system_path = f"{alias}.system.value"
        test = f"{system_path} = {_string(system)}" if system else f"{system_path} is not null"
        if excluded:
            test += f" and not ({_one_of(system_path, excluded)})"
        tests.append(f"{test} and {_one_of(f'{alias}.code.value', codes)}")
    return _any_of(tests)


def _known_answer(answers: Sequence[Answer], alias: str = "X") -> str:
    return _answers_criterion([(a, ()) for a in answers], alias)


def _deciding_answer(answers: Sequence[Answer], wanted: set[int]) -> str | None:
    """A criterion on a Coding ``F``: the first answer of the table it matches is at a
    ``wanted`` index."""
    deciding: list[tuple[Answer, Sequence[str]]] = []
    for index in sorted(wanted):
        answer = answers[index]
        earlier = [a for a in answers[:index] if a.code == answer.code]
        if any(a.system is None or a.system == answer.system for a in earlier):
            continue  # an earlier answer decides every coding this one matches
        excluded = [a.system for a in earlier if a.system] if answer.system is None else []
        deciding.append((answer, excluded))
    return _answers_criterion(deciding, "F") if deciding else None


def _readable(rule: Rule, kind: Kind) -> Reading:
    """When an element matched by ``rule`` has a usable result."""
    if rule.resource != "Observation":
        return None  # a finished Encounter and the medication count always read
    if rule.value is not None:
        return f"exists {_in_unit(rule.value, kind)}"
    if rule.answers is not None:
        return _codings_where(_answer_codings(kind), _known_answer(rule.answers))
    return None


def _any_result(rule: Rule, kind: Kind) -> Reading:
    """When an element matched by ``rule`` is read at all, whatever its result: every matched
    element but a panel that only groups its members."""
    if rule.resource != "Observation" or kind != "observation":
        return None
    return "not exists K.hasMember or K.value is not null"


def _present(severity: Severity | None) -> Callable[[Rule, Kind], Reading]:
    """The test that an element matched by a rule reads present with at least ``severity``."""
    rank = SEVERITY_RANK[severity]

    def test(rule: Rule, kind: Kind) -> Reading:
        alias = _ELEMENT[kind]
        if rule.value is not None:
            wanted = {
                n
                for n, band in enumerate(rule.value.bands)
                if band.status == "present" and SEVERITY_RANK[band.severity] >= rank
            }
            reached = _bands_reached(rule.value, wanted)
            if reached is None:
                return False
            if rule.resource == "MedicationRequest":
                return f"exists (({{{_MEDICATION_COUNT}}}) N where {reached})"
            return f"exists ({_in_unit(rule.value, kind)} N where {reached})"
        if rule.answers is not None:
            chosen = {
                n
                for n, answer in enumerate(rule.answers)
                if answer.status == "present" and SEVERITY_RANK[answer.severity] >= rank
            }
            deciding = _deciding_answer(rule.answers, chosen)
            if deciding is None:
                return False
            first = f"First(({_answer_codings(kind)}) X where {_known_answer(rule.answers)})"
            return f"exists (({{{first}}}) F where {deciding})"
        if SEVERITY_RANK[rule.severity] < rank:
            return False
        if rule.resource != "Observation":
            return None
        boolean = "FHIR.boolean"
        test = f"({alias}.value as {boolean}).value is not false"
        if kind != "answer":
            negative = _one_of("X.code.value", sorted(NEGATIVE_INTERPRETATION))
            test += " and not " + _codings_where(
                f"{alias}.interpretation.coding", f"X.system.value is not null and {negative}"
            )
        return test

    return test


# -- the observations of a feature -------------------------------------------------------------

#: Questionnaire items to three levels: the items, and below each the items of the item and of
#: its answers.
_ITEMS = [
    "R.item",
    "R.item.item",
    "R.item.answer.item",
    "R.item.item.item",
    "R.item.item.answer.item",
    "R.item.answer.item.item",
    "R.item.answer.item.answer.item",
]


@dataclass(frozen=True, slots=True)
class _Observations:
    """The days of a feature's readable observations, as ``'YYYY-MM-DD'`` strings; with
    ``present`` each day is marked ``|1`` when that observation reads present (by that test)
    and ``|0`` when not, so that the greatest string is the newest day, present first."""

    feature: Feature
    codes: CodesOf
    present: Callable[[Rule, Kind], Reading] | None = None
    #: Which matched elements count as read (``_any_result`` for a gap closed by any result).
    readable: Callable[[Rule, Kind], Reading] = _readable

    def days(self) -> str:
        """The list, or ``""`` when the feature has no rule read from observations."""
        parts = [self._observations(), self._questionnaires(), self._encounters()]
        parts.append(self._medications())
        parts.append(self._service_requests())
        kept = [p for p in parts if p]
        return _union(kept) if kept else ""

    def can_be_present(self) -> bool:
        """Whether some rule read from observations can pass the ``present`` test."""
        return self.present is not None and any(
            self.present(r, "observation") is not False
            for r in self.feature.rules
            if r.resource != "Condition"
        )

    def _rules(self, resource: str, match: str = "code") -> list[Rule]:
        return [r for r in self.feature.rules if r.resource == resource and r.match == match]

    def _mark(self, criterion: Reading) -> str:
        if self.present is None:
            return ""
        if criterion is None or criterion is True:
            return " + '|1'"
        if criterion is False:
            return " + '|0'"
        return f" + (if {criterion}\n    then '|1' else '|0')"

    def _element_criterion(self, test: Callable[[Rule, Kind], Reading], kind: Kind) -> Reading:
        """A criterion on an element ``K`` (the Observation, or one of its components): a rule
        matches its code (or, on the Observation, its category) and its reading passes."""
        tests = {r.id: _scoped(r, test(r, kind)) for r in self.feature.rules}
        elements = _matched(self._rules("Observation"), tests, "K.code.coding")
        if kind == "observation":
            by_category = self._rules("Observation", "category")
            elements += _matched(by_category, tests, "K.category.coding")
        return _any_of(elements) if elements else False

    def _observation_criterion(self, test: Callable[[Rule, Kind], Reading]) -> Reading:
        criteria = []
        sources: tuple[tuple[Kind, str], ...] = (
            ("observation", "{R}"),
            ("component", "R.component"),
        )
        for kind, source in sources:
            element = self._element_criterion(test, kind)
            if isinstance(element, str):
                criteria.append(f"exists (({source}) K where {element})")
        return _any_of(criteria) if criteria else False

    def _observations(self) -> str:
        readable = self._observation_criterion(self.readable)
        if readable is False:
            return ""
        mark = self._mark(self._observation_criterion(self.present) if self.present else None)
        return (
            f"[Observation] R where {_OBSERVATION_USABLE}\n"
            f"  and ({readable})\n"
            f"  return all {_indent(_OBSERVATION_DAY).lstrip()}{mark}"
        )

    def _item_criterion(self, test: Callable[[Rule, Kind], Reading]) -> Reading:
        groups: dict[str | None, list[str]] = {}  # item codes per answer test
        for rule in self._rules("Observation"):
            reading = _scoped(rule, test(rule, "answer"))
            codes = [c.code for c in self.codes(rule) if c.system == LOINC]
            codes = [c for c in codes if _is_loinc(c)]
            if reading is not False and codes:
                groups.setdefault(reading if isinstance(reading, str) else None, []).extend(codes)
        if not groups:
            return False
        criteria = [
            f"{_item_code_in(codes)} and "
            + (
                f"exists (({{First(I.answer)}}) A where {reading})"
                if reading
                else "exists I.answer"
            )
            for reading, codes in groups.items()
        ]
        items = " union ".join(f"({path})" for path in _ITEMS)
        return f"exists (({items}) I where {_any_of(criteria)})"

    def _questionnaires(self) -> str:
        readable = self._item_criterion(self.readable)
        if readable is False:
            return ""
        mark = self._mark(self._item_criterion(self.present) if self.present else None)
        usable = _one_of("R.status.value", sorted(USABLE_STATUSES))
        return (
            f"[QuestionnaireResponse] R where {usable}\n"
            f"  and {readable}\n"
            f"  return all {_day_or_undated('R.authored.value')}{mark}"
        )

    def _coded(self, rules: Sequence[Rule], path: str) -> tuple[str, str]:
        """For resources matched by code at ``path`` (Encounters, requests, medicines): the
        criterion that one is read by some rule, and its present mark (``""`` without a test)."""
        readable = {r.id: _scoped(r, None) for r in rules}
        mark = ""
        if self.present is not None:
            present = {r.id: _scoped(r, self.present(r, "observation")) for r in rules}
            criterion: Reading = False
            if present == readable:
                criterion = None
            elif criteria := _matched(rules, present, path):
                criterion = _any_of(criteria)
            mark = self._mark(criterion)
        return _any_of(_matched(rules, readable, path)), mark

    def _encounters(self) -> str:
        rules = self._rules("Encounter")
        if not rules:
            return ""
        readable, mark = self._coded(rules, "{R.class} union R.type.coding")
        when = 'Coalesce(R.period."end".value, R.period.start.value)'
        return (
            f"[Encounter] R where R.status.value = 'finished'\n"
            f"  and ({readable})\n"
            f"  return all {_day_or_undated(when)}{mark}"
        )

    def _service_requests(self) -> str:
        rules = self._rules("ServiceRequest")
        if not rules:
            return ""
        readable, mark = self._coded(rules, "R.code.coding")
        return (
            f"{_STANDING_REQUESTS}\n  and ({readable})\n"
            f"  return all {_day_or_undated('R.authoredOn.value')}{mark}"
        )

    def _medications(self) -> str:
        parts = [self._medication_count(), self._medicines()]
        kept = [p for p in parts if p]
        return _union(kept) if kept else ""

    def _medicines(self) -> str:
        rules = [r for r in self._rules("MedicationRequest") if r.value is None]
        if not rules:
            return ""
        readable, mark = self._coded(rules, _REQUESTED_MEDICINE)
        return (
            f"{_active_medications('R')}\n  and ({readable})\n"
            f"  return all {_day_or_undated('R.authoredOn.value')}{mark}"
        )

    def _medication_count(self) -> str:
        rules = [r for r in self._rules("MedicationRequest") if r.value is not None]
        if not rules:
            return ""
        mark = ""
        if self.present is not None:
            tests = [_scoped(r, self.present(r, "observation")) for r in rules]
            criteria = [t for t in tests if isinstance(t, str)]
            mark = self._mark(_any_of(criteria) if criteria else False)
        scopes = [_scoped(r, None) for r in rules]
        read = "" if None in scopes else f" and ({_any_of([str(t) for t in scopes])})"
        return (
            f"{{ if exists [MedicationRequest]{read}\n"
            f"  then {_indent(_MEDICATION_DAY).lstrip()}{mark}\n  else null }}"
        )


def _is_loinc(code: str) -> bool:
    head, _, check = code.partition("-")
    return head.isdigit() and 1 <= len(head) <= 8 and len(check) == 1 and check.isdigit()


# -- rules -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Text:
    text: str
    comment: str | None = None


@dataclass(frozen=True, slots=True)
class _Junction:
    op: Literal["and", "or"]
    items: tuple[_Node, ...]
    comment: str | None = None


@dataclass(frozen=True, slots=True)
class _Negation:
    item: _Node


_Node = _Text | _Junction | _Negation
_TRUE = _Text("true")
_FALSE = _Text("false")


def _junction(
    op: Literal["and", "or"], items: Iterable[_Node], comment: str | None = None
) -> _Node:
    """``and``/``or`` of the items, constants folded away."""
    absorbing, neutral = (_FALSE, _TRUE) if op == "and" else (_TRUE, _FALSE)
    kept: list[_Node] = []
    for item in items:
        if item == absorbing:
            return absorbing
        if item != neutral:
            kept.append(item)
    if not kept:
        return neutral
    if len(kept) == 1 and comment is None:
        return kept[0]
    return _Junction(op, tuple(kept), comment)


def _counted(items: Sequence[_Node]) -> str:
    return "\n+ ".join(f"(if\n{_render(item, 1)}\n  then 1 else 0)" for item in items)


def _count_at_least(items: Sequence[_Node], count: int) -> _Node:
    """At least ``count`` of the items hold, constants folded away."""
    needed = count - sum(1 for item in items if item == _TRUE)
    left = [item for item in items if item not in (_TRUE, _FALSE)]
    if needed <= 0:
        return _TRUE
    if needed > len(left):
        return _FALSE
    if needed == len(left):
        return _junction("and", left)
    if needed == 1:
        return _junction("or", left)
    return _Text(f"({_counted(left)}) >= {needed}", f"at least {needed} of {len(left)}")


def _negation(item: _Node) -> _Node:
    if item in (_TRUE, _FALSE):
        return _FALSE if item == _TRUE else _TRUE
    return _Negation(item)


def _render(node: _Node, depth: int = 0) -> str:
    """One operand per line, nested ones indented, comments naming features and gaps."""
    pad = "  " * depth
    if isinstance(node, _Text):
        lines = f"{_comment(node.comment)}{node.text}".split("\n")
        return "\n".join(pad + line for line in lines)
    if isinstance(node, _Negation):
        return f"{pad}not (\n{_render(node.item, depth + 1)}\n{pad})"
    inner = "  " * (depth + 1)
    parts = [_render(item, depth + 1) for item in node.items]
    parts[1:] = [f"{inner}{node.op} {part[len(inner) :]}" for part in parts[1:]]
    return f"{pad}{_comment(node.comment)}(\n" + "\n".join(parts) + f"\n{pad})"


def _comment(text: str | None) -> str:
    return f"/* {text.replace('*/', '* /')} */ " if text else ""


class Translator:
    """Translates rules into CQL, reading the feature mappings, dimension policy and data gaps
    of ``rules``, as :class:`fhir_tailor.fhirpath.Translator` does into FHIRPath."""

    def __init__(self, rules: ProfileRules) -> None:
        self._rules = rules
        self._gaps = {gap.id: gap for gap in rules.gaps}
        #: While :meth:`defines` runs: the feature and gap defines met so far, by name.
        self._shared: dict[str, str] | None = None

    def expression(self, rule: RuleExpr) -> str:
        """The CQL expression that is true exactly when ``rule.evaluate(profile).holds``, on its
        own (every feature written out where it is tested)."""
        return _render(self._node(rule, gaps_known=True))

    def defines(self, rules: Sequence[tuple[str, RuleExpr]]) -> list[tuple[str, str]]:
        """The defines of a library holding ``rules`` (name, rule): one per feature (at a
        severity) and per gap they test, then one per rule, which names those.

        Many rules test the same features (every ``need`` rule a whole dimension), so a library
        of self-contained expressions repeats them: the variants' would be 1.8 MB of CQL, which
        HAPI's engine takes minutes to compile. A define is compiled once and, in Patient
        context, evaluated once per patient."""
        self._shared = {}
        try:
            named = [(name, _render(self._node(rule, gaps_known=True))) for name, rule in rules]
            return [*self._shared.items(), *named]
        finally:
            self._shared = None

    def _share_list(self, name: str, expression: str) -> str:
        """A list expression as a reference to a define of its own, while :meth:`defines`
        runs (a feature confirmed over time reads its observations three times)."""
        if self._shared is None:
            return f"(\n{_indent(expression)}\n)"
        self._shared.setdefault(name, expression)
        return f'"{name}"'

    def _share(self, name: str, node: _Node) -> _Node:
        """``node`` as a reference to a define of its own, while :meth:`defines` runs."""
        if self._shared is None or node in (_TRUE, _FALSE):
            return node
        self._shared.setdefault(name, _render(node))
        return _Text(f'"{name}"')

    def _node(self, rule: RuleExpr, *, gaps_known: bool) -> _Node:
        if isinstance(rule, FeatureRule):
            return self._feature(rule.feature, rule.severity_at_least)
        if isinstance(rule, NeedRule):
            return self._need(rule.need, rule.at_least)
        if isinstance(rule, AgeAtLeast):
            return _Text(_birth_day_where(f"<= {_as_of_minus(rule.age_at_least, 'years')}"))
        if isinstance(rule, AgeBelow):
            earliest = _as_of_minus(rule.age_below, "years")
            return _Text(_birth_day_where(f"> {earliest}", "<= ToString(%asOf)"))
        if isinstance(rule, LanguageNot):
            return _Text(_language_not(rule.language_not))
        if isinstance(rule, ContactPreference):
            return _Text(_contact_preference(rule.contact_preference))
        if isinstance(rule, GapRule):
            gap = self._gaps.get(rule.gap)
            # a gap's own rule is evaluated before gaps exist: gap references in it are false
            return self._gap(gap) if gap is not None and gaps_known else _FALSE
        if isinstance(rule, AllOf):
            return _junction("and", (self._node(r, gaps_known=gaps_known) for r in rule.all))
        if isinstance(rule, AnyOf):
            return _junction("or", (self._node(r, gaps_known=gaps_known) for r in rule.any))
        if isinstance(rule, CountAtLeast):
            nodes = [self._node(r, gaps_known=gaps_known) for r in rule.of]
            return _count_at_least(nodes, rule.count_at_least)
        if isinstance(rule, Not):
            return _negation(self._node(rule.not_, gaps_known=gaps_known))
        raise TypeError(f"no CQL translation for {type(rule).__name__}")

    def _feature(self, feature_id: str, severity: Severity | None) -> _Node:
        """The finding is present, current and at least ``severity``."""
        entry = self._rules.index.features.get(feature_id)
        if entry is None:
            return _FALSE
        feature = entry[0]
        label = f"feature {feature_id}" + (f", {severity} or graver" if severity else "")
        observed = _observed(feature, self._rules.index.codes, severity, self._share_list)
        return self._share(label, _junction("or", (_diagnosed(feature, severity), observed), label))

    def _need(self, dimension: Dimension, at_least: NeedLevel) -> _Node:
        rank = NEED_RANK[at_least]
        if rank == 0:
            return _TRUE
        features = [f for f, (_, owner) in self._rules.index.features.items() if owner == dimension]
        reaching = [self._feature(f, _SEVERITIES[rank - 1]) for f in features]
        definition = self._rules.dimensions.get(dimension)
        escalate = definition.escalate_at_count if definition else None
        if at_least == "high" and escalate is not None:
            counted = [n for f in features if (n := self._feature(f, "moderate")) != _FALSE]
            if len(counted) >= escalate:
                label = f"{escalate} or more moderate findings"
                reaching.append(_Text(f"({_counted(counted)}) >= {escalate}", label))
        return _junction("or", reaching, f"need {dimension} at least {at_least}")

    def _gap(self, gap: GapDefinition) -> _Node:
        read = _any_result if gap.any_result_closes else _readable
        screenings = [
            days
            for feature_id in gap.features
            if (entry := self._rules.index.features.get(feature_id)) is not None
            and (days := _Observations(entry[0], self._rules.index.codes, None, read).days())
        ]
        when = _TRUE if gap.when is None else self._node(gap.when, gaps_known=False)
        recent = _TRUE
        if screenings:
            days = _union(screenings)
            within = f"D >= {_as_of_minus(gap.within_days, 'days')}"
            recent = _Text(
                f"not exists ((\n{_indent(days)}\n) D where {within})", "no recent screening"
            )
        return self._share(f"gap {gap.id}", _junction("and", (when, recent), f"gap {gap.id}"))


def _diagnosed(feature: Feature, severity: Severity | None) -> _Node:
    """An active Condition matches one of the feature's rules of at least ``severity`` (and, for
    a feature whose diagnoses expire, is undated or recent enough)."""
    rules = [
        r
        for r in feature.rules
        if r.resource == "Condition" and SEVERITY_RANK[r.severity] >= SEVERITY_RANK[severity]
    ]
    tests: dict[str, Reading] = {r.id: _scoped(r, None) for r in rules}
    criteria = _matched([r for r in rules if r.match == "code"], tests, "R.code.coding")
    criteria += _matched([r for r in rules if r.match == "category"], tests, "R.category.coding")
    if not criteria:
        return _FALSE
    current = ""
    if feature.conditions_current_for_days is not None:
        since = _as_of_minus(feature.conditions_current_for_days, "days")
        current = f"\n  and ({_CONDITION_DAY} is null or {_day(_CONDITION_DAY)} >= {since}) is true"
    return _Text(
        f"exists ([Condition] R where {_CONDITION_HOLDS}{current}\n  and ({_any_of(criteria)}))"
    )


Share = Callable[[str, str], str]
"""Names a list expression (a define of a library) or writes it out in parentheses."""


def _observed(feature: Feature, codes: CodesOf, severity: Severity | None, share: Share) -> _Node:
    """The newest readable observation of the feature reads present with at least
    ``severity``, and is current; per Observation rule, each confirmed, for a feature with
    ``confirmed_after_days``."""
    if feature.confirmed_after_days is None:
        return _newest_present(feature, codes, _present(severity))
    criteria = []
    for rule in feature.rules:
        if rule.resource == "Observation":
            single = feature.model_copy(update={"rules": [rule]})
            confirmed = _confirmed(single, codes, feature.confirmed_after_days, share)
            criteria.append(
                _newest_present(single, codes, _and_also(_present(severity), confirmed))
            )
    return _junction("or", criteria)


def _newest_present(
    feature: Feature, codes: CodesOf, present: Callable[[Rule, Kind], Reading]
) -> _Node:
    observations = _Observations(feature, codes, present)
    if not observations.can_be_present():
        return _FALSE
    tests = ["EndsWith(D, '|1')"]
    if feature.current_for_days is not None:
        tests.append(f"Substring(D, 0, 10) >= {_as_of_minus(feature.current_for_days, 'days')}")
    newest = f"Max(\n{_indent(observations.days())}\n)"
    return _Text(f"exists (({{{newest}}}) D\n  where {' and '.join(tests)})")


def _confirmed(feature: Feature, codes: CodesOf, days: int, share: Share) -> str | None:
    """A Boolean: the feature's one Observation rule has read present without a break for at
    least ``days`` (as :func:`fhir_tailor.fhirpath._confirmed`). ``None`` when the rule reads
    nothing."""
    marked = _Observations(feature, codes, _present(None)).days()
    if not marked:
        return None
    readings = share(f"readings {feature.id} {feature.rules[0].id}", marked)
    last_absent = (
        f"Max(({readings} D1 where EndsWith(D1, '|0') return Substring(D1, 0, 10))"
        " union {'0000-00-00'})"
    )
    newest = f"Max({readings} D2 return Substring(D2, 0, 10))"
    first = (
        f"Min({readings} D3 where EndsWith(D3, '|1') and Substring(D3, 0, 10) > {last_absent}"
        " return Substring(D3, 0, 10))"
    )
    return f"exists (({{{first}}}) D4 where ToString(ToDate(D4) + {days} days) <= {newest})"


def _and_also(
    test: Callable[[Rule, Kind], Reading], condition: str | None
) -> Callable[[Rule, Kind], Reading]:
    """``test``, and ``condition`` (a Boolean on the record) besides it."""

    def both(rule: Rule, kind: Kind) -> Reading:
        reading = test(rule, kind)
        if condition is None or reading is False:
            return False if condition is None else reading
        if reading is None or reading is True:
            return condition
        return f"({reading}) and {condition}"

    return both


def _birth_day_where(*comparisons: str) -> str:
    day = _day("Patient.birthDate.value")
    tests = " and ".join(f"{day} {c}" for c in comparisons)
    return f"({tests}) is true"


def _language_not(language: str) -> str:
    coded = "X.system.value is not null and X.code.value is not null"

    def codings(where: str) -> str:
        return (
            f"Flatten(Patient.communication C{where}\n"
            f"    return all (C.language.coding X where {coded}))"
        )

    preferred = codings(" where C.preferred.value is true")
    chosen = f"if exists ({preferred})\n  then {preferred}\n  else {codings('')}"
    primary = _string(language.split("-")[0].lower())
    subtag = f"Lower(ReplaceMatches(First(\n{_indent(chosen)}\n).code.value, '-.*$', ''))"
    return f"exists (({{{subtag}}}) L where L != {primary})"


def _contact_preference(system: str) -> str:
    ranked = "Patient.telecom T where T.system.value is not null and T.rank.value is not null"
    lowest = f"Min({ranked} return T.rank.value)"
    first = f"Min(({ranked}) T2 where T2.rank.value = {lowest} return T2.system.value)"
    return f"exists (({{{first}}}) S where S = {_string(system)})"


# -- libraries ---------------------------------------------------------------------------------

#: The FHIR version the libraries read (R4) and the FHIRHelpers release for it.
FHIR_VERSION = "4.0.1"
#: The one parameter of every library: the day the plan is made for.
AS_OF = "%asOf"


def library(name: str, version: str, defines: Sequence[tuple[str, str]]) -> str:
    """A CQL library in Patient context with ``defines`` (name, expression), each a condition a
    PlanDefinition names by ``text/cql-identifier``.

    A library rather than inline expressions: an engine compiles a library once and keeps it
    (cqf-fhir-cr caches compiled libraries by name and version), where an inline expression is
    compiled again on every ``$apply``."""
    header = [
        f"library {name} version {_string(version)}",
        f"using FHIR version {_string(FHIR_VERSION)}",
        f"include FHIRHelpers version {_string(FHIR_VERSION)} called FHIRHelpers",
        f'parameter "{AS_OF}" Date',
        "context Patient",
    ]
    body = [f'define "{define}":\n{_indent(expression)}' for define, expression in defines]
    return "\n\n".join([*header, *body]) + "\n"
