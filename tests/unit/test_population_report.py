"""The population report: its numbers against an independent count over the fixture patients,
a self-contained and accessible HTML page, the JSON shape, and the ``report`` command."""

from __future__ import annotations

import dataclasses
import html
import importlib.util
import json
import re
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from builders import AS_OF
from click.testing import CliRunner

from fhir_tailor.cli import main
from fhir_tailor.definitions import Definitions, bundled_path
from fhir_tailor.mapping import DIMENSIONS
from fhir_tailor.pipeline import assess
from fhir_tailor.plan import Plan
from fhir_tailor.population import PopulationSummary, plan_shape
from fhir_tailor.population_report import render_html, report_data
from fhir_tailor.profile_model import Profile
from fhir_tailor.record import PatientRecord
from fhir_tailor.sources import file_source

FIXTURES = bundled_path("fixtures") / "bundles"
Assessed = list[tuple[Profile, list[Any], Plan | None]]


@pytest.fixture(scope="module")
def records() -> list[PatientRecord]:
    return list(file_source(FIXTURES).records(lambda issue: None))


@pytest.fixture(scope="module")
def assessed(records: list[PatientRecord], definitions: Definitions) -> Assessed:
    return [assess(record, definitions, AS_OF) for record in records]


@pytest.fixture(scope="module")
def data(assessed: Assessed, definitions: Definitions) -> dict[str, Any]:
    summary = PopulationSummary.over(definitions.segments)
    for result in assessed:
        summary.add(*result)
    return report_data(summary, definitions, AS_OF)


@pytest.fixture(scope="module")
def living(assessed: Assessed) -> Assessed:
    """The patients the figures are of: those not recorded as deceased."""
    return [result for result in assessed if not result[0].facts.deceased]


@pytest.fixture(scope="module")
def page(data: dict[str, Any]) -> str:
    return render_html(data)


class Tree(HTMLParser):
    """Tags, attributes, figures and tables of a page (cells as text)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.tables: dict[str, list[list[str]]] = {}
        self.order: list[str] = []  # "figure" / "table" in document order
        self._caption: str | None = None
        self._cell: list[str] | None = None
        self._rows: list[list[str]] = []
        self._in_caption = False
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "figure":
            self.order.append("figure")
        elif tag == "table":
            self.order.append("table")
            self._caption, self._rows = "", []
        elif tag == "caption":
            self._in_caption = True
        elif tag == "tr":
            self._rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "caption":
            self._in_caption = False
        elif tag in ("td", "th") and self._cell is not None:
            self._rows[-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table" and self._caption is not None:
            self.tables[self._caption] = self._rows[1:]  # without the header row

    def handle_data(self, text: str) -> None:
        if self._in_caption and self._caption is not None:
            self._caption += text
        elif self._cell is not None:
            self._cell.append(text)


@dataclasses.dataclass(frozen=True)
class Plot:
    """What an inline SVG plot shows: its title and its text elements (tick and axis labels,
    legend, bar values), each as its lines joined by a space, with where its first line
    starts (x, in the SVG's units; left of 0 is cut off)."""

    title: str
    texts: list[tuple[str, float]]


def plots(page: str) -> list[Plot]:
    """The page's plots. matplotlib draws text as paths but writes each line of it in a
    comment just before the line's glyphs, in a group of its own per text element."""
    found = []
    for figure in re.findall(r"<figure>(.*?)</figure>", page, flags=re.DOTALL):
        title = re.search(r"<title[^>]*>(.*?)</title>", figure, flags=re.DOTALL)
        assert title is not None
        texts = []
        for group in re.split(r'<g id="[^"]*text_\d+">', figure)[1:]:
            lines = re.findall(r'<!-- (.*?) -->\s*<g transform="translate\(([-\d.e]+) ', group)
            if lines:
                text = " ".join(html.unescape(line) for line, _ in lines)
                texts.append((text, min(float(x) for _, x in lines)))
        found.append(Plot(html.unescape(title.group(1)), texts))
    return found


def count_of(cell: str) -> int:
    """The count of a cell written ``12`` or ``12 (5.0%)``."""
    return int(cell.split()[0])


# -- numbers: an independent count over the same profiles --------------------------------


def expected_features(assessed: Assessed, definitions: Definitions) -> dict[str, Counter[str]]:
    counts: dict[str, Counter[str]] = {f: Counter() for f in definitions.rules.index.features}
    for profile, _, _ in assessed:
        for _, finding in profile.findings():
            if finding.status == "present" and not finding.stale:
                counts[finding.feature][finding.severity or "none"] += 1
    return counts


def applied_variants(plan: Plan) -> set[str]:
    return {v.variant for a in plan.activities for v in a.variations} | {
        v.variant for g in plan.goals for v in g.variations
    }


def test_segment_dimension_and_gap_counts_match_the_profiles(
    data: dict[str, Any], assessed: Assessed, living: Assessed
) -> None:
    assert data["patients"] == len(assessed) == len(list(FIXTURES.glob("*.json")))
    assert data["deceased"] == len(assessed) - len(living) > 0, "ft-29 is deceased"
    assert data["living"] == len(living)
    assessed = living  # the deceased are counted apart, in nothing below
    segments = Counter(match.id for _, matches, _ in assessed for match in matches)
    assert {s["id"]: s["patients"] for s in data["segments"]} == {
        s["id"]: segments[s["id"]] for s in data["segments"]
    }
    assert sum(segments.values()) == sum(s["patients"] for s in data["segments"])
    for dimension in data["dimensions"]:
        name = dimension["id"]
        needs = Counter(profile.dimension(name).need for profile, _, _ in assessed)
        assert dimension["needs"] == {level: needs[level] for level in dimension["needs"]}
        with_finding = sum(
            any(f.status == "present" and not f.stale for f in p.dimension(name).findings)
            for p, _, _ in assessed
        )
        assert dimension["patients"] == with_finding
    assert [d["id"] for d in data["dimensions"]] == list(DIMENSIONS)
    gaps = Counter(gap.id for profile, _, _ in assessed for gap in profile.data_gaps)
    assert {g["id"]: g["patients"] for g in data["data_gaps"] if g["patients"]} == dict(gaps)


def test_feature_levels_match_the_profiles(
    data: dict[str, Any], living: Assessed, definitions: Definitions
) -> None:
    expected = expected_features(living, definitions)
    assert any(expected.values()), "the fixtures should have current findings"
    for feature in data["features"]:
        levels = expected[feature["id"]]
        assert feature["levels"] == {level: levels[level] for level in feature["levels"]}
        assert feature["patients"] == sum(levels.values())


def test_plan_counts_match_the_plans(data: dict[str, Any], living: Assessed) -> None:
    assessed = living
    plans = [plan for _, _, plan in assessed if plan is not None]
    shapes = Counter(plan_shape(plan) for plan in plans)
    modules = Counter(module.id for plan in plans for module in plan.modules)
    variants = Counter(v for plan in plans for v in applied_variants(plan))
    summary = data["plans"]
    assert summary["with_plan"] == len(plans)
    assert summary["without_plan"] == len(assessed) - len(plans)
    assert summary["distinct"] == len(shapes)
    assert summary["used_once"] == sum(1 for n in shapes.values() if n == 1)
    sizes = sorted(shapes.values(), reverse=True)[: len(summary["largest"])]
    assert [group["patients"] for group in summary["largest"]] == sizes
    assert {m["id"]: m["patients"] for m in data["modules"] if m["patients"]} == dict(modules)
    assert {v["id"]: v["patients"] for v in data["variants"] if v["patients"]} == dict(variants)


def test_json_has_the_documented_keys(data: dict[str, Any], definitions: Definitions) -> None:
    assert set(data) == {
        "as_of",
        "catalog",
        "patients",
        "deceased",
        "living",
        "unreadable_resources",
        "segments",
        "dimensions",
        "features",
        "data_gaps",
        "plans",
        "modules",
        "variants",
    }
    assert data["as_of"] == AS_OF.isoformat()
    assert data["catalog"]["version"] == definitions.catalog.info.version
    assert set(data["plans"]) == {"with_plan", "without_plan", "distinct", "used_once", "largest"}
    assert set(data["dimensions"][0]) == {"id", "label", "patients", "share", "needs"}
    assert set(data["features"][0]) == {"id", "label", "dimension", "patients", "share", "levels"}
    for row in data["segments"]:
        assert row["share"] == round(row["patients"] / data["living"], 4)


# -- the HTML page ---------------------------------------------------------------------------


def largest_first(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The order of the page's plots and tables: most patients first, ties as defined."""
    return sorted(rows, key=lambda row: -row["patients"])


def test_html_tables_carry_the_same_numbers_as_the_json(page: str, data: dict[str, Any]) -> None:
    tables = Tree(page).tables
    segments = tables["Patients per segment"]
    assert [(row[0], int(row[1])) for row in segments] == [
        (s["label"], s["patients"]) for s in largest_first(data["segments"])
    ]
    needs = tables["Need level per dimension (share of patients)"]
    for row, dimension in zip(needs, largest_first(data["dimensions"]), strict=True):
        assert row[0] == dimension["label"]
        assert count_of(row[1]) == dimension["patients"]
        assert [count_of(cell) for cell in row[2:]] == list(dimension["needs"].values())
    for dimension in data["dimensions"]:
        rows = tables[f"{dimension['label']}: patients with a current finding, by need level"]
        features = largest_first([f for f in data["features"] if f["dimension"] == dimension["id"]])
        assert [(row[0], count_of(row[1])) for row in rows] == [
            (f["label"], f["patients"]) for f in features
        ]
        assert [count_of(cell) for row in rows for cell in row[2:]] == [
            f["levels"][level] for f in features for level in ("low", "moderate", "high", "none")
        ]
    for caption, rows in (
        ("Patients per data gap", data["data_gaps"]),
        ("Largest groups of patients sharing one plan", data["plans"]["largest"]),
        ("Patients per care module", data["modules"]),
        ("Patients per variant", data["variants"]),
    ):
        assert [int(row[1]) for row in tables[caption]] == [
            r["patients"] for r in largest_first(rows)
        ]
    assert f"{data['catalog']['id']} {data['catalog']['version']}" in page
    assert data["as_of"] in page


def test_plot_labels_are_whole_and_start_inside_the_plot(page: str, data: dict[str, Any]) -> None:
    shown = [text for plot in plots(page) for text, _ in plot.texts]
    labels = [
        *(
            row["label"]
            for key in ("segments", "dimensions", "features", "data_gaps", "variants")
            for row in data[key]
        ),
        *(module["title"] for module in data["modules"]),
    ]
    assert any(len(label) > 60 for label in labels), "a label long enough to need wrapping"
    assert [label for label in labels if label not in shown] == []
    assert "…" not in page
    assert min(x for plot in plots(page) for _, x in plot.texts) >= 0


def test_plan_groups_are_named_by_their_modules(page: str, data: dict[str, Any]) -> None:
    titles = {m["id"]: m["title"] for m in data["modules"]}
    largest = data["plans"]["largest"]
    assert largest and any(group["variants"] for group in largest)
    named = ["; ".join(titles[m] for m in group["modules"]) for group in largest]
    counted = [
        f" ({len(g['variants'])} variant{'s' if len(g['variants']) > 1 else ''})"
        if g["variants"]
        else ""
        for g in largest
    ]
    title = "Largest groups of patients sharing one plan"
    (plot,) = [plot for plot in plots(page) if plot.title == title]
    expected = [name + suffix for name, suffix in zip(named, counted, strict=True)]
    assert [text for text, _ in plot.texts if text in expected] == expected
    assert not any(text.startswith("Plan ") for text, _ in plot.texts)
    assert [row[0] for row in Tree(page).tables[title]] == named


def test_bars_are_largest_first_in_plot_and_table(page: str, data: dict[str, Any]) -> None:
    defined = [s["patients"] for s in data["segments"]]
    assert defined != sorted(defined, reverse=True), "the definitions' order is not the sizes'"
    tables = Tree(page).tables
    for plot in plots(page):
        rows = tables[plot.title]
        counts = [count_of(row[1]) for row in rows]
        assert counts == sorted(counts, reverse=True), plot.title
        headers = [row[0] for row in rows]
        names = [text for text, _ in plot.texts if text in headers]
        if plot.title != "Largest groups of patients sharing one plan":  # named with variants
            assert names == headers, plot.title


def test_every_share_is_drawn_on_one_scale_from_0_to_100(page: str) -> None:
    shares = [p for p in plots(page) if "Share of patients (%)" in (t for t, _ in p.texts)]
    assert len(shares) == 1 + len(DIMENSIONS)  # needs by dimension, then features per dimension
    for plot in shares:
        ticks = [text for text, _ in plot.texts if text.isdigit()]
        assert ticks == ["0", "20", "40", "60", "80", "100"], plot.title


def test_html_is_self_contained_and_has_a_titled_svg_then_a_table_per_plot(page: str) -> None:
    tree = Tree(page)
    assert tree.tags[0] == ("html", {"lang": "en"})
    for tag, attrs in tree.tags:
        for name in ("src", "href", "xlink:href", "action"):
            value = attrs.get(name) or ""
            assert not re.match(r"\s*(https?:)?//", value), (tag, name, value)
        assert tag not in ("script", "link", "img", "iframe", "object")
    assert "@import" not in page and not re.search(r"url\(\s*['\"]?(https?:)?//", page)
    svgs = [attrs for tag, attrs in tree.tags if tag == "svg"]
    figures = tree.order.count("figure")
    assert len(svgs) == figures >= 8
    for attrs in svgs:
        assert attrs["role"] == "img" and attrs["aria-labelledby"]
    titles = {attrs.get("id") for tag, attrs in tree.tags if tag == "title"}
    assert {attrs["aria-labelledby"] for attrs in svgs} <= titles
    # every plot is followed by its table
    assert "".join(tree.order).count("figuretable") == figures
    ids = [attrs["id"] for _, attrs in tree.tags if attrs.get("id")]
    assert len(ids) == len(set(ids)), "ids must be unique across the inline plots"


def test_html_names_no_patient(page: str, records: list[PatientRecord]) -> None:
    assert "Patient/" not in page
    for record in records:
        assert not re.search(rf"\b{re.escape(record.patient_id)}\b", page)
        for name in record.patient.get("name", []):
            assert name["family"] not in page
        assert record.patient.get("birthDate", "not a date") not in page


def test_html_escapes_definition_text(assessed: Assessed, definitions: Definitions) -> None:
    first = definitions.segments[0]
    hostile = dataclasses.replace(
        definitions,
        segments=(first.model_copy(update={"label": '<script>alert("x")</script> & co'}),),
    )
    summary = PopulationSummary.over(hostile.segments)
    for result in assessed[:3]:
        summary.add(*result)
    page = render_html(report_data(summary, hostile, AS_OF))
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co" in page


def test_an_empty_population_renders(definitions: Definitions) -> None:
    data = report_data(PopulationSummary.over(definitions.segments), definitions, AS_OF)
    assert data["patients"] == 0 and data["plans"]["largest"] == []
    page = render_html(data)
    assert "No patient received a plan." in page
    assert Tree(page).tables["Patients per segment"][0][1:] == ["0", "0.0%"]


# -- the command -----------------------------------------------------------------------------

AS_OF_ARGS = ["--as-of", AS_OF.isoformat()]


def test_report_command_writes_the_html_file(tmp_path: Path) -> None:
    out = tmp_path / "population.html"
    result = CliRunner().invoke(main, [*AS_OF_ARGS, "report", "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.count("<svg") >= 8


def test_report_command_json_equals_the_document(data: dict[str, Any]) -> None:
    result = CliRunner().invoke(main, [*AS_OF_ARGS, "report", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == data


def test_report_command_over_ndjson_input(tmp_path: Path) -> None:
    source = bundled_path("fixtures") / "ndjson"
    out = tmp_path / "report.json"
    args = [*AS_OF_ARGS, "report", "--input", str(source), "--format", "json", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["patients"] > 0


def test_html_needs_an_output_file() -> None:
    result = CliRunner().invoke(main, [*AS_OF_ARGS, "report"])
    assert result.exit_code == 2
    assert "--out" in result.output


def test_html_without_matplotlib_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    find_spec = importlib.util.find_spec

    def without_matplotlib(name: str, *args: Any) -> Any:
        return None if name == "matplotlib" else find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_matplotlib)
    out = tmp_path / "r.html"
    result = CliRunner().invoke(main, [*AS_OF_ARGS, "report", "--out", str(out)])
    assert result.exit_code == 3
    assert "fhir-tailor[report]" in result.output
    assert not out.exists()
