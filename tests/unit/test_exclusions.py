"""Features that exclude each other share no code: the check on synthetic mappings (where the
shared code is known), on the bundled profiles, and through loading; and the message naming the
rules behind missing value sets."""

from __future__ import annotations

import re
from typing import Any

import pytest

from fhir_tailor.definitions import Definitions
from fhir_tailor.exclusions import (
    MAX_LISTED_CODES,
    ExclusionError,
    check_exclusions,
    conflicts,
    exclusion_pairs,
    unknown_exclusions,
)
from fhir_tailor.mapping import (
    LISTED_RULES,
    LISTED_VALUESETS,
    CodeIndex,
    Feature,
    FeatureFile,
    Rule,
    UnresolvedValueSets,
)
from fhir_tailor.terminology.valuesets import ICD10CM, ValueSetLibrary, parse_valueset

LOINC = "http://loinc.org"


def valueset(name: str, *codes: tuple[str, str]) -> dict[str, Any]:
    return {
        "resourceType": "ValueSet",
        "url": f"https://example.org/fhir/ValueSet/{name}",
        "version": "1",
        "expansion": {
            "timestamp": "2026-12-05",
            "contains": [{"system": s, "code": c, "display": f"{c} display"} for s, c in codes],
        },
    }


def canonical(name: str) -> str:
    return f"https://example.org/fhir/ValueSet/{name}|1"


def condition_rule(rule_id: str, *names: str, excluding: tuple[str, ...] = ()) -> Rule:
    return Rule(
        id=rule_id,
        resource="Condition",
        valuesets=[canonical(n) for n in names],
        excluding=[canonical(n) for n in excluding],
        severity="moderate",
    )


def feature(feature_id: str, *rules: Rule, excludes: tuple[str, ...] = ()) -> Feature:
    return Feature(id=feature_id, label=feature_id, excludes=excludes, rules=list(rules))


def index(valuesets: list[dict[str, Any]], *features: Feature) -> CodeIndex:
    library = ValueSetLibrary(parse_valueset(v, "test") for v in valuesets)
    file = FeatureFile(
        version="1", changelog=["1: test"], dimension="medical", features=list(features)
    )
    return CodeIndex([file], library)


#: Type 1 and type 2 diabetes, as ICD-10-CM categories E10 and E11 (ICD-10-CM tabular list FY2026,
#: chapter 4); E11.9 slipped into the type 1 value set is the mapping error to catch.
TYPE1 = valueset("type1", (ICD10CM, "E10.9"), (ICD10CM, "E11.9"))
TYPE2 = valueset("type2", (ICD10CM, "E11.9"), (ICD10CM, "E11.65"))
ONLY_TYPE1 = valueset("only-type1", (ICD10CM, "E10.9"))


def diabetes(type1_valuesets: tuple[str, ...] = ("type1",), **rule: Any) -> CodeIndex:
    return index(
        [TYPE1, TYPE2, ONLY_TYPE1],
        feature(
            "type1_diabetes",
            condition_rule("type1_diabetes.icd10", *type1_valuesets, **rule),
            excludes=("type2_diabetes",),
        ),
        feature("type2_diabetes", condition_rule("type2_diabetes.icd10", "type2")),
    )


def test_a_shared_code_is_reported_with_both_features_and_value_sets() -> None:
    checked = diabetes()
    (conflict,) = conflicts(checked)
    assert (conflict.first, conflict.second) == ("type1_diabetes", "type2_diabetes")
    (shared,) = conflict.codes
    assert (shared.concept.system, shared.concept.code) == (ICD10CM, "E11.9")
    assert [(s.rule.id, s.valueset) for s in shared.first] == [
        ("type1_diabetes.icd10", canonical("type1"))
    ]
    assert [(s.rule.id, s.valueset) for s in shared.second] == [
        ("type2_diabetes.icd10", canonical("type2"))
    ]
    with pytest.raises(ExclusionError) as raised:
        check_exclusions(checked)
    message = str(raised.value)
    assert message.splitlines()[1:] == [
        "  type1_diabetes / type2_diabetes: 1 shared code",
        f"    in type1_diabetes.icd10 ({canonical('type1')}) and in type2_diabetes.icd10 "
        f"({canonical('type2')}):",
        f'      {ICD10CM}|E11.9 "E11.9 display"',
    ]


def test_no_shared_code_is_clean() -> None:
    checked = diabetes(("only-type1",))
    assert [(a.id, b.id) for a, b in exclusion_pairs(checked)] == [
        ("type1_diabetes", "type2_diabetes")
    ]
    assert conflicts(checked) == []
    check_exclusions(checked)


def test_a_code_left_out_with_excluding_is_not_shared() -> None:
    checked = diabetes(excluding=("type2",))
    assert conflicts(checked) == []


def test_codes_are_compared_as_the_index_compares_them() -> None:
    """An ICD-10-CM code written without its dot in one value set is the same code."""
    undotted = valueset("type1", (ICD10CM, "E10.9"), (ICD10CM, "e119"))
    checked = index(
        [undotted, TYPE2],
        feature("type1_diabetes", condition_rule("t1", "type1"), excludes=("type2_diabetes",)),
        feature("type2_diabetes", condition_rule("t2", "type2")),
    )
    (conflict,) = conflicts(checked)
    assert [c.concept.code for c in conflict.codes] == ["e119"]


def test_a_pair_declared_both_ways_is_checked_once() -> None:
    checked = index(
        [TYPE1, TYPE2],
        feature("a", condition_rule("a.r", "type1"), excludes=("b",)),
        feature("b", condition_rule("b.r", "type2"), excludes=("a",)),
    )
    assert len(exclusion_pairs(checked)) == 1
    assert len(conflicts(checked)) == 1


def test_unknown_or_own_feature_in_excludes_is_an_error() -> None:
    checked = index(
        [TYPE1, TYPE2],
        feature("a", condition_rule("a.r", "type1"), excludes=("no_such_feature", "a")),
        feature("b", condition_rule("b.r", "type2")),
    )
    assert unknown_exclusions(checked) == [
        "feature 'a' excludes unknown feature 'no_such_feature'",
        "feature 'a' excludes itself",
    ]
    assert exclusion_pairs(checked) == []
    with pytest.raises(ExclusionError, match="unknown feature 'no_such_feature'"):
        check_exclusions(checked)


def test_a_long_listing_is_shortened() -> None:
    codes = [(ICD10CM, f"E11.{n}") for n in range(MAX_LISTED_CODES + 5)]
    checked = index(
        [valueset("wide", *codes), valueset("also-wide", *codes)],
        feature("a", condition_rule("a.r", "wide"), excludes=("b",)),
        feature("b", condition_rule("b.r", "also-wide")),
    )
    with pytest.raises(ExclusionError) as raised:
        check_exclusions(checked)
    lines = str(raised.value).splitlines()
    assert lines[1] == f"  a / b: {MAX_LISTED_CODES + 5} shared codes"
    assert lines[2].startswith("    in a.r (")
    codes = lines[3:-1]
    assert len(codes) == MAX_LISTED_CODES
    assert all(line.startswith(f"      {ICD10CM}|E11.") for line in codes)
    assert lines[-1] == "    ... and 5 more"


# -- readings: a shared question or measurement code is a conflict only if both can read present


#: The CMS living situation item (LOINC 85950-4) and two of its answers (LOINC answer list
#: LL4590-4): LA31004-2 lives alone with no help available, LA31005-9 lives alone with help.
QUESTION = valueset("living-situation", (LOINC, "85950-4"))


def answer_rule(rule_id: str, *present: str, absent: tuple[str, ...] = ()) -> Rule:
    answers = [{"system": LOINC, "code": c, "status": "present"} for c in present]
    answers += [{"system": LOINC, "code": c, "status": "absent"} for c in absent]
    return Rule.model_validate(
        {
            "id": rule_id,
            "resource": "Observation",
            "valuesets": [canonical("living-situation")],
            "answers": answers,
        }
    )


def answers_index(first: Rule, second: Rule) -> CodeIndex:
    return index(
        [QUESTION],
        Feature(id="a", label="a", asset=True, excludes=("b",), rules=[first]),
        Feature(id="b", label="b", asset=True, rules=[second]),
    )


def test_answer_tables_without_a_common_present_answer_do_not_conflict() -> None:
    first = answer_rule("a.r", "LA31004-2", absent=("LA31005-9",))
    second = answer_rule("b.r", "LA31005-9", absent=("LA31004-2",))
    assert conflicts(answers_index(first, second)) == []


def test_answer_tables_with_a_common_present_answer_conflict() -> None:
    first = answer_rule("a.r", "LA31004-2", "LA31005-9")
    second = answer_rule("b.r", "LA31005-9")
    (conflict,) = conflicts(answers_index(first, second))
    assert conflict.codes[0].concept.code == "85950-4"


def value_rule(rule_id: str, bands: list[dict[str, Any]], unit: str = "%") -> Rule:
    return Rule.model_validate(
        {
            "id": rule_id,
            "resource": "Observation",
            "valuesets": [canonical("hba1c")],
            "value": {"unit": unit, "bands": bands},
        }
    )


#: HbA1c 4548-4; 6.5% and 5.7% are the ADA Standards of Care 2025 (section 2, table 2.1) cut points
#: for diabetes and prediabetes.
HBA1C = valueset("hba1c", (LOINC, "4548-4"))
DIABETIC = [{"min": 6.5, "status": "present", "severity": "moderate"}, {"status": "absent"}]
PREDIABETIC = [
    {"min": 6.5, "status": "absent"},
    {"min": 5.7, "status": "present", "severity": "low"},
    {"status": "absent"},
]


def values_index(first: Rule, second: Rule) -> CodeIndex:
    return index(
        [HBA1C],
        feature("a", first, excludes=("b",)),
        feature("b", second),
    )


def test_value_bands_whose_present_ranges_do_not_meet_do_not_conflict() -> None:
    checked = values_index(value_rule("a.r", DIABETIC), value_rule("b.r", PREDIABETIC))
    assert conflicts(checked) == []


def test_value_bands_whose_present_ranges_meet_conflict() -> None:
    overlapping = [{"min": 6.0, "status": "present", "severity": "low"}, {"status": "absent"}]
    checked = values_index(value_rule("a.r", DIABETIC), value_rule("b.r", overlapping))
    assert len(conflicts(checked)) == 1


def test_value_bands_in_different_units_are_reported() -> None:
    """Bands in other units are not compared (a conversion may map one onto the other): HbA1c
    48 mmol/mol and above (IFCC; ADA Standards of Care 2025, table 2.1) against 5.7-6.4% would
    not meet as numbers, yet they are reported."""
    ifcc = [{"min": 48, "status": "present", "severity": "moderate"}, {"status": "absent"}]
    checked = values_index(value_rule("a.r", ifcc, "mmol/mol"), value_rule("b.r", PREDIABETIC))
    assert len(conflicts(checked)) == 1


def test_a_presence_rule_conflicts_with_any_reading_of_its_code() -> None:
    presence = Rule(
        id="a.r", resource="Observation", valuesets=[canonical("hba1c")], severity="low"
    )
    checked = values_index(presence, value_rule("b.r", PREDIABETIC))
    assert len(conflicts(checked)) == 1


# -- the bundled profiles ----------------------------------------------------------------------


def test_bundled_profiles_pass(definitions: Definitions) -> None:
    checked = definitions.rules.index
    assert unknown_exclusions(checked) == []
    assert conflicts(checked) == []
    check_exclusions(checked)


# -- missing value sets: each named with the rules naming it, a long list shortened ------------


def test_missing_value_sets_name_their_rules_and_a_long_list_is_shortened() -> None:
    many = LISTED_VALUESETS + 2
    missing = [canonical(f"missing-{n}") for n in range(many)]
    named_by = {c: [f"feature.rule_{n}"] for n, c in enumerate(missing)}
    named_by[missing[0]] = [f"shared.rule_{n}" for n in range(LISTED_RULES + 2)]
    message = str(
        UnresolvedValueSets(
            missing,
            [canonical("unexpanded")],
            {**named_by, canonical("unexpanded"): ["asthma.icd10"]},
        )
    )
    lines = message.splitlines()
    assert lines[0] == f"value sets not found ({many}):"
    shown = ", ".join(f"shared.rule_{n}" for n in range(LISTED_RULES))
    assert lines[1] == f"  {missing[0]}, named by rules {shown} and 2 more"
    assert lines[2] == f"  {missing[1]}, named by rule feature.rule_1"
    assert lines[LISTED_VALUESETS + 1] == "  ... and 2 more value sets"
    assert not any(missing[-1] in line for line in lines)
    assert re.match(r"value sets without an expansion \(1\); .*--terminology", lines[-2])
    assert lines[-1] == f"  {canonical('unexpanded')}, named by rule asthma.icd10"
