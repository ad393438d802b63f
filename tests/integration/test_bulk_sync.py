"""``sync --bulk`` against a real FHIR server on loopback: a $export gives the same plans as
reading patient by patient, and writing them back twice changes nothing the second time.

The fixtures are loaded under ids of their own (``bk-``) and gathered in a Group, so the writing
test touches only them; everything loaded or written is deleted afterwards, so the other
modules' counts never see these patients.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from expected import without_plan
from searching import search_all

from fhir_tailor.cli import main
from fhir_tailor.definitions import bundled_path

AS_OF = "2026-11-15"
FIXTURES = bundled_path("fixtures") / "bundles"
GROUP = "bk-group"


def sync(server: str, *args: str) -> None:
    result = CliRunner().invoke(main, ["--as-of", AS_OF, "sync", "--server", server, *args])
    assert result.exit_code == 0, result.stderr


def sync_report(server: str, tmp_path: Path, *args: str) -> dict[str, Any]:
    report = tmp_path / "report.json"
    sync(server, "--report", str(report), *args)
    data: dict[str, Any] = json.loads(report.read_text())
    return data


def plans(folder: Path) -> dict[str, str]:
    """The written transaction Bundles by file name, without the run's timestamp."""
    recorded = '"recorded":"'
    return {
        path.name: "".join(part.split('"', 1)[-1] for part in path.read_text().split(recorded))
        for path in sorted(folder.glob("*.json"))
    }


def written_by_sync(http: httpx.Client, patients: list[str]) -> list[str]:
    """References of what sync wrote for these patients, in a safe order to delete them."""
    written: list[str] = []
    for pid in patients:
        for careplan in search_all(http, f"CarePlan?subject=Patient/{pid}&_count=100"):
            provenances = search_all(http, f"Provenance?target=CarePlan/{careplan['id']}")
            written += [f"Provenance/{p['id']}" for p in provenances]
            written += [f"CarePlan/{careplan['id']}"]
            written += [g["reference"] for g in careplan.get("goal", [])]
            written += [
                a["reference"]["reference"] for a in careplan["activity"] if "reference" in a
            ]
    return written


@pytest.fixture(scope="module")
def http(fhir_server: str) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=fhir_server + "/", headers={"Accept": "application/fhir+json"}, timeout=30
    ) as client:
        yield client


@pytest.fixture(scope="module")
def bulk_patients(http: httpx.Client) -> Iterator[list[str]]:
    """The fixture patients loaded as ``bk-..`` and gathered in Group/bk-group."""
    loaded: list[str] = []
    patients: list[str] = []
    try:
        for path in sorted(FIXTURES.glob("*.json")):
            text = path.read_text().replace('"ft-', '"bk-').replace("/ft-", "/bk-")
            bundle = json.loads(text)
            http.post("", json=bundle).raise_for_status()
            urls = [e["request"]["url"] for e in bundle["entry"]]
            loaded += urls
            patients += [u.removeprefix("Patient/") for u in urls if u.startswith("Patient/")]
        group = {
            "resourceType": "Group",
            "id": GROUP,
            "type": "person",
            "actual": True,
            "member": [{"entity": {"reference": f"Patient/{pid}"}} for pid in patients],
        }
        http.put(f"Group/{GROUP}", json=group).raise_for_status()
        loaded.append(f"Group/{GROUP}")
        yield patients
    finally:
        for reference in [*written_by_sync(http, patients), *reversed(loaded)]:
            http.delete(reference).raise_for_status()


def test_bulk_gives_the_same_plans_as_reading_patient_by_patient(
    fhir_server: str, bulk_patients: list[str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="fhir_tailor.bulk"):
        sync(fhir_server, "--bulk", "--out", str(tmp_path / "bulk"))
    assert "bulk export downloaded" in caplog.text, "sekmet declares $export: no fallback"
    assert "one by one" not in caplog.text
    sync(fhir_server, "--all", "--out", str(tmp_path / "all"))
    sync(fhir_server, "--bulk", "--group", GROUP, "--out", str(tmp_path / "group"))

    by_bulk, by_search = plans(tmp_path / "bulk"), plans(tmp_path / "all")
    assert by_bulk == by_search
    by_group = plans(tmp_path / "group")
    assert by_group, "some bk- patients get a plan"
    assert set(by_group) <= {f"{pid}.json" for pid in bulk_patients}
    assert by_group == {name: by_search[name] for name in by_group}


def test_bulk_sync_to_the_server_is_idempotent(
    fhir_server: str, bulk_patients: list[str], tmp_path: Path
) -> None:
    expected = len(plans_for_group(fhir_server, tmp_path))
    first = sync_report(fhir_server, tmp_path, "--bulk", "--group", GROUP)
    # The bk- patients are the fixture patients: their counts without a plan are the same.
    assert first["counts"] == {"created": expected, **without_plan()}
    assert expected + sum(without_plan().values()) == len(bulk_patients)
    assert first["bulk"]["level"] == "Group" and first["bulk"]["files"] >= 2
    assert first["bulk"]["files_by_type"]["Patient"] >= 1
    assert first["bulk"]["bytes_downloaded"] > 0 and first["bulk"]["server_errors"] == 0
    second = sync_report(fhir_server, tmp_path, "--bulk", "--group", GROUP)
    assert second["counts"] == {"unchanged": expected, **without_plan()}


def plans_for_group(server: str, tmp_path: Path) -> dict[str, str]:
    sync(server, "--bulk", "--group", GROUP, "--out", str(tmp_path / "expected"))
    return plans(tmp_path / "expected")
