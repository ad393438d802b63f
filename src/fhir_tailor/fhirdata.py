"""Tolerant accessors over raw FHIR JSON.

Real servers send R4 data that the strict R4B models reject (unknown elements, R4-only
shapes, a string where a number belongs). We therefore read resources as plain dicts and
pull out only the few elements we need, each accessor returning ``None`` or an empty list
when an element is missing or malformed instead of raising. Strict validation is kept for
what we *write* (see :mod:`fhir_tailor.resources`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date
from functools import lru_cache
from typing import Any

Resource = dict[str, Any]

_DATE_PREFIX = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")


def resource_ref(resource: Resource) -> str:
    """The relative reference of a resource, e.g. ``Observation/123`` (``?`` if unnamed)."""
    return f"{resource.get('resourceType', '?')}/{resource.get('id', '?')}"


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
    parts = value.split("/_history/")[0].rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] == resource_type and parts[-1]:
        return parts[-1]
    return None


def codings(concept: object) -> Iterator[tuple[str, str, str | None]]:
    """``(system, code, display)`` for each well-formed coding of a CodeableConcept."""
    if not isinstance(concept, dict):
        return
    for coding in concept.get("coding") or ():
        if not isinstance(coding, dict):
            continue
        system, code = coding.get("system"), coding.get("code")
        if isinstance(system, str) and isinstance(code, str) and code.strip():
            display = coding.get("display")
            yield system, code.strip(), display if isinstance(display, str) else None


def concept_has(concept: object, system: str, code: str) -> bool:
    """Whether a CodeableConcept carries the given coding."""
    return any(s == system and c == code for s, c, _ in codings(concept))


def parse_date(value: object) -> date | None:
    """The calendar date of a FHIR date/dateTime/instant; partial dates fill in the 1st."""
    if not isinstance(value, str):
        return None
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
        unit = quantity.get("code") or quantity.get("unit")
        if isinstance(number, int | float) and not isinstance(number, bool):
            return float(number), unit if isinstance(unit, str) else None
        return None, None
    for field in ("valueInteger", "valueDecimal"):
        number = element.get(field)
        if isinstance(number, int | float) and not isinstance(number, bool):
            return float(number), None
    return None, None


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
