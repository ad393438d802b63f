"""Segments: named sub-populations defined by rules over profiles (``profiles/segments.yaml``).

Segments combine clinical and non-clinical factors ("diabetes with social needs"); a patient
may belong to several. They drive reporting and can be named by care modules.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field

from .mapping import Strict
from .profile_model import Profile
from .rules import Evidence, RuleExpr


class SegmentDefinition(Strict):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    label: str
    description: str | None = None
    when: RuleExpr


class SegmentsFile(Strict):
    version: str
    changelog: list[str] = Field(min_length=1)
    segments: list[SegmentDefinition]


@dataclass(frozen=True, slots=True)
class SegmentMatch:
    id: str
    label: str
    evidence: tuple[Evidence, ...]


def segment(profile: Profile, definitions: tuple[SegmentDefinition, ...]) -> list[SegmentMatch]:
    """The segments a profile belongs to, in definition order."""
    matches = []
    for definition in definitions:
        verdict = definition.when.evaluate(profile)
        if verdict.holds:
            matches.append(SegmentMatch(definition.id, definition.label, verdict.evidence))
    return matches
