"""Screening answers in a QuestionnaireResponse, read as if they were Observations.

Standard screening instruments (Hunger Vital Sign, AHC HRSN, PRAPARE, PHQ-9, ...) are often
stored as a QuestionnaireResponse rather than as Observations. Their items carry no ``code``
element, but the forms built from LOINC panels (LHC-Forms, the SDOH Clinical Care IG examples)
name each item by its LOINC code: in ``linkId`` (``/88122-7``, ``/93043-8/88122-7``) or in the
fragment of ``definition``. Each answered item with such a code becomes an *observation-like
element* (``code`` plus ``value[x]``), so the same mapping rules read both shapes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from .fhirdata import Resource, as_list

LOINC = "http://loinc.org"
_LOINC_CODE = re.compile(r"^\d{1,8}-\d$")

#: Statuses whose answers stand; in-progress, stopped and entered-in-error forms are not read.
USABLE_STATUSES = frozenset({"completed", "amended"})

_VALUE_FIELDS = ("valueInteger", "valueDecimal", "valueQuantity", "valueBoolean")


def item_code(item: Resource) -> str | None:
    """The LOINC code an item stands for, from its ``linkId`` or ``definition``."""
    candidates: list[str] = []
    link_id = item.get("linkId")
    if isinstance(link_id, str):
        candidates.append(link_id.rstrip("/").rsplit("/", 1)[-1])
    definition = item.get("definition")
    if isinstance(definition, str):
        candidates.append(re.split(r"[#/]", definition.rstrip("/"))[-1])
    return next((c for c in candidates if _LOINC_CODE.match(c)), None)


def answered_items(response: Resource) -> Iterator[tuple[str, Resource]]:
    """``(field path, observation-like element)`` for each answered item with a LOINC code."""
    status = response.get("status")
    if not isinstance(status, str) or status not in USABLE_STATUSES:
        return
    yield from _walk(response.get("item"), "item")


def _walk(items: object, path: str) -> Iterator[tuple[str, Resource]]:
    if not isinstance(items, list):
        return
    for n, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        here = f"{path}[{n}]"
        answers = [a for a in as_list(item.get("answer")) if isinstance(a, dict)]
        code = item_code(item)
        if code is not None:
            # Each answer of a multi-select item is read on its own, as separate Observations.
            for m, answer in enumerate(answers):
                yield f"{here}.answer[{m}].", _as_observation(code, answer)
        yield from _walk(item.get("item"), f"{here}.item")
        for m, answer in enumerate(answers):
            yield from _walk(answer.get("item"), f"{here}.answer[{m}].item")


def _as_observation(code: str, answer: Resource) -> Resource:
    element: Resource = {"code": {"coding": [{"system": LOINC, "code": code}]}}
    coding = answer.get("valueCoding")
    if isinstance(coding, dict):
        element["valueCodeableConcept"] = {"coding": [coding]}
    for field in _VALUE_FIELDS:
        if field in answer:
            element[field] = answer[field]
    return element
