"""File sources: Bundles and NDJSON give the same records; bad input is reported, never fatal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from builders import SNOMED, condition, observation, patient, quantity

from fhir_tailor.record import Located, PatientRecord, ReadIssue, group_by_patient
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


def test_file_source_picks_the_format(tmp_path: Path) -> None:
    assert isinstance(file_source(write_ndjson(tmp_path / "n", population(1))), NdjsonSource)
    (tmp_path / "b").mkdir()
    assert isinstance(file_source(tmp_path / "b"), BundleSource)


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


@pytest.mark.parametrize("buckets", [2, 7])
def test_bucketed_grouping_equals_in_memory_grouping(buckets: int) -> None:
    items = [Located(r, f"x:{n}") for n, r in enumerate(population(40))]
    in_memory = list(group_by_patient(items, lambda _: None))
    spilled = list(group_by_patient(items, lambda _: None, buckets=buckets))
    assert normalized(spilled) == normalized(in_memory)
    assert [r.resources for r in sorted(spilled, key=lambda r: r.patient_id)] == [
        r.resources for r in in_memory
    ]
