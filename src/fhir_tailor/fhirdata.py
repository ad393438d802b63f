"""Tolerant accessors over raw FHIR JSON.

Real servers send R4 data that the strict R4B models reject (unknown elements, R4-only
shapes, a string where a number belongs). We therefore read resources as plain dicts and
pull out only the few elements we need, each accessor returning ``None`` or an empty list
when an element is missing or malformed instead of raising. Strict validation is kept for
what we *write* (see :mod:`fhir_tailor.resources`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from datetime import date
from functools import lru_cache
from typing import Any, TypeGuard

import orjson

Resource = dict[str, Any]

#: The code system of units of measure (UCUM) in ``Quantity.system``.
UCUM = "http://unitsofmeasure.org"

_DATE_PREFIX = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")
#: FHIR ``id``: what references, file names and our output are keyed by.
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
#: BCP-47 language tag shape (``es``, ``zh-Hant-TW``): preferred languages end up in plans.
_LANGUAGE_TAG = re.compile(r"[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*")


def load_json(data: bytes) -> Any:
    """Parse JSON quickly, with Python's reader as the judge of anything unusual.

    orjson refuses what strict JSON forbids but real files hold (NaN, integers past 64 bits, a
    lone surrogate, bytes that are not UTF-8); those documents, and truly invalid ones, are read
    again by :func:`json.loads` with undecodable bytes replaced, so what is read, and the error
    reported when nothing can be (a ``json.JSONDecodeError``, a ``RecursionError`` when nested
    too deeply), are exactly Python's.
    """
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data.decode("utf-8", errors="replace"))


def resource_ref(resource: Resource) -> str:
    """The relative reference of a resource, e.g. ``Observation/123`` (``?`` if unnamed)."""
    return f"{resource.get('resourceType', '?')}/{resource.get('id', '?')}"


def is_fhir_id(value: object) -> bool:
    """Whether ``value`` is a valid FHIR id (1-64 ASCII letters, digits, ``-`` and ``.``)."""
    return isinstance(value, str) and _FHIR_ID.fullmatch(value) is not None


def is_language_tag(value: object) -> bool:
    """Whether ``value`` has the shape of a BCP-47 language tag."""
    return isinstance(value, str) and _LANGUAGE_TAG.fullmatch(value) is not None


def reference_id(reference: object, resource_type: str) -> str | None:
    """The id in a ``Reference`` to ``resource_type``, from relative or absolute URLs.

    ``{"reference": "Patient/1"}`` and ``{"reference": "https://h/fhir/Patient/1/_history/2"}``
    both give ``"1"``; a reference to another type, a contained (``#x``) or ``urn:`` reference
    gives ``None``: those must be resolved by the caller, who knows the enclosing Bundle.
    """
    if not isinstance(reference, dict):
        return None
    value = reference.get("reference")
    if not isinstance(value, str):
        return None
    return _reference_id_text(value, resource_type)


@lru_cache(maxsize=1024)
def _reference_id_text(value: str, resource_type: str) -> str | None:
    """Cached: every resource of a patient names the patient in the same words, one patient's
    resources after another (a small memory, full after a few hundred patients, so that it
    does not grow with the population)."""
    parts = value.split("/_history/")[0].rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] == resource_type and parts[-1]:
        return parts[-1]
    return None


def as_list(value: object) -> list[Any]:
    """A repeating element as a list; a lone object, a number or null reads as no elements.

    Real data puts a single object where a list belongs often enough that iterating whatever
    is there would crash on a number and walk the keys of a dict.
    """
    return value if isinstance(value, list) else []


def codings(concept: object) -> Iterator[tuple[str, str, str | None]]:
    """``(system, code, display)`` for each well-formed coding of a CodeableConcept."""
    if not isinstance(concept, dict):
        return
    for coding in as_list(concept.get("coding")):
        if not isinstance(coding, dict):
            continue
        system, code = coding.get("system"), coding.get("code")
        if isinstance(system, str) and isinstance(code, str) and code.strip():
            display = coding.get("display")
            yield system, code.strip(), display if isinstance(display, str) else None


def has_coding(concept: object) -> bool:
    """Whether a CodeableConcept has a well-formed coding (one :func:`codings` gives)."""
    if not isinstance(concept, dict):
        return False
    for coding in as_list(concept.get("coding")):
        if isinstance(coding, dict):
            system, code = coding.get("system"), coding.get("code")
            if isinstance(system, str) and isinstance(code, str) and code.strip():
                return True
    return False


def concept_has(concept: object, system: str, code: str) -> bool:
    """Whether a CodeableConcept carries the given coding."""
    return any(s == system and c == code for s, c, _ in codings(concept))


def parse_date(value: object) -> date | None:
    """The calendar date of a FHIR date/dateTime/instant; partial dates fill in the 1st."""
    return _parse_date_text(value) if isinstance(value, str) else None


@lru_cache(maxsize=8192)
def _parse_date_text(value: str) -> date | None:
    """Cached: a population's records repeat the same few thousand dates millions of times."""
    match = _DATE_PREFIX.match(value)
    if not match:
        return None
    year, month, day = (int(part) if part else 1 for part in match.groups())
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _period_start(value: object) -> object:
    return value.get("start") if isinstance(value, dict) else None


def effective_date(resource: Resource) -> date | None:
    """When a clinical fact held: Observation effective/issued, Condition onset/recorded."""
    candidates: tuple[object, ...]
    if resource.get("resourceType") == "Condition":
        candidates = (
            resource.get("onsetDateTime"),
            _period_start(resource.get("onsetPeriod")),
            resource.get("recordedDate"),
        )
    else:
        candidates = (
            resource.get("effectiveDateTime"),
            resource.get("effectiveInstant"),
            _period_start(resource.get("effectivePeriod")),
            resource.get("issued"),
        )
    for candidate in candidates:
        parsed = parse_date(candidate)
        if parsed is not None:
            return parsed
    return None


def subject_patient_id(resource: Resource) -> str | None:
    """The id of the Patient a resource is about (the Patient itself for a Patient)."""
    if resource.get("resourceType") == "Patient":
        rid = resource.get("id")
        return rid if isinstance(rid, str) and rid else None
    for field in ("subject", "patient"):
        pid = reference_id(resource.get(field), "Patient")
        if pid:
            return pid
    return None


def numeric_value(element: Resource) -> tuple[float | None, str | None]:
    """The number and unit of ``valueQuantity``/``valueInteger``/``valueDecimal``, if any."""
    quantity = element.get("valueQuantity")
    if isinstance(quantity, dict):
        number = quantity.get("value")
        if _is_finite_number(number):
            unit = quantity_unit(quantity)
            return float(number), unit[1] if unit else None
        return None, None
    for field in ("valueInteger", "valueDecimal"):
        number = element.get(field)
        if _is_finite_number(number):
            return float(number), None
    return None, None


def quantity_unit(quantity: Resource) -> tuple[str, str] | None:
    """``(field, unit)`` of a Quantity: its ``code`` when ``system`` is UCUM, else the free-text
    ``unit``, else a ``code`` of another (or no) system.

    A UCUM code is what the sender meant the unit to be; ``unit`` is only its display, and may
    say ``mmHg`` where the code says ``mm[Hg]``.
    """
    code, text = quantity.get("code"), quantity.get("unit")
    if isinstance(code, str) and code.strip() and quantity.get("system") == UCUM:
        return "code", code
    if isinstance(text, str) and text.strip():
        return "unit", text
    if isinstance(code, str) and code.strip():
        return "code", code
    return None


def _is_finite_number(value: object) -> TypeGuard[int | float]:
    """A JSON number that is a real value: Python's JSON reader also admits NaN and Infinity."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@lru_cache(maxsize=512)
def is_resource_type(name: str) -> bool:
    """Whether ``name`` is a FHIR resource type (not a datatype, not a typo)."""
    from fhir.resources.R4B import get_fhir_model_class
    from fhir.resources.R4B.resource import Resource as ResourceModel

    try:
        model = get_fhir_model_class(name)
    except (KeyError, ValueError, ImportError):
        return False
    return isinstance(model, type) and issubclass(model, ResourceModel)
