"""Life state: a patient the record says has died gets no plan, anywhere.

``Patient.deceased[x]`` is read on both sides of each rule (true/false, a date before, on and
after the as-of date, values that cannot be read), then followed through every consumer: the
profile and the plan, the public API, ``sync`` and its report (exit 0, ``skipped-deceased``),
file sinks (nothing written), the server sink (our draft withdrawn, idempotently, a clinician's
plan never touched, a dry run shown), the population counts, the CDS Hooks service (no card)
and the SMART page (no Approve). Synthetic data only.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import fhirpathpy
import httpx
import pytest
import respx
from builders import AS_OF, SNOMED, condition, observation, patient, quantity, record
from click.testing import CliRunner
from fhirpathpy.models import models
from plans import food_plan
from starlette.applications import Starlette
from starlette.testclient import TestClient
from test_server_sink import searchset, sent_entries, serve, stored_plan, transaction_response

import fhir_tailor
from fhir_tailor.cli import main
from fhir_tailor.client import FhirClient
from fhir_tailor.conformance import CAREPLAN_CATEGORY
from fhir_tailor.definitions import Definitions, bundled_path
from fhir_tailor.fhirpath import NOT_DECEASED
from fhir_tailor.life_state import is_deceased
from fhir_tailor.pipeline import assess, profile_and_plan, run
from fhir_tailor.population import PopulationSummary
from fhir_tailor.population_report import report_data
from fhir_tailor.record import PatientRecord, ReadIssue
from fhir_tailor.report import RunReport
from fhir_tailor.resources import (
    CONTENT_DIGEST_URL,
    PLAN_FINGERPRINT_URL,
    content_digest,
    extension_value,
    to_fhir,
)
from fhir_tailor.sinks.files import FolderSink, StdoutSink
from fhir_tailor.sinks.server import ServerSink, foreign_change
from fhir_tailor.sources import file_source
from fhir_tailor.spark import PartFiles
from fhir_tailor.web.cds_auth import ClientAuth
from fhir_tailor.web.cds_hooks import cds_routes
from fhir_tailor.web.page import PageView, plan_page
from fhir_tailor.withdrawal import REASON, Withdrawal

FIXTURES = bundled_path("fixtures") / "bundles"
FT29 = FIXTURES / "29-deceased-diabetes-hypertension-ckd.json"
BASE = "http://fhir.test/fhir"
RECORDED = datetime(2026, 11, 15, 8, 0, tzinfo=UTC)
AS_OF_ARGS = ["--as-of", AS_OF.isoformat()]


def reading(**deceased: Any) -> tuple[bool, list[str]]:
    """``is_deceased`` of a patient with these ``deceased*`` fields, and the problems reported."""
    problems: list[str] = []
    return is_deceased(patient(**deceased), AS_OF, problems.append), problems


def diabetic(**deceased: Any) -> PatientRecord:
    """A record with type 2 diabetes and a high HbA1c: alive, it gets a plan."""
    return record(
        condition("c1", SNOMED, "44054006"),
        observation("o1", "4548-4", **quantity(9.6, "%")),
        **deceased,
    )


def ft29(alive: bool = False) -> PatientRecord:
    (found,) = file_source(FT29).records(lambda issue: None)
    if not alive:
        return found
    living = {k: v for k, v in found.patient.items() if not k.startswith("deceased")}
    return PatientRecord(living, found.resources)


# -- reading Patient.deceased[x] ---------------------------------------------------------------


def test_no_deceased_element_reads_alive_without_a_problem() -> None:
    assert reading() == (False, [])


def test_deceased_boolean_true_is_deceased() -> None:
    assert reading(deceasedBoolean=True) == (True, [])


def test_deceased_boolean_false_is_alive() -> None:
    assert reading(deceasedBoolean=False) == (False, [])


@pytest.mark.parametrize(
    "when",
    [
        "2026-11-14",
        "2026-11-15",
        "2026-11-15T23:59:00+14:00",
        "2019-03",
        "2001",
        "1980-07-01T09:30Z",
    ],
)
def test_a_death_on_or_before_the_as_of_date_is_deceased_with_no_problem(when: str) -> None:
    assert reading(deceasedDateTime=when) == (True, [])


def test_a_death_after_the_as_of_date_is_deceased_and_reported() -> None:
    deceased, problems = reading(deceasedDateTime="2026-11-16")
    assert deceased
    assert problems == ["field deceasedDateTime: after the as-of date; read as deceased"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("deceasedBoolean", "Y"),
        ("deceasedBoolean", 1),
        ("deceasedBoolean", {"value": True}),
        ("deceasedDateTime", "unknown"),
        ("deceasedDateTime", "2026-02-30"),
        ("deceasedDateTime", True),
        ("deceasedDateTime", 20200101),
    ],
)
def test_an_unreadable_value_is_read_as_deceased_and_named_without_its_value(
    field: str, value: object
) -> None:
    deceased, problems = reading(**{field: value})
    assert deceased
    assert len(problems) == 1 and problems[0].startswith(f"field {field}: not a ")
    assert problems[0].endswith("read as deceased")
    assert str(value) not in problems[0]


@pytest.mark.parametrize(
    ("spelled", "expected"), [("true", True), (" TRUE ", True), ("false", False)]
)
def test_a_boolean_written_as_a_string_is_read_as_that_boolean(
    spelled: str, expected: bool
) -> None:
    deceased, problems = reading(deceasedBoolean=spelled)
    assert deceased is expected
    assert problems == [
        f"field deceasedBoolean: a string, not a boolean; read as {str(expected).lower()}"
    ]


@pytest.mark.parametrize("field", ["deceasedBoolean", "deceasedDateTime"])
@pytest.mark.parametrize("empty", [None, ""])
def test_null_or_empty_is_no_statement_and_reported(field: str, empty: object) -> None:
    deceased, problems = reading(**{field: empty})
    assert not deceased
    assert problems == [f"field {field}: no value; read as no statement (alive)"]


def test_false_beside_a_date_of_death_is_deceased_and_reported() -> None:
    deceased, problems = reading(deceasedBoolean=False, deceasedDateTime="2024-01-02")
    assert deceased
    assert problems == [
        "field deceasedBoolean, deceasedDateTime: one says alive, another deceased; "
        "read as deceased"
    ]


def test_true_beside_a_date_of_death_is_deceased_without_a_problem() -> None:
    assert reading(deceasedBoolean=True, deceasedDateTime="2024-01-02") == (True, [])


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [("deceased", True, True), ("deceased", False, False), ("deceasedDate", "2020-04-01", True)],
)
def test_a_misnamed_element_is_read_by_its_value_and_reported(
    field: str, value: object, expected: bool
) -> None:
    deceased, problems = reading(**{field: value})
    assert deceased is expected
    assert len(problems) == 1
    assert problems[0].startswith(f"field {field}: not a FHIR element (deceasedBoolean or ")


def test_the_profile_reports_the_problem_on_the_patient(definitions: Definitions) -> None:
    issues: list[ReadIssue] = []
    profile = fhir_tailor.build_profile(
        diabetic(deceasedBoolean="unknown"), as_of=AS_OF, on_issue=issues.append
    )
    assert profile.facts.deceased
    assert [(i.location, i.reason) for i in issues] == [
        ("Patient/p1", "field deceasedBoolean: not a boolean; read as deceased")
    ]


# -- profile and plan --------------------------------------------------------------------------


def test_the_deceased_fixture_gets_no_plan_and_would_get_one_alive(
    definitions: Definitions,
) -> None:
    profile, plan = profile_and_plan(ft29(), definitions, AS_OF)
    assert profile.facts.deceased and plan is None
    living, living_plan = profile_and_plan(ft29(alive=True), definitions, AS_OF)
    assert not living.facts.deceased and living_plan is not None
    assert {"Condition/ft-29-c1", "Condition/ft-29-c2", "Condition/ft-29-c3"} <= set(
        living_plan.addresses
    )
    # The profile says what the record holds, alive or not: only the plan differs.
    assert list(profile.findings()) == list(living.findings())
    assert profile.data_gaps == living.data_gaps != ()


def test_the_public_api_gives_no_plan_for_a_deceased_profile() -> None:
    alive = fhir_tailor.build_profile(diabetic(), as_of=AS_OF)
    assert fhir_tailor.plan_for(alive) is not None
    dead = fhir_tailor.build_profile(diabetic(deceasedBoolean=True), as_of=AS_OF)
    assert dead.facts.deceased and fhir_tailor.plan_for(dead) is None


# -- sync, its report and file sinks ----------------------------------------------------------


def sync(tmp_path: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    report = tmp_path / "report.json"
    result = CliRunner().invoke(
        main, [*AS_OF_ARGS, "sync", "--input", str(FIXTURES), "--report", str(report), *args]
    )
    return result.exit_code, json.loads(report.read_text()), result.stderr


def test_sync_into_a_folder_skips_the_deceased_and_exits_0(tmp_path: Path) -> None:
    code, report, stderr = sync(tmp_path, "--out", str(tmp_path / "plans"))
    assert code == 0, stderr
    outcomes = {p["patient"]: p["outcome"] for p in report["patients"]}
    assert outcomes["Patient/ft-29"] == "skipped-deceased"
    assert report["counts"]["skipped-deceased"] == 1
    assert "1 skipped-deceased" in stderr
    written = {path.stem for path in (tmp_path / "plans").glob("*.json")}
    assert "ft-29" not in written
    assert "ft-01" in written and outcomes["Patient/ft-01"] == "written"


def test_ndjson_output_holds_nothing_of_the_deceased(tmp_path: Path) -> None:
    code, _, stderr = sync(tmp_path, "--out", str(tmp_path / "plans"), "--out-format", "ndjson")
    assert code == 0, stderr
    for path in (tmp_path / "plans").glob("*.ndjson"):
        assert "ft-29" not in path.read_text()
    assert "Patient/ft-01" in (tmp_path / "plans" / "CarePlan.ndjson").read_text()


def test_stdout_summary_says_deceased_and_ndjson_prints_nothing(
    definitions: Definitions,
) -> None:
    withdrawal = Withdrawal("Patient/ft-29", RECORDED)
    shown: list[str] = []
    assert StdoutSink(shown.append, "summary").withdraw(withdrawal).outcome == "skipped-deceased"
    assert shown == ["Patient/ft-29  recorded as deceased: no plan\n"]
    printed: list[str] = []
    assert StdoutSink(printed.append, "ndjson").withdraw(withdrawal).outcome == "skipped-deceased"
    assert printed == []


def test_spark_partition_files_write_nothing_for_the_deceased(tmp_path: Path) -> None:
    files = PartFiles(tmp_path, 3)
    outcome = files.withdraw(Withdrawal("Patient/ft-29", RECORDED))
    files.commit()
    assert outcome.outcome == "skipped-deceased"
    assert list(tmp_path.iterdir()) == []


def test_the_run_report_counts_the_deceased_apart_from_no_plan(
    definitions: Definitions, tmp_path: Path
) -> None:
    report = RunReport()
    sink = FolderSink(tmp_path)
    run(
        file_source(FIXTURES),
        sink,
        definitions,
        as_of=AS_OF,
        recorded=RECORDED,
        report=report,
    )
    sink.close()
    assert report.counts["skipped-deceased"] == 1
    assert "skipped-deceased" in report.to_dict()["counts"]
    assert not report.failed


def test_plan_and_profile_commands_say_deceased() -> None:
    plan = CliRunner().invoke(main, [*AS_OF_ARGS, "plan", "--patient", "ft-29"])
    assert plan.exit_code == 0 and plan.stdout == "Patient/ft-29: recorded as deceased; no plan\n"
    shown = CliRunner().invoke(main, [*AS_OF_ARGS, "profile", "--patient", "ft-29"])
    assert "recorded as deceased (no plan)" in shown.stdout.splitlines()[0]
    living = CliRunner().invoke(main, [*AS_OF_ARGS, "profile", "--patient", "ft-28"])
    assert "deceased" not in living.stdout


# -- the server sink: withdrawing our draft ---------------------------------------------------


@pytest.fixture
def client() -> FhirClient:
    return FhirClient(BASE, sleep=lambda _: None)


def withdrawal_of(patient_ref: str = "Patient/p1") -> Withdrawal:
    return Withdrawal(patient_ref, RECORDED)


def stored_draft() -> dict[str, dict[str, Any]]:
    """What an earlier sync wrote for the patient: CarePlan cp1, Goals g0 g1, referral sr0."""
    return stored_plan(to_fhir(food_plan(), RECORDED))


@respx.mock
def test_the_patients_careplans_are_searched_as_us_core_requires(client: FhirClient) -> None:
    search = respx.get(f"{BASE}/CarePlan").mock(return_value=httpx.Response(200, json=searchset()))
    post = respx.post(BASE)
    outcome = ServerSink(client).withdraw(withdrawal_of())
    assert (outcome.outcome, outcome.detail, outcome.careplan) == ("skipped-deceased", None, None)
    params = search.calls[0].request.url.params
    assert params["patient"] == "p1"
    assert params["category"] == f"{CAREPLAN_CATEGORY}|assess-plan"
    assert not post.called


def test_ours_are_known_by_an_identifier_that_begins_with_the_patient() -> None:
    careplan = to_fhir(food_plan(), RECORDED).careplan.resource
    [identifier] = careplan["identifier"]
    assert withdrawal_of().identifier(careplan) == identifier["value"]
    assert withdrawal_of("Patient/p10").identifier(careplan) is None
    assert withdrawal_of("Patient/p").identifier(careplan) is None
    other_system = {**careplan, "identifier": [{**identifier, "system": "urn:other"}]}
    assert withdrawal_of().identifier(other_system) is None
    assert withdrawal_of().identifier({**careplan, "identifier": "p1/x"}) is None


@respx.mock
def test_our_draft_is_withdrawn_in_one_transaction(client: FhirClient) -> None:
    server = stored_draft()
    serve(server)
    post = respx.post(BASE).mock(return_value=transaction_response())
    outcome = ServerSink(client).withdraw(withdrawal_of())
    assert outcome.outcome == "skipped-deceased"
    assert (outcome.detail, outcome.careplan) == ("withdrew draft CarePlan/cp1", "CarePlan/cp1")
    entries = sent_entries(post)
    written = {e["request"]["url"]: e for e in entries if e["request"]["method"] == "PUT"}
    assert set(written) == {"CarePlan/cp1", "Goal/g0", "Goal/g1", "ServiceRequest/sr0"}
    for url, entry in written.items():
        assert entry["request"]["ifMatch"] == f'W/"{server[url]["meta"]["versionId"]}"'
        resource = entry["resource"]
        assert foreign_change(resource) is None, "still ours: a later run recognises it"
        assert extension_value(resource, CONTENT_DIGEST_URL) == content_digest(resource)
    careplan = written["CarePlan/cp1"]["resource"]
    assert careplan["status"] == "revoked"
    assert extension_value(careplan, PLAN_FINGERPRINT_URL) is None
    assert careplan["note"][-1]["text"] == REASON
    details = [a["detail"] for a in careplan["activity"] if "detail" in a]
    assert details and all(d["status"] == "cancelled" for d in details)
    assert [a["reference"] for a in careplan["activity"] if "reference" in a] == [
        {"reference": "ServiceRequest/sr0"}
    ]
    assert {written[f"Goal/g{n}"]["resource"]["lifecycleStatus"] for n in (0, 1)} == {"cancelled"}
    assert written["ServiceRequest/sr0"]["resource"]["status"] == "revoked"
    provenance = entries[-1]
    assert provenance["request"] == {"method": "POST", "url": "Provenance"}
    assert {t["reference"] for t in provenance["resource"]["target"]} == set(written)
    assert provenance["resource"]["reason"] == [{"text": REASON}]
    assert provenance["resource"]["entity"] == [
        {"role": "source", "what": {"reference": "Patient/p1"}}
    ]
    assert provenance["resource"]["recorded"] == RECORDED.isoformat()


def withdrawn_server(post: respx.Route) -> dict[str, dict[str, Any]]:
    """The server after the withdrawal ``post`` carried: each PUT stored as a new version."""
    server = stored_draft()
    for entry in sent_entries(post):
        url = entry["request"]["url"]
        if entry["request"]["method"] == "PUT":
            version = str(int(server[url]["meta"]["versionId"]) + 1)
            server[url] = {
                **entry["resource"],
                "meta": {**entry["resource"]["meta"], "versionId": version},
            }
    return server


@respx.mock
def test_a_second_withdrawal_writes_nothing(client: FhirClient) -> None:
    serve(stored_draft())
    first = respx.post(BASE).mock(return_value=transaction_response())
    ServerSink(client).withdraw(withdrawal_of())
    server = withdrawn_server(first)
    respx.reset()
    serve(server)
    again = respx.post(BASE)
    outcome = ServerSink(client).withdraw(withdrawal_of())
    assert outcome.outcome == "skipped-deceased"
    assert outcome.detail == "CarePlan/cp1 withdrawn earlier" and not again.called


@respx.mock
def test_a_goal_dropped_earlier_is_not_written_again(client: FhirClient) -> None:
    server = stored_draft()
    server["Goal/g1"] = {**server["Goal/g1"], "lifecycleStatus": "cancelled"}
    server["Goal/g1"] = {
        **server["Goal/g1"],
        "extension": [
            {
                "url": CONTENT_DIGEST_URL,
                "valueString": content_digest(server["Goal/g1"]),
            }
        ],
    }
    serve(server)
    post = respx.post(BASE).mock(return_value=transaction_response())
    ServerSink(client).withdraw(withdrawal_of())
    urls = [e["request"]["url"] for e in sent_entries(post)]
    assert "Goal/g0" in urls and "Goal/g1" not in urls


@respx.mock
@pytest.mark.parametrize("status", ["active", "on-hold", "completed"])
def test_a_clinicians_careplan_is_never_touched(client: FhirClient, status: str) -> None:
    server = stored_draft()
    server["CarePlan/cp1"]["status"] = status
    serve(server)
    post = respx.post(BASE)
    outcome = ServerSink(client).withdraw(withdrawal_of())
    assert outcome.outcome == "skipped-deceased"
    assert outcome.detail is not None and outcome.detail.startswith("CarePlan/cp1 left untouched")
    assert repr(status) in outcome.detail
    assert not post.called


@respx.mock
def test_an_edited_goal_leaves_the_whole_plan_untouched(client: FhirClient) -> None:
    server = stored_draft()
    server["Goal/g0"]["description"] = {"text": "Agreed with the family"}
    serve(server)
    post = respx.post(BASE)
    outcome = ServerSink(client).withdraw(withdrawal_of())
    assert outcome.detail is not None and "Goal/g0" in outcome.detail
    assert "content digest" in outcome.detail and not post.called


@respx.mock
def test_a_careplan_without_our_tag_is_never_touched(client: FhirClient) -> None:
    server = stored_draft()
    server["CarePlan/cp1"]["meta"] = {"versionId": "3"}
    serve(server)
    post = respx.post(BASE)
    outcome = ServerSink(client).withdraw(withdrawal_of())
    assert "no fhir-tailor tag" in (outcome.detail or "") and not post.called


@respx.mock
def test_several_careplans_with_the_identifier_fail_the_patient(client: FhirClient) -> None:
    careplan = stored_draft()["CarePlan/cp1"]
    twin = {**careplan, "id": "cp2"}
    respx.get(f"{BASE}/CarePlan").mock(
        return_value=httpx.Response(200, json=searchset(careplan, twin))
    )
    post = respx.post(BASE)
    outcome = ServerSink(client).withdraw(withdrawal_of())
    assert outcome.outcome == "failed" and "CarePlan/cp2" in (outcome.detail or "")
    assert not post.called


@respx.mock
def test_a_dry_run_shows_the_withdrawal_and_writes_nothing(client: FhirClient) -> None:
    serve(stored_draft())
    post = respx.post(BASE)
    shown: list[str] = []
    outcome = ServerSink(client, dry_run=True, echo=shown.append).withdraw(withdrawal_of())
    assert (outcome.outcome, outcome.detail) == (
        "skipped-deceased",
        "would withdraw draft CarePlan/cp1",
    )
    assert not post.called
    text = "\n".join(shown)
    assert "# Patient/p1: recorded as deceased; would withdraw our draft plans" in text
    assert '-  "status": "draft"' in text and '+  "status": "revoked"' in text
    assert '+  "lifecycleStatus": "cancelled"' in text


@respx.mock
def test_a_death_recorded_in_error_gets_the_draft_back(client: FhirClient) -> None:
    """Once the record no longer says deceased, the withdrawn draft is ours to rewrite."""
    serve(stored_draft())
    first = respx.post(BASE).mock(return_value=transaction_response())
    ServerSink(client).withdraw(withdrawal_of())
    server = withdrawn_server(first)
    respx.reset()
    serve(server)
    post = respx.post(BASE).mock(return_value=transaction_response())
    plan = food_plan()
    outcome = ServerSink(client).write(plan, to_fhir(plan, RECORDED))
    assert outcome.outcome == "updated"
    entries = {
        e["request"]["url"]: e["resource"] for e in sent_entries(post) if "id" in e["resource"]
    }
    assert entries["CarePlan/cp1"]["status"] == "draft"
    assert entries["Goal/g0"]["lifecycleStatus"] == "proposed"
    assert entries["ServiceRequest/sr0"]["status"] == "draft"


@respx.mock
def test_sync_with_a_server_withdraws_and_lists_it(
    definitions: Definitions, tmp_path: Path
) -> None:
    """The command line path: a deceased patient read from the server, our draft withdrawn,
    exit 0, the withdrawal named on stderr."""
    rec = diabetic(deceasedDateTime="2026-10-01")
    alive = diabetic()
    _, plan = profile_and_plan(alive, definitions, AS_OF)
    assert plan is not None
    server = stored_plan(to_fhir(plan, RECORDED))
    capability = {
        "resourceType": "CapabilityStatement",
        "fhirVersion": "4.0.1",
        "rest": [{"mode": "server", "resource": []}],
    }
    respx.get(f"{BASE}/metadata").mock(return_value=httpx.Response(200, json=capability))
    respx.get(f"{BASE}/Patient/p1").mock(return_value=httpx.Response(200, json=rec.patient))
    for rtype in ("Condition", "Observation"):
        found = [r for r in rec.resources if r["resourceType"] == rtype]
        respx.get(f"{BASE}/{rtype}").mock(return_value=httpx.Response(200, json=searchset(*found)))
    for rtype in ("QuestionnaireResponse", "Encounter", "MedicationRequest"):
        respx.get(f"{BASE}/{rtype}").mock(return_value=httpx.Response(200, json=searchset()))
    serve(server)
    post = respx.post(BASE).mock(return_value=transaction_response())
    report = tmp_path / "report.json"
    result = CliRunner().invoke(
        main,
        [*AS_OF_ARGS, "sync", "--server", BASE, "--patient", "p1", "--report", str(report)],
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(report.read_text())["counts"] == {"skipped-deceased": 1}
    assert "skipped-deceased: Patient/p1: withdrew draft CarePlan/cp1" in result.stderr
    assert sent_entries(post)[0]["resource"]["status"] == "revoked"


def stored_under(catalog_version: str, careplan_id: str) -> dict[str, Any]:
    """Our draft CarePlan for p1 as a run under ``catalog_version`` stored it (no parts)."""
    plan = food_plan(with_referral=False).model_copy(
        update={"catalog_version": catalog_version, "goals": ()}
    )
    resource = to_fhir(plan, RECORDED).careplan.resource
    return {**resource, "id": careplan_id, "meta": {**resource["meta"], "versionId": "2"}}


@respx.mock
def test_drafts_of_every_catalog_version_are_withdrawn_in_one_transaction(
    client: FhirClient,
) -> None:
    older, newer = stored_under("2026.11.0", "old"), stored_under("2026.12.0", "new")
    theirs = {**newer, "id": "theirs", "identifier": [{"system": "urn:ehr", "value": "7"}]}
    respx.get(f"{BASE}/CarePlan").mock(
        return_value=httpx.Response(200, json=searchset(newer, theirs, older))
    )
    post = respx.post(BASE).mock(return_value=transaction_response())
    outcome = ServerSink(client).withdraw(withdrawal_of())
    assert outcome.detail == "withdrew draft CarePlan/old; withdrew draft CarePlan/new"
    assert post.call_count == 1
    entries = sent_entries(post)
    assert [e["request"]["url"] for e in entries] == ["CarePlan/old", "CarePlan/new", "Provenance"]
    assert all(e["resource"]["status"] == "revoked" for e in entries[:2])
    assert entries[-1]["resource"]["target"] == [
        {"reference": "CarePlan/old"},
        {"reference": "CarePlan/new"},
    ]


@respx.mock
def test_a_clinicians_plan_beside_our_draft_stays_and_the_draft_goes(
    client: FhirClient,
) -> None:
    older, newer = stored_under("2026.11.0", "old"), stored_under("2026.12.0", "new")
    older["status"] = "active"
    respx.get(f"{BASE}/CarePlan").mock(
        return_value=httpx.Response(200, json=searchset(older, newer))
    )
    post = respx.post(BASE).mock(return_value=transaction_response())
    outcome = ServerSink(client).withdraw(withdrawal_of())
    assert outcome.detail == (
        "CarePlan/old left untouched: status is 'active', no longer 'draft'; "
        "withdrew draft CarePlan/new"
    )
    assert [e["request"]["url"] for e in sent_entries(post)] == ["CarePlan/new", "Provenance"]


# -- population counts -------------------------------------------------------------------------


def test_the_population_counts_the_deceased_apart(definitions: Definitions) -> None:
    summary = PopulationSummary.over(definitions.segments)
    living = [diabetic(), record(condition("c2", SNOMED, "44054006", pid="p2"), pid="p2")]
    dead = record(condition("c3", SNOMED, "44054006", pid="p3"), pid="p3", deceasedBoolean=True)
    for rec in (*living, dead):
        summary.add(*assess(rec, definitions, AS_OF))
    data = summary.as_dict()
    assert (data["patients"], data["deceased"], data["with_plan"]) == (3, 1, 2)
    assert sum(data["needs"]["medical"].values()) == 2
    assert data["share_with_finding"]["medical"] == 1.0, "shares are of the living"
    assert "3 patients (1 deceased, no plan), 2 with a plan" in summary.table()
    report = report_data(summary, definitions, AS_OF)
    assert (report["patients"], report["deceased"], report["living"]) == (3, 1, 2)
    assert report["plans"]["without_plan"] == 0


def test_segments_command_counts_the_deceased_fixture() -> None:
    result = CliRunner().invoke(main, [*AS_OF_ARGS, "segments", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["deceased"] == 1
    assert data["patients"] == len(list(FIXTURES.glob("*.json")))


# -- CDS Hooks and the SMART page --------------------------------------------------------------


def prefetch(rec: PatientRecord) -> dict[str, Any]:
    def bundle(rtype: str) -> dict[str, Any]:
        return searchset(*[r for r in rec.resources if r["resourceType"] == rtype])

    return {
        "patient": rec.patient,
        "conditions": bundle("Condition"),
        "observations": bundle("Observation"),
    }


@pytest.mark.parametrize(("alive", "cards"), [(True, 1), (False, 0)])
def test_cds_hooks_gives_no_card_for_the_deceased(
    definitions: Definitions, alive: bool, cards: int
) -> None:
    app = Starlette(
        routes=cds_routes(
            definitions,
            public_url="http://app",
            auth=ClientAuth.insecure_no_client_auth(),
            today=lambda: AS_OF,
        )
    )
    rec = ft29(alive=alive)
    call = {
        "hook": "patient-view",
        "hookInstance": "5e8bb1c1-7a5d-4c46-8a43-0f36f45c2b11",
        "context": {"patientId": "ft-29"},
        "prefetch": prefetch(rec),
    }
    response = TestClient(app).post("/cds-services/fhir-tailor-care-plan", json=call)
    assert response.status_code == 200
    assert len(response.json()["cards"]) == cards


def page_of(definitions: Definitions, rec: PatientRecord) -> str:
    profile, segments, plan = assess(rec, definitions, AS_OF)
    labels = {name: d.label for name, d in definitions.rules.dimensions.items()}
    view = PageView(rec.patient, profile, labels, segments, plan, BASE, "csrf-token")
    return plan_page(view)


def test_the_smart_page_says_deceased_and_offers_no_approve(definitions: Definitions) -> None:
    dead = page_of(definitions, ft29())
    assert "Recorded as deceased" in dead and "<dd>deceased</dd>" in dead
    assert "Approve" not in dead and "<form" not in dead
    alive = page_of(definitions, ft29(alive=True))
    assert "Recorded as deceased" not in alive and "<dd>deceased</dd>" not in alive
    assert "Approve plan" in alive and '<form method="post" action="/approve">' in alive


# -- published PlanDefinitions ------------------------------------------------------------------


@pytest.mark.parametrize(
    "deceased",
    [
        {},
        {"deceasedBoolean": False},
        {"deceasedBoolean": True},
        {"deceasedDateTime": "2026-09-20"},
        {"deceasedDateTime": "2030-01-01"},
    ],
    ids=lambda d: next(iter(d.items()), ("none", ""))[0] + str(next(iter(d.values()), "")),
)
def test_published_life_state_condition_reads_deceased_as_the_profile_does(
    deceased: dict[str, Any],
) -> None:
    """Every module's PlanDefinition also requires NOT_DECEASED: an engine running $apply must
    not plan for a patient who died, as sync does not."""
    patient = {"resourceType": "Patient", "id": "p1", "birthDate": "1950-01-01", **deceased}
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": patient}]}
    (alive,) = fhirpathpy.evaluate(bundle, NOT_DECEASED, {"asOf": "2026-11-15"}, models["r4"])
    assert alive is not is_deceased(patient, date(2026, 11, 15))
