"""The app's HTML, rendered on the server with every value escaped.

No template engine and no JavaScript chart library: the page is a few functions joining
escaped strings, and the needs chart is inline SVG, so the page works without scripts, loads
nothing from elsewhere, and a screen reader gets the same facts as text. Every finding and
reason links to the resource it came from on the FHIR server.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from html import escape

from ..fhirdata import Resource
from ..mapping import DIMENSIONS, Dimension
from ..plan import EvidenceRef, Plan, PlannedActivity, PlannedGoal, Variation
from ..profile_model import NEED_RANK, Finding, Profile
from ..resources import unread_text
from ..segments import SegmentMatch
from ..urgent import UrgentFinding

_REFERENCE = re.compile(r"[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}")
_BAR_WIDTH = 240
_ROW_HEIGHT = 34


@dataclass(frozen=True, slots=True)
class PageView:
    """Everything the plan page shows; built per request, never cached in the browser."""

    patient: Resource
    profile: Profile
    dimension_labels: Mapping[Dimension, str]
    segments: list[SegmentMatch]
    plan: Plan | None
    fhir_base: str
    csrf: str
    unreadable: int = 0
    notice: str | None = None
    #: Who is signed in, as a sentence (the app words it); shown above the patient banner.
    clinician: str | None = None


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def document(title: str, body: str) -> str:
    """A complete HTML page: language, viewport, the local stylesheet, a skip link."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)} · fhir-tailor</title>"
        '<link rel="stylesheet" href="/static/app.css"></head><body>'
        '<a class="skip" href="#main">Skip to content</a>'
        f'<main id="main">{body}</main></body></html>'
    )


def message_page(title: str, message: str, link: tuple[str, str] | None = None) -> str:
    """A short page for the start screen and for errors: a heading, a sentence, a link."""
    action = f'<p><a href="{_e(link[0])}">{_e(link[1])}</a></p>' if link else ""
    return document(title, f"<h1>{_e(title)}</h1><p>{_e(message)}</p>{action}")


def plan_page(view: PageView) -> str:
    """The patient's banner, needs chart, findings, segments and the plan to approve; for a
    patient the record says has died, the banner and that no plan is proposed, nothing to
    approve."""
    parts = [
        f'<p class="signed-in">{_e(view.clinician)}</p>' if view.clinician else "",
        _banner(view.patient, view.profile.facts.deceased),
        '<h1 id="title">Personalized care plan proposal</h1>',
    ]
    if view.profile.facts.deceased:
        parts.append(
            '<section aria-labelledby="deceased"><h2 id="deceased">Recorded as deceased</h2>'
            "<p>This patient's record says the patient has died (Patient.deceased). No care "
            "plan is proposed, and there is nothing to approve. A draft plan fhir-tailor wrote "
            "earlier is withdrawn by the next sync; an approved plan is left for its clinicians "
            "to close.</p></section>"
        )
        return document("Care plan proposal", "".join(parts))
    if view.plan is not None and view.plan.urgent:  # first: what cannot wait for the review
        parts.append(_urgent(view.plan.urgent, view.fhir_base))
    if view.notice:
        parts.append(f'<p class="notice" role="status">{_e(view.notice)}</p>')
    if view.unreadable:
        parts.append(
            f'<p class="warning">{view.unreadable} resource(s) could not be used and are '
            "left out of this profile.</p>"
        )
    if view.plan is not None and view.plan.unread_types:
        parts.append(f'<p class="warning">{_e(unread_text(view.plan.unread_types))}</p>')
    parts += [
        _needs_chart(view.profile, view.dimension_labels),
        _findings(view.profile, view.dimension_labels, view.fhir_base),
        _segments(view.segments),
        _plan(view.plan, view.fhir_base, view.csrf)
        if view.plan is not None
        else "<section><h2>Proposed plan</h2><p>No care module applies to this patient."
        "</p></section>",
    ]
    return document("Care plan proposal", "".join(parts))


# -- urgent findings ----------------------------------------------------------------------------


def _urgent(findings: tuple[UrgentFinding, ...], base: str) -> str:
    """The urgent findings, most pressing first: priority, what to do, why and from which
    resources, and the guideline followed."""
    items = "".join(
        f'<li><strong class="priority-{_e(f.priority)}">{_e(f.priority.upper())}</strong> '
        f"<strong>{_e(f.label)}</strong>. {_e(f.request)} "
        f"<small>{_e(f.reason)} Source: {_e(f.source)}.</small> {_sources(f.sources, base)}</li>"
        for f in findings
    )
    return (
        '<section class="urgent" aria-labelledby="urgent"><h2 id="urgent">Urgent findings</h2>'
        "<p>Each is a request (a Task) of its own, for a clinician to act on now, whatever is "
        f"decided about the plan below.</p><ul>{items}</ul></section>"
    )


# -- patient banner -----------------------------------------------------------------------------


def _banner(patient: Resource, deceased: bool = False) -> str:
    facts = [
        ("Born", patient.get("birthDate")),
        ("Gender", patient.get("gender")),
        ("Id", patient.get("id")),
        ("Status", "deceased" if deceased else None),
    ]
    items = "".join(
        f"<div><dt>{_e(label)}</dt><dd>{_e(value)}</dd></div>"
        for label, value in facts
        if isinstance(value, str) and value
    )
    return (
        '<header class="banner" aria-label="Patient">'
        f'<p class="patient-name">{_e(patient_name(patient))}</p><dl>{items}</dl></header>'
    )


def patient_name(patient: Resource) -> str:
    """The first usable name: its text, or given names and family; ``Unnamed patient`` else."""
    for name in patient.get("name") or ():
        if not isinstance(name, dict):
            continue
        if isinstance(name.get("text"), str) and name["text"].strip():
            return str(name["text"])
        given = [g for g in name.get("given") or () if isinstance(g, str)]
        family = name["family"] if isinstance(name.get("family"), str) else ""
        full = " ".join([*given, family]).strip()
        if full:
            return full
    return "Unnamed patient"


# -- needs chart and findings -------------------------------------------------------------------


def _needs_chart(profile: Profile, labels: Mapping[Dimension, str]) -> str:
    top = max(NEED_RANK.values())
    rows = []
    for row, name in enumerate(DIMENSIONS):
        need = profile.dimension(name).need
        y = row * _ROW_HEIGHT
        width = round(_BAR_WIDTH * NEED_RANK[need] / top)
        rows.append(
            f'<g transform="translate(0 {y})">'
            f'<text x="0" y="21" class="axis">{_e(labels.get(name, name))}</text>'
            f'<rect x="190" y="6" width="{_BAR_WIDTH}" height="20" class="track"/>'
            f'<rect x="190" y="6" width="{width}" height="20" class="bar need-{need}"/>'
            f'<text x="{190 + _BAR_WIDTH + 8}" y="21" class="level">{_e(need)}</text></g>'
        )
    height = _ROW_HEIGHT * len(DIMENSIONS)
    summary = "; ".join(
        f"{labels.get(name, name)}: {profile.dimension(name).need}" for name in DIMENSIONS
    )
    return (
        '<section aria-labelledby="needs"><h2 id="needs">Need by dimension</h2>'
        f'<svg class="chart" viewBox="0 0 {190 + _BAR_WIDTH + 90} {height}" role="img" '
        'aria-labelledby="chart-title chart-desc" width="100%">'
        '<title id="chart-title">Need level per dimension (none, low, moderate, high)</title>'
        f'<desc id="chart-desc">{_e(summary)}</desc>{"".join(rows)}</svg></section>'
    )


def _findings(profile: Profile, labels: Mapping[Dimension, str], base: str) -> str:
    sections = ['<section aria-labelledby="findings"><h2 id="findings">Findings</h2>']
    for name in DIMENSIONS:
        sections.append(_dimension(name, profile, labels, base))
    if profile.data_gaps:
        gaps = "".join(f"<li>{_e(gap.label)}</li>" for gap in profile.data_gaps)
        sections.append(f"<h3>Missing screenings</h3><ul>{gaps}</ul>")
    sections.append("</section>")
    return "".join(sections)


def _dimension(
    name: Dimension, profile: Profile, labels: Mapping[Dimension, str], base: str
) -> str:
    dimension = profile.dimension(name)
    heading = f"<h3>{_e(labels.get(name, name))} <small>(need: {_e(dimension.need)})</small></h3>"
    if not dimension.findings:
        return heading + "<p>No findings.</p>"
    rows = "".join(_finding_row(finding, base) for finding in dimension.findings)
    return (
        f'{heading}<table class="findings"><thead><tr><th scope="col">Finding</th>'
        '<th scope="col">Date</th><th scope="col">Source</th></tr></thead>'
        f"<tbody>{rows}</tbody></table>"
    )


def _finding_row(finding: Finding, base: str) -> str:
    """One finding as what was found (its statement), not as a label beside a status: "HbA1c
    below 7%" next to "absent" reads as a double negative."""
    stale = " <small>(out of date, not counted)</small>" if finding.stale else ""
    when = finding.effective.isoformat() if finding.effective else ""
    return (
        f'<tr class="finding status-{_e(finding.status)}">'
        f'<th scope="row">{_e(finding.statement)}{stale}</th><td>{_e(when)}</td>'
        f"<td>{_sources(finding.sources, base)}</td></tr>"
    )


def _sources(sources: Iterable[str], base: str) -> str:
    """Links to the source resources on the FHIR server; odd references shown as plain text."""
    links = [
        f'<a href="{_e(base)}/{_e(ref)}">{_e(ref)}</a>' if _REFERENCE.fullmatch(ref) else _e(ref)
        for ref in sources
    ]
    return ", ".join(links)


def _segments(segments: list[SegmentMatch]) -> str:
    items = "".join(f"<li>{_e(match.label)}</li>" for match in segments) or "<li>None</li>"
    heading = '<h2 id="segments">Segments</h2>'
    return f'<section aria-labelledby="segments">{heading}<ul>{items}</ul></section>'


# -- the plan -----------------------------------------------------------------------------------


def _plan(plan: Plan, base: str, csrf: str) -> str:
    modules = "".join(
        f"<li><strong>{_e(m.title)}</strong> <small>{_e(m.id)} {_e(m.version)}</small>"
        f"{_evidence(m.evidence, base)}</li>"
        for m in plan.modules
    )
    goals = "".join(_goal(goal, base) for goal in plan.goals) or "<li>None</li>"
    activities = "".join(
        _activity(i, a, base) for i, a in enumerate(plan.activities) if not a.withheld
    )
    withheld = _withheld(plan, base)
    referrals = (
        f"<p>Approved referrals become active orders requested by {_e(plan.requester)}.</p>"
        if plan.requester
        else "<p>Approved referrals become active orders without a requester (this app is "
        "run without --requester).</p>"
    )
    if not any(a.is_referral for a in plan.activities):
        referrals = ""
    return (
        '<section aria-labelledby="plan"><h2 id="plan">Proposed plan</h2>'
        f"<h3>Modules</h3><ul>{modules}</ul><h3>Goals</h3><ul>{goals}</ul>"
        '<form method="post" action="/approve">'
        f'<input type="hidden" name="csrf" value="{_e(csrf)}">'
        f'<input type="hidden" name="plan" value="{_e(plan.fingerprint())}">{referrals}'
        "<fieldset><legend><h3>Activities</h3>Check an activity to leave it out of the "
        f'approved plan.</legend><ul class="activities">{activities}</ul></fieldset>'
        f"{withheld}"
        '<button type="submit">Approve plan</button></form></section>'
    )


def _withheld(plan: Plan, base: str) -> str:
    """What a variant withheld, with its reason: kept in the approved plan as "do not" steps
    and notes, so it has no checkbox."""
    items = [
        f'<li class="withheld">Goal not set: {_e(g.description)}'
        f"{_variations(g.variations, base)}</li>"
        for g in plan.withheld_goals
    ]
    items += [
        f'<li class="withheld">Do not: {_e(a.description)} <small>({_e(a.kind)})</small>'
        f"{_variations(a.variations, base)}</li>"
        for a in plan.activities
        if a.withheld
    ]
    if not items:
        return ""
    return (
        "<h3>Withheld</h3><p>Left out as unsafe or wrong for this patient; the approved plan "
        'keeps them marked "do not", with the reason.</p>'
        f'<ul class="withheld">{"".join(items)}</ul>'
    )


def _goal(goal: PlannedGoal, base: str) -> str:
    target = goal.target
    if target.value is not None:
        wanted = f"{target.comparator or ''}{target.value:g} {target.unit or ''}".strip()
    elif target.answer is not None:
        wanted = f"{target.answer.display or target.answer.code} ({target.answer.code})"
    else:
        wanted = target.text or ""
    due = f" by {goal.due_date.isoformat()}" if goal.due_date else ""
    return (
        f"<li>{_e(goal.description)} <small>(target {_e(wanted)}{due})</small>"
        f"{_variations(goal.variations, base)}</li>"
    )


def _activity(index: int, activity: PlannedActivity, base: str) -> str:
    box = f"drop-{index}"
    origin = f"module {activity.module}" if activity.module else "added by a variation"
    reasons = _evidence(activity.reasons, base) if activity.module else ""
    guard = (
        ' <strong class="contact-prohibited">Referral marked: do not contact the patient; '
        "the care team arranges contact.</strong>"
        if activity.contact_prohibited
        else ""
    )
    return (
        f'<li class="activity"><input type="checkbox" id="{box}" name="drop" '
        f'value="{_e(activity.key)}"> <label for="{box}">Drop: {_e(activity.description)}'
        f"</label> <small>({_e(activity.kind)}, {_e(origin)})</small>{guard}"
        f"{reasons}{_variations(activity.variations, base)}</li>"
    )


def _variations(variations: tuple[Variation, ...], base: str) -> str:
    if not variations:
        return ""
    items = "".join(
        f'<li class="variation">Adapted: <strong>{_e(v.label)}</strong>. Reason: '
        f"{_e(v.reason)}{_evidence(v.evidence, base)}</li>"
        for v in variations
    )
    return f"<ul>{items}</ul>"


def _evidence(evidence: tuple[EvidenceRef, ...], base: str) -> str:
    if not evidence:
        return ""
    items = "".join(
        f"<li>{_e(ref.label)}"
        + (f" ({_sources(ref.sources, base)})" if ref.sources else "")
        + "</li>"
        for ref in evidence
    )
    return f'<ul class="evidence">{items}</ul>'
