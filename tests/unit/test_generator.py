"""scripts/generate-population: seeded, deterministic, and covering every mapped feature."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

from builders import AS_OF

from fhir_tailor.definitions import Definitions
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
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "Observation.ndjson").read_bytes() != (
        tmp_path / "c" / "Observation.ndjson"
    ).read_bytes()


def test_every_feature_occurs_in_a_generated_population(
    definitions: Definitions, tmp_path: Path
) -> None:
    generate(tmp_path, 1500)
    present: Counter[str] = Counter()
    issues: list[object] = []
    patients = 0
    for record in file_source(tmp_path).records(issues.append):
        patients += 1
        profile = build_profile(record, definitions.rules, AS_OF)
        present.update(f.feature for _, f in profile.findings() if f.current_present)
    assert patients == 1500 and issues == []
    missing = sorted(set(definitions.rules.index.features) - set(present))
    assert missing == []
    # Realistic, not uniform: common conditions are common, rare ones rare.
    assert present["hypertension"] > 5 * present["type1_diabetes"]
