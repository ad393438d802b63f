"""Rules as FHIRPath expressions, so a published PlanDefinition says when it applies.

A rule (:mod:`fhir_tailor.rules`) is evaluated in Python over a :class:`~fhir_tailor.profile.
Profile`. Published as ``PlanDefinition.action.condition`` (kind ``applicability``, language
``text/fhirpath``), the same rule must be checkable by any FHIRPath engine over the raw record,
so the translation reaches through the profile to the feature mappings (``profiles/features``)
and reads the resources directly.

**Evaluation context.** The expression is evaluated with a collection ``Bundle`` as its input and
``%context``: one entry per resource of the patient's record, the ``Patient`` and the
``Condition``, ``Observation``, ``QuestionnaireResponse``, ``Encounter``, ``MedicationRequest``
and ``ServiceRequest`` resources about it (what :class:`~fhir_tailor.record.PatientRecord`
holds). One environment variable is required: ``%asOf``, a FHIRPath ``Date``, the date the
profile is computed for. Days are compared as ``'YYYY-MM-DD'`` strings, which sort as the days
do: a recency window reads ``>= (%asOf - N days).toString()``, an age
``(%asOf - N years).toString()``. The result is a single Boolean.

**Translation.**

- ``{feature: F, severity_at_least: S}`` is true when either

  - an *active* Condition (no ``refuted``/``entered-in-error`` verification status; a clinical
    status of ``active``/``recurrence``/``relapse``, or none at all and no ``abatement[x]``)
    matches one of F's Condition rules whose severity is at least S, by ``code`` or, for
    ``match: category`` rules, by ``category``; for a feature with
    ``conditions_current_for_days`` the Condition is also undated or its day (onset, else
    ``recordedDate``) is within that many days of ``%asOf``. ICD-10-CM codes are compared
    without the dot and in upper case (``code.replace('.', '').upper()``), so ``E11.9`` and
    ``E119`` match alike, and ``prefix`` rules match by ``startsWith``; or
  - the *latest* readable observation of F says present with a severity of at least S, and is no
    older than F's ``current_for_days``. Observations are Observations
    (not cancelled, entered in error, preliminary or registered) matched by ``code``, a
    ``component.code`` or ``category``; answered items of a completed or amended
    QuestionnaireResponse whose ``linkId`` (or ``definition``) names a LOINC code; finished
    Encounters by ``class`` or ``type``; standing ServiceRequests (active or completed, intent not
    ``proposal``) by ``code``, on their ``authoredOn`` day; active MedicationRequests (intent
    not ``proposal``) by their ``medicationCodeableConcept``, else by the ``code`` of the
    Medications they contain when ``medicationReference`` is local (``#``), each on its
    ``authoredOn`` day; and the count of distinct active MedicationRequests. A
    value rule reads ``value`` through the bands (the band thresholds become comparisons), an
    answer rule the first coded answer found in the rule's answer table, a presence rule is
    negated by ``valueBoolean = false`` or an ``N``/``NEG``/``ND`` interpretation.

  "Latest wins" is encoded with *marked days*: each readable observation of F (unreadable ones,
  such as an answer missing from the table, are left out, as in Python) gives its day as
  ``'YYYY-MM-DD'`` followed by ``'|1'`` when it reads present with a severity of at least S and
  ``'|0'`` when not. The greatest marked day (``aggregate``) is the newest day, a present reading
  first on a tie; the feature holds when it ends in ``'|1'`` and its day is recent enough. A day
  is the date as written in the resource (its first ten characters, no time zone conversion),
  partial dates filled in with the first month and day: ``effective[x]`` (dateTime, instant or
  Period start), else ``issued``, else the date of the first dated panel listing the Observation
  in ``hasMember``; ``authored``; ``period.end``, else ``period.start``; the newest active
  ``authoredOn``. An observation without any date is the oldest day, ``'0001-01-01'``. This is
  the Python merge exactly: ties go to the gravest reading, and a diagnosis on the problem list
  never goes stale.

  A feature with ``confirmed_after_days`` N is the ``or`` of its Observation rules, each taken
  alone as above, and a rule's reading is present only when the rule is confirmed: over the
  rule's marked days (present at any severity, ``|1``), the earliest present day after the
  newest absent one (``'0000-00-00'`` when none), plus N days (``toDate() + N days``), is on or
  before the newest day.
- A rule with ``applies_to`` reads an element only when the Patient is one it applies to:
  ``birthDate`` within the age bounds (compared as for ``age_at_least``/``age_below`` below;
  without one, or with one after ``%asOf``, only a minimum age holds) and ``gender`` (not the
  opposite sex's); its matches are left out otherwise, exactly as Python sets them aside.
- ``{need: D, at_least: L}``: some feature of dimension D meets ``{feature, severity_at_least:
  L}``, or, for ``high`` where the dimension escalates, at least ``escalate_at_count`` of its
  features meet ``moderate`` (counted with ``iif(…, 1, 0)``).
- ``{age_at_least: N}`` / ``{age_below: N}``: ``Patient.birthDate`` (a partial one filled in
  as above) against ``%asOf - N years``.
- ``{language_not: X}``: the primary subtag of the preferred ``Patient.communication`` language
  (the one marked preferred, else the first listed) differs from X.
- ``{contact_preference: X}``: the ``system`` of the ranked ``Patient.telecom`` with the lowest
  ``rank`` (the alphabetically first system on a tie) is X.
- ``{gap: G}``: G's ``when`` rule holds (gap references inside it are false, as in Python, where
  gaps are computed after that rule) and no readable observation of G's features is dated on or
  after ``%asOf - within_days days`` (with ``any_result_closes``, no observation at all, readable
  or not, but a panel that only groups its members).
- ``{count_at_least: N, of: [...]}``: the sum of ``iif(…, 1, 0)`` over the rules is at least N
  (constant rules folded in first).
- ``all``/``any``/``not``: ``and``/``or``/``.not()``. Every part is a Boolean (an ``exists()``,
  ``empty()`` or constant), so empty collections never leak into the logic.

The text is laid out one operand per line, with a ``/* feature … */`` comment per feature; a
``need`` rule expands to every feature of its dimension, so it is the longest. Besides N1's
functions it uses its comments, ``aggregate()`` for the maximum and minimum (N1 has no ``max()``),
and ``combine()`` to join an Observation with its components (fhirpathpy 2.2 loses the type of
choice elements such as ``value`` after a ``|``). No ``aggregate()`` is nested in another's
aggregator, and function arguments other than lambdas read only ``%context`` or the focus
before any ``where()``/``select()`` in the same chain: fhirpathpy 2.2 keeps ``$this`` and
``$total`` in one shared state.

**Known differences from the Python evaluation**, none of which arises from valid FHIR data:

- Codes are compared as written; Python also strips surrounding white space, which FHIR's
  ``code`` type does not allow.
- An impossible date (``2026-02-30``) is undated in Python but sorts as written here.
- ``valueDecimal`` on an Observation (not an R4 choice there) is read by Python; an engine that
  knows the R4 model does not see it. In a QuestionnaireResponse answer it is read by both.
- A band table without a catch-all band: Python fails on a value below every band; here such a
  value reads neither present nor absent.
- Units: a value is read in the bands' unit, in a declared mislabel of it, or through a declared
  conversion (``value * factor + offset``), comparing units without case. Python also converts
  what UCUM converts by dimension alone (``g/dL`` to ``mg/dL``), which needs a UCUM library the
  expression cannot assume: such a reading is unreadable here.
"""

from __future__ import annotations

import re
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

#: ``Expression.language`` of the translations.
LANGUAGE = "text/fhirpath"
#: The resources of the record: the entries of the input Bundle.
_RECORD = "%context.entry.resource"
_PATIENT = f"{_RECORD}.ofType(Patient)"
#: True unless the patient is recorded as deceased (Patient.deceased[x] present and not the
#: boolean false), as :func:`fhir_tailor.life_state.is_deceased` reads valid data: no plan is
#: proposed for a patient who has died.
NOT_DECEASED = (
    f"{_PATIENT}.where(deceased.exists() and deceased.ofType(boolean).where($this = false).empty())"
    ".empty()"
)
_UNDATED = "'0001-01-01'"
_MAX = ".aggregate(iif($total.empty() or $this > $total, $this, $total))"
_MIN = ".aggregate(iif($total.empty() or $this < $total, $this, $total))"
_LOINC_SHAPE = "[0-9]{1,8}-[0-9]"
_SEVERITIES: tuple[Severity, ...] = ("low", "moderate", "high")

Kind = Literal["observation", "answer"]
"""Where a reading looks: an Observation (or component), or a questionnaire item's answer."""

Reading = str | None | bool
"""A test on a matched element: a FHIRPath criterion, ``None`` (always) or ``False`` (never)."""

CodesOf = Callable[[Rule], Sequence[Concept]]
"""The codes a rule matches (its value sets' expansions): questionnaire items are named by code
text, which ``memberOf`` cannot test."""


# -- literals and dates ------------------------------------------------------------------------


def _string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def _one_of(path: str, values: Sequence[str]) -> str:
    """``path = 'a'`` or ``path in ('a' | 'b')``."""
    unique = list(dict.fromkeys(values))
    if len(unique) == 1:
        return f"{path} = {_string(unique[0])}"
    return f"{path} in ({' | '.join(_string(v) for v in unique)})"


def _number(value: float) -> str:
    """A FHIRPath number literal (never in exponent notation, which FHIRPath lacks)."""
    text = format(Decimal(repr(value)), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _any_of(criteria: Sequence[str]) -> str:
    return criteria[0] if len(criteria) == 1 else " or ".join(f"({c})" for c in criteria)


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.split("\n"))


def _union(collections: Sequence[str]) -> str:
    """The collections one under the other, joined by ``|``."""
    if len(collections) == 1:
        return collections[0]
    parts = [_indent(c) for c in collections]
    parts[1:] = ["| " + part[2:] for part in parts[1:]]
    return "(\n" + "\n".join(parts) + "\n)"


def _day(value: str) -> str:
    """The day a date, dateTime or instant is written for, as ``'YYYY-MM-DD'`` (a partial date
    is filled in with the first month and day), which sorts as the days do."""
    return f"({value}.toString() + '-01-01').substring(0, 10)"


def _as_of_minus(amount: int, unit: Literal["days", "years"]) -> str:
    """A day before ``%asOf``, as a day string (calendar arithmetic: a year before 29 February
    is 28 February)."""
    return f"(%asOf - {amount} {unit}).toString()"


def _day_or_undated(value: str) -> str:
    return f"iif({value}.exists(), {_day(value)}, {_UNDATED})"


# -- the record --------------------------------------------------------------------------------

_CONDITION_HOLDS = (
    "verificationStatus.coding.where(system.exists() and "
    f"{_one_of('code', sorted(VOID_VERIFICATION))}).empty()\n"
    "  and ((clinicalStatus.coding.where(system.exists() and code.exists()).empty()\n"
    "      and abatement.empty())\n"
    "    or clinicalStatus.coding.where(system.exists() and "
    f"{_one_of('code', sorted(ACTIVE_CLINICAL))}).exists())"
)
_ONSET = "(onset.ofType(dateTime) | onset.start)"
#: A Condition's day: its onset (dateTime or Period start), else ``recordedDate``.
_CONDITION_DAY = f"iif({_ONSET}.exists(), {_ONSET}, recordedDate)"
_OBSERVATION_USABLE = f"status.where({_one_of('$this', sorted(VOID_OBSERVATION))}).empty()"
_EFFECTIVE = "(effective.ofType(dateTime) | effective.ofType(instant) | effective.start)"
_OWN_DATE = f"iif({_EFFECTIVE}.exists(), {_EFFECTIVE}, issued)"
_MEMBERS = (
    "hasMember.select(reference.replaceMatches("
    "'^(.*/)?Observation/([^/]+)/*(/_history/.*)?$', 'Observation/$2'))"
)
#: An Observation's day: its ``effective[x]``, else ``issued``, else the day of the first dated
#: panel listing it in ``hasMember`` (``aggregate`` carries the Observation's reference in
#: ``$total`` until a panel names it, then that panel's day), else undated.
_OBSERVATION_DAY = (
    f"iif({_OWN_DATE}.exists(), {_day(_OWN_DATE)},\n"
    f"  {_RECORD}.ofType(Observation)\n"
    "    .aggregate(iif($total.startsWith('Observation/') and ($total in "
    f"{_MEMBERS}) and {_OWN_DATE}.exists(),\n"
    f"      {_day(_OWN_DATE)}, $total), 'Observation/' + id)\n"
    f"    .select(iif($this.startsWith('Observation/'), {_UNDATED}, $this)))"
)
_ACTIVE_MEDICATIONS = (
    f"{_RECORD}.ofType(MedicationRequest)"
    ".where(status = 'active' and intent.where($this = 'proposal').empty())"
)
#: ServiceRequests a clinician's request stands in (profile.STANDING_REQUEST).
_STANDING_REQUESTS = (
    f"{_RECORD}.ofType(ServiceRequest)"
    f".where({_one_of('status', sorted(STANDING_REQUEST))}"
    " and intent.where($this = 'proposal').empty())"
)
_CODED_MEDICINE = (
    "medication.ofType(CodeableConcept).coding.where(system.exists() and code.exists())"
)
_MEDICATION_REF = "'^(.*/)?Medication/([^/]+)/*(/_history/.*)?$'"
#: What an active MedicationRequest prescribes: its first coding, else its Medication, else itself.
_MEDICINE = (
    f"iif({_CODED_MEDICINE}.exists(), {_CODED_MEDICINE}.first().select(system + '|' + code),\n"
    f"  iif(medication.ofType(Reference).reference.matches({_MEDICATION_REF}),\n"
    "    medication.ofType(Reference).reference"
    f".replaceMatches({_MEDICATION_REF}, 'Medication/$2'),\n"
    "    'MedicationRequest/' + id))"
)
_MEDICATION_COUNT = f"{_ACTIVE_MEDICATIONS}\n  .select({_MEDICINE}).distinct().count()"
_MEDICATION_DAY = (
    f"iif({_ACTIVE_MEDICATIONS}.authoredOn.exists(),\n"
    f"  {_ACTIVE_MEDICATIONS}.authoredOn.select({_day('$this')}){_MAX},\n"
    f"  {_UNDATED})"
)
#: The codings of the medicine an active MedicationRequest asks for: its CodeableConcept, else,
#: for a local (``#``) reference, the code of the Medications it contains.
_REQUESTED_MEDICINE = (
    "iif(medication.ofType(CodeableConcept).exists(), medication.ofType(CodeableConcept).coding,\n"
    "  iif(medication.ofType(Reference).reference.startsWith('#'),\n"
    "    contained.ofType(Medication).code.coding))"
)
_NUMBER = "(value.ofType(Quantity).value | value.ofType(integer) | value.ofType(decimal))"


# -- codes -------------------------------------------------------------------------------------


def _coding_criterion(rules: Iterable[Rule]) -> str:
    """A criterion on a Coding: it is a member of one of the rules' value sets (and of none of
    the value sets a rule excludes), by FHIRPath's ``memberOf``."""
    tests = []
    for rule in rules:
        test = _any_of([f"memberOf({_string(canonical)})" for canonical in rule.valuesets])
        if rule.excluding:
            left_out = _any_of([f"memberOf({_string(c)})" for c in rule.excluding])
            test = f"({test}) and ({left_out}).not()"
        tests.append(test)
    return _any_of(list(dict.fromkeys(tests)))


def _concept_matches(path: str, rules: Iterable[Rule]) -> str:
    return f"{path}.where({_coding_criterion(rules)}).exists()"


def _item_code_in(codes: Sequence[str]) -> str:
    """A questionnaire item names one of ``codes``: by the last ``/`` segment of its ``linkId``
    when that is a LOINC code, else by the last ``#`` or ``/`` segment of its ``definition``."""
    link = f"linkId.matches('^(.*/)?{_LOINC_SHAPE}/*$')"
    code = f"iif({link}, linkId, definition).replaceMatches('^(.*[#/])?([^#/]*)/*$', '$2')"
    return _one_of(code, codes)


def _matched(rules: Sequence[Rule], tests: dict[str, Reading], path: str) -> list[str]:
    """``codes match and test``, one per distinct test (rules sharing a test share one)."""
    groups: dict[str | None, list[Rule]] = {}
    for rule in rules:
        test = tests[rule.id]
        if test is not False:
            groups.setdefault(test if isinstance(test, str) else None, []).append(rule)
    return [
        f"{_concept_matches(path, grouped)} and {test}" if test else _concept_matches(path, grouped)
        for test, grouped in groups.items()
    ]


def _applies(scope: AppliesTo | None) -> str | None:
    """The patient is one a rule with ``applies_to`` reads (``None``: everyone). Without a birth
    date (or with one after ``%asOf``) the patient is read as an adult: a minimum age holds, a
    maximum does not; any gender but the opposite sex's holds."""
    if scope is None:
        return None
    tests = []
    day = _day("birthDate")
    at_least = (
        f"{day} <= {_as_of_minus(scope.age_at_least, 'years')}"
        if scope.age_at_least is not None
        else None
    )
    if scope.age_below is not None:
        bounds = [f"{day} <= %asOf.toString()", f"{day} > {_as_of_minus(scope.age_below, 'years')}"]
        tests.append(f"birthDate.exists() and {' and '.join([*bounds, *filter(None, [at_least])])}")
    elif at_least is not None:
        tests.append(f"(birthDate.empty() or {day} > %asOf.toString() or {at_least})")
    if scope.sex is not None:
        other = "male" if scope.sex == "female" else "female"
        tests.append(f"gender.where($this = {_string(other)}).empty()")
    return f"{_PATIENT}.where({' and '.join(tests)}).exists()"


def _scoped(rule: Rule, reading: Reading) -> Reading:
    """A rule's test on a matched element, limited to the patients the rule applies to."""
    applies = _applies(rule.applies_to)
    if applies is None or reading is False:
        return reading
    if reading is None or reading is True:
        return applies
    return f"{applies} and ({reading})"


# -- readings ----------------------------------------------------------------------------------


#: A Quantity's unit as the Python reader takes it: the UCUM ``code``, else the free text ``unit``,
#: else a code of another system; spellings that are no UCUM code (``mmHg``) as the one they mean.
_QUANTITY_UNIT = (
    "iif(system = 'http://unitsofmeasure.org' and code.exists(), code,"
    " iif(unit.exists(), unit, code))"
    + "".join(f".replace({_string(seen)}, {_string(ucum)})" for seen, ucum in SPELLINGS.items())
    + ".lower()"
)


def _in_unit(bands: ValueBands) -> str:
    """The numbers of a reading expressed in the bands' unit: a Quantity in that unit (or in no
    unit) or in a declared mislabel of it as it is, a Quantity in a declared conversion's unit
    converted (``value * factor + offset``), and a bare integer or decimal as it is."""
    if not bands.unit:
        return _NUMBER
    same = [bands.unit, *(m.unit for m in bands.mislabels)]
    as_is = _one_of("$this", [u.lower() for u in same])
    quantity = "value.ofType(Quantity)"
    parts = [f"{quantity}.where({_QUANTITY_UNIT}.select({as_is}).all($this)).value"]
    for conversion in bands.conversions:
        unit = _string(conversion.from_.lower())
        arithmetic = f"value * {_number(conversion.factor)}"
        if conversion.offset:
            arithmetic += f" + {_number(conversion.offset)}"
        parts.append(f"{quantity}.where({_QUANTITY_UNIT} = {unit}).select({arithmetic})")
    parts += ["value.ofType(integer)", "value.ofType(decimal)"]
    return "(" + " | ".join(parts) + ")"


def _bands_reached(bands: ValueBands, wanted: set[int]) -> str | None:
    """A criterion on a number: it falls in a band at one of the ``wanted`` indexes (a number
    falls in the first band whose ``min`` it reaches); ``None`` if it never can."""
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
        parts = [f"$this >= {_number(low)}"] if low is not None else []
        parts += [f"$this < {_number(high)}"] if high is not None else []
        tests.append(" and ".join(parts) or "true")
    return _any_of(tests) if tests else None


def _answer_codings(kind: Kind) -> str:
    if kind == "observation":
        return "value.ofType(CodeableConcept).coding"
    return "value.ofType(Coding)"


def _answers_criterion(answers: Sequence[tuple[Answer, Sequence[str]]]) -> str:
    """A criterion on a Coding: it matches one of the answers (an answer without a system
    matches any system but the ``excluded`` ones paired with it)."""
    groups: dict[tuple[str | None, tuple[str, ...]], list[str]] = {}
    for answer, excluded in answers:
        groups.setdefault((answer.system, tuple(excluded)), []).append(answer.code)
    tests = []
    for (system, excluded), codes in groups.items():
        test = f"system = {_string(system)}" if system else "system.exists()"
        if excluded:
            test += f" and ({_one_of('system', excluded)}).not()"
        tests.append(f"{test} and {_one_of('code', codes)}")
    return _any_of(tests)


def _known_answer(answers: Sequence[Answer]) -> str:
    return _answers_criterion([(a, ()) for a in answers])


def _deciding_answer(answers: Sequence[Answer], wanted: set[int]) -> str | None:
    """A criterion on a Coding: the first answer of the table it matches is at a ``wanted``
    index."""
    deciding: list[tuple[Answer, Sequence[str]]] = []
    for index in sorted(wanted):
        answer = answers[index]
        earlier = [a for a in answers[:index] if a.code == answer.code]
        if any(a.system is None or a.system == answer.system for a in earlier):
            continue  # an earlier answer decides every coding this one matches
        excluded = [a.system for a in earlier if a.system] if answer.system is None else []
        deciding.append((answer, excluded))
    return _answers_criterion(deciding) if deciding else None


def _readable(rule: Rule, kind: Kind) -> Reading:
    """When an element matched by ``rule`` has a usable result (status not ``unknown``)."""
    if rule.resource != "Observation":
        return None  # a finished Encounter and the medication count always read
    if rule.value is not None:
        return f"{_in_unit(rule.value)}.exists()"
    if rule.answers is not None:
        return f"{_answer_codings(kind)}.where({_known_answer(rule.answers)}).exists()"
    return None


def _any_result(rule: Rule, kind: Kind) -> Reading:
    """When an element matched by ``rule`` is read at all, whatever its result (a gap closed by
    any result): every matched element but a panel that only groups its members."""
    if rule.resource != "Observation" or kind == "answer":
        return None
    return "(hasMember.empty() or value.exists())"


def _present(severity: Severity | None) -> Callable[[Rule, Kind], Reading]:
    """The test that an element matched by a rule reads present with at least ``severity``."""
    rank = SEVERITY_RANK[severity]

    def test(rule: Rule, kind: Kind) -> Reading:
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
                return f"{_MEDICATION_COUNT}.where({reached}).exists()"
            return f"{_in_unit(rule.value)}.where({reached}).exists()"
        if rule.answers is not None:
            chosen = {
                n
                for n, answer in enumerate(rule.answers)
                if answer.status == "present" and SEVERITY_RANK[answer.severity] >= rank
            }
            deciding = _deciding_answer(rule.answers, chosen)
            if deciding is None:
                return False
            first = f"{_answer_codings(kind)}.where({_known_answer(rule.answers)}).first()"
            return f"{first}.where({deciding}).exists()"
        if SEVERITY_RANK[rule.severity] < rank:
            return False
        if rule.resource != "Observation":
            return None
        test = "value.ofType(boolean).where($this = false).empty()"
        if kind == "observation":
            negative = _one_of("code", sorted(NEGATIVE_INTERPRETATION))
            test += f" and interpretation.coding.where(system.exists() and {negative}).empty()"
        return test

    return test


# -- the observations of a feature -------------------------------------------------------------


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
        """The collection, or ``""`` when the feature has no rule read from observations."""
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
        return f" + iif({criterion}, '|1', '|0')"

    def _observation_criterion(self, test: Callable[[Rule, Kind], Reading]) -> Reading:
        by_code, by_category = self._rules("Observation"), self._rules("Observation", "category")
        criteria = []
        tests = {r.id: _scoped(r, test(r, "observation")) for r in (*by_code, *by_category)}
        if elements := _matched(by_code, tests, "code.coding"):
            criteria.append(f"$this.combine(component).where({_any_of(elements)}).exists()")
        criteria += _matched(by_category, tests, "category.coding")
        return _any_of(criteria) if criteria else False

    def _observations(self) -> str:
        readable = self._observation_criterion(self.readable)
        if readable is False:
            return ""
        mark = self._mark(self._observation_criterion(self.present) if self.present else None)
        return (
            f"{_RECORD}.ofType(Observation).where({_OBSERVATION_USABLE}\n"
            f"  and ({readable}))\n"
            f"  .select({_indent(_OBSERVATION_DAY).lstrip()}{mark})"
        )

    def _item_criterion(self, test: Callable[[Rule, Kind], Reading]) -> Reading:
        groups: dict[str | None, list[str]] = {}  # item codes per answer test
        for rule in self._rules("Observation"):
            reading = _scoped(rule, test(rule, "answer"))
            codes = [c.code for c in self.codes(rule) if c.system == LOINC]
            codes = [c for c in codes if re.fullmatch(_LOINC_SHAPE, c)]
            if reading is not False and codes:
                groups.setdefault(reading if isinstance(reading, str) else None, []).extend(codes)
        if not groups:
            return False
        criteria = [
            f"{_item_code_in(codes)} and "
            + (f"answer.first().where({reading}).exists()" if reading else "answer.exists()")
            for reading, codes in groups.items()
        ]
        return f"repeat(item.combine(answer.item)).where({_any_of(criteria)}).exists()"

    def _questionnaires(self) -> str:
        readable = self._item_criterion(self.readable)
        if readable is False:
            return ""
        mark = self._mark(self._item_criterion(self.present) if self.present else None)
        usable = _one_of("status", sorted(USABLE_STATUSES))
        return (
            f"{_RECORD}.ofType(QuestionnaireResponse).where({usable}\n"
            f"  and {readable})\n"
            f"  .select({_day_or_undated('authored')}{mark})"
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
        path = "class.combine(type.coding)"
        readable, mark = self._coded(rules, path)
        when = "iif(period.end.exists(), period.end, period.start)"
        return (
            f"{_RECORD}.ofType(Encounter).where(status = 'finished'\n"
            f"  and ({readable}))\n"
            f"  .select({_day_or_undated(when)}{mark})"
        )

    def _service_requests(self) -> str:
        """Standing requests (active or completed, intent not proposal) whose code is in a
        rule's value sets, each by its ``authoredOn`` day."""
        rules = self._rules("ServiceRequest")
        if not rules:
            return ""
        readable, mark = self._coded(rules, "code.coding")
        return (
            f"{_STANDING_REQUESTS}.where(\n"
            f"{_indent(readable)})\n"
            f"  .select({_day_or_undated('authoredOn')}{mark})"
        )

    def _medications(self) -> str:
        parts = [self._medication_count(), self._medicines()]
        kept = [p for p in parts if p]
        return _union(kept) if kept else ""

    def _medicines(self) -> str:
        """Active requests for a medicine in a presence rule's value sets, each by its day."""
        rules = [r for r in self._rules("MedicationRequest") if r.value is None]
        if not rules:
            return ""
        readable, mark = self._coded(rules, _REQUESTED_MEDICINE)
        return (
            f"{_ACTIVE_MEDICATIONS}.where(\n"
            f"{_indent(readable)})\n"
            f"  .select({_day_or_undated('authoredOn')}{mark})"
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
            f"iif({_RECORD}.ofType(MedicationRequest).exists(){read},\n"
            f"{_indent(_MEDICATION_DAY)}{mark})"
        )


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


def _count_at_least(items: Sequence[_Node], count: int) -> _Node:
    """At least ``count`` of the items hold, constants folded away: the sum of ``iif(…, 1, 0)``
    compared with what the constant items leave to reach."""
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
    terms = "\n+ ".join(f"iif(\n{_render(item, 1)},\n  1, 0)" for item in left)
    return _Text(f"({terms}) >= {needed}", f"at least {needed} of {len(left)}")


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
        return f"{pad}(\n{_render(node.item, depth + 1)}\n{pad}).not()"
    inner = "  " * (depth + 1)
    parts = [_render(item, depth + 1) for item in node.items]
    parts[1:] = [f"{inner}{node.op} {part[len(inner) :]}" for part in parts[1:]]
    return f"{pad}{_comment(node.comment)}(\n" + "\n".join(parts) + f"\n{pad})"


def _comment(text: str | None) -> str:
    return f"/* {text.replace('*/', '* /')} */ " if text else ""


class Translator:
    """Translates rules into FHIRPath, reading the feature mappings, dimension policy and data
    gaps of ``rules``: the definitions the profile builder reads."""

    def __init__(self, rules: ProfileRules) -> None:
        self._rules = rules
        self._gaps = {gap.id: gap for gap in rules.gaps}

    def expression(self, rule: RuleExpr) -> str:
        """The FHIRPath expression that is true exactly when ``rule.evaluate(profile).holds``."""
        return _render(self._node(rule, gaps_known=True))

    def _node(self, rule: RuleExpr, *, gaps_known: bool) -> _Node:
        if isinstance(rule, FeatureRule):
            return self._feature(rule.feature, rule.severity_at_least)
        if isinstance(rule, NeedRule):
            return self._need(rule.need, rule.at_least)
        if isinstance(rule, AgeAtLeast):
            return _Text(_birth_day_where(f"<= {_as_of_minus(rule.age_at_least, 'years')}"))
        if isinstance(rule, AgeBelow):
            earliest = _as_of_minus(rule.age_below, "years")
            return _Text(_birth_day_where(f"> {earliest}", "<= %asOf.toString()"))
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
        raise TypeError(f"no FHIRPath translation for {type(rule).__name__}")

    def _feature(self, feature_id: str, severity: Severity | None) -> _Node:
        """The finding is present, current and at least ``severity``."""
        entry = self._rules.index.features.get(feature_id)
        if entry is None:
            return _FALSE
        feature = entry[0]
        label = f"feature {feature_id}" + (f", {severity} or graver" if severity else "")
        observed = _observed(feature, self._rules.index.codes, severity)
        parts = (_diagnosed(feature, severity), observed)
        return _junction("or", parts, label)

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
                terms = "\n+ ".join(f"iif(\n{_render(n, 1)},\n  1, 0)" for n in counted)
                label = f"{escalate} or more moderate findings"
                reaching.append(_Text(f"({terms}) >= {escalate}", label))
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
            days = (
                screenings[0] if len(screenings) == 1 else "(\n" + "\n| ".join(screenings) + "\n)"
            )
            within = f"$this >= {_as_of_minus(gap.within_days, 'days')}"
            recent = _Text(f"{days}.where({within}).empty()", "no recent screening")
        return _junction("and", (when, recent), f"gap {gap.id}")


def _diagnosed(feature: Feature, severity: Severity | None) -> _Node:
    """An active Condition matches one of the feature's rules of at least ``severity`` (and, for
    a feature whose diagnoses expire, is undated or recent enough)."""
    rules = [
        r
        for r in feature.rules
        if r.resource == "Condition" and SEVERITY_RANK[r.severity] >= SEVERITY_RANK[severity]
    ]
    tests: dict[str, Reading] = {r.id: _scoped(r, None) for r in rules}
    criteria = _matched([r for r in rules if r.match == "code"], tests, "code.coding")
    criteria += _matched([r for r in rules if r.match == "category"], tests, "category.coding")
    if not criteria:
        return _FALSE
    current = ""
    if feature.conditions_current_for_days is not None:
        since = _as_of_minus(feature.conditions_current_for_days, "days")
        current = f"\n  and ({_CONDITION_DAY}.empty() or {_day(_CONDITION_DAY)} >= {since})"
    return _Text(
        f"{_RECORD}.ofType(Condition).where({_CONDITION_HOLDS}{current}\n"
        f"  and ({_any_of(criteria)})).exists()"
    )


def _observed(feature: Feature, codes: CodesOf, severity: Severity | None) -> _Node:
    """The newest readable observation of the feature reads present with at least
    ``severity``, and is current: the greatest marked day ends in ``|1`` and is recent enough.

    For a feature with ``confirmed_after_days`` each Observation rule is a criterion of its
    own (its newest reading decides for it, present only when confirmed), and the feature holds
    when one of them does."""
    if feature.confirmed_after_days is None:
        return _newest_present(feature, codes, _present(severity))
    criteria = []
    for rule in feature.rules:
        if rule.resource == "Observation":
            single = feature.model_copy(update={"rules": [rule]})
            confirmed = _confirmed(single, codes, feature.confirmed_after_days)
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
    tests = ["endsWith('|1')"]
    if feature.current_for_days is not None:
        tests.append(f"substring(0, 10) >= {_as_of_minus(feature.current_for_days, 'days')}")
    return _Text(f"{observations.days()}{_MAX}\n  .where({' and '.join(tests)}).exists()")


def _confirmed(feature: Feature, codes: CodesOf, days: int) -> str | None:
    """A Boolean: the feature's one Observation rule has read present without a break for at
    least ``days``. After its newest absent reading (``'0000-00-00'`` when none), its earliest
    present reading is at least ``days`` older than its newest reading. ``None`` when the rule
    reads nothing."""
    marked = _Observations(feature, codes, _present(None)).days()
    if not marked:
        return None
    readings = f"(\n{_indent(marked)}\n)"
    last_absent = (
        f"({readings}.where(endsWith('|0')).select(substring(0, 10)) | '0000-00-00'){_MAX}"
    )
    newest = f"{readings}.select(substring(0, 10)){_MAX}"
    present = f"{readings}.where(endsWith('|1')).select(substring(0, 10))"
    first = f"{present}\n  .where($this > {last_absent}){_MIN}"
    return (
        f"{first}\n  .select((toDate() + {days} days).toString())\n"
        f"  .where($this <= {newest}).exists()"
    )


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
    day = _day("birthDate")
    tests = " and ".join(f"{day} {c}" for c in comparisons)
    return f"{_PATIENT}.where(birthDate.exists() and {tests}).exists()"


def _language_not(language: str) -> str:
    coded = "language.coding.where(system.exists() and code.exists())"
    preferred = (
        f"iif(communication.where(preferred = true).{coded}.exists(),\n"
        f"  communication.where(preferred = true).{coded},\n"
        f"  communication.{coded})"
    )
    primary = _string(language.split("-")[0].lower())
    subtag = ".first().code.replaceMatches('-.*$', '').lower()"
    return f"{_PATIENT}.where(\n{_indent(preferred)}{subtag} != {primary}).exists()"


def _contact_preference(system: str) -> str:
    ranked = f"{_PATIENT}.telecom.where(system.exists() and rank.exists())"
    first = f"{ranked}.where(rank = {ranked}.rank{_MIN}).system{_MIN}"
    return f"{_PATIENT}.where({first} = {_string(system)}).exists()"
