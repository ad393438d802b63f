"""The embedding API, used the way an embedding program would: only names ``fhir_tailor`` exports.

Nothing below imports from fhir_tailor's modules; the CLI (a separate path through the code) is
the independent reference the results are compared with.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import respx
from click.testing import CliRunner

import fhir_tailor
from fhir_tailor.cli import main  # the reference, not the API under test

BUNDLES = Path(__file__).resolve().parents[2] / "fixtures" / "bundles"
AS_OF = date(2026, 11, 15)
BASE = "http://fhir.test/fhir"


def bundle(name: str) -> dict[str, Any]:
    path = next(BUNDLES.glob(f"{name}-*.json"))
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def cli_plan(patient_id: str) -> dict[str, Any] | None:
    result = CliRunner().invoke(
        main, ["--as-of", AS_OF.isoformat(), "plan", "--patient", patient_id, "--json"]
    )
    assert result.exit_code == 0, result.output
    text = result.stdout.strip()
    return None if text.endswith("no care module applies") else json.loads(text)


def test_every_export_exists() -> None:
    assert sorted(fhir_tailor.__all__) == sorted(set(fhir_tailor.__all__))
    for name in fhir_tailor.__all__:
        assert hasattr(fhir_tailor, name), name


@pytest.mark.parametrize("name", ["01", "05", "14"])
def test_profile_and_plan_equal_what_the_cli_gives(name: str) -> None:
    data = bundle(name)
    profile = fhir_tailor.build_profile(data, as_of=AS_OF)
    plan = fhir_tailor.plan_for(profile)
    reference = cli_plan(profile.patient.removeprefix("Patient/"))
    assert (plan.model_dump(mode="json") if plan else None) == reference


def test_findings_link_to_the_resources_they_came_from() -> None:
    data = bundle("01")
    ids = {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in data["entry"]}
    profile = fhir_tailor.build_profile(data, as_of=AS_OF)
    findings = [finding for _, finding in profile.findings()]
    assert findings
    for finding in findings:
        assert finding.sources and set(finding.sources) <= ids


def test_a_list_of_resources_is_the_same_as_its_bundle() -> None:
    data = bundle("02")
    resources = [entry["resource"] for entry in data["entry"]]
    assert fhir_tailor.build_profile(resources, as_of=AS_OF) == fhir_tailor.build_profile(
        data, as_of=AS_OF
    )


def test_bad_resources_are_reported_by_field_and_left_out() -> None:
    data = bundle("01")
    resources = [entry["resource"] for entry in data["entry"]]
    stray = {"resourceType": "Observation", "id": "stray", "status": "final"}
    issues: list[fhir_tailor.ReadIssue] = []
    profile = fhir_tailor.build_profile([*resources, stray], as_of=AS_OF, on_issue=issues.append)
    assert profile == fhir_tailor.build_profile(resources, as_of=AS_OF)
    assert [(i.resource_type, i.resource_id) for i in issues] == [("Observation", "stray")]
    assert "subject" in issues[0].reason


def test_resources_of_several_patients_or_none_are_refused() -> None:
    two = [*bundle("01")["entry"], *bundle("02")["entry"]]
    with pytest.raises(fhir_tailor.NotOnePatientError, match="found 2"):
        fhir_tailor.build_profile({"resourceType": "Bundle", "type": "collection", "entry": two})
    with pytest.raises(fhir_tailor.NotOnePatientError, match="found 0"):
        fhir_tailor.build_profile([])


def test_to_fhir_gives_a_draft_careplan_for_the_patient_with_its_goals() -> None:
    profile = fhir_tailor.build_profile(bundle("01"), as_of=AS_OF)
    plan = fhir_tailor.plan_for(profile)
    assert plan is not None
    recorded = datetime(2026, 11, 15, 12, tzinfo=UTC)
    resources = fhir_tailor.to_fhir(plan, recorded=recorded)
    careplan = resources.careplan.resource
    assert careplan["resourceType"] == "CarePlan" and careplan["status"] == "draft"
    assert careplan["subject"]["reference"] == profile.patient
    assert [g["reference"] for g in careplan["goal"]] == [g.full_url for g in resources.goals]
    assert resources.provenance.resource["recorded"].startswith("2026-11-15T12:00:00")


@respx.mock
def test_a_plan_goes_back_to_a_server_through_the_exported_client_and_sink() -> None:
    plan = fhir_tailor.plan_for(fhir_tailor.build_profile(bundle("01"), as_of=AS_OF))
    assert plan is not None
    statement = {"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1", "rest": []}
    respx.get(f"{BASE}/metadata").respond(json=statement)
    respx.get(f"{BASE}/CarePlan").respond(
        json={"resourceType": "Bundle", "type": "searchset", "entry": []}
    )
    posted = respx.post(BASE).respond(
        json={
            "resourceType": "Bundle",
            "type": "transaction-response",
            "entry": [{"response": {"status": "201", "location": "CarePlan/9/_history/1"}}],
        }
    )
    with fhir_tailor.FhirClient(BASE) as client:
        outcome = fhir_tailor.ServerSink(client).write(plan, fhir_tailor.to_fhir(plan))
    assert (outcome.outcome, outcome.careplan) == ("created", "CarePlan/9")
    sent = json.loads(posted.calls.last.request.content)
    assert sent["type"] == "transaction"
    assert sent["entry"][0]["resource"]["resourceType"] == "CarePlan"


def test_definitions_take_a_folder_as_a_string_or_a_path() -> None:
    folder = Path(__file__).resolve().parents[2] / "profiles"
    for given in (str(folder), folder):
        loaded = fhir_tailor.definitions(given)
        assert loaded.catalog.info == fhir_tailor.definitions().catalog.info
    with pytest.raises(Exception, match="nowhere: profiles folder not found"):
        fhir_tailor.definitions("nowhere")
