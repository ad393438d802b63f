"""Life state: whether the record says the patient has died (``Patient.deceased[x]``).

FHIR R4 makes ``Patient.deceased[x]`` (``deceasedBoolean`` or ``deceasedDateTime``) a modifier
element, since what is appropriate to do for a patient changes once they are marked deceased
(hl7.org/fhir/R4/patient.html, Patient.deceased[x], isModifierReason). No care plan is proposed
for a patient who has died, so the reading errs on that side:

- ``deceasedBoolean: true``, or any ``deceasedDateTime``, means deceased. A date after the as-of
  date is deceased too: the as-of date positions the clinical clock (ages, recency), but a plan
  is written now, into a record that now says the patient died. It is reported, since a death
  dated after the as-of date is either a run for a past date or a mistyped date.
- ``deceasedBoolean: false`` means alive, and so does no ``deceased[x]`` at all: the element's
  comment says an absent value states nothing, and that most systems take it to mean alive.
- A value that cannot be read (``deceasedBoolean: "Y"``, ``deceasedDateTime: "unknown"``, a
  misnamed ``deceased`` or ``deceasedDate``, a ``false`` beside a date) is read as deceased and
  reported: the element exists only to record a death, and a plan withheld until the record is
  corrected costs a delay, while a plan written for a patient who died sends reminders and
  referrals to a family in mourning. ``"true"``/``"false"`` written as JSON strings are read
  as the booleans they spell, and ``null`` or ``""`` as no value (both reported): exporters
  write them for living patients.

Problems name the field, never its value (a date of death is identifying).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from enum import Enum

from .fhirdata import Resource, parse_date

#: The two names FHIR R4 gives ``Patient.deceased[x]``.
DECEASED_BOOLEAN = "deceasedBoolean"
DECEASED_DATETIME = "deceasedDateTime"


class _Says(Enum):
    ALIVE = "alive"
    DECEASED = "deceased"
    NOTHING = "nothing"


def is_deceased(
    patient: Resource, as_of: date, report: Callable[[str], None] = lambda _problem: None
) -> bool:
    """Whether ``patient`` is recorded as deceased; ``report`` gets each problem met reading it."""
    readings: dict[str, _Says] = {}
    for field in sorted(k for k in patient if k.startswith("deceased")):
        says, problem = _read(field, patient[field], as_of)
        if field not in (DECEASED_BOOLEAN, DECEASED_DATETIME):
            reading = problem or f"read as {says.value}"
            problem = f"not a FHIR element (deceasedBoolean or deceasedDateTime); {reading}"
        if problem:
            report(f"field {field}: {problem}")
        readings[field] = says
    said = set(readings.values())
    if {_Says.ALIVE, _Says.DECEASED} <= said:
        fields = ", ".join(sorted(readings))
        report(f"field {fields}: one says alive, another deceased; read as deceased")
    return _Says.DECEASED in said


def _read(field: str, value: object, as_of: date) -> tuple[_Says, str]:
    """What one ``deceased*`` element says, and the problem reading it (``""`` if none)."""
    if value is None or value == "":
        return _Says.NOTHING, "no value; read as no statement (alive)"
    if field != DECEASED_DATETIME:
        if isinstance(value, bool):
            return (_Says.DECEASED if value else _Says.ALIVE), ""
        spelled = value.strip().lower() if isinstance(value, str) else None
        if spelled in ("true", "false"):
            return (
                _Says.DECEASED if spelled == "true" else _Says.ALIVE,
                f"a string, not a boolean; read as {spelled}",
            )
    if isinstance(value, str) and (died := parse_date(value)) is not None:
        if field != DECEASED_DATETIME:
            return _Says.DECEASED, "a date, not a boolean; read as deceased"
        if died > as_of:
            return _Says.DECEASED, "after the as-of date; read as deceased"
        return _Says.DECEASED, ""
    kind = "dateTime" if field == DECEASED_DATETIME else "boolean"
    return _Says.DECEASED, f"not a {kind}; read as deceased"
