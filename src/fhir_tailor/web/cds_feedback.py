"""What clinicians did with the cards: the Feedback endpoint of CDS Hooks 2.0 ("Feedback").

A CDS client POSTs ``{"feedback": [...]}`` to ``/cds-services/{id}/feedback`` when a user
accepts a card's suggestion or overrides (dismisses) a card. Each item names the card by its
``uuid``, the outcome (``accepted`` or ``overridden``), the accepted suggestions' uuids, an
optional override reason (a Coding, with an optional free-text ``userComment``) and when.

What is kept: the ids and the outcome, the reason's ``system`` and ``code``, the time, the
client's ``iss`` and what kind of card it was (:class:`IssuedCards`, when this process issued
it). Never kept: the ``userComment`` and the reason's ``display``, free text a clinician or
client wrote, which may name the patient. Kept where: one structured log line per item
(``extra`` fields, so a JSON log indexes them), a counter per outcome for the process' life and,
when configured, one JSON line per item appended to a file. The specification asks for no store
(a service "MAY support a feedback endpoint"); the file is for whoever reviews how cards fare.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter, OrderedDict
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

log = logging.getLogger("fhir_tailor.web.cds_feedback")

#: How many issued cards :class:`IssuedCards` remembers (the oldest are forgotten first).
REMEMBERED_CARDS = 10_000
#: Ids as clients send them (uuids in practice); anything else is refused, not logged.
_ID = r"^[A-Za-z0-9._:\-]{1,128}$"
#: A FHIR ``code`` (R4 datatypes: no leading, trailing or double whitespace), short.
_CODE = r"^[^\s]+( [^\s]+)*$"
_URI = r"^\S{1,256}$"


class _Open(BaseModel):
    """Later versions may add fields: tolerated, and not kept."""

    model_config = ConfigDict(extra="ignore")


class _Coding(_Open):
    system: str | None = Field(default=None, pattern=_URI)
    code: str | None = Field(default=None, max_length=128, pattern=_CODE)


class _OverrideReason(_Open):
    reason: _Coding | None = None
    userComment: str | None = None  # read to be accepted, never kept


class _AcceptedSuggestion(_Open):
    id: str = Field(pattern=_ID)


class _Item(_Open):
    card: str = Field(pattern=_ID)
    outcome: Literal["accepted", "overridden"]
    acceptedSuggestions: list[_AcceptedSuggestion] | None = Field(default=None, max_length=50)
    overrideReason: _OverrideReason | None = None
    outcomeTimestamp: AwareDatetime


class _Feedback(_Open):
    feedback: list[_Item] = Field(min_length=1, max_length=100)


class FeedbackError(ValueError):
    """A feedback body that does not follow the specification; the message names the field."""


@dataclass(frozen=True, slots=True)
class IssuedCard:
    """What the service said in a card it issued: its kind and its suggestions' uuids."""

    kind: str
    suggestions: tuple[str, ...]


class IssuedCards:
    """The cards this process issued, by uuid, so feedback can say what kind of card it was.

    Bounded (:data:`REMEMBERED_CARDS`, oldest forgotten): feedback on a forgotten card, or on one
    another process issued, is still recorded, as of an unknown kind.
    """

    def __init__(self, limit: int = REMEMBERED_CARDS) -> None:
        self._cards: OrderedDict[str, IssuedCard] = OrderedDict()
        self._limit = limit
        self._lock = threading.Lock()

    def add(self, uuid: str, card: IssuedCard) -> None:
        with self._lock:
            self._cards[uuid] = card
            self._cards.move_to_end(uuid)
            while len(self._cards) > self._limit:
                self._cards.popitem(last=False)

    def get(self, uuid: str) -> IssuedCard | None:
        with self._lock:
            return self._cards.get(uuid)


@dataclass(frozen=True, slots=True)
class FeedbackRecord:
    """One item of feedback as kept: ids, outcome, reason code, times; no free text."""

    service: str
    card: str
    outcome: str
    accepted_suggestions: tuple[str, ...]
    override_reason: str | None
    outcome_timestamp: str
    received: str
    client: str | None
    card_kind: str | None
    unknown_suggestions: tuple[str, ...] = ()


def parse_feedback(body: object) -> list[_Item]:
    """The items of a feedback body; a :class:`FeedbackError` names the field at fault."""
    try:
        items = _Feedback.model_validate(body).feedback
    except ValidationError as exc:
        problems = "; ".join(
            f"field {'.'.join(str(p) for p in error['loc']) or 'body'}: {error['msg']}"
            for error in exc.errors(include_input=False, include_url=False)
        )
        raise FeedbackError(f"invalid feedback: {problems}") from None
    for n, item in enumerate(items):
        if item.outcome == "accepted" and not item.acceptedSuggestions:
            raise FeedbackError(
                f"invalid feedback: field feedback.{n}.acceptedSuggestions: "
                "required for an accepted outcome"
            )
    return items


class FeedbackLog:
    """Records feedback (see the module docstring); ``path``, when set, gets JSON lines."""

    def __init__(self, path: Path | None = None, issued: IssuedCards | None = None) -> None:
        self.path = path
        self.issued = issued if issued is not None else IssuedCards()
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def records(self, service: str, items: list[_Item], client: str | None) -> list[FeedbackRecord]:
        """The items as kept, each with what is known of its card."""
        received = datetime.now(UTC).isoformat(timespec="seconds")
        kept = []
        for item in items:
            issued = self.issued.get(item.card)
            accepted = tuple(s.id for s in item.acceptedSuggestions or ())
            reason = item.overrideReason.reason if item.overrideReason else None
            code = f"{reason.system or ''}|{reason.code}" if reason and reason.code else None
            kept.append(
                FeedbackRecord(
                    service=service,
                    card=item.card,
                    outcome=item.outcome,
                    accepted_suggestions=accepted,
                    override_reason=code,
                    outcome_timestamp=item.outcomeTimestamp.astimezone(UTC).isoformat(),
                    received=received,
                    client=client,
                    card_kind=issued.kind if issued else None,
                    unknown_suggestions=tuple(
                        s for s in accepted if issued and s not in issued.suggestions
                    ),
                )
            )
        return kept

    def record(self, records: list[FeedbackRecord]) -> None:
        """Log, count and (with a path) append each record; blocking: call it in a thread."""
        with self._lock:
            for record in records:
                self.counts[record.outcome] += 1
                log.info(
                    "feedback: card %s %s (%s card)%s",
                    record.card,
                    record.outcome,
                    record.card_kind or "unknown",
                    f", reason {record.override_reason}" if record.override_reason else "",
                    extra={"feedback": asdict(record), "feedback_counts": dict(self.counts)},
                )
            if self.path is not None:
                with self.path.open("a", encoding="utf-8") as out:
                    for record in records:
                        out.write(json.dumps(asdict(record), ensure_ascii=False) + "\n")
