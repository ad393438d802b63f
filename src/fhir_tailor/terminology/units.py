"""Quantities in UCUM: a measured value read in the unit a feature's value bands expect.

Value bands (``value.unit`` of a rule in ``profiles/features``) hold their cut points in one UCUM
unit. A record may carry the same measurement in another unit, and :func:`express` decides, in
this order, how (and whether) the number is read:

1. the expected unit itself, after a trivial normalisation (:data:`SPELLINGS`; the free-text
   ``unit`` is also compared without case): the number as is;
2. a unit the feature declares a *mislabel* of the expected one (eGFR sent as ``mL/min``): the
   number as is, with a note for a data issue;
3. a unit the feature declares an analyte-specific *conversion* from (LDL cholesterol in
   ``mmol/L``, HbA1c in IFCC ``mmol/mol``): ``value x factor + offset``, with a note;
4. a unit UCUM converts into the expected one by dimension alone (``g/dL`` to ``mg/dL``, ``min``
   to ``s``), directly or into a declared conversion's unit: the converted number;
5. anything else: ``None`` (the caller reports the unit and leaves the feature unknown).

UCUM conversions are made with ucumvert (UCUM on pint). Its registry takes about a third of a
second to build, so it is built on the first unit that differs from the expected one, never when
a population's units all match, and each ``(from, to)`` pair is derived once. Two things UCUM
does not know are refused here rather than converted (see :func:`ucum_conversion`): annotations
(``{1.73_m2}``) that differ, and conversions between dimensionless units (IFCC ``mmol/mol`` and
NGSP ``%`` are different scales, not a factor of 0.1 apart).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..mapping import UnitConversion, ValueBands

#: Spellings of a unit that are no UCUM code, and the only UCUM code they can mean.
#: UCUM (v2.2, Other Legacy Units, table "Units Used Predominantly in Clinical Medicine") defines
#: the mercury column as ``m[Hg]`` (metric, so ``mm[Hg]``), and the FHIR ValueSet ``ucum-bp`` (R4)
#: allows ``mm[Hg]`` alone for blood pressure; ``Hg`` is no UCUM atom, so ``mmHg`` has no other
#: reading.
SPELLINGS: dict[str, str] = {"mmHg": "mm[Hg]", "mm Hg": "mm[Hg]"}

#: ``(from, to)`` pairs whose UCUM conversion is remembered at most (then it starts over): the
#: free-text units of a messy source must not grow memory without end.
MAX_REMEMBERED_PAIRS = 4096

#: Significant digits a converted value keeps: enough for any laboratory result, few enough that
#: binary floating-point noise (0.1 g/dL -> 100.00000000000001 mg/dL) never tips a band.
SIGNIFICANT_DIGITS = 12

_ANNOTATION = re.compile(r"\{[^{}]*\}")

Affine = tuple[float, float]
"""A conversion ``value x factor + offset`` as ``(factor, offset)``."""


@dataclass(frozen=True, slots=True)
class Reading:
    """A measured value in the expected unit; ``note`` says what was assumed or converted (for a
    data issue), ``None`` when the value needed no comment."""

    value: float
    note: str | None = None


def display(unit: str) -> str:
    """A UCUM code as people write the unit: ``mmHg`` for ``mm[Hg]`` (the spelling
    :data:`SPELLINGS` reads as it), and an annotation as its text (UCUM annotations in curly
    braces are text, not units: ``mL/min/{1.73_m2}`` is ``mL/min/1.73 m2``)."""
    spelled = next((spelling for spelling, code in SPELLINGS.items() if code == unit), unit)
    return _ANNOTATION.sub(lambda m: m[0][1:-1].replace("_", " "), spelled)


def express(value: float, unit: str, bands: ValueBands, *, coded: bool) -> Reading | None:
    """``value`` measured in ``unit``, read in ``bands.unit``; ``None`` when it cannot be.

    ``coded`` says the unit is a UCUM code (``valueQuantity.code`` with the UCUM system), compared
    with case as UCUM's case-sensitive codes are. A free-text ``valueQuantity.unit`` is compared
    with the declared units without case: UCUM (v2.2, Character Set and Lexical Rules) gives every
    symbol a case-insensitive variant, and for the units bands use (``MG/DL``, ``MM[HG]``, ``S``)
    it is the upper-case spelling.
    """
    expected = bands.unit
    if expected is None:
        return Reading(value)
    seen = SPELLINGS.get(unit.strip(), unit.strip())

    def same(declared: str) -> bool:
        return seen == declared or (not coded and seen.casefold() == declared.casefold())

    if same(expected):
        return Reading(value)
    if any(same(mislabel.unit) for mislabel in bands.mislabels):
        return Reading(value, f"{unit!r} read as {expected!r} (a declared mislabel); value kept")
    for conversion in bands.conversions:
        if same(conversion.from_):
            return _declared(value, conversion, f"{unit!r} converted to {expected!r}")
    direct = ucum_conversion(seen, expected)
    if direct is not None:
        return Reading(_rounded(value * direct[0] + direct[1]))
    for conversion in bands.conversions:
        step = ucum_conversion(seen, conversion.from_)
        if step is not None:
            what = f"{unit!r} converted to {expected!r} through {conversion.from_!r}"
            return _declared(value * step[0] + step[1], conversion, what)
    return None


def ucum_conversion(source: str, target: str) -> Affine | None:
    """How UCUM converts ``source`` into ``target``, or ``None`` when it cannot or must not.

    Remembered per pair, so a population pays for each pair of units once.
    """
    key = (source, target)
    if key not in _conversions:
        if len(_conversions) >= MAX_REMEMBERED_PAIRS:
            _conversions.clear()
        _conversions[key] = _derive(source, target)
    return _conversions[key]


_conversions: dict[tuple[str, str], Affine | None] = {}


def _derive(source: str, target: str) -> Affine | None:
    # UCUM (v2.2, Syntax Rules, curly braces) gives annotations no meaning, so ucumvert reads
    # mL/min as mL/min/{1.73_m2}; in laboratory units they carry what UCUM leaves out (per 1.73 m2
    # of body surface), so only a declared mislabel may equate units whose annotations differ.
    if Counter(_ANNOTATION.findall(source)) != Counter(_ANNOTATION.findall(target)):
        return None
    registry = _registry()
    from pint import Quantity  # after the registry: pint is imported with it, not before

    try:
        start, end = registry.from_ucum(source), registry.from_ucum(target)
        if not (isinstance(start, Quantity) and isinstance(end, Quantity)):
            return None  # a bare annotation such as {score} parses to no quantity
        if start.dimensionless or end.dimensionless:
            return None  # mmol/mol, %, 1: ratios of different kinds UCUM cannot tell apart
        if _arbitrary(registry, start) or _arbitrary(registry, end):
            return None

        def convert(number: float) -> float:
            moved = registry.Quantity(number * start.magnitude, start.units).to(end.units)
            return float(moved.magnitude / end.magnitude)

        zero = convert(0.0)  # two points: a temperature (Cel -> [degF]) has an offset
        return convert(1.0) - zero, zero
    except Exception:  # ucumvert and pint raise many kinds of error on what they cannot read
        return None


def _arbitrary(registry: Any, quantity: Any) -> bool:
    """Whether a unit holds a dimensionless atom other than a power of ten (``[IU]``,
    ``[arb'U]``, ``%``).

    UCUM (v2.2, Semantics, Arbitrary Units) makes a unit with an arbitrary atom commensurable with
    no other unit; pint counts such atoms as 1, so ``[IU]/L`` would convert to ``10*3/uL``.
    """
    return any(
        name != "_10" and not registry.get_dimensionality(name) for name, _ in quantity.unit_items()
    )


@cache
def _registry() -> Any:
    """The UCUM registry, built on first use (about a third of a second)."""
    from ucumvert import PintUcumRegistry

    return PintUcumRegistry()


def _rounded(number: float) -> float:
    return float(f"{number:.{SIGNIFICANT_DIGITS}g}")


def _declared(value: float, conversion: UnitConversion, what: str) -> Reading:
    arithmetic = f"x {conversion.factor:g}"
    if conversion.offset:
        sign = "+" if conversion.offset > 0 else "-"
        arithmetic += f" {sign} {abs(conversion.offset):g}"
    converted = value * conversion.factor + conversion.offset
    return Reading(_rounded(converted), f"{what} by the declared conversion ({arithmetic})")
