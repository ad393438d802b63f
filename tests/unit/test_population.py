"""Population summary: segment counts, dimension shares and distinct plan shapes."""

from __future__ import annotations

import json

from builders import AS_OF, ICD10, SNOMED, condition, record
from click.testing import CliRunner

from fhir_tailor.cli import main
from fhir_tailor.definitions import Definitions, bundled_path
from fhir_tailor.pipeline import assess
from fhir_tailor.population import PopulationSummary, plan_shape


def summarize(definitions: Definitions, *records: object) -> PopulationSummary:
    summary = PopulationSummary.over(definitions.segments)
    for rec in records:
        summary.add(*assess(rec, definitions, AS_OF))  # type: ignore[arg-type]
    return summary


def test_same_needs_give_one_plan_shape_whatever_the_patient(definitions: Definitions) -> None:
    first = record(condition("c1", SNOMED, "44054006", pid="a"), pid="a")
    second = record(condition("c9", ICD10, "E11.9", pid="b"), pid="b")
    _, _, plan_a = assess(first, definitions, AS_OF)
    _, _, plan_b = assess(second, definitions, AS_OF)
    assert plan_a is not None and plan_b is not None
    assert plan_a.patient != plan_b.patient
    assert plan_shape(plan_a) == plan_shape(plan_b)


def test_counts_over_a_small_population(definitions: Definitions) -> None:
    diabetic = [
        record(condition(f"c{n}", SNOMED, "44054006", pid=f"p{n}"), pid=f"p{n}") for n in range(2)
    ]
    transport = record(
        condition("c7", SNOMED, "44054006", pid="p7"),
        condition("c8", ICD10, "Z59.82", pid="p7"),
        pid="p7",
    )
    summary = summarize(definitions, *diabetic, transport, record(pid="healthy"))
    data = summary.as_dict()
    assert data["patients"] == 4
    assert data["with_plan"] == 4  # nobody is screened: screening modules apply to all
    # The two plain diabetics share a plan; telehealth makes the third differ; the healthy
    # patient gets screening only.
    assert data["distinct_plans"] == 3
    assert data["share_with_finding"]["medical"] == 0.75
    assert data["share_with_finding"]["social"] == 0.25
    assert data["variants"]["telehealth-follow-up"] == 1
    assert data["modules"]["diabetes-outpatient"] == 3
    assert sum(data["needs"]["medical"].values()) == 4


def test_segments_command_over_the_bundled_fixtures() -> None:
    result = CliRunner().invoke(main, ["--as-of", "2026-11-15", "segments", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    patients = len(list((bundled_path("fixtures") / "bundles").glob("*.json")))
    assert data["patients"] == patients
    assert set(data["segments"]) >= {"diabetes_with_social_needs", "frail_living_alone"}
    assert all(0 <= info["patients"] <= patients for info in data["segments"].values())
    text = CliRunner().invoke(main, ["--as-of", "2026-11-15", "segments"])
    assert "distinct plans" in text.stdout and "Frail, living alone" in text.stdout
