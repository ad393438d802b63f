"""Units: reading a measured value in the unit a feature's value bands expect.

The bands below are written here, not loaded from ``profiles/features`` (the shipped conversions
are tested against their cut points in ``test_features_medical.py``); expected numbers are worked
out by hand from the factors and from UCUM's definitions.
"""

from __future__ import annotations

from typing import Any

import pytest
from builders import observation, profile_of, quantity, record
from pydantic import ValidationError

from fhir_tailor.definitions import Definitions
from fhir_tailor.mapping import ValueBands
from fhir_tailor.terminology import units
from fhir_tailor.terminology.units import Reading, express, ucum_conversion

CATCH_ALL = [{"status": "absent"}]


def bands(unit: str, **other: Any) -> ValueBands:
    return ValueBands.model_validate({"unit": unit, "bands": CATCH_ALL, **other})


LDL = bands("mg/dL", conversions=[{"from": "mmol/L", "factor": 38.67, "source": "test"}])
HBA1C = bands(
    "%",
    conversions=[{"from": "mmol/mol", "factor": 0.09148, "offset": 2.152, "source": "test"}],
)
EGFR = bands("mL/min/{1.73_m2}", mislabels=[{"unit": "mL/min", "source": "test"}])


class RegistryBuilt(AssertionError):
    pass


@pytest.fixture
def no_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail if the UCUM registry is asked for, and forget remembered conversions."""

    def refuse() -> Any:
        raise RegistryBuilt("the UCUM registry was built")

    monkeypatch.setattr(units, "_registry", refuse)
    monkeypatch.setattr(units, "_conversions", {})


# -- the expected unit, trivially normalised ---------------------------------------------------


@pytest.mark.usefixtures("no_registry")
@pytest.mark.parametrize(
    ("unit", "expected", "coded"),
    [
        ("mg/dL", "mg/dL", True),
        (" mg/dL ", "mg/dL", False),
        ("mmHg", "mm[Hg]", True),  # no UCUM reading but the mercury column
        ("mm Hg", "mm[Hg]", False),
        ("MG/DL", "mg/dL", False),  # free text, UCUM's case-insensitive spelling
        ("mm[hg]", "mm[Hg]", False),
    ],
)
def test_expected_unit_is_read_as_is_without_the_registry(
    unit: str, expected: str, coded: bool
) -> None:
    assert express(163.0, unit, bands(expected), coded=coded) == Reading(163.0)


def test_bands_without_a_unit_take_any_unit(no_registry: None) -> None:
    loose = ValueBands.model_validate({"bands": CATCH_ALL})
    assert express(3.0, "anything", loose, coded=True) == Reading(3.0)


def test_profile_of_matching_units_never_builds_the_registry(
    definitions: Definitions, no_registry: None
) -> None:
    rec = record(
        observation("ldl", "13457-7", **quantity(200, "mg/dL")),
        observation("a1c", "4548-4", **quantity(9.5, "%")),
        observation("bp", "8480-6", valueQuantity={"value": 150, "unit": "mmHg"}),
    )
    profile = profile_of(definitions, rec)
    read = {f.feature: f.severity for _, f in profile.findings()}
    assert read == {
        "ldl_above_target": "high",
        "hba1c_above_target": "high",
        "bp_above_target": "moderate",
        # the urgent thresholds read the same results (below them: absent)
        "very_high_hba1c": None,
        "severe_hypertension": None,
        "bp_160_110": None,
    }
    # and the guard can fail: a unit to convert asks for the registry
    other = record(observation("ldl", "13457-7", **quantity(2, "g/L")))
    with pytest.raises(RegistryBuilt):
        profile_of(definitions, other)


# -- mislabels and declared conversions --------------------------------------------------------


def test_declared_mislabel_keeps_the_number_with_a_note(no_registry: None) -> None:
    reading = express(45.0, "mL/min", EGFR, coded=True)
    assert reading == Reading(
        45.0, "'mL/min' read as 'mL/min/{1.73_m2}' (a declared mislabel); value kept"
    )


def test_undeclared_annotation_difference_is_not_converted() -> None:
    # UCUM reads annotations as 1; the bands' annotation says per 1.73 m2 of body surface
    assert express(45.0, "mL/min", bands("mL/min/{1.73_m2}"), coded=True) is None
    assert ucum_conversion("mL/min", "mL/min/{1.73_m2}") is None


@pytest.mark.parametrize(
    ("value", "converted"),
    [(4.92, 190.2564), (4.91, 189.8697), (0.0, 0.0)],
)
def test_declared_factor_converts_with_a_note(value: float, converted: float) -> None:
    reading = express(value, "mmol/L", LDL, coded=True)
    assert reading is not None
    assert reading.value == pytest.approx(converted, abs=1e-9)
    assert reading.note == "'mmol/L' converted to 'mg/dL' by the declared conversion (x 38.67)"


@pytest.mark.parametrize(
    ("value", "converted"),
    [(75.0, 9.013), (74.0, 8.92152), (53.0, 7.00044), (52.0, 6.90896)],
)
def test_declared_equation_converts_ifcc_to_ngsp(value: float, converted: float) -> None:
    reading = express(value, "mmol/mol", HBA1C, coded=True)
    assert reading is not None
    assert reading.value == pytest.approx(converted, abs=1e-9)
    assert reading.note is not None and reading.note.endswith("(x 0.09148 + 2.152)")


def test_ifcc_hba1c_is_never_converted_by_ucum_alone() -> None:
    # UCUM sees two dimensionless ratios and would divide by ten: 75 mmol/mol -> 7.5 %
    assert units._registry().from_ucum("mmol/mol").to("percent").magnitude == pytest.approx(0.1)
    assert ucum_conversion("mmol/mol", "%") is None
    assert express(75.0, "mmol/mol", bands("%"), coded=True) is None


def test_declared_conversion_is_reached_through_ucum() -> None:
    # umol/L is not declared, mmol/L is: 4920 umol/L = 4.92 mmol/L = 190.2564 mg/dL
    reading = express(4920.0, "umol/L", LDL, coded=True)
    assert reading is not None
    assert reading.value == pytest.approx(190.2564, abs=1e-9)
    assert reading.note is not None and "through 'mmol/L'" in reading.note


# -- plain UCUM conversions --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "unit", "expected", "converted"),
    [
        (0.19, "g/dL", "mg/dL", 190.0),
        (0.2, "min", "s", 12.0),  # 12.000000000000002 before rounding
        (1.9, "g/L", "mg/dL", 190.0),
        (37.0, "Cel", "[degF]", 98.6),  # an offset, not only a factor
        (0.5, "mL/s/{1.73_m2}", "mL/min/{1.73_m2}", 30.0),
        (200.0, "mg/dl", "mg/dL", 200.0),  # l and L are both the litre in UCUM
    ],
)
def test_ucum_converts_by_dimension_without_a_note(
    value: float, unit: str, expected: str, converted: float
) -> None:
    assert express(value, unit, bands(expected), coded=True) == Reading(converted)


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("mmol/L", "mg/dL"),  # molar to mass needs the molar mass
        ("[IU]/L", "10*3/uL"),  # an arbitrary unit converts to nothing else
        ("1", "%"),
        ("{score}", "{points}"),
        ("kg", "kg/m2"),
        ("not a unit", "s"),
        ("MG/DL", "mg/dL"),  # a UCUM code is case-sensitive: M is mega, D no prefix
    ],
)
def test_ucum_refuses(source: str, target: str) -> None:
    assert ucum_conversion(source, target) is None


def test_conversion_is_derived_once_per_pair(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(units, "_conversions", {})
    derived: list[tuple[str, str]] = []
    derive = units._derive

    def counting(source: str, target: str) -> units.Affine | None:
        derived.append((source, target))
        return derive(source, target)

    monkeypatch.setattr(units, "_derive", counting)
    for _ in range(3):
        assert ucum_conversion("g/dL", "mg/dL") == (1000.0, 0.0)
        assert ucum_conversion("mmol/L", "mg/dL") is None
    assert derived == [("g/dL", "mg/dL"), ("mmol/L", "mg/dL")]


def test_remembered_pairs_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(units, "_conversions", {})
    monkeypatch.setattr(units, "MAX_REMEMBERED_PAIRS", 3)
    monkeypatch.setattr(units, "_derive", lambda source, target: None)
    for n in range(10):
        ucum_conversion(f"u{n}", "s")
        assert len(units._conversions) <= 3


# -- the schema --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (
            {"unit": "mg/dL", "conversions": [{"from": "mg/dL", "factor": 1, "source": "x"}]},
            "own unit",
        ),
        (
            {"unit": "mg/dL", "conversions": [{"from": "mmol/L", "factor": 0, "source": "x"}]},
            "greater than 0",
        ),
        (
            {"unit": "mg/dL", "conversions": [{"from": "mmol/L", "factor": -38.67, "source": "x"}]},
            "greater than 0",
        ),
        (
            {"unit": "mg/dL", "conversions": [{"from": "mmol/L", "factor": 38.67}]},
            "source",
        ),
        ({"conversions": [{"from": "mmol/L", "factor": 38.67, "source": "x"}]}, "need the"),
        ({"mislabels": [{"unit": "mL/min", "source": "x"}]}, "need the"),
        (
            {
                "unit": "%",
                "conversions": [{"from": "mmol/mol", "factor": 0.09148, "source": "x"}],
                "mislabels": [{"unit": "mmol/mol", "source": "x"}],
            },
            "more than once: mmol/mol",
        ),
        ({"unit": "mL/min/{1.73_m2}", "mislabels": [{"unit": "mL/min"}]}, "source"),
    ],
)
def test_value_block_rejects(block: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ValueBands.model_validate({**block, "bands": CATCH_ALL})


def test_value_block_reads_from_as_the_yaml_key() -> None:
    block = LDL.conversions[0]
    assert (block.from_, block.factor, block.offset) == ("mmol/L", 38.67, 0.0)
