"""Generated documentation matches what ships."""

from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path
from typing import Any

from fhir_tailor.definitions import bundled_path

ROOT = Path(__file__).parents[2]


def _script(name: str) -> Any:
    loader = importlib.machinery.SourceFileLoader(
        name.replace("-", "_"), str(ROOT / "scripts" / name)
    )
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_value_set_table_is_current() -> None:
    """docs/valuesets.md is what scripts/document-valuesets writes from profiles/valuesets/: run
    the script after changing a value set or a rule."""
    written = _script("document-valuesets").table(bundled_path("profiles"))
    assert (ROOT / "docs" / "valuesets.md").read_text(encoding="utf-8") == written


def test_clinical_content_is_current() -> None:
    """docs/clinical-content.md is what scripts/document-clinical-content writes from profiles/:
    run the script after changing a rule, goal, step or variant."""
    written = _script("document-clinical-content").document(bundled_path("profiles"))
    assert (ROOT / "docs" / "clinical-content.md").read_text(encoding="utf-8") == written
