"""The rule language: feature tests by status, on the bundled mappings."""

from __future__ import annotations

import pytest
from builders import AS_OF, observation, record
from pydantic import TypeAdapter

from fhir_tailor.definitions import Definitions
from fhir_tailor.profile import build_profile
from fhir_tailor.rules import RuleExpr

RULE: TypeAdapter[RuleExpr] = TypeAdapter(RuleExpr)


@pytest.mark.parametrize(
    ("score", "when", "present", "absent", "recorded"),
    [
        (12, "2026-10-01", True, False, True),
        (2, "2026-10-01", False, True, True),
        (12, "2024-10-01", False, False, False),  # stale: counts as no current result
        (None, "2026-10-01", False, False, False),  # no value: unknown
    ],
)
def test_feature_rule_by_status(
    definitions: Definitions,
    score: int | None,
    when: str,
    present: bool,
    absent: bool,
    recorded: bool,
) -> None:
    value = {} if score is None else {"valueInteger": score}
    profile = build_profile(
        record(observation("o1", "44261-6", when=when, **value)), definitions.rules, AS_OF
    )
    verdicts = {
        status: RULE.validate_python({"feature": "depression", "status": status})
        .evaluate(profile)
        .holds
        for status in ("present", "absent", "recorded")
    }
    assert verdicts == {"present": present, "absent": absent, "recorded": recorded}
    assert RULE.validate_python({"feature": "depression"}).evaluate(profile).holds is present
