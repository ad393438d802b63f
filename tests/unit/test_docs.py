"""Generated documentation matches what ships."""

from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path
from typing import Any

from fhir_tailor.definitions import bundled_path, load_definitions

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


def test_every_shipped_rule_goal_step_and_variant_cites_a_source() -> None:
    """No source, no rule: every feature rule, data gap, urgent rule, module, goal, step,
    variant and step a variant adds names the guideline it follows."""
    definitions = load_definitions(bundled_path("profiles"))
    entries: list[tuple[str, str | None]] = []
    for feature, _dimension in definitions.rules.index.features.values():
        entries += [(f"rule {feature.id}.{rule.id}", rule.source) for rule in feature.rules]
    entries += [(f"gap {gap.id}", gap.source) for gap in definitions.rules.gaps]
    entries += [(f"urgent {rule.id}", rule.source) for rule in definitions.catalog.urgent]
    for module in definitions.catalog.modules:
        entries.append((f"module {module.id}", module.source))
        entries += [(f"goal {module.id}.{g.id}", g.source) for g in module.goals]
        entries += [(f"step {module.id}.{a.id}", a.source) for a in module.activities]
    for variant in definitions.catalog.variants:
        entries.append((f"variant {variant.id}", variant.source))
    assert len(entries) > 400  # the walk reaches the content (464 entries in 2026.12.2)
    assert [name for name, source in entries if not (source and source.strip())] == []
