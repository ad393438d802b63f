"""The CQL translation of rules (fhir_tailor.cql).

No CQL engine runs in Python, so the parts that decide are checked here, each on both sides of
its threshold: the band criteria are evaluated as Python expressions over a number, the day
arithmetic is read off the text; and over the whole catalog, every CQL expression tests exactly
the value sets its FHIRPath twin tests, and is well formed. scripts/compare-apply runs the
published libraries on HAPI FHIR's engine against fhir-tailor's own plans.
"""

from __future__ import annotations

import re
from functools import cache

import pytest

from fhir_tailor import cql, fhirpath
from fhir_tailor.definitions import Definitions, bundled_path, load_definitions
from fhir_tailor.expression import string_literal
from fhir_tailor.mapping import Band, UnitConversion, ValueBands
from fhir_tailor.rules import AgeAtLeast, AgeBelow, FeatureRule


@cache
def definitions() -> Definitions:
    return load_definitions(bundled_path("profiles"))


def in_band(criterion: str, number: float) -> bool:
    """A band criterion (``N >= 7 and N < 9 or ...``) evaluated for ``N = number``."""
    assert re.fullmatch(r"[N0-9.<>=() andort]+", criterion), criterion
    result = eval(criterion, {"N": number})  # arithmetic only: checked above
    assert isinstance(result, bool)
    return result


HBA1C = ValueBands(
    unit="%",
    conversions=[
        UnitConversion.model_validate(
            {"from": "mmol/mol", "factor": 0.0915, "offset": 2.15, "source": "IFCC"}
        )
    ],
    bands=[
        Band(min=9, status="present", severity="high"),
        Band(min=7, status="present", severity="moderate"),
        Band(min=None, status="absent"),
    ],
)


@pytest.mark.parametrize(
    ("wanted", "number", "inside"),
    [
        ({0}, 9, True),
        ({0}, 8.99, False),
        ({1}, 7, True),
        ({1}, 6.99, False),
        ({1}, 9, False),
        ({0, 1}, 7, True),
        ({0, 1}, 12, True),
        ({0, 1}, 6.5, False),
        ({2}, 6.99, True),
        ({2}, 7, False),
    ],
)
def test_a_number_falls_in_the_first_band_whose_minimum_it_reaches(
    wanted: set[int], number: float, inside: bool
) -> None:
    criterion = cql.CQL().bands_reached(HBA1C, wanted)
    assert criterion is not None
    assert in_band(criterion, number) is inside


def test_a_band_shadowed_by_an_earlier_one_with_the_same_minimum_is_never_reached() -> None:
    bands = ValueBands(
        bands=[
            Band(min=5, status="present", severity="high"),
            Band(min=5, status="present", severity="low"),
            Band(min=None, status="absent"),
        ]
    )
    assert cql.CQL().bands_reached(bands, {1}) is None
    criterion = cql.CQL().bands_reached(bands, {0})
    assert criterion is not None
    assert in_band(criterion, 5) and not in_band(criterion, 4.99)


def test_a_declared_conversion_is_applied_to_a_quantity_in_its_unit() -> None:
    numbers = cql.CQL().in_unit(HBA1C, "observation")
    assert "if Lower(" in numbers
    assert "= 'mmol/mol' then (K.value as FHIR.Quantity).value.value * 0.0915 + 2.15" in numbers
    assert "in {'%'}" not in numbers and "= '%' then" in numbers


@pytest.mark.parametrize(
    ("rule", "comparisons"),
    [
        (AgeAtLeast(age_at_least=65), ["<= ToString(%asOf - 65 years)"]),
        (AgeBelow(age_below=18), ["> ToString(%asOf - 18 years)", "<= ToString(%asOf)"]),
    ],
)
def test_ages_compare_the_birth_day_with_as_of_minus_whole_years(
    rule: AgeAtLeast | AgeBelow, comparisons: list[str]
) -> None:
    expression = cql.Translator(definitions().rules).expression(rule)
    day = "Substring(ToString(Patient.birthDate.value) + '-01-01', 0, 10)"
    for comparison in comparisons:
        assert f"{day} {comparison}" in expression
    assert expression.endswith("is true"), "no birth date: null made false"


def test_a_value_set_is_named_by_url_and_pinned_version() -> None:
    assert cql._valueset("http://x/ValueSet/a|1.2.0") == (
        "System.ValueSet { id: 'http://x/ValueSet/a', version: '1.2.0' }"
    )
    assert cql._valueset("http://x/ValueSet/a") == "System.ValueSet { id: 'http://x/ValueSet/a' }"


def test_strings_are_escaped() -> None:
    assert string_literal("it's a\\b") == "'it\\'s a\\\\b'"


def test_a_library_declares_its_parameter_context_and_defines() -> None:
    text = cql.library("DiabetesCare", "1.2.0", [("Applies", "true"), ("Alive", "false")])
    assert text.startswith("library DiabetesCare version '1.2.0'\n")
    assert "using FHIR version '4.0.1'" in text
    assert "include FHIRHelpers version '4.0.1' called FHIRHelpers" in text
    assert 'parameter "%asOf" Date' in text
    assert text.index("context Patient") < text.index('define "Applies":\n  true')
    assert text.index('define "Applies"') < text.index('define "Alive":\n  false')


def all_rules() -> list[tuple[str, object]]:
    catalog = definitions().catalog
    rules: list[tuple[str, object]] = [(m.id, m.applies_when) for m in catalog.modules]
    rules += [(v.id, v.when) for v in catalog.variants]
    return rules


def valuesets_of_fhirpath(expression: str) -> set[str]:
    return set(re.findall(r"memberOf\('([^']*)'\)", expression))


def valuesets_of_cql(expression: str) -> set[str]:
    named = re.findall(r"System\.ValueSet \{ id: '([^']*)'(?:, version: '([^']*)')? \}", expression)
    return {f"{url}|{version}" if version else url for url, version in named}


def test_every_condition_tests_the_value_sets_its_fhirpath_twin_tests() -> None:
    rules = definitions().rules
    to_cql, to_fhirpath = cql.Translator(rules), fhirpath.Translator(rules)
    for name, rule in all_rules():
        in_cql = valuesets_of_cql(to_cql.expression(rule))  # type: ignore[arg-type]
        in_fhirpath = valuesets_of_fhirpath(to_fhirpath.expression(rule))  # type: ignore[arg-type]
        assert in_cql == in_fhirpath, name


def balanced(expression: str) -> bool:
    """Brackets pair up outside string literals and comments, and every literal is closed."""
    without = re.sub(r"'(?:[^'\\]|\\.)*'", "''", expression)
    without = re.sub(r"/\*.*?\*/", "", without, flags=re.S)
    if "'" in without.replace("''", ""):
        return False
    stack: list[str] = []
    pairs = {")": "(", "}": "{", "]": "["}
    for char in without:
        if char in "({[":
            stack.append(char)
        elif char in pairs and (not stack or stack.pop() != pairs[char]):
            return False
    return not stack


def test_every_condition_of_the_catalog_is_well_formed() -> None:
    translator = cql.Translator(definitions().rules)
    for name, rule in all_rules():
        expression = translator.expression(rule)  # type: ignore[arg-type]
        assert balanced(expression), name
        assert "%context" not in expression and "memberOf" not in expression, name
    assert balanced(cql.NOT_DECEASED)
    assert not balanced("exists ((R.code) X where X.code = 'a')) ")


def test_a_library_shares_each_feature_once_and_names_only_what_it_defines() -> None:
    translator = cql.Translator(definitions().rules)
    rules = [(name, rule) for name, rule in all_rules()]
    defines = translator.defines(rules)  # type: ignore[arg-type]
    names = [name for name, _ in defines]
    assert len(names) == len(set(names))
    assert names[-len(rules) :] == [name for name, _ in rules]
    assert any(name.startswith("feature ") for name in names)
    for name, expression in defines:
        without_comments = re.sub(r"/\*.*?\*/", "", expression, flags=re.S)
        for referenced in re.findall(r'"([^"]+)"', without_comments):
            assert referenced in names or referenced == "end", (name, referenced)
        assert balanced(expression), name
    assert sum(len(e) for _, e in defines) < sum(len(translator.expression(r)) for _, r in rules)  # type: ignore[arg-type]


def feature_in_cql(**rule: object) -> str:
    return cql.Translator(definitions().rules).expression(FeatureRule.model_validate(rule))


#: Where a newest-day test asks the newest mark (``|1``: a reading of the day is present; ``|0``:
#: none is), and where it asks for the newest day whatever its mark: only that it is current.
NEWEST_PRESENT = "where EndsWith(D, '|1') and Substring(D, 0, 10) >= ToString(%asOf - 365 days)"
NEWEST_ABSENT = "where EndsWith(D, '|0') and Substring(D, 0, 10) >= ToString(%asOf - 365 days)"
NEWEST_CURRENT = "where Substring(D, 0, 10) >= ToString(%asOf - 365 days)"


def diagnosis_negated(expression: str) -> bool:
    """Whether the one diagnosis test of ``expression`` stands under a ``not``."""
    assert expression.count("[Condition]") == 1
    found = re.search(r"(?m)^(.*)\n\s*exists \(\[Condition\]", expression)
    assert found is not None
    return found.group(1).strip().endswith("not (")


def test_each_status_of_a_feature_tests_its_own_newest_mark() -> None:
    """present: the newest PHQ-9 day is marked present; absent: no current diagnosis, and the
    newest day is marked not present (every reading of it absent); recorded: a diagnosis, or a
    current newest day whatever it read (its days unmarked)."""
    present = feature_in_cql(feature="depression")
    absent = feature_in_cql(feature="depression", status="absent")
    recorded = feature_in_cql(feature="depression", status="recorded")
    assert len({present, absent, recorded}) == 3
    assert NEWEST_PRESENT in present and NEWEST_ABSENT not in present
    assert not diagnosis_negated(present)
    assert absent.startswith("/* feature depression, absent */")
    assert NEWEST_ABSENT in absent and NEWEST_PRESENT not in absent
    assert diagnosis_negated(absent)
    assert recorded.startswith("/* feature depression, recorded */")
    assert NEWEST_CURRENT in recorded and "EndsWith(D," not in recorded
    assert "then '|1' else '|0'" not in recorded, "recorded reads days, not marks"
    assert not diagnosis_negated(recorded)


def test_an_absent_finding_has_no_severity_in_cql() -> None:
    moderate = feature_in_cql(feature="depression", severity_at_least="moderate")
    assert feature_in_cql(feature="depression", status="absent", severity_at_least="high") == (
        "false"
    )
    recorded = feature_in_cql(feature="depression", status="recorded", severity_at_least="moderate")
    assert recorded == moderate


def test_a_confirmed_feature_is_absent_when_no_marker_reads_present_confirmed_or_not() -> None:
    """ckd: one marker's newest reading absent, and neither marker's newest present (a pending
    reading outranks an absent one), so no confirmation run is read."""
    absent = feature_in_cql(feature="ckd", status="absent")
    present = feature_in_cql(feature="ckd")
    assert absent.count("where EndsWith(D, '|0'))") == 2
    assert absent.count("where EndsWith(D, '|1'))") == 2
    assert len(re.findall(r"not \(\n\s+exists \(\(\{Max\(", absent)) == 2
    assert "ToDate(D4) + 90 days" in present and "ToDate(D4)" not in absent
    recorded = feature_in_cql(feature="ckd", status="recorded")
    assert "ToDate(D4) + 90 days" in recorded and "where EndsWith(D, '|0'))" in recorded


def test_a_library_defines_each_status_of_a_feature_apart() -> None:
    rules = [
        (status, FeatureRule(feature="depression", status=status))
        for status in ("present", "absent", "recorded")
    ]
    names = [name for name, _ in cql.Translator(definitions().rules).defines(rules)]  # type: ignore[arg-type]
    assert {"feature depression", "feature depression, absent", "feature depression, recorded"} <= (
        set(names)
    )


def test_a_rule_whose_every_answer_is_unknown_is_not_read() -> None:
    """The HITS items are summed, none decides alone: every answer is of status unknown, so the
    profile reads nothing from one, and neither does the CQL (it read one as a result that is
    not present, newer than the HITS total that is)."""
    expression = feature_in_cql(feature="interpersonal_safety")
    assert "interpersonal-safety-hits-total" in expression
    assert "interpersonal-safety-hits-items" not in expression
