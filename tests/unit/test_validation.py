"""Output validation once per shape: skipping never lets an invalid resource through."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from builders import AS_OF

from fhir_tailor import validation
from fhir_tailor.definitions import Definitions
from fhir_tailor.pipeline import profile_and_plan
from fhir_tailor.record import ReadIssue
from fhir_tailor.resources import to_fhir
from fhir_tailor.sources.files import BundleSource
from fhir_tailor.validation import InvalidOutputError, ShapeValidator, shape_key, validate

BUNDLES = Path(__file__).parents[2] / "fixtures" / "bundles"
RECORDED = datetime(2026, 11, 15, 12, 0, tzinfo=UTC)


def plan_resources(definitions: Definitions) -> list[dict[str, Any]]:
    """Every resource the fixture patients' plans are written as."""

    def ignore(_: ReadIssue) -> None:
        pass

    out = []
    for record in BundleSource(BUNDLES).records(ignore):
        _, plan = profile_and_plan(record, definitions, AS_OF)
        if plan is not None:
            out += [entry.resource for entry in to_fhir(plan, RECORDED).entries]
    return out


def careplan(patient: str = "p1") -> dict[str, Any]:
    return {
        "resourceType": "CarePlan",
        "id": f"cp-{patient}",
        "status": "draft",
        "intent": "plan",
        "subject": {"reference": f"Patient/{patient}"},
        "period": {"start": "2026-11-15"},
        "activity": [
            {"detail": {"status": "scheduled", "description": "Walk 20 minutes"}},
            {"detail": {"status": "scheduled", "description": "Call a friend"}},
        ],
    }


def test_a_shape_is_validated_once() -> None:
    validator = ShapeValidator()
    validator(careplan("p1"))
    validator(careplan("p2"))
    validator(careplan("p3"))
    # Once each: the skeleton (its activities cut to the first) and each activity on its own.
    assert (validator.validated, validator.skipped) == (3, 6)


def test_fixture_plans_validate_once_per_distinct_shape(definitions: Definitions) -> None:
    resources = plan_resources(definitions)
    validator = ShapeValidator()
    for resource in resources:
        validate(resource)  # every one is valid on its own
        validator(resource)
    assert validator.skipped > 0


def _set(path: tuple[str | int, ...], value: object) -> Callable[[dict[str, Any]], None]:
    def mutate(resource: dict[str, Any]) -> None:
        target: Any = resource
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value

    return mutate


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda resource: resource.pop(key)


@pytest.mark.parametrize(
    ("mutation", "why"),
    [
        (_set(("status",), "dr  aft"), "two spaces inside a code"),
        (_set(("id",), "cp p1"), "a space in an id"),
        (_set(("period", "start"), "2026-11-15T"), "a date with a dangling T"),
        (_set(("status",), "draft "), "a code with trailing whitespace"),
        (_set(("intent",), ["plan"]), "a list for a single value"),
        (_set(("activity", 0, "detail", "status"), None), "a null required value"),
        (_set(("activity", 0, "detail", "description"), 7), "a number for a string"),
        (_set(("activity", 1, "detail", "status"), "not  a code"), "a later element's code"),
        (_set(("activity", 1, "detail", "bogus"), 1), "a later element's unknown element"),
        (_set(("activity", 1, "detail"), "x"), "a later element's string for an element"),
        (_set(("subject",), {"reference": "Patient/p1", "bogus": 1}), "an unknown element"),
        (_drop("subject"), "a missing required element"),
    ],
)
def test_an_invalid_resource_is_caught_after_its_valid_twin(
    mutation: Callable[[dict[str, Any]], None], why: str
) -> None:
    broken = copy.deepcopy(careplan())
    mutation(broken)
    with pytest.raises(InvalidOutputError):  # the premise: the strict models reject it
        validate(broken)
    validator = ShapeValidator()
    validator(careplan())
    with pytest.raises(InvalidOutputError, match="CarePlan"):
        validator(broken)
    with pytest.raises(InvalidOutputError):  # a failure is never remembered as a valid shape
        validator(broken)


def test_new_elements_are_checked_on_their_own() -> None:
    validator = ShapeValidator()
    validator(careplan())
    assert (validator.validated, validator.skipped) == (3, 0)  # the skeleton, two activities
    longer = careplan()
    longer["activity"].append({"detail": {"status": "completed", "description": "Rest"}})
    validator(longer)
    assert (validator.validated, validator.skipped) == (4, 3)  # only activity[2] is new


def test_letters_and_digits_vary_within_a_shape_punctuation_and_spaces_do_not() -> None:
    base = careplan()
    same = {**base, "id": "cp-q7", "subject": {"reference": "Patient/q7"}}
    assert shape_key(same) == shape_key(base)
    for other in ({**base, "id": "cp.p1"}, {**base, "id": "cp-p1 "}, {**base, "id": "cp-p12"}):
        assert shape_key(other) != shape_key(base)


def test_memory_is_bounded() -> None:
    validator = ShapeValidator(max_shapes=2)
    for n in range(5):
        validator({**careplan(), "id": "x" * (n + 1)})
    assert validator.validated >= 5
    assert len(validator._valid) <= 2


def test_remembered_string_shapes_change_no_key_and_stay_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(validation, "_SHORT_SHAPES", {})
    monkeypatch.setattr(validation, "MAX_SHORT_SHAPES", 4)
    first = shape_key(careplan())
    assert 0 < len(validation._SHORT_SHAPES) <= 4
    for n in range(20):  # other strings fill the memory and it starts over
        shape_key({**careplan(), "id": f"cp-{'x' * n}"})
    assert len(validation._SHORT_SHAPES) <= 4
    assert shape_key(careplan()) == first
    monkeypatch.setattr(validation, "_SHORT_SHAPES", {"draft": "s9:w w"})  # a wrong memory
    assert shape_key(careplan()) != first  # is used: the memory is what the walk reads


def test_subclasses_of_json_types_shape_as_the_types() -> None:
    class Text(str):
        pass

    class Mapping(dict[str, Any]):
        pass

    base = careplan()
    odd = Mapping({**base, "status": Text("draft"), "activity": list(base["activity"])})
    assert shape_key(odd) == shape_key(base)
    assert shape_key({**base, "status": Text("dr  aft")}) != shape_key(base)


def test_a_skeleton_is_validated_once_whatever_its_lists_hold() -> None:
    """Which activities and module canonicals a patient gets varies; the skeleton (what is not
    in a list) is one shape, and each new kind of element is checked on its own."""
    validator = ShapeValidator()
    validator({**careplan(), "instantiatesCanonical": ["https://x.org/PlanDefinition/a|1.0.0"]})
    assert validator.validated == 4  # the skeleton, two activities, one canonical
    other = careplan()
    other["activity"] = [*other["activity"][::-1], other["activity"][0]]
    other["instantiatesCanonical"] = [
        "https://x.org/PlanDefinition/abc|1.0.0",
        "https://x.org/PlanDefinition/a|1.0.0",
        "https://x.org/PlanDefinition/b|2.0.0",
    ]
    validator(other)
    assert validator.validated == 5  # only the longer canonical's shape is new


@pytest.mark.parametrize(
    ("canonicals", "why"),
    [
        (["https://x.org/PlanDefinition/a|1.0.0", 7], "a number among canonicals"),
        ([True], "a boolean for a canonical"),
    ],
)
def test_an_invalid_primitive_in_a_list_is_caught_after_its_valid_twin(
    canonicals: list[Any], why: str
) -> None:
    valid = {**careplan(), "instantiatesCanonical": ["https://x.org/PlanDefinition/a|1.0.0"]}
    broken = {**careplan(), "instantiatesCanonical": canonicals}
    with pytest.raises(InvalidOutputError):  # the premise: the strict models reject it
        validate(broken)
    validator = ShapeValidator()
    validator(valid)
    with pytest.raises(InvalidOutputError, match="CarePlan"):
        validator(broken)
