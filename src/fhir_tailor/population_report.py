"""The population report of ``fhir-tailor report``: one self-contained HTML file, or JSON.

Both are rendered from one document built by :func:`report_data`, so the JSON and the HTML
always carry the same numbers. The document comes from a
:class:`~fhir_tailor.population.PopulationSummary`, so it holds counts and definition labels
only: no patient name, id or date can reach it.

The HTML fetches nothing: plots are inline SVG drawn here by matplotlib with text as paths,
styles are inline, there is no script, and a Content-Security-Policy forbids any load. It can
be mailed, archived and opened offline. Each plot has a title for screen readers and is
followed by a table of the same numbers, in the same order: largest first. Labels are wrapped,
never cut, and every share of patients is drawn on one scale, 0 to 100%, so bars of different
plots (one per dimension) compare at a glance.

matplotlib is an optional extra (``fhir-tailor[report]``): it is only imported to draw.
"""

from __future__ import annotations

import html
import importlib.util
import io
import re
import textwrap
from collections import Counter
from collections.abc import Sequence
from datetime import date
from typing import Any, get_args

from .definitions import Definitions
from .errors import FhirTailorError
from .mapping import DIMENSIONS
from .population import PopulationSummary
from .profile_model import NeedLevel

NEED_LEVELS: tuple[str, ...] = get_args(NeedLevel)
#: Colours by need level: grey for no need, then light to dark (readable in greyscale too).
LEVEL_COLOURS = {"none": "#c8c8c8", "low": "#fdcc8a", "moderate": "#f0703c", "high": "#a8190f"}
BAR_COLOUR = "#2f6a9e"
#: Plot labels are wrapped at this many characters a line (never shortened): the label area
#: then grows with the longest label's lines rather than squeezing the bars out.
LABEL_WRAP = 44


class PlottingUnavailable(FhirTailorError):
    """matplotlib, needed to draw the HTML report's plots, is not installed."""


def require_plotting() -> None:
    """Fail early, before any patient is read, when the HTML report cannot be drawn."""
    if importlib.util.find_spec("matplotlib") is None:
        raise PlottingUnavailable(
            "the HTML report draws its plots with matplotlib, which is not installed: "
            "pip install 'fhir-tailor[report]' (or use --format json)"
        )


# -- the document ----------------------------------------------------------------------------


def report_data(
    summary: PopulationSummary, definitions: Definitions, as_of: date, unreadable: int = 0
) -> dict[str, Any]:
    """Every number the report shows, with the labels of the definitions they count.

    Lists follow the definitions' order and include what nobody has, so a zero is visible.
    Patients recorded as deceased are counted and left out of the rest (they get no plan):
    shares are of the living.
    """
    total = summary.living

    def counted(count: int) -> dict[str, Any]:
        return {"patients": count, "share": round(count / total, 4) if total else 0.0}

    rules, catalog = definitions.rules, definitions.catalog
    features = []
    for feature_id, (feature, dimension) in rules.index.features.items():
        levels = summary.features.get(feature_id, Counter())
        features.append(
            {
                "id": feature_id,
                "label": feature.label,
                "dimension": dimension,
                **counted(sum(levels.values())),
                "levels": {level: levels[level] for level in NEED_LEVELS},
            }
        )
    return {
        "as_of": as_of.isoformat(),
        "catalog": {
            "id": catalog.info.id,
            "version": catalog.info.version,
            "title": catalog.info.title,
        },
        "patients": summary.patients,
        "deceased": summary.deceased,
        "living": total,
        "unreadable_resources": unreadable,
        "segments": [
            {"id": s.id, "label": s.label, **counted(summary.segments[s.id])}
            for s in definitions.segments
        ],
        "dimensions": [
            {
                "id": name,
                "label": rules.dimensions[name].label if name in rules.dimensions else name,
                **counted(summary.with_finding[name]),
                "needs": {level: summary.needs[name][level] for level in NEED_LEVELS},
            }
            for name in DIMENSIONS
        ],
        "features": features,
        "data_gaps": [
            {"id": gap.id, "label": gap.label, **counted(summary.gaps[gap.id])}
            for gap in rules.gaps
        ],
        "plans": {
            "with_plan": summary.with_plan,
            "without_plan": total - summary.with_plan,
            "distinct": len(summary.shapes),
            "used_once": sum(1 for n in summary.shapes.values() if n == 1),
            "largest": [
                {**counted(n), "modules": list(content.modules), "variants": list(content.variants)}
                for content, n in summary.largest_plans()
            ],
        },
        "modules": [
            {"id": m.id, "title": m.title, **counted(summary.modules[m.id])}
            for m in catalog.modules
        ],
        "variants": [
            {"id": v.id, "label": v.label, **counted(summary.variants[v.id])}
            for v in catalog.variants
        ],
    }


# -- HTML ------------------------------------------------------------------------------------

STYLE = """
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 60rem; padding: 1rem;
       color: #1a1a1a; line-height: 1.4; }
figure { margin: 1rem 0 0.5rem; }
svg { max-width: 100%; height: auto; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-size: 0.9rem; }
caption { text-align: left; font-weight: 600; padding: 0.25rem 0; }
th, td { border: 1px solid #bbb; padding: 0.2rem 0.5rem; text-align: left; vertical-align: top; }
td.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tbody th { font-weight: normal; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: 0.2rem 1rem; }
dl.facts dt { font-weight: 600; }
"""


def render_html(data: dict[str, Any]) -> str:
    """The report as one HTML document (needs matplotlib: see :func:`require_plotting`)."""
    page = _Page(data["living"])
    catalog = data["catalog"]
    plans = data["plans"]
    title = f"Population report as of {data['as_of']}"
    page.add(f"<h1>{_e(title)}</h1>")
    page.add(
        '<dl class="facts">'
        + "".join(
            f"<dt>{_e(term)}</dt><dd>{_e(value)}</dd>"
            for term, value in (
                ("As of", data["as_of"]),
                ("Catalog", f"{catalog['title']} ({catalog['id']} {catalog['version']})"),
                ("Patients", str(data["patients"])),
                ("Deceased (no plan; left out below)", str(data["deceased"])),
                ("With a plan (share of the living)", page.count_share(plans["with_plan"])),
                ("Distinct personalized plans", str(plans["distinct"])),
                ("Unreadable resources skipped", str(data["unreadable_resources"])),
            )
        )
        + "</dl>"
    )

    page.section("Segments", "Patients in each segment (a patient may be in several).")
    page.counts("Patients per segment", data["segments"], "Segment", "label")

    page.section(
        "Needs by dimension",
        "Each patient's need level per dimension: the highest severity among current findings.",
    )
    page.levels(
        "Need level per dimension (share of patients)",
        [(d["label"], d["needs"]) for d in data["dimensions"]],
        "Dimension",
        extra=("With a current finding", [d["patients"] for d in data["dimensions"]]),
    )

    page.section(
        "Needs by feature",
        "Patients with a current finding of each feature, by the need level it carries "
        "(none: a finding that raises no need, such as a caregiver).",
    )
    for dimension in data["dimensions"]:
        rows = [f for f in data["features"] if f["dimension"] == dimension["id"]]
        page.add(f"<h3>{_e(dimension['label'])}</h3>")
        page.levels(
            f"{dimension['label']}: patients with a current finding, by need level",
            [(f["label"], f["levels"]) for f in rows],
            "Feature",
            extra=("Patients", [f["patients"] for f in rows]),
            order=("low", "moderate", "high", "none"),
        )

    page.section("Data gaps", "Patients missing a standard screening they are due for.")
    page.counts("Patients per data gap", data["data_gaps"], "Data gap", "label")

    page.section(
        "Personalized plans",
        f"The standardized catalog produced {plans['distinct']} distinct personalized plans "
        f"for {plans['with_plan']} patients ({plans['without_plan']} living patients without "
        f"a plan, {data['deceased']} deceased); "
        f"{plans['used_once']} of the plans are each received by one patient only.",
    )
    page.plan_groups(plans["largest"], data["modules"], data["variants"])

    page.section("Care modules", "Patients whose plan includes each module of the catalog.")
    page.counts("Patients per care module", data["modules"], "Module", "title")

    page.section("Personalization variants", "Patients whose plan applies each variant.")
    page.counts("Patients per variant", data["variants"], "Variant", "label")

    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; style-src 'unsafe-inline'\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n"
        + "\n".join(page.parts)
        + "\n</main>\n</body>\n</html>\n"
    )


class _Page:
    """The HTML body being built: sections, each a plot followed by the table of its numbers."""

    def __init__(self, patients: int) -> None:
        self.patients = patients
        self.parts: list[str] = []
        self.plots = 0

    def add(self, fragment: str) -> None:
        self.parts.append(fragment)

    def section(self, heading: str, lead: str) -> None:
        self.add(f"<h2>{_e(heading)}</h2>\n<p>{_e(lead)}</p>")

    def count_share(self, count: int) -> str:
        return f"{count} ({_percent(count, self.patients)})"

    def counts(self, title: str, rows: list[dict[str, Any]], head: str, label: str) -> None:
        """A bar per row (patients), largest first, then the table of patients and shares."""
        rows = sorted(rows, key=lambda row: -int(row["patients"]))  # stable: ties as defined
        labels = [row[label] for row in rows]
        values = [row["patients"] for row in rows]
        self.plot(title, labels, [("Patients", values, BAR_COLOUR)], "Patients")
        self.table(
            title,
            [head, "Patients", "Share"],
            [
                [row[label], str(row["patients"]), _percent(row["patients"], self.patients)]
                for row in rows
            ],
        )

    def levels(
        self,
        title: str,
        rows: list[tuple[str, dict[str, int]]],
        head: str,
        *,
        extra: tuple[str, list[int]],
        order: Sequence[str] = NEED_LEVELS,
    ) -> None:
        """Stacked bars of the share of patients at each level, then the counts and shares;
        rows in descending order of ``extra`` (patients with a finding), ties as defined."""
        extra_head, extra_values = extra
        ranked = sorted(zip(rows, extra_values, strict=True), key=lambda pair: -pair[1])
        rows, extra_values = [row for row, _ in ranked], [count for _, count in ranked]
        labels = [label for label, _ in rows]
        series = [
            (
                level,
                [_share(levels[level], self.patients) * 100 for _, levels in rows],
                LEVEL_COLOURS[level],
            )
            for level in order
        ]
        self.plot(title, labels, series, "Share of patients (%)", percent=True)
        self.table(
            title,
            [head, extra_head, *(f"Need {level}" for level in order)],
            [
                [
                    label,
                    self.count_share(count),
                    *(self.count_share(levels[level]) for level in order),
                ]
                for (label, levels), count in zip(rows, extra_values, strict=True)
            ],
        )

    def plan_groups(
        self,
        largest: list[dict[str, Any]],
        modules: list[dict[str, Any]],
        variants: list[dict[str, Any]],
    ) -> None:
        title = "Largest groups of patients sharing one plan"
        if not largest:
            self.add("<p>No patient received a plan.</p>")
            return
        names = {m["id"]: m["title"] for m in modules} | {v["id"]: v["label"] for v in variants}
        # largest first already; named by their modules, with how many variants adapt them
        # (groups with the same modules differ by their variants, which the table lists)
        modules_of = ["; ".join(names.get(m, m) for m in group["modules"]) for group in largest]
        labels = [
            f"{text} ({_count(len(group['variants']), 'variant')})" if group["variants"] else text
            for text, group in zip(modules_of, largest, strict=True)
        ]
        self.plot(
            title, labels, [("Patients", [g["patients"] for g in largest], BAR_COLOUR)], "Patients"
        )
        self.table(
            title,
            ["Modules", "Patients", "Share", "Variants"],
            [
                [
                    text,
                    str(group["patients"]),
                    _percent(group["patients"], self.patients),
                    "; ".join(names.get(v, v) for v in group["variants"]) or "none",
                ]
                for text, group in zip(modules_of, largest, strict=True)
            ],
        )

    def plot(
        self,
        title: str,
        labels: list[str],
        series: list[tuple[str, list[float], str]],
        axis: str,
        *,
        percent: bool = False,
    ) -> None:
        self.plots += 1
        svg = _bar_chart(labels, series, axis, percent=percent)
        self.add(f"<figure>{_inline_svg(svg, f'plot{self.plots}', title)}</figure>")

    def table(self, caption: str, head: list[str], rows: list[list[str]]) -> None:
        header = "".join(f'<th scope="col">{_e(cell)}</th>' for cell in head)
        body = "".join(
            "<tr>"
            + f'<th scope="row">{_e(row[0])}</th>'
            + "".join(
                f'<td class="n">{_e(cell)}</td>' if cell[:1].isdigit() else f"<td>{_e(cell)}</td>"
                for cell in row[1:]
            )
            + "</tr>"
            for row in rows
        )
        self.add(
            f"<table><caption>{_e(caption)}</caption><thead><tr>{header}</tr></thead>"
            f"<tbody>{body}</tbody></table>"
        )


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _count(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _share(count: int, total: int) -> float:
    return count / total if total else 0.0


def _percent(count: int, total: int) -> str:
    return f"{_share(count, total) * 100:.1f}%"


# -- plots -----------------------------------------------------------------------------------


def _bar_chart(
    labels: list[str],
    series: list[tuple[str, list[float], str]],
    axis: str,
    *,
    percent: bool,
) -> str:
    """Horizontal bars, stacked when there are several series, as SVG text.

    The Figure API (no pyplot) keeps no global state and needs no GUI backend. Text is drawn
    as paths, so the SVG names no font to fetch and looks the same everywhere; the hash salt
    and the absent date make the output reproducible.
    """
    from matplotlib import rc_context
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    shown = [
        textwrap.fill(label, LABEL_WRAP, break_long_words=False, break_on_hyphens=False)
        for label in labels
    ]
    lines = max((label.count("\n") + 1 for label in shown), default=1)
    row = 0.14 + 0.14 * lines  # inches: a one-line label's row is 0.28, as tall as its bar needs
    with rc_context({"svg.fonttype": "path", "svg.hashsalt": "fhir-tailor", "font.size": 9}):
        # constrained layout widens the label area to the longest wrapped line
        figure = Figure(figsize=(8, 0.8 + row * max(len(labels), 1)), layout="constrained")
        ax = figure.add_subplot()
        positions = range(len(labels))
        left = [0.0] * len(labels)
        for name, values, colour in series:
            bars = ax.barh(positions, values, left=left, color=colour, label=name, height=0.7)
            left = [a + b for a, b in zip(left, values, strict=True)]
        if len(series) == 1 or (percent and any(round(total) != 100 for total in left)):
            # the count, or a stack's total share (not when every stack is the whole 100%)
            text = [f"{t:.1f}%" if percent else f"{t:g}" for t in left]
            ax.bar_label(bars, text, padding=3, fontsize=8)
        ax.set_yticks(list(positions), shown)
        ax.invert_yaxis()
        ax.set_xlabel(axis)
        if percent:  # one scale for every share, so plots compare across dimensions
            ax.set_xlim(0, 100)
        else:
            ax.set_xlim(0, max([*left, 1.0]) * 1.12)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.spines[["top", "right"]].set_visible(False)
        if len(series) > 1:
            figure.legend(loc="outside upper center", ncols=len(series), frameon=False)
        out = io.StringIO()
        figure.savefig(out, format="svg", metadata={"Date": None, "Creator": None})
    return out.getvalue()


_ID = re.compile(r'\bid="([^"]+)"')


def _inline_svg(svg: str, prefix: str, title: str) -> str:
    """An SVG file made fit to sit inline in HTML: no XML prologue, doctype or metadata, ids
    made unique in the page (several plots define the same glyphs and clip paths), and a title
    that screen readers announce for the image."""
    svg = svg[svg.index("<svg") :]
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, flags=re.DOTALL)
    ids = set(_ID.findall(svg))
    svg = re.sub(
        r'(id="|href="#|url\(#)([^")]+)',
        lambda m: f"{m[1]}{prefix}-{m[2]}" if m[2] in ids else m[0],
        svg,
    )
    title_id = f"{prefix}-title"
    return re.sub(
        r"<svg\b([^>]*)>",
        lambda m: (
            f'<svg{m[1]} role="img" aria-labelledby="{title_id}">'
            f'<title id="{title_id}">{_e(title)}</title>'
        ),
        svg,
        count=1,
    )
