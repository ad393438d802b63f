"""Population view: how a source's patients spread over segments, needs and plan variants.

Counts are accumulated one profile at a time (nothing per patient is kept), so a population of
any size can be summarized in flat memory: the only thing that grows is one entry per distinct
plan shape. The number of distinct plan shapes is the measure of mass customization: how many
different personalized plans the standardized catalog yields for this population.

Patients the record says have died are counted (``deceased``) and otherwise left out: they get
no plan, and their last findings are no one's needs to manage. Shares are of the living.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .mapping import DIMENSIONS
from .plan import Plan
from .profile_model import Profile
from .segments import SegmentDefinition, SegmentMatch

#: How many of the largest plan groups (patients sharing one plan shape) are reported.
LARGEST_PLANS = 10


@dataclass(frozen=True, slots=True)
class PlanContent:
    """What a plan shape is made of, by catalog ids: enough to tell a reader what a group of
    patients sharing it receives, and nothing about any of them."""

    modules: tuple[str, ...]
    variants: tuple[str, ...]


def plan_shape(plan: Plan) -> str:
    """A digest of what makes a plan different from another, patient references left out:
    the modules, every activity with the variants applied to it, and every goal target."""
    parts: list[Any] = [
        [module.canonical for module in plan.modules],
        [(a.key, a.description, [v.variant for v in a.variations]) for a in plan.activities],
        [(g.key, g.target.comparator, g.target.value, g.target.text) for g in plan.goals],
    ]
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


@dataclass(slots=True)
class PopulationSummary:
    """Counts over a population: segments, dimensions, needs, gaps, modules, variants."""

    segment_labels: dict[str, str]
    #: Every patient read, the deceased included.
    patients: int = 0
    #: Patients recorded as deceased: no plan, and in no other count.
    deceased: int = 0
    with_plan: int = 0
    segments: Counter[str] = field(default_factory=Counter)
    with_finding: Counter[str] = field(default_factory=Counter)
    needs: dict[str, Counter[str]] = field(
        default_factory=lambda: {name: Counter() for name in DIMENSIONS}
    )
    gaps: Counter[str] = field(default_factory=Counter)
    modules: Counter[str] = field(default_factory=Counter)
    variants: Counter[str] = field(default_factory=Counter)
    shapes: Counter[str] = field(default_factory=Counter)
    #: Per feature, patients with a current present finding at each level (its severity, or
    #: ``none`` for a finding that raises no need, such as an asset).
    features: dict[str, Counter[str]] = field(default_factory=dict)
    contents: dict[str, PlanContent] = field(default_factory=dict)

    @classmethod
    def over(cls, definitions: tuple[SegmentDefinition, ...]) -> PopulationSummary:
        return cls(segment_labels={d.id: d.label for d in definitions})

    @property
    def living(self) -> int:
        """The patients the other counts are of."""
        return self.patients - self.deceased

    def add(self, profile: Profile, matches: list[SegmentMatch], plan: Plan | None) -> None:
        self.patients += 1
        if profile.facts.deceased:
            self.deceased += 1
            return
        self.segments.update(match.id for match in matches)
        for name in DIMENSIONS:
            dimension = profile.dimension(name)
            self.needs[name][dimension.need] += 1
            current = list(dimension.current_present())
            if current:
                self.with_finding[name] += 1
            for finding in current:
                levels = self.features.setdefault(finding.feature, Counter())
                levels[finding.severity or "none"] += 1
        self.gaps.update(gap.id for gap in profile.data_gaps)
        if plan is None:
            return
        self.with_plan += 1
        self.modules.update(module.id for module in plan.modules)
        applied = {v.variant for a in plan.activities for v in a.variations}
        applied |= {v.variant for g in (*plan.goals, *plan.withheld_goals) for v in g.variations}
        self.variants.update(applied)
        shape = plan_shape(plan)
        self.shapes[shape] += 1
        if shape not in self.contents:
            modules = tuple(module.id for module in plan.modules)
            self.contents[shape] = PlanContent(modules, tuple(sorted(applied)))

    def largest_plans(self) -> list[tuple[PlanContent, int]]:
        """The most shared plan shapes, largest first (ties in the order first seen)."""
        return [(self.contents[shape], n) for shape, n in self.shapes.most_common(LARGEST_PLANS)]

    def as_dict(self) -> dict[str, Any]:
        def share(count: int) -> float:
            return round(count / self.living, 4) if self.living else 0.0

        return {
            "patients": self.patients,
            "deceased": self.deceased,
            "with_plan": self.with_plan,
            "distinct_plans": len(self.shapes),
            "plans_used_once": sum(1 for n in self.shapes.values() if n == 1),
            "largest_plans": [
                {"patients": n, "modules": list(c.modules), "variants": list(c.variants)}
                for c, n in self.largest_plans()
            ],
            "segments": {
                sid: {"label": label, "patients": self.segments[sid]}
                for sid, label in self.segment_labels.items()
            },
            "share_with_finding": {name: share(self.with_finding[name]) for name in DIMENSIONS},
            "needs": {name: dict(sorted(self.needs[name].items())) for name in DIMENSIONS},
            "features": {
                feature: dict(sorted(levels.items()))
                for feature, levels in sorted(self.features.items())
            },
            "data_gaps": dict(sorted(self.gaps.items())),
            "modules": dict(sorted(self.modules.items())),
            "variants": dict(sorted(self.variants.items())),
        }

    def table(self) -> str:
        """The summary as aligned text for a terminal."""
        data = self.as_dict()
        width = max([len(label) for label in self.segment_labels.values()] + [20])
        lines = [f"{'segment':<{width}}  patients  share"]
        for info in data["segments"].values():
            count = info["patients"]
            share = count / self.living if self.living else 0.0
            lines.append(f"{info['label']:<{width}}  {count:>8}  {share:>5.1%}")
        lines.append("")
        lines.append(f"{'dimension':<22}with a finding  need none/low/moderate/high")
        for name in DIMENSIONS:
            needs = self.needs[name]
            spread = "/".join(str(needs[level]) for level in ("none", "low", "moderate", "high"))
            lines.append(f"{name:<22}{data['share_with_finding'][name]:>14.1%}  {spread}")
        lines.append("")
        lines.append(
            f"{self.patients} patients ({self.deceased} deceased, no plan), "
            f"{self.with_plan} with a plan, {data['distinct_plans']} distinct plans"
        )
        return "\n".join(lines) + "\n"
