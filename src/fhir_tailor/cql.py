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
confirmation over time, language and contact preference. The construction is the FHIRPath
one: :mod:`fhir_tailor.expression` decides what each rule tests for both languages, and
:class:`CQL` here only writes each test in CQL.

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

from collections.abc import Iterable, Sequence
from typing import Literal

from .expression import (
    FALSE,
    LOINC_SHAPE,
    TRUE,
    UNDATED,
    Kind,
    Language,
    Mark,
    Node,
    ObservationDays,
    Reading,
    RuleTranslator,
    Test,
    Text,
    any_of,
    converted,
    indent,
    string_literal,
    units_as_is,
)
from .mapping import ValueBands
from .profile import (
    ACTIVE_CLINICAL,
    NEGATIVE_INTERPRETATION,
    STANDING_REQUEST,
    VOID_OBSERVATION,
    VOID_VERIFICATION,
    ProfileRules,
)
from .questionnaire import USABLE_STATUSES
from .rules import RuleExpr
from .terminology.units import SPELLINGS

#: ``Expression.language`` of the translations (an inline CQL expression, as CPG names it).
LANGUAGE = "text/cql-expression"
#: True unless the patient is recorded as deceased (``deceased[x]`` present and not the boolean
#: false): the CQL twin of :data:`fhir_tailor.fhirpath.NOT_DECEASED`.
NOT_DECEASED = "Patient.deceased is null or (Patient.deceased as FHIR.boolean).value is false"
_UCUM = "http://unitsofmeasure.org"

#: The alias a reading test reads its element by, per kind.
_ELEMENT: dict[Kind, str] = {"observation": "K", "component": "K", "answer": "A"}


# -- literals and dates ------------------------------------------------------------------------


def _one_of(path: str, values: Iterable[str]) -> str:
    """``path = 'a'`` or ``path in {'a', 'b'}``."""
    unique = list(dict.fromkeys(values))
    if len(unique) == 1:
        return f"{path} = {string_literal(unique[0])}"
    return f"{path} in {{{', '.join(string_literal(v) for v in unique)}}}"


def _day(value: str) -> str:
    """The day a Date or DateTime is written for, as ``'YYYY-MM-DD'`` (a partial date filled in
    with the first month and day), which sorts as the days do; null for a null value."""
    return f"Substring(ToString({value}) + '-01-01', 0, 10)"


def _day_or_undated(value: str) -> str:
    return f"Coalesce({_day(value)}, {UNDATED})"


def _each_day(resources: str, day: str, mark: str) -> str:
    """The (marked) day of each of the ``resources`` (a query on ``R``)."""
    return f"{resources}\n  return all {day}{mark}"


def _valueset(canonical: str) -> str:
    """A value set as CQL names one: its url, and the version after ``|``."""
    url, _, version = canonical.partition("|")
    pinned = f", version: {string_literal(version)}" if version else ""
    return f"System.ValueSet {{ id: {string_literal(url)}{pinned} }}"


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
    f"  {UNDATED})"
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
    f"Count(({_active_medications('Q')}\n  return (\n{indent(indent(_MEDICINE))}\n  )))"
)
_MEDICATION_DAY = (
    f"Coalesce(Max({_active_medications('Q')} return {_day('Q.authoredOn.value')}), {UNDATED})"
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


def _numbers(kind: Kind) -> tuple[str, list[str]]:
    """The element's Quantity and its bare numbers (integer, and decimal in an answer)."""
    alias = _ELEMENT[kind]
    bare = [f"ToDecimal(({alias}.value as FHIR.integer).value)"]
    if kind == "answer":
        bare.append(f"({alias}.value as FHIR.decimal).value")
    return f"({alias}.value as FHIR.Quantity)", bare


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
        unit = f"ReplaceMatches({unit}, '{pattern}', {string_literal(ucum)})"
    return f"Lower({unit})"


class CQL(Language):
    """CQL 1.5 in Patient context: a retrieve (``[Observation] R``) reads the patient's
    resources, and each element a query reads is named by an alias."""

    name = "CQL"
    number = "N"
    as_of_day = "ToString(%asOf)"
    birth_day = _day("Patient.birthDate.value")
    condition_codes = "R.code.coding"
    condition_categories = "R.category.coding"
    encounter_codes = "{R.class} union R.type.coding"
    request_codes = "R.code.coding"
    medicine_codes = _REQUESTED_MEDICINE
    items = " union ".join(f"({path})" for path in _ITEMS)
    first_answer = "{First(I.answer)}"
    answered = "exists I.answer"
    medication_count = f"{{{_MEDICATION_COUNT}}}"
    any_result_test = "not exists K.hasMember or K.value is not null"

    def one_of(self, path: str, values: Iterable[str]) -> str:
        return _one_of(path, values)

    def union(self, collections: Sequence[str]) -> str:
        """The lists one under the other, joined by ``union``."""
        if len(collections) == 1:
            return collections[0]
        parts = [f"({c})" for c in collections]
        return "(\n" + indent("\nunion ".join(parts)) + "\n)"

    def negate(self, expression: str) -> str:
        return f"not ({expression})"

    def one_if(self, rendered: str) -> str:
        return f"(if\n{rendered}\n  then 1 else 0)"

    def some(self, collection: str, criterion: str, alias: str) -> str:
        return _codings_where(collection, criterion, alias)

    def first_where(self, collection: str, criterion: str, alias: str) -> str:
        return f"{{First(({collection}) {alias} where {criterion})}}"

    def nonempty(self, collection: str) -> str:
        return f"exists ({collection})"

    def as_of_minus(self, amount: int, unit: Literal["days", "years"]) -> str:
        """A day before ``%asOf``, as a day string (calendar arithmetic, as in FHIRPath)."""
        return f"ToString(%asOf - {amount} {unit})"

    def member_of(self, canonical: str, alias: str) -> str:
        return f"{alias} in {_valueset(canonical)}"

    def coding_field(self, alias: str, name: str) -> str:
        return f"{alias}.{name}.value"

    def known(self, path: str) -> str:
        return f"{path} is not null"

    def and_reading(self, matches: str, reading: str) -> str:
        return f"{matches} and ({reading})"

    def born_within(self, comparisons: Sequence[str]) -> str:
        return f"({' and '.join(comparisons)}) is true"

    def born_unknown_or(self, comparisons: Sequence[str]) -> str:
        return f"(Patient.birthDate.value is null or {' or '.join(comparisons)}) is true"

    def gender_not(self, gender: str) -> str:
        return f"(Patient.gender.value = {string_literal(gender)}) is not true"

    def patient_where(self, tests: Sequence[str]) -> str:
        """The tests, which read ``Patient`` (the context) themselves."""
        return " and ".join(tests)

    def language_not(self, primary: str) -> str:
        coded = "X.system.value is not null and X.code.value is not null"

        def codings(where: str) -> str:
            return (
                f"Flatten(Patient.communication C{where}\n"
                f"    return all (C.language.coding X where {coded}))"
            )

        preferred = codings(" where C.preferred.value is true")
        chosen = f"if exists ({preferred})\n  then {preferred}\n  else {codings('')}"
        subtag = f"Lower(ReplaceMatches(First(\n{indent(chosen)}\n).code.value, '-.*$', ''))"
        return f"exists (({{{subtag}}}) L where L != {string_literal(primary)})"

    def contact_preference(self, system: str) -> str:
        ranked = "Patient.telecom T where T.system.value is not null and T.rank.value is not null"
        lowest = f"Min({ranked} return T.rank.value)"
        first = f"Min(({ranked}) T2 where T2.rank.value = {lowest} return T2.system.value)"
        return f"exists (({{{first}}}) S where S = {string_literal(system)})"

    def in_unit(self, bands: ValueBands, kind: Kind) -> str:
        """A list, with nulls for what does not apply: a Quantity in the bands' unit (or in
        none) or in a declared mislabel of it as it is, one in a declared conversion's unit
        converted, and a bare number as it is."""
        quantity, bare = _numbers(kind)
        if not bands.unit:
            return "{" + ", ".join([f"{quantity}.value.value", *bare]) + "}"
        unit = _quantity_unit(quantity)
        as_is = _one_of(unit, units_as_is(bands))
        parts = [f"if {unit} is null or {as_is} then {quantity}.value.value else null"]
        for conversion in bands.conversions:
            arithmetic = converted(f"{quantity}.value.value", conversion)
            from_unit = string_literal(conversion.from_.lower())
            parts.append(f"if {unit} = {from_unit} then {arithmetic} else null")
        return "{\n" + indent(",\n".join([*parts, *bare])) + "\n}"

    def answer_codings(self, kind: Kind) -> str:
        if kind == "answer":
            return "{A.value as FHIR.Coding}"
        return "(K.value as FHIR.CodeableConcept).coding"

    def presence(self, kind: Kind) -> str:
        alias = _ELEMENT[kind]
        test = f"({alias}.value as FHIR.boolean).value is not false"
        if kind != "answer":
            negative = _one_of("X.code.value", sorted(NEGATIVE_INTERPRETATION))
            test += " and not " + _codings_where(
                f"{alias}.interpretation.coding", f"X.system.value is not null and {negative}"
            )
        return test

    def observation_criterion(self, days: ObservationDays, test: Test) -> Reading:
        """The Observation (``{R}``) or one of its components (``R.component``), each as
        ``K``."""
        criteria = []
        sources: tuple[tuple[Kind, str], ...] = (
            ("observation", "{R}"),
            ("component", "R.component"),
        )
        for kind, source in sources:
            element = self._element_criterion(days, test, kind)
            if isinstance(element, str):
                criteria.append(self.some(source, element, "K"))
        return any_of(criteria) if criteria else False

    def _element_criterion(self, days: ObservationDays, test: Test, kind: Kind) -> Reading:
        """A criterion on an element ``K`` (the Observation, or one of its components): a rule
        matches its code (or, on the Observation, its category) and its reading passes."""
        tests = {r.id: self.scoped(r, test(r, kind)) for r in days.feature.rules}
        elements = self.matched(days.rules("Observation"), tests, "K.code.coding")
        if kind == "observation":
            by_category = days.rules("Observation", "category")
            elements += self.matched(by_category, tests, "K.category.coding")
        return any_of(elements) if elements else False

    def item_code_in(self, codes: Sequence[str]) -> str:
        """By the last ``/`` segment of the item's ``linkId`` when that is a LOINC code, else by
        the last ``#`` or ``/`` segment of its ``definition``."""
        link = f"Matches(I.linkId.value, '^(.*/)?{LOINC_SHAPE}/*$')"
        named = f"if {link} then I.linkId.value else I.definition.value"
        return _one_of(f"ReplaceMatches({named}, '^(.*[#/])?([^#/]*)/*$', '$2')", codes)

    def marked(self, criterion: str) -> str:
        return f" + (if {criterion}\n    then '|1' else '|0')"

    def observations(self, readable: Reading, mark: str) -> str:
        usable = f"[Observation] R where {_OBSERVATION_USABLE}\n  and ({readable})"
        return _each_day(usable, indent(_OBSERVATION_DAY).lstrip(), mark)

    def questionnaires(self, readable: Reading, mark: str) -> str:
        usable = _one_of("R.status.value", sorted(USABLE_STATUSES))
        responses = f"[QuestionnaireResponse] R where {usable}\n  and {readable}"
        return _each_day(responses, _day_or_undated("R.authored.value"), mark)

    def encounters(self, readable: str, mark: str) -> str:
        finished = f"[Encounter] R where R.status.value = 'finished'\n  and ({readable})"
        when = 'Coalesce(R.period."end".value, R.period.start.value)'
        return _each_day(finished, _day_or_undated(when), mark)

    def service_requests(self, readable: str, mark: str) -> str:
        requests = f"{_STANDING_REQUESTS}\n  and ({readable})"
        return _each_day(requests, _day_or_undated("R.authoredOn.value"), mark)

    def medicines(self, readable: str, mark: str) -> str:
        requests = f"{_active_medications('R')}\n  and ({readable})"
        return _each_day(requests, _day_or_undated("R.authoredOn.value"), mark)

    def medication_days(self, read: str, mark: str) -> str:
        return (
            f"{{ if exists [MedicationRequest]{read}\n"
            f"  then {indent(_MEDICATION_DAY).lstrip()}{mark}\n  else null }}"
        )

    def active_conditions(self, criterion: str, since: str | None) -> str:
        current = ""
        if since is not None:
            day = _day(_CONDITION_DAY)
            current = f"\n  and ({_CONDITION_DAY} is null or {day} >= {since}) is true"
        return f"exists ([Condition] R where {_CONDITION_HOLDS}{current}\n  and ({criterion}))"

    def newest_marked(self, days: str, mark: Mark | None, since: str | None) -> str:
        tests = [f"EndsWith(D, '{mark}')"] if mark else []
        if since is not None:
            tests.append(f"Substring(D, 0, 10) >= {since}")
        if not tests:
            return self.nonempty(days)
        newest = f"Max(\n{indent(days)}\n)"
        return f"exists (({{{newest}}}) D\n  where {' and '.join(tests)})"

    def confirmed(self, readings: str, days: int) -> str:
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

    def none_since(self, screenings: Sequence[str], since: str) -> str:
        days = self.union(screenings)
        return f"not exists ((\n{indent(days)}\n) D where D >= {since})"


class Translator(RuleTranslator):
    """Translates rules into CQL, as :class:`fhir_tailor.fhirpath.Translator` does into
    FHIRPath (:mod:`fhir_tailor.expression` decides what each tests); :meth:`defines` states
    what many rules test once."""

    def __init__(self, rules: ProfileRules) -> None:
        super().__init__(rules, CQL())
        #: While :meth:`defines` runs: the feature and gap defines met so far, by name.
        self._shared: dict[str, str] | None = None

    def defines(self, rules: Sequence[tuple[str, RuleExpr]]) -> list[tuple[str, str]]:
        """The defines of a library holding ``rules`` (name, rule): one per feature (at a
        severity) and per gap they test, then one per rule, which names those.

        Many rules test the same features (every ``need`` rule a whole dimension), so a library
        of self-contained expressions repeats them: the variants' would be 1.8 MB of CQL, which
        HAPI's engine takes minutes to compile. A define is compiled once and, in Patient
        context, evaluated once per patient."""
        self._shared = {}
        try:
            named = [(name, self.expression(rule)) for name, rule in rules]
            return [*self._shared.items(), *named]
        finally:
            self._shared = None

    def _named_list(self, name: str, expression: str) -> str:
        """A reference to a define of its own, while :meth:`defines` runs (a feature confirmed
        over time reads its observations three times)."""
        if self._shared is None:
            return super()._named_list(name, expression)
        self._shared.setdefault(name, expression)
        return f'"{name}"'

    def _named(self, name: str, node: Node) -> Node:
        """A reference to a define of its own, while :meth:`defines` runs."""
        if self._shared is None or node in (TRUE, FALSE):
            return node
        self._shared.setdefault(name, self._language.render(node))
        return Text(f'"{name}"')


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
        f"library {name} version {string_literal(version)}",
        f"using FHIR version {string_literal(FHIR_VERSION)}",
        f"include FHIRHelpers version {string_literal(FHIR_VERSION)} called FHIRHelpers",
        f'parameter "{AS_OF}" Date',
        "context Patient",
    ]
    body = [f'define "{define}":\n{indent(expression)}' for define, expression in defines]
    return "\n\n".join([*header, *body]) + "\n"
