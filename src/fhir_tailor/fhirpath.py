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

What each rule tests is decided in :mod:`fhir_tailor.expression`, which the CQL translation
(:mod:`fhir_tailor.cql`) shares; :class:`FHIRPath` here writes each test in FHIRPath.

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

from collections.abc import Iterable, Sequence
from typing import Literal

from .expression import (
    LOINC_SHAPE,
    UNDATED,
    Kind,
    Language,
    Mark,
    ObservationDays,
    Reading,
    RuleTranslator,
    Test,
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
from .terminology.units import SPELLINGS

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
_MAX = ".aggregate(iif($total.empty() or $this > $total, $this, $total))"
_MIN = ".aggregate(iif($total.empty() or $this < $total, $this, $total))"


# -- literals and dates ------------------------------------------------------------------------


def _one_of(path: str, values: Iterable[str]) -> str:
    """``path = 'a'`` or ``path in ('a' | 'b')``."""
    unique = list(dict.fromkeys(values))
    if len(unique) == 1:
        return f"{path} = {string_literal(unique[0])}"
    return f"{path} in ({' | '.join(string_literal(v) for v in unique)})"


def _day(value: str) -> str:
    """The day a date, dateTime or instant is written for, as ``'YYYY-MM-DD'`` (a partial date
    is filled in with the first month and day), which sorts as the days do."""
    return f"({value}.toString() + '-01-01').substring(0, 10)"


def _day_or_undated(value: str) -> str:
    return f"iif({value}.exists(), {_day(value)}, {UNDATED})"


def _each_day(resources: str, day: str, mark: str) -> str:
    """The (marked) day of each of the ``resources``."""
    return f"{resources}\n  .select({day}{mark})"


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
    f"    .select(iif($this.startsWith('Observation/'), {UNDATED}, $this)))"
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
_MEDICATION_DAY = (
    f"iif({_ACTIVE_MEDICATIONS}.authoredOn.exists(),\n"
    f"  {_ACTIVE_MEDICATIONS}.authoredOn.select({_day('$this')}){_MAX},\n"
    f"  {UNDATED})"
)
#: The codings of the medicine an active MedicationRequest asks for: its CodeableConcept, else,
#: for a local (``#``) reference, the code of the Medications it contains.
_REQUESTED_MEDICINE = (
    "iif(medication.ofType(CodeableConcept).exists(), medication.ofType(CodeableConcept).coding,\n"
    "  iif(medication.ofType(Reference).reference.startsWith('#'),\n"
    "    contained.ofType(Medication).code.coding))"
)
_NUMBER = "(value.ofType(Quantity).value | value.ofType(integer) | value.ofType(decimal))"
#: A Quantity's unit as the Python reader takes it: the UCUM ``code``, else the free text ``unit``,
#: else a code of another system; spellings that are no UCUM code (``mmHg``) as the one they mean.
_QUANTITY_UNIT = (
    "iif(system = 'http://unitsofmeasure.org' and code.exists(), code,"
    " iif(unit.exists(), unit, code))"
    + "".join(
        f".replace({string_literal(seen)}, {string_literal(ucum)})"
        for seen, ucum in SPELLINGS.items()
    )
    + ".lower()"
)


class FHIRPath(Language):
    """FHIRPath N1 over the record Bundle: each element a collection reads is its focus."""

    name = "FHIRPath"
    number = "$this"
    as_of_day = "%asOf.toString()"
    birth_day = _day("birthDate")
    condition_codes = "code.coding"
    condition_categories = "category.coding"
    encounter_codes = "class.combine(type.coding)"
    request_codes = "code.coding"
    medicine_codes = _REQUESTED_MEDICINE
    items = "repeat(item.combine(answer.item))"
    first_answer = "answer.first()"
    answered = "answer.exists()"
    medication_count = f"{_ACTIVE_MEDICATIONS}\n  .select({_MEDICINE}).distinct().count()"
    any_result_test = "(hasMember.empty() or value.exists())"

    def one_of(self, path: str, values: Iterable[str]) -> str:
        return _one_of(path, values)

    def union(self, collections: Sequence[str]) -> str:
        """The collections one under the other, joined by ``|``."""
        if len(collections) == 1:
            return collections[0]
        parts = [indent(c) for c in collections]
        parts[1:] = ["| " + part[2:] for part in parts[1:]]
        return "(\n" + "\n".join(parts) + "\n)"

    def negate(self, expression: str) -> str:
        return f"({expression}).not()"

    def one_if(self, rendered: str) -> str:
        return f"iif(\n{rendered},\n  1, 0)"

    def some(self, collection: str, criterion: str, alias: str) -> str:
        return f"{collection}.where({criterion}).exists()"

    def first_where(self, collection: str, criterion: str, alias: str) -> str:
        return f"{collection}.where({criterion}).first()"

    def nonempty(self, collection: str) -> str:
        return f"{collection}.exists()"

    def as_of_minus(self, amount: int, unit: Literal["days", "years"]) -> str:
        """A day before ``%asOf``, as a day string (calendar arithmetic: a year before 29
        February is 28 February)."""
        return f"(%asOf - {amount} {unit}).toString()"

    def member_of(self, canonical: str, alias: str) -> str:
        """By FHIRPath's ``memberOf``."""
        return f"memberOf({string_literal(canonical)})"

    def coding_field(self, alias: str, name: str) -> str:
        return name

    def known(self, path: str) -> str:
        return f"{path}.exists()"

    def and_reading(self, matches: str, reading: str) -> str:
        return f"{matches} and {reading}"

    def born_within(self, comparisons: Sequence[str]) -> str:
        return f"birthDate.exists() and {' and '.join(comparisons)}"

    def born_unknown_or(self, comparisons: Sequence[str]) -> str:
        return f"(birthDate.empty() or {' or '.join(comparisons)})"

    def gender_not(self, gender: str) -> str:
        return f"gender.where($this = {string_literal(gender)}).empty()"

    def patient_where(self, tests: Sequence[str]) -> str:
        return f"{_PATIENT}.where({' and '.join(tests)}).exists()"

    def language_not(self, primary: str) -> str:
        coded = "language.coding.where(system.exists() and code.exists())"
        preferred = (
            f"iif(communication.where(preferred = true).{coded}.exists(),\n"
            f"  communication.where(preferred = true).{coded},\n"
            f"  communication.{coded})"
        )
        subtag = ".first().code.replaceMatches('-.*$', '').lower()"
        other = f"{subtag} != {string_literal(primary)}"
        return f"{_PATIENT}.where(\n{indent(preferred)}{other}).exists()"

    def contact_preference(self, system: str) -> str:
        ranked = f"{_PATIENT}.telecom.where(system.exists() and rank.exists())"
        first = f"{ranked}.where(rank = {ranked}.rank{_MIN}).system{_MIN}"
        return f"{_PATIENT}.where({first} = {string_literal(system)}).exists()"

    def in_unit(self, bands: ValueBands, kind: Kind) -> str:
        """A Quantity in the bands' unit (or in no unit) or in a declared mislabel of it as it
        is, one in a declared conversion's unit converted, and a bare integer or decimal as it
        is."""
        if not bands.unit:
            return _NUMBER
        quantity = "value.ofType(Quantity)"
        as_is = _one_of("$this", units_as_is(bands))
        parts = [f"{quantity}.where({_QUANTITY_UNIT}.select({as_is}).all($this)).value"]
        for conversion in bands.conversions:
            unit = string_literal(conversion.from_.lower())
            arithmetic = converted("value", conversion)
            parts.append(f"{quantity}.where({_QUANTITY_UNIT} = {unit}).select({arithmetic})")
        parts += ["value.ofType(integer)", "value.ofType(decimal)"]
        return "(" + " | ".join(parts) + ")"

    def answer_codings(self, kind: Kind) -> str:
        if kind == "answer":
            return "value.ofType(Coding)"
        return "value.ofType(CodeableConcept).coding"

    def presence(self, kind: Kind) -> str:
        """Not ``valueBoolean = false``, nor (on an Observation) an ``N``/``NEG``/``ND``
        interpretation."""
        test = "value.ofType(boolean).where($this = false).empty()"
        if kind != "answer":
            negative = _one_of("code", sorted(NEGATIVE_INTERPRETATION))
            test += f" and interpretation.coding.where(system.exists() and {negative}).empty()"
        return test

    def observation_criterion(self, days: ObservationDays, test: Test) -> Reading:
        """By code on the Observation or a component (``combine``, which keeps the type of
        ``value``), or by category on the Observation."""
        by_code, by_category = days.rules("Observation"), days.rules("Observation", "category")
        criteria = []
        tests = {r.id: self.scoped(r, test(r, "observation")) for r in (*by_code, *by_category)}
        if elements := self.matched(by_code, tests, "code.coding"):
            criteria.append(self.some("$this.combine(component)", any_of(elements), "K"))
        criteria += self.matched(by_category, tests, "category.coding")
        return any_of(criteria) if criteria else False

    def item_code_in(self, codes: Sequence[str]) -> str:
        """By the last ``/`` segment of the item's ``linkId`` when that is a LOINC code, else by
        the last ``#`` or ``/`` segment of its ``definition``."""
        link = f"linkId.matches('^(.*/)?{LOINC_SHAPE}/*$')"
        code = f"iif({link}, linkId, definition).replaceMatches('^(.*[#/])?([^#/]*)/*$', '$2')"
        return _one_of(code, codes)

    def marked(self, criterion: str) -> str:
        return f" + iif({criterion}, '|1', '|0')"

    def observations(self, readable: Reading, mark: str) -> str:
        usable = f"{_RECORD}.ofType(Observation).where({_OBSERVATION_USABLE}\n  and ({readable}))"
        return _each_day(usable, indent(_OBSERVATION_DAY).lstrip(), mark)

    def questionnaires(self, readable: Reading, mark: str) -> str:
        usable = _one_of("status", sorted(USABLE_STATUSES))
        responses = f"{_RECORD}.ofType(QuestionnaireResponse).where({usable}\n  and {readable})"
        return _each_day(responses, _day_or_undated("authored"), mark)

    def encounters(self, readable: str, mark: str) -> str:
        finished = f"{_RECORD}.ofType(Encounter).where(status = 'finished'\n  and ({readable}))"
        when = "iif(period.end.exists(), period.end, period.start)"
        return _each_day(finished, _day_or_undated(when), mark)

    def service_requests(self, readable: str, mark: str) -> str:
        requests = f"{_STANDING_REQUESTS}.where(\n{indent(readable)})"
        return _each_day(requests, _day_or_undated("authoredOn"), mark)

    def medicines(self, readable: str, mark: str) -> str:
        requests = f"{_ACTIVE_MEDICATIONS}.where(\n{indent(readable)})"
        return _each_day(requests, _day_or_undated("authoredOn"), mark)

    def medication_days(self, read: str, mark: str) -> str:
        return (
            f"iif({_RECORD}.ofType(MedicationRequest).exists(){read},\n"
            f"{indent(_MEDICATION_DAY)}{mark})"
        )

    def active_conditions(self, criterion: str, since: str | None) -> str:
        current = ""
        if since is not None:
            current = f"\n  and ({_CONDITION_DAY}.empty() or {_day(_CONDITION_DAY)} >= {since})"
        return (
            f"{_RECORD}.ofType(Condition).where({_CONDITION_HOLDS}{current}\n"
            f"  and ({criterion})).exists()"
        )

    def newest_marked(self, days: str, mark: Mark | None, since: str | None) -> str:
        """The greatest by ``aggregate`` (N1 has no ``max()``)."""
        tests = [f"endsWith('{mark}')"] if mark else []
        if since is not None:
            tests.append(f"substring(0, 10) >= {since}")
        if not tests:
            return self.nonempty(days)
        return f"{days}{_MAX}\n  .where({' and '.join(tests)}).exists()"

    def confirmed(self, readings: str, days: int) -> str:
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

    def none_since(self, screenings: Sequence[str], since: str) -> str:
        days = screenings[0] if len(screenings) == 1 else "(\n" + "\n| ".join(screenings) + "\n)"
        return f"{days}.where($this >= {since}).empty()"


class Translator(RuleTranslator):
    """Translates rules into FHIRPath (:mod:`fhir_tailor.expression` decides what each tests),
    reading the feature mappings, dimension policy and data gaps of ``rules``: the definitions
    the profile builder reads."""

    def __init__(self, rules: ProfileRules) -> None:
        super().__init__(rules, FHIRPath())
