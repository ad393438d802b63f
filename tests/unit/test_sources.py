"""File sources: Bundles and NDJSON give the same records; bad input is reported, never fatal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from builders import SNOMED, condition, observation, patient, quantity

from fhir_tailor import record
from fhir_tailor.errors import NoPatientsError
from fhir_tailor.record import Located, PatientRecord, ReadIssue, group_by_patient, relevant_only
from fhir_tailor.sources import BundleSource, NdjsonSource, file_source


def population(n: int) -> list[dict[str, Any]]:
    resources: list[dict[str, Any]] = []
    for i in range(n):
        pid = f"p{i:03d}"
        resources += [
            patient(pid),
            condition(f"{pid}-c1", SNOMED, "44054006", pid=pid),
            observation(f"{pid}-o1", "4548-4", pid=pid, **quantity(7 + i % 4, "%")),
        ]
    return resources


def write_ndjson(
    folder: Path, resources: list[dict[str, Any]], extra_lines: dict[str, list[str]] | None = None
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    by_type: dict[str, list[str]] = {}
    for resource in reversed(resources):  # not grouped, not in patient order
        by_type.setdefault(resource["resourceType"], []).append(json.dumps(resource))
    for rtype, lines in (extra_lines or {}).items():
        by_type.setdefault(rtype, []).extend(lines)
    for rtype, lines in by_type.items():
        (folder / f"{rtype}.ndjson").write_text("\n".join(lines) + "\n")
    return folder


def collect(source: Any) -> tuple[list[PatientRecord], list[ReadIssue]]:
    issues: list[ReadIssue] = []
    return list(source.records(issues.append)), issues


def normalized(records: list[PatientRecord]) -> list[tuple[str, list[str]]]:
    return sorted(
        (r.patient_id, sorted(f"{x['resourceType']}/{x['id']}" for x in r.resources))
        for r in records
    )


def test_ndjson_and_bundles_give_the_same_records(tmp_path: Path) -> None:
    resources = population(5)
    ndjson = write_ndjson(tmp_path / "ndjson", resources)
    bundle = tmp_path / "bundle.json"
    bundle.write_text(
        json.dumps(
            {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": r} for r in resources],
            }
        )
    )
    from_ndjson, issues_a = collect(NdjsonSource(ndjson))
    from_bundle, issues_b = collect(BundleSource(bundle))
    assert issues_a == issues_b == []
    assert normalized(from_ndjson) == normalized(from_bundle)
    assert len(from_ndjson) == 5 and all(len(r.resources) == 2 for r in from_ndjson)


def write_bundle(path: Path, resources: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = [{"resource": r} for r in resources]
    path.write_text(json.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries}))
    return path


def test_an_input_folder_is_read_with_its_subfolders_and_both_formats(tmp_path: Path) -> None:
    """``--input fixtures`` must not read 0 patients because they sit in subfolders (#9)."""
    resources = population(4)
    write_bundle(tmp_path / "bundles" / "a.json", resources[:6])
    write_ndjson(tmp_path / "bulk" / "2026" / "export", resources[6:])
    (tmp_path / "README.md").write_text("not input")
    write_bundle(tmp_path / ".hidden" / "x.json", population(5)[-3:])
    records, issues = collect(file_source(tmp_path))
    assert issues == []
    assert normalized(records) == normalized(
        collect(BundleSource(write_bundle(tmp_path / "all.json", resources)))[0]
    )
    assert [r.patient_id for r in records] == ["p000", "p001", "p002", "p003"]


def test_files_are_named_by_their_path_under_the_input(tmp_path: Path) -> None:
    write_bundle(tmp_path / "good" / "a.json", population(1))
    broken = '{"resourceType": "Observ'
    write_ndjson(tmp_path / "bulk", population(2)[3:], {"Observation": [broken]})
    _, issues = collect(file_source(tmp_path))
    assert [issue.location for issue in issues] == ["bulk/Observation.ndjson:2"]
    assert not issues[0].unread_input
    records, _ = collect(file_source(tmp_path / "good" / "a.json"))
    assert [r.patient_id for r in records] == ["p000"]


def test_an_ndjson_file_given_by_itself_is_read_as_ndjson(tmp_path: Path) -> None:
    folder = write_ndjson(tmp_path, population(2))
    records, issues = collect(file_source(folder / "Patient.ndjson"))
    assert issues == [] and [r.patient_id for r in records] == ["p000", "p001"]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("just some notes", "invalid JSON: Expecting value at line 1"),
        ('{"name": "a config file"}', "field resourceType: missing (this JSON is not FHIR)"),
        ("[1, 2]", "field resourceType: missing (the file holds a JSON array, not a FHIR Bundle)"),
        ('{"resourceType": "Patient", "id": "p1"}', "field resourceType: 'Patient', not 'Bundle'"),
        ('{"resourceType": "Bundle", "entry": {}}', "field entry: not a list"),
    ],
)
def test_a_file_that_is_not_fhir_is_an_unread_input_named_with_its_fault(
    tmp_path: Path, content: str, reason: str
) -> None:
    write_bundle(tmp_path / "good.json", population(1))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "wrong.json").write_text(content)
    records, issues = collect(file_source(tmp_path))
    assert [r.patient_id for r in records] == ["p000"]
    [issue] = issues
    assert issue.location == "sub/wrong.json" and issue.unread_input
    assert issue.reason.startswith(reason)


def test_an_ndjson_file_with_no_fhir_line_is_an_unread_input(tmp_path: Path) -> None:
    folder = write_ndjson(tmp_path, population(1))
    (folder / "log.ndjson").write_text('{"level": "info"}\nnot json\n\n')
    records, issues = collect(file_source(folder))
    assert len(records) == 1
    [whole] = [issue for issue in issues if issue.unread_input]
    assert whole.location == "log.ndjson"
    assert whole.reason == (
        "not FHIR NDJSON: none of its 2 lines is a JSON object with a resourceType"
    )
    lines = sorted(issue.reason.split(":")[0] for issue in issues if not issue.unread_input)
    assert lines == ["field resourceType", "invalid JSON"]


def test_an_empty_input_folder_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(
        NoPatientsError, match=r"no \.json or \.ndjson files in it or its subfolders"
    ):
        collect(file_source(tmp_path))


def test_an_input_without_patients_is_an_error_naming_what_was_wrong(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text("{oops")
    (tmp_path / "b.json").write_text(json.dumps({"resourceType": "Bundle", "type": "collection"}))
    issues: list[ReadIssue] = []
    with pytest.raises(NoPatientsError) as raised:
        list(file_source(tmp_path).records(issues.append))
    assert str(raised.value) == (
        f"no patients in {tmp_path}: 2 files read, 1 not FHIR input "
        "(first: a.json: ?/?: invalid JSON: Expecting property name enclosed in double quotes "
        "at line 1)"
    )
    assert [issue.location for issue in issues] == ["a.json"]
    write_ndjson(tmp_path / "sub", [observation("o1", "4548-4")])
    with pytest.raises(NoPatientsError, match="3 files read, 1 not FHIR input"):
        collect(file_source(tmp_path))
    (tmp_path / "a.json").unlink()
    with pytest.raises(NoPatientsError, match="2 files read, no Patient resource in them"):
        collect(file_source(tmp_path))


def test_the_json_files_of_an_ndjson_folder_are_not_input(tmp_path: Path) -> None:
    """A Bulk export's manifest or a generator's truth.json sits beside the NDJSON it describes."""
    folder = write_ndjson(tmp_path / "export", population(2))
    (folder / "manifest.json").write_text(json.dumps({"transactionTime": "2026-11-15"}))
    write_bundle(tmp_path / "more" / "b.json", population(3)[-3:])
    records, issues = collect(file_source(tmp_path))
    assert issues == [] and [r.patient_id for r in records] == ["p000", "p001", "p002"]


def test_patients_asked_for_are_read_and_those_absent_reported_not_found(
    tmp_path: Path,
) -> None:
    folder = write_ndjson(tmp_path, population(3))
    records, issues = collect(file_source(folder, ("p002", "nobody", "p000", "nobody")))
    assert [r.patient_id for r in records] == ["p000", "p002"]
    [missing] = issues
    assert missing.not_found and missing.unread_patient == "nobody"
    assert missing.reason == "Patient/nobody not found in the input"


def test_bad_ndjson_lines_are_reported_with_file_and_line(tmp_path: Path) -> None:
    folder = write_ndjson(
        tmp_path,
        population(2),
        {
            "Observation": [
                '{"resourceType": "Observation", "id": "broken"',
                "",
                "[1, 2]",
                '{"id": "x"}',
            ]
        },
    )
    records, issues = collect(NdjsonSource(folder))
    assert len(records) == 2
    reasons = {issue.reason.split(":")[0] for issue in issues}
    assert {"invalid JSON", "not a JSON object (list)", "field resourceType"} <= reasons
    assert all(issue.location.startswith("Observation.ndjson:") for issue in issues)


def test_unusable_resources_are_reported_and_skipped(tmp_path: Path) -> None:
    no_subject = observation("o-nosubj", "4548-4")
    del no_subject["subject"]
    entries = [
        patient("p1"),
        no_subject,
        observation("o-dangling", "4548-4", pid="ghost"),
        {"resourceType": "Observashun", "id": "typo"},
        {"resourceType": "Device", "id": "d1", "patient": {"reference": "Patient/p1"}},
        observation("o-ok", "4548-4"),
        observation("o-ok", "4548-4"),
    ]
    path = tmp_path / "b.json"
    path.write_text(
        json.dumps(
            {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": e} for e in entries],
            }
        )
    )
    records, issues = collect(BundleSource(path))
    assert [r.patient_id for r in records] == ["p1"]
    assert [x["id"] for x in records[0].resources] == ["o-ok"]
    by_id = {issue.resource_id: issue for issue in issues}
    assert "field subject" in by_id["o-nosubj"].reason
    assert "Patient/ghost" in by_id["o-dangling"].reason
    assert "unknown type 'Observashun'" in by_id["typo"].reason
    assert "duplicate" in by_id["o-ok"].reason
    assert "e1" not in by_id  # a valid type we do not use is passed over silently
    assert by_id["o-nosubj"].location == "b.json#entry[1]"


def test_urn_uuid_references_are_resolved(tmp_path: Path) -> None:
    pid_url = "urn:uuid:0b8a0f2e-0000-4000-8000-000000000001"
    obs = observation("o1", "4548-4")
    obs["subject"] = {"reference": pid_url}
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": pid_url,
                "resource": {"resourceType": "Patient"},
                "request": {"method": "POST", "url": "Patient"},
            },
            {"fullUrl": "urn:uuid:0b8a0f2e-0000-4000-8000-000000000002", "resource": obs},
        ],
    }
    path = tmp_path / "t.json"
    path.write_text(json.dumps(bundle))
    records, issues = collect(BundleSource(path))
    assert issues == []
    assert records[0].patient_id == "0b8a0f2e-0000-4000-8000-000000000001"
    assert records[0].resources[0]["id"] == "o1"


def test_not_a_bundle_is_reported(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text('{"resourceType": "Patient", "id": "x"}')
    (tmp_path / "b.json").write_text("{not json")
    records, issues = collect(BundleSource(tmp_path))
    assert records == []
    assert [issue.location for issue in issues] == ["a.json", "b.json"]
    assert all(issue.unread_input for issue in issues)


@pytest.mark.parametrize(("buckets", "remembered"), [(2, 1024), (7, 1024), (7, 2)])
def test_bucketed_grouping_equals_in_memory_grouping(
    buckets: int, remembered: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(record, "MAX_REMEMBERED_PATIENTS", remembered)
    resources = population(40)
    items = [Located(r, f"x:{n}") for n, r in enumerate(resources[::2] + resources[1::2])]
    in_memory = list(group_by_patient(items, lambda _: None))
    spilled = list(group_by_patient(items, lambda _: None, buckets=buckets))
    assert normalized(spilled) == normalized(in_memory)
    assert [r.resources for r in sorted(spilled, key=lambda r: r.patient_id)] == [
        r.resources for r in in_memory
    ]


@pytest.mark.parametrize("buckets", [1, 3])
def test_what_a_run_cannot_use_is_left_out_and_reported_as_before(buckets: int) -> None:
    """With :func:`relevant_only`, a rejected resource is still checked, its duplicates and a
    stray one named as before; only the records lack it (spilled, it is not parsed again)."""
    resources = population(6)
    dropped = observation("p001-temp", "8310-5", pid="p001", **quantity(37, "Cel"))
    stray = observation("p999-temp", "8310-5", pid="p999", **quantity(37, "Cel"))
    raw: list[object] = [*resources, dropped, dropped, stray, {"resourceType": "Observation"}]
    items = [Located(r, f"x:{n}", json.dumps(r).encode()) for n, r in enumerate(raw)]

    def grouped() -> tuple[list[PatientRecord], list[ReadIssue]]:
        issues: list[ReadIssue] = []
        return list(group_by_patient(items, issues.append, buckets=buckets)), issues

    everything, issues = grouped()
    with relevant_only(lambda r: not r["id"].endswith("-temp") and r["id"] != "p002"):
        relevant, relevant_issues = grouped()
    assert relevant_issues == issues
    assert [i.reason for i in issues if i.resource_id in ("p001-temp", "p999-temp")] == [
        "field subject: references Patient/p999, which is not in the input",
        "duplicate resource; first one kept",
    ]
    assert [r.patient_id for r in relevant] == [r.patient_id for r in everything]  # p002 too
    for kept, whole in zip(relevant, everything, strict=True):
        assert kept.patient == whole.patient
        assert kept.resources == tuple(r for r in whole.resources if r["id"] != "p001-temp")
    assert any(r["id"] == "p001-temp" for w in everything for r in w.resources)
