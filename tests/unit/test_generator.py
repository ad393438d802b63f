"""scripts/generate-population: seeded, deterministic, covering every mapped feature, coded as
real records are, and with a truth file that says what each Condition is."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from builders import AS_OF

from fhir_tailor.definitions import Definitions
from fhir_tailor.pipeline import profile_and_plan
from fhir_tailor.profile import build_profile
from fhir_tailor.sources import file_source

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "generate-population"


def generate(out: Path, patients: int, seed: int = 1) -> None:
    subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--patients",
            str(patients),
            "--out",
            str(out),
            "--seed",
            str(seed),
            "--as-of",
            AS_OF.isoformat(),
        ],
        check=True,
        capture_output=True,
    )


def test_same_seed_same_files_other_seed_other_files(tmp_path: Path) -> None:
    generate(tmp_path / "a", 50)
    generate(tmp_path / "b", 50)
    generate(tmp_path / "c", 50, seed=2)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert "QuestionnaireResponse.ndjson" in names and "MedicationRequest.ndjson" in names
    assert "truth.json" in names
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "Observation.ndjson").read_bytes() != (
        tmp_path / "c" / "Observation.ndjson"
    ).read_bytes()


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1,500 generated patients (seed 1), shared by the tests that only read them."""
    out = tmp_path_factory.mktemp("population")
    generate(out, 1500)
    return out


def test_every_feature_occurs_in_a_generated_population(
    definitions: Definitions, population: Path
) -> None:
    present: Counter[str] = Counter()
    issues: list[object] = []
    patients = 0
    for record in file_source(population).records(issues.append):
        patients += 1
        profile = build_profile(record, definitions.rules, AS_OF)
        present.update(f.feature for _, f in profile.findings() if f.current_present)
    assert patients == 1500 and issues == []
    missing = sorted(set(definitions.rules.index.features) - set(present))
    assert missing == []
    # Realistic, not uniform: common conditions are common, rare ones rare.
    assert present["hypertension"] > 5 * present["type1_diabetes"]


def test_every_urgent_rule_fires_in_a_generated_population(
    definitions: Definitions, population: Path
) -> None:
    """Each urgent rule yields its request on generated records too, not only on the fixtures."""
    fired: Counter[str] = Counter()
    for record in file_source(population).records(lambda _: None):
        _, plan = profile_and_plan(record, definitions, AS_OF)
        if plan is not None:
            fired.update(f.rule for f in plan.urgent)
    assert sorted(r.id for r in definitions.catalog.urgent if not fired[r.id]) == []


def test_truth_describes_every_condition_as_the_records_hold_it(population: Path) -> None:
    truth = json.loads((population / "truth.json").read_text())
    patients = {p["id"]: p for p in ndjson(population / "Patient.ndjson")}
    conditions = {c["id"]: c for c in ndjson(population / "Condition.ndjson")}
    rows = truth["conditions"]
    assert [r["id"] for r in rows] == list(conditions)
    for row in rows:
        condition, patient = conditions[row["id"]], patients[row["patient"]]
        assert condition["subject"]["reference"] == f"Patient/{row['patient']}"
        clinical = [c["code"] for c in condition.get("clinicalStatus", {}).get("coding", [])]
        verification = condition["verificationStatus"]["coding"][0]["code"]
        in_scope = bool({"active", "recurrence", "relapse"} & set(clinical))
        assert row["active"] == (in_scope and verification not in {"refuted", "entered-in-error"})
        assert row["deceased"] == ("deceasedDateTime" in patient or "deceasedBoolean" in patient)
        born = date.fromisoformat(patient["birthDate"])
        age = AS_OF.year - born.year - ((AS_OF.month, AS_OF.day) < (born.month, born.day))
        assert row["child"] == (age < 18)
        assert not row["pregnant"] or patient["gender"] == "female"
        assert row["group"] is None or row["group"] in truth["groups"]
    # The mix real records carry, in every chronic group and in the population as a whole.
    active = [r for r in rows if r["active"] and r["group"]]
    assert {r["group"] for r in active} == set(truth["groups"])
    systems = Counter(
        tuple(sorted(c["system"].rsplit("/", 1)[1] for c in conditions[r["id"]]["code"]["coding"]))
        for r in active
    )
    assert {("sct",), ("icd-10-cm",), ("icd-10-cm", "sct")} <= set(systems)
    assert any(not r["active"] and r["group"] for r in rows)
    assert any(r["child"] and r["active"] and r["group"] for r in rows)
    assert any(r["deceased"] and r["active"] and r["group"] for r in rows)
    assert any(r["pregnant"] for r in rows)
    old = [c for c in conditions.values() if c.get("onsetDateTime", "9") < "2000"]
    assert old, "some diagnoses are decades old"
    deceased = [p for p in patients.values() if "deceasedDateTime" in p or "deceasedBoolean" in p]
    assert any("deceasedBoolean" in p for p in deceased) and any(
        p.get("deceasedDateTime", "9") < AS_OF.isoformat() for p in deceased
    )


def ndjson(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]
