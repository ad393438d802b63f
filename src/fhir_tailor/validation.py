"""Strict validation of what we write, paid once per shape of resource.

Every resource fhir-tailor writes must pass the ``fhir.resources`` R4B models: an invalid one
is a bug of ours. Strict validation costs about a millisecond per resource, more than building
the patient's whole profile, yet a population's plans are made of few *shapes*: the same
elements, list lengths, value types and string patterns, told apart only by the digits and words
that vary per patient (ids, dates, values). So a resource whose shape already validated is not
validated again.

What the shape keeps is what validity can depend on in our output: every element name and its
nesting, list lengths, the type of each value, the sign of numbers, booleans, and for strings up
to 64 characters (the longest FHIR id) the length and character pattern, where a run of letters
and digits reads as one ``w`` but whitespace and punctuation are kept. Of a longer string (text,
narrative) it keeps what the R4B string patterns check: whitespace at either end, runs of
whitespace and control characters. Two strings of one shape differ only in letters and digits,
which come from catalog text, ids and hex digests of our own, ids checked on read and Python
``date`` values (so a date's digits are always a valid date).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from functools import cache, partial
from typing import Any, get_args

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from .errors import FhirTailorError

#: Shapes remembered at most; past it the memory starts over (a few MB, whatever the run).
MAX_SHAPES = 100_000
_ALPHANUMERIC_RUN = re.compile(r"[A-Za-z0-9]+")
_WHITESPACE_RUN = re.compile(r"\s\s")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
_LONGEST_ID = 64
#: Shapes up to this long are kept as they are, longer ones as a digest (16 bytes).
_KEPT_WHOLE = 96


class InvalidOutputError(FhirTailorError):
    """fhir-tailor produced a resource that is not valid FHIR: a bug, never the input's fault."""


def validate(resource: dict[str, Any]) -> None:
    """Validate a resource we are about to write with the strict R4B models, every time."""
    rtype = str(resource.get("resourceType"))
    try:
        get_fhir_model_class(rtype).model_validate(resource)
    except ValidationError as exc:
        raise InvalidOutputError(f"fhir-tailor built an invalid {rtype}: {exc}") from exc


class ShapeValidator:
    """:func:`validate`, skipped for what already passed: done per part, not per resource.

    A CarePlan's activities and the canonicals of its modules come from a catalog, but which of
    them a patient gets varies, so whole CarePlans rarely share a shape. The R4B models check
    each element of a list on its own, so a resource is checked as its *skeleton*, every list
    cut to its first element, and each element of its lists on its own: an element (a
    ``CarePlanActivity``, a ``Reference``) against its element model, a primitive (a canonical)
    in the skeleton in place of the first. The skeleton's shape leaves out what its lists hold,
    so it does not change with them: a skeleton that validated with some first elements
    validates with any others that validate on their own, since nothing in a resource's model
    looks across the elements of its lists. Each part is validated once per shape.
    """

    def __init__(self, max_shapes: int = MAX_SHAPES) -> None:
        self.max_shapes = max_shapes
        self._valid: set[str | bytes] = set()
        self.validated = 0
        self.skipped = 0

    def __call__(self, resource: dict[str, Any]) -> None:
        rtype = str(resource.get("resourceType"))
        skeleton: dict[str, Any] = {}  # what is validated: each list cut to its first element
        keyed: dict[str, Any] = {}  # what its shape is taken of: each cut list a mark
        elements: list[tuple[str, Any]] = []
        primitives: list[tuple[str, Any]] = []
        for key, value in resource.items():
            kind = _list_kind(rtype, key, value)
            if kind is None:
                skeleton[key] = keyed[key] = value
                continue
            skeleton[key], keyed[key] = value[:1], _CUT
            if kind == _PRIMITIVES:
                primitives += [(key, item) for item in value]
            else:
                elements += [(kind, item) for item in value]
        self._check(rtype, keyed, lambda: validate(skeleton))
        for model, element in elements:
            self._check(model, element, partial(_validate_element, rtype, model, element))
        for key, item in primitives:
            self._check(f"{rtype}.{key}", item, partial(validate, {**skeleton, key: [item]}))

    def _check(self, model: str, value: object, check: Callable[[], None]) -> None:
        key = shape_key(value, model)
        if key in self._valid:
            self.skipped += 1
            return
        check()
        self.validated += 1
        if len(self._valid) >= self.max_shapes:
            self._valid.clear()
        self._valid.add(key)


class _Cut:
    """Where a skeleton's shape has a list cut to its first element: no JSON value has it."""


_CUT = _Cut()
#: The kind of a list of strings, numbers and booleans (see :func:`_list_kind`).
_PRIMITIVES = "primitives"
_PRIMITIVE_TYPES = (str, int, float, bool)


def _list_kind(rtype: str, key: str, value: object) -> str | None:
    """How ``rtype``'s element ``key`` is checked apart from its skeleton: the name of its
    elements' model for a list of elements, :data:`_PRIMITIVES` for a list of primitives, or
    ``None`` (not a list, an empty one, or one of mixed or unknown kinds: kept whole)."""
    if not isinstance(value, list) or not value:
        return None
    if isinstance(value[0], dict):
        return _element_model(rtype, key)
    if all(isinstance(item, _PRIMITIVE_TYPES) for item in value):
        return _PRIMITIVES
    return None


def shape_key(value: object, model: str = "") -> str | bytes:
    """``value``'s shape as ``model`` (see the module docstring for what it keeps): itself when
    short (most list elements), else a digest of it."""
    tokens: list[str] = [model]
    _shape(value, tokens.append)
    shape = "\x1f".join(tokens)
    if len(shape) <= _KEPT_WHOLE:
        return shape
    return hashlib.blake2b(shape.encode(), digest_size=16).digest()


#: Shapes of the short strings seen (catalog words, codes, systems): a population's output
#: repeats a few thousand of them millions of times. Long strings (narratives, notes) are not
#: kept: they rarely repeat, and their shape is four flags.
_SHORT_SHAPES: dict[str, str] = {}
#: Short string shapes remembered at most, then the memory starts over: a few MB at most, full
#: after a few hundred patients (their references are strings of their own), so it does not
#: grow with the population.
MAX_SHORT_SHAPES = 8192


def _shape(value: Any, out: Callable[[str], None]) -> None:
    """Append ``value``'s shape tokens with ``out``. This walk visits every element of
    everything fhir-tailor writes, so exact types are tested first (``type(x) is dict``) and a
    string member is shaped without a call of its own."""
    kind = type(value)
    if kind is dict:
        out("{")
        for key, item in value.items():
            out(str(key))
            if type(item) is str:
                out(_SHORT_SHAPES.get(item) or _string_shape(item))
            else:
                _shape(item, out)
        out("}")
    elif kind is list:
        out("[")
        for item in value:
            if type(item) is str:
                out(_SHORT_SHAPES.get(item) or _string_shape(item))
            else:
                _shape(item, out)
        out("]")
    elif isinstance(value, dict):
        _shape(dict(value), out)
    elif isinstance(value, list):
        _shape(list(value), out)
    elif isinstance(value, str):
        out(_string_shape(value))
    elif isinstance(value, bool):
        out(f"b{value}")
    elif isinstance(value, int | float):
        sign = "+" if value > 0 else "0" if value == 0 else "-"
        out(f"{type(value).__name__}{sign}")
    else:
        out(type(value).__name__)


def _string_shape(value: str) -> str:
    """Length and pattern of a short string; for a long one (text, narrative) only what the
    R4B string patterns look at: whitespace at either end, runs of it, control characters.
    A short string's shape is remembered (:data:`_SHORT_SHAPES`)."""
    if len(value) > _LONGEST_ID:
        lead, trail = value[:1].isspace(), value[-1:].isspace()
        run = _WHITESPACE_RUN.search(value) is not None
        control = _CONTROL.search(value) is not None
        return f"s+{lead:d}{trail:d}{run:d}{control:d}"
    shape = f"s{len(value)}:{_ALPHANUMERIC_RUN.sub('w', value)}"
    if len(_SHORT_SHAPES) >= MAX_SHORT_SHAPES:
        _SHORT_SHAPES.clear()
    _SHORT_SHAPES[value] = shape
    return shape


@cache
def _element_model(rtype: str, key: str) -> str | None:
    """The name of the R4B model of one element of ``rtype``'s list ``key`` (``None``: unknown)."""
    try:
        field = get_fhir_model_class(rtype).model_fields.get(key)
    except KeyError:
        return None
    names = [arg.__name__ for arg in _flatten(field.annotation if field else None)]
    models = [n.removesuffix("Type") for n in names if n.endswith("Type") and n != "NoneType"]
    return models[0] if len(models) == 1 else None


def _flatten(annotation: object) -> list[type]:
    args = get_args(annotation)
    if not args:
        return [annotation] if isinstance(annotation, type) else []
    return [found for arg in args for found in _flatten(arg)]


def _validate_element(rtype: str, model: str, element: dict[str, Any]) -> None:
    try:
        get_fhir_model_class(model).model_validate(element)
    except ValidationError as exc:
        raise InvalidOutputError(f"fhir-tailor built an invalid {rtype} ({model}): {exc}") from exc
