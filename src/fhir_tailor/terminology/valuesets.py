"""Value sets: the unit of mapping.

A feature rule names value sets by canonical ``url|version``; the value sets ship as FHIR
``ValueSet`` resources with an ``expansion`` under ``profiles/valuesets/`` (published ones, such as
VSAC's, as published; the project's own with a ``compose`` that says where every code came from).
Matching a coding is set membership: :class:`ValueSetLibrary` holds every expansion as a set of
``(system, code)`` keys, so a rule never lists codes and a record's specific descendant code is
found as long as the expansion carries it, which is why expansions, not parent codes, are shipped.

ICD-10-CM codes are compared without the dot and in upper case (``e11.65`` == ``E1165``): records
write them both ways.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ICD9CM = "http://hl7.org/fhir/sid/icd-9-cm"
#: The extension recording where a shipped expansion came from (publisher, release, date).
EXPANSION_SOURCE = "https://fhir-tailor.dev/fhir/StructureDefinition/expansion-source"
#: The extension recording where the project checked a code (or filter) of its own value sets.
CODE_SOURCE = "https://fhir-tailor.dev/fhir/StructureDefinition/code-source"

Expander = Callable[[Sequence[str]], list[dict[str, Any]]]
"""Expands value sets by canonical (``url|version``): returns ValueSet resources with expansions."""


class ValueSetError(ValueError):
    """A value set file or resource is malformed, or a canonical cannot be resolved."""


def normalize_code(system: str, code: str) -> str:
    """The form codes are compared in: ICD-10-CM and ICD-9-CM without the dot, in upper case."""
    code = code.strip()
    return code.replace(".", "").upper() if system in (ICD10CM, ICD9CM) else code


def split_canonical(canonical: str) -> tuple[str, str | None]:
    """``url|version`` -> ``(url, version)``; a canonical without ``|`` has no version."""
    url, bar, version = canonical.partition("|")
    return url, (version or None) if bar else None


@dataclass(frozen=True, slots=True)
class Concept:
    """One code of an expansion."""

    system: str
    code: str
    display: str | None

    @property
    def key(self) -> tuple[str, str]:
        return self.system, normalize_code(self.system, self.code)


@dataclass(frozen=True, slots=True)
class ValueSet:
    """A value set as fhir-tailor uses it: its identity and, when expanded, its codes."""

    url: str
    version: str | None
    title: str
    publisher: str | None
    #: Where the expansion came from (the ``expansion-source`` extension), if recorded.
    source: str | None
    #: The expansion, or ``None`` when the resource has none (it needs ``--terminology``).
    concepts: tuple[Concept, ...] | None
    resource: Mapping[str, Any]

    @property
    def canonical(self) -> str:
        return f"{self.url}|{self.version}" if self.version else self.url

    @property
    def expanded(self) -> bool:
        return self.concepts is not None

    def members(self) -> frozenset[tuple[str, str]]:
        return frozenset(concept.key for concept in self.concepts or ())


def parse_valueset(resource: object, where: str) -> ValueSet:
    """A ValueSet resource read into a :class:`ValueSet`; ``where`` names it in errors."""
    if not isinstance(resource, dict) or resource.get("resourceType") != "ValueSet":
        raise ValueSetError(f"{where}: not a ValueSet resource")
    url = resource.get("url")
    if not isinstance(url, str) or not url:
        raise ValueSetError(f"{where}: ValueSet.url: missing")
    version = resource.get("version")
    if version is not None and not isinstance(version, str):
        raise ValueSetError(f"{where}: ValueSet.version: not a string")
    expansion = resource.get("expansion")
    concepts: tuple[Concept, ...] | None = None
    if expansion is not None:
        if not isinstance(expansion, dict):
            raise ValueSetError(f"{where}: ValueSet.expansion: not an object")
        concepts = tuple(_contains(expansion.get("contains"), where, "ValueSet.expansion"))
    title = resource.get("title") or resource.get("name") or url
    publisher = resource.get("publisher")
    return ValueSet(
        url=url,
        version=version,
        title=str(title),
        publisher=publisher if isinstance(publisher, str) else None,
        source=_extension(resource, EXPANSION_SOURCE),
        concepts=concepts,
        resource=resource,
    )


def _contains(entries: object, where: str, path: str) -> Iterator[Concept]:
    """The codes of ``expansion.contains``, nested ``contains`` flattened; abstract or inactive
    entries (groupers) are not codes a record may carry, so they are left out."""
    if entries is None:
        return
    if not isinstance(entries, list):
        raise ValueSetError(f"{where}: {path}.contains: not a list")
    for n, entry in enumerate(entries):
        here = f"{path}.contains[{n}]"
        if not isinstance(entry, dict):
            raise ValueSetError(f"{where}: {here}: not an object")
        system, code = entry.get("system"), entry.get("code")
        if code is not None or system is not None:
            if not isinstance(system, str) or not isinstance(code, str) or not code.strip():
                raise ValueSetError(f"{where}: {here}: needs a system and a code")
            if entry.get("abstract") is not True and entry.get("inactive") is not True:
                display = entry.get("display")
                yield Concept(system, code, display if isinstance(display, str) else None)
        yield from _contains(entry.get("contains"), where, here)


def _extension(resource: Mapping[str, Any], url: str) -> str | None:
    for extension in resource.get("extension") or ():
        if isinstance(extension, dict) and extension.get("url") == url:
            value = extension.get("valueString")
            return value if isinstance(value, str) else None
    return None


class ValueSetLibrary:
    """Value sets by canonical. A canonical without a version resolves to the only version held
    (several versions of one url make a versionless reference ambiguous, and that is an error)."""

    def __init__(self, valuesets: Iterable[ValueSet]) -> None:
        self._by_canonical: dict[str, ValueSet] = {}
        self._by_url: dict[str, list[ValueSet]] = {}
        for valueset in valuesets:
            if valueset.canonical in self._by_canonical:
                raise ValueSetError(f"value set {valueset.canonical} is defined twice")
            self._by_canonical[valueset.canonical] = valueset
            self._by_url.setdefault(valueset.url, []).append(valueset)

    @classmethod
    def load(cls, folder: Path) -> ValueSetLibrary:
        """Every ``*.json`` ValueSet under ``folder`` (none if the folder does not exist)."""
        return cls(read_folder(folder))

    def __iter__(self) -> Iterator[ValueSet]:
        return iter(self._by_canonical.values())

    def __len__(self) -> int:
        return len(self._by_canonical)

    def find(self, canonical: str) -> ValueSet | None:
        url, version = split_canonical(canonical)
        if version is not None:
            return self._by_canonical.get(canonical)
        held = self._by_url.get(url, [])
        if len(held) > 1:
            versions = ", ".join(sorted(str(v.version) for v in held))
            raise ValueSetError(f"value set {url}: several versions held ({versions}); name one")
        return held[0] if held else None

    def with_expansions(
        self, resources: Iterable[Mapping[str, Any]], where: str
    ) -> ValueSetLibrary:
        """This library with the given expanded ValueSets added or replacing unexpanded ones."""
        added = {v.canonical: v for v in (parse_valueset(r, where) for r in resources)}
        for canonical, valueset in added.items():
            if not valueset.expanded:
                raise ValueSetError(f"{where}: value set {canonical} came back without expansion")
        # An unexpanded entry of the same url gives way even when the server answered with a
        # version the shipped file did not name: otherwise a versionless reference would find
        # both and be ambiguous.
        urls = {v.url for v in added.values()}
        kept = [v for v in self if v.canonical not in added and (v.expanded or v.url not in urls)]
        return ValueSetLibrary([*kept, *added.values()])


def read_folder(folder: Path) -> list[ValueSet]:
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.glob("*.json")):
        try:
            resource = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError as exc:
            raise ValueSetError(f"{path}: invalid JSON: {exc}") from exc
        found.append(parse_valueset(resource, str(path)))
    return found
