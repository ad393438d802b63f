"""Shape checks: elements we read that hold the wrong kind of JSON, named by field.

The readers in :mod:`fhir_tailor.profile` tolerate any shape (a wrong one reads as absent), so
without these checks a garbled date or a lone object where a list belongs would change a
profile silently. Each problem names the field, so the run report says what to fix at source.
"""

from __future__ import annotations

from collections.abc import Iterator

from .fhirdata import Resource, as_list, codings, has_coding, is_language_tag, parse_date

#: ``Patient.gender`` codes (FHIR AdministrativeGender).
ADMINISTRATIVE_GENDER = frozenset({"male", "female", "other", "unknown"})
#: Top-level elements read as FHIR codes (plain strings).
_CODE_FIELDS = ("status", "intent", "gender")
#: Top-level elements read as FHIR dates or dateTimes.
_DATE_FIELDS = (
    "birthDate",
    "effectiveDateTime",
    "effectiveInstant",
    "issued",
    "onsetDateTime",
    "recordedDate",
    "authored",
    "authoredOn",
)
#: Top-level repeating elements (JSON arrays) that the readers walk.
_LIST_FIELDS = ("category", "component", "hasMember", "interpretation", "telecom", "communication")
_LIST_FIELDS_OF = {"QuestionnaireResponse": ("item",), "Encounter": ("type",)}


#: What each element checked must be: the check of every resource read looks only at the
#: elements it has (a few), and names problems in this module's order only when there are some.
_KINDS: dict[str, str] = {
    **dict.fromkeys(_CODE_FIELDS, "code"),
    **dict.fromkeys(_DATE_FIELDS, "date"),
    **dict.fromkeys(_LIST_FIELDS, "list"),
}


def shape_problems(resource: Resource) -> Iterator[str]:
    """``field NAME: what is wrong`` for each element we read that has the wrong shape."""
    rtype = str(resource.get("resourceType"))
    if rtype != "Patient" and _sound(resource, rtype):
        return
    for name in _CODE_FIELDS:
        if name in resource and not isinstance(resource[name], str):
            yield f"field {name}: not a code (a string)"
    for name in _DATE_FIELDS:
        if name in resource and parse_date(resource[name]) is None:
            yield f"field {name}: not a FHIR date"
    for name in (*_LIST_FIELDS, *_LIST_FIELDS_OF.get(rtype, ())):
        if name in resource and not isinstance(resource[name], list):
            yield f"field {name}: not a list"
    if rtype == "Patient":
        yield from _patient_problems(resource)
    if rtype == "Observation" and not has_coding(resource.get("code")):
        yield "field code: missing or without a usable coding (system and code strings)"


def has_shape_problems(resource: Resource) -> bool:
    """Whether :func:`shape_problems` names anything (asked without naming it)."""
    rtype = str(resource.get("resourceType"))
    if rtype != "Patient":
        return not _sound(resource, rtype)
    return next(shape_problems(resource), None) is not None


def _sound(resource: Resource, rtype: str) -> bool:
    """Whether a resource other than a Patient has none of the problems of
    :func:`shape_problems`: looked at element by element, as most resources have none."""
    for name in resource.keys() & _KINDS.keys():
        kind, value = _KINDS[name], resource[name]
        if kind == "code":
            if not isinstance(value, str):
                return False
        elif kind == "date":
            if parse_date(value) is None:
                return False
        elif not isinstance(value, list):
            return False
    for name in _LIST_FIELDS_OF.get(rtype, ()):
        if name in resource and not isinstance(resource[name], list):
            return False
    return rtype != "Observation" or has_coding(resource.get("code"))


def _patient_problems(patient: Resource) -> Iterator[str]:
    gender = patient.get("gender")
    if isinstance(gender, str) and gender not in ADMINISTRATIVE_GENDER:
        yield "field gender: not male, female, other or unknown"
    for entry in as_list(patient.get("communication")):
        language = entry.get("language") if isinstance(entry, dict) else None
        if any(not is_language_tag(code) for _, code, _ in codings(language)):
            yield "field communication.language: not a BCP-47 language tag"
