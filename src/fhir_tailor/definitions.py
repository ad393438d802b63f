"""Loading the declarative definitions in ``profiles/``, with clear errors.

Layout of a profiles folder::

    dimensions.yaml          need policy per dimension
    data_gaps.yaml           standard screenings whose absence is a data gap
    valuesets/*.json         value sets (FHIR ValueSet resources with an expansion)
    features/*.yaml          mappings through value sets, one file per dimension
    segments.yaml            sub-populations
    catalog.yaml             catalog id, version, canonical base
    modules/*.yaml           standardized care modules
    variants.yaml            personalization variants
    urgent.yaml              urgent findings: rules, priorities and the request each gives

Every file is validated against its schema, and every rule's references (features, gaps,
goals) are checked, so a typo fails at load time with the file, the line and the place named,
never as a patient who silently misses a finding.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from .catalog import Catalog, CatalogFile, Module, VariantsFile
from .errors import FhirTailorError
from .exclusions import check_exclusions
from .mapping import CodeIndex, FeatureFile, unresolved
from .profile import DimensionsFile, GapsFile, ProfileRules
from .rules import referenced
from .segments import SegmentDefinition, SegmentsFile
from .terminology.valuesets import Expander, ValueSetError, ValueSetLibrary
from .urgent import UrgentFile

M = TypeVar("M", bound=BaseModel)


class DefinitionError(FhirTailorError):
    """A definition file is missing, malformed, or refers to something undefined."""


@dataclass(frozen=True, slots=True)
class Definitions:
    rules: ProfileRules
    segments: tuple[SegmentDefinition, ...]
    catalog: Catalog


def bundled_path(name: str) -> Path:
    """A folder shipped with fhir-tailor (``profiles`` or ``fixtures``).

    Installed wheels carry them under ``fhir_tailor/_data``; a source checkout has them at the
    repository root.
    """
    package = Path(__file__).resolve().parent
    for candidate in (package / "_data" / name, package.parents[1] / name):
        if candidate.is_dir():
            return candidate
    raise DefinitionError(f"bundled folder {name!r} not found next to the fhir_tailor package")


def load_definitions(root: Path, *, expand: Expander | None = None) -> Definitions:
    """Load and check every definition file under ``root``.

    Value sets the rules name but ``valuesets/`` holds without an expansion (or not at all) are
    expanded by ``expand`` (a terminology server) when given; otherwise loading fails naming them.
    """
    if not root.is_dir():
        raise DefinitionError(f"{root}: profiles folder not found")
    feature_paths = _yaml_files(root / "features")
    module_paths = _yaml_files(root / "modules")
    features = [_load(path, FeatureFile) for path in feature_paths]
    dimensions = _load(root / "dimensions.yaml", DimensionsFile)
    gaps = _load(root / "data_gaps.yaml", GapsFile)
    segments = _load(root / "segments.yaml", SegmentsFile)
    catalog_file = _load(root / "catalog.yaml", CatalogFile)
    modules = [_load(path, Module) for path in module_paths]
    variants = _load(root / "variants.yaml", VariantsFile)
    urgent = _load(root / "urgent.yaml", UrgentFile)
    library = _valuesets(root / "valuesets", features, expand)
    try:
        index = CodeIndex(features, library)
        # cheap next to building the index (one set intersection per pair when clean), and a
        # shared code would make a patient both findings: every command refuses it, not only
        # validate-profiles
        check_exclusions(index)
    except ValueError as exc:
        raise DefinitionError(f"{root / 'features'}: {exc}") from exc

    known = {"feature": set(index.features), "gap": {gap.id for gap in gaps.gaps}}
    checks: list[tuple[Path, str, Any]] = [
        *((root / "data_gaps.yaml", f"gap {g.id!r}", g.when) for g in gaps.gaps if g.when),
        *((root / "segments.yaml", f"segment {s.id!r}", s.when) for s in segments.segments),
        *(
            (path, f"module {m.id!r}", m.applies_when)
            for path, m in zip(module_paths, modules, strict=True)
        ),
        *((root / "variants.yaml", f"variant {v.id!r}", v.when) for v in variants.variants),
        *((root / "urgent.yaml", f"urgent rule {r.id!r}", r.when) for r in urgent.rules),
    ]
    for path, owner, rule in checks:
        for kind, name in referenced(rule):
            if name not in known[kind]:
                raise DefinitionError(f"{path}: {owner} refers to unknown {kind} {name!r}")
    for gap in gaps.gaps:
        for name in gap.features:
            if name not in known["feature"]:
                raise DefinitionError(
                    f"{root / 'data_gaps.yaml'}: gap {gap.id!r} refers to unknown feature {name!r}"
                )
    goal_keys = {f"{m.id}.{g.id}": g for m in modules for g in m.goals}
    for variant in variants.variants:
        change = variant.adjust_goal
        if change is None:
            continue
        for key in change.goals:
            if key not in goal_keys:
                raise DefinitionError(
                    f"{root / 'variants.yaml'}: variant {variant.id!r} adjusts unknown goal {key!r}"
                )
            if change.value is not None and goal_keys[key].target.value is None:
                raise DefinitionError(
                    f"{root / 'variants.yaml'}: variant {variant.id!r} adjusts the value of goal "
                    f"{key!r}, whose target is not a quantity"
                )
    _unique(root / "modules", [m.id for m in modules], "module")
    _unique(root / "segments.yaml", [s.id for s in segments.segments], "segment")
    _unique(root / "variants.yaml", [v.id for v in variants.variants], "variant")
    _unique(root / "urgent.yaml", [r.id for r in urgent.rules], "urgent rule")

    return Definitions(
        rules=ProfileRules(index, dimensions.dimensions, tuple(gaps.gaps)),
        segments=tuple(segments.segments),
        catalog=Catalog(
            catalog_file.catalog,
            tuple(modules),
            tuple(variants.variants),
            urgent=tuple(urgent.rules),
        ),
    )


def _valuesets(
    folder: Path, features: list[FeatureFile], expand: Expander | None
) -> ValueSetLibrary:
    try:
        library = ValueSetLibrary.load(folder)
        problem = unresolved(features, library)
        if problem is not None and expand is not None:
            wanted = [*problem.missing, *problem.unexpanded]
            library = library.with_expansions(expand(wanted), "terminology server")
    except ValueSetError as exc:
        raise DefinitionError(str(exc)) from exc
    return library


def _yaml_files(folder: Path) -> list[Path]:
    paths = sorted(folder.glob("*.yaml"))
    if not paths:
        raise DefinitionError(f"{folder}: no *.yaml files")
    return paths


#: libyaml's loader where PyYAML was built with it (the wheels are): ~10x the pure-Python one.
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _load(path: Path, model: type[M]) -> M:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise DefinitionError(f"{path}: file not found") from exc
    try:
        data = yaml.load(text, Loader=_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise DefinitionError(f"{where}: invalid YAML: {exc}") from exc
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        tree = yaml.compose(text, Loader=_LOADER)  # parsed again only to name the lines
        problems = [
            f"{path}:{_line(tree, error['loc'])}: "
            f"{'.'.join(str(part) for part in error['loc']) or '(top)'}: {error['msg']}"
            for error in exc.errors()
        ]
        raise DefinitionError("\n".join(problems)) from exc


def _line(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int:
    """The 1-based line of the deepest YAML node on a validation error's path.

    Parts of ``loc`` that are not keys or indexes (pydantic's union tags) are passed over.
    """
    line = 1
    for part in loc:
        if node is None:
            break
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            node = next((value for key, value in node.value if key.value == part), node)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            node = node.value[part] if part < len(node.value) else None
    if node is not None:
        line = node.start_mark.line + 1
    return line


def _unique(path: Path, ids: list[str], kind: str) -> None:
    seen: set[str] = set()
    for name in ids:
        if name in seen:
            raise DefinitionError(f"{path}: {kind} {name!r} is defined twice")
        seen.add(name)
