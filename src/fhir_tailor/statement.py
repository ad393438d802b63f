"""A finding said as what was found: the value or answer read, and what it means.

``HbA1c 5.4%: at target (below 7%)``, ``BMI 31.2 kg/m2: obesity class 1-2 (30-39.9)``,
``Hunger Vital Sign, worried food would run out "Never true": No food insecurity``,
``Hypertension: diagnosis on record``. A finding's fields (feature, status, band label) are for
programs: shown side by side they read as double negatives to a clinician (``HbA1c below 7% |
absent | 5.4 %``). The words come from the definitions (a rule's ``measure``, a band's
``meaning``, a feature's ``label`` and ``absent_label``; docs/mapping-format.md); only how they
are joined, and what kind of record a presence finding rests on, are said here.
"""

from __future__ import annotations

from .mapping import AppliesTo, Feature, Match, Status
from .terminology.units import display

#: What a presence finding rests on, by the resource kind and the matched element.
ON_RECORD: dict[tuple[str, str], str] = {
    ("Condition", "code"): "diagnosis on record",
    ("Condition", "category"): "health concern on record",
    ("Observation", "code"): "observation on record",
    ("Observation", "category"): "observation on record",
    ("Encounter", "code"): "encounter on record",
    ("ServiceRequest", "code"): "order or referral on record",
    ("MedicationRequest", "code"): "active prescription on record",
}


def statement(
    match: Match,
    status: Status,
    *,
    value: float | None = None,
    answer: str | None = None,
    meaning: str | None = None,
) -> str:
    """What a reading of ``match`` found: a value and its band's ``meaning``, an answer and
    what its status says of the feature, or the feature and the record it rests on."""
    rule = match.rule
    if rule.value is not None:
        if value is None:
            return f"{measure(match)}: result could not be read"
        return f"{reading(match, value)}: {meaning or found(match.feature, status)}"
    if rule.answers is not None:
        if answer is None:
            return f"{measure(match)}: answer could not be read"
        return f'{measure(match)} "{answer}": {found(match.feature, status)}'
    return f"{found(match.feature, status)}: {ON_RECORD[rule.resource, rule.match]}"


def found(feature: Feature, status: Status) -> str:
    """What a status says of a feature: its ``label``, its ``absent_label`` (or that the label
    was not found), or that the reading settles nothing."""
    if status == "present":
        return feature.label
    if status == "absent":
        return feature.absent_label or f"{feature.label} not found"
    return "not determined"


def measure(match: Match) -> str:
    """What a value or answer rule reads: its ``measure``, else the matched code's display (a
    definitions folder written before measures were named)."""
    return match.rule.measure or match.code.display or match.code.code


def reading(match: Match, value: float) -> str:
    """``HbA1c 5.4%``, ``eGFR 45 mL/min/1.73 m2``, ``PHQ-9 score 12``: what a value rule
    read, in the bands' unit (a unitless score or count shows none)."""
    bands = match.rule.value
    unit = display(bands.unit) if bands is not None and bands.unit is not None else None
    said = f"{measure(match)} {value:g}"
    if unit is None:
        return said
    return f"{said}{unit}" if unit == "%" else f"{said} {unit}"


def unconfirmed(match: Match, value: float | None, meaning: str | None, days: int) -> str:
    """A present reading of a feature confirmed only by persistence, before it has persisted:
    what it found, and that it does not count yet."""
    said = statement(match, "present", value=value, meaning=meaning)
    return (
        f"{said}, not confirmed (no earlier result in this range at least {days} days before, "
        "without a normal one since)"
    )


def not_assessed(
    match: Match, value: float | None, answer: str | None, scopes: list[AppliesTo]
) -> str:
    """A reading by rules that do not apply to the patient (a toddler's BMI, under neither the
    adult nor the child cut points): what was read, and whom those rules read."""
    rule = match.rule
    if rule.value is not None and value is not None:
        read = reading(match, value)
    elif rule.answers is not None and answer is not None:
        read = f'{measure(match)} "{answer}"'
    else:
        read = match.feature.label if rule.reads_presence else measure(match)
    whom = " or ".join(sorted({scope.describe() for scope in scopes}))
    return f"{read}: not assessed" + (f" (read for {whom})" if whom else "")
