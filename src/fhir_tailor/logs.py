"""Log setup for the command line: readable text (the default) or one JSON object per line.

A JSON line holds ``time``, ``level``, ``logger`` and ``message``, plus every field the code
passes in ``extra=`` (``patient``, ``counts``, ``duration_seconds``, ...), so a log shipper can
index runs without parsing messages. Neither format adds data the code did not log, and the
code logs resource ids and counts only, never names, birth dates or credentials.

Only the ``fhir_tailor`` loggers get a handler: third-party libraries stay silent (httpx logs
every request URL, query string included, at INFO), whatever the level chosen.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Literal, TextIO

import click

LogFormat = Literal["text", "json"]
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

#: The attributes every ``LogRecord`` has; anything else on a record came from ``extra=``.
_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
_TEXT = "%(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with the record's ``extra`` fields at the top level."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            # The type only: a traceback's frames and message may quote the data at hand.
            entry["exception"] = record.exc_info[0].__name__
        return json.dumps(entry, default=str, ensure_ascii=False)


class _Handler(logging.StreamHandler[TextIO]):
    """Our handler, told apart from handlers others (pytest, an embedding app) installed."""


#: The format :func:`configure` chose last, which :func:`notice` follows too.
_format: LogFormat = "text"
#: ``--quiet``: :func:`notice` prints errors only.
_quiet = False


def configure(
    level: str, log_format: LogFormat, stream: TextIO | None = None, *, quiet: bool = False
) -> None:
    """Send ``fhir_tailor`` logs at ``level`` and above to ``stream`` (stderr) in a format;
    ``quiet`` keeps the operator's lines (:func:`notice`) to errors.

    Calling it again replaces the handler it installed before (each command line run in one
    process, as tests do, writes to the stderr of its own run).
    """
    logger = logging.getLogger("fhir_tailor")
    for handler in [h for h in logger.handlers if isinstance(h, _Handler)]:
        logger.removeHandler(handler)
    handler = _Handler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(_TEXT))
    logger.addHandler(handler)
    logger.setLevel(level)
    global _format, _quiet
    _format, _quiet = log_format, quiet


def notice(message: str, *, error: bool = False) -> None:
    """A line for the operator on stderr (a run summary, a fatal error), whatever the level;
    with ``--quiet`` only an ``error`` (the run could not do what was asked) is printed, so a
    scheduled job's mail holds nothing but what needs a human.

    With JSON logs it is a JSON object like the log lines, so stderr stays one object per line.
    """
    if _quiet and not error:
        return
    if _format == "json":
        fields = {"name": "fhir_tailor.cli", "levelname": "NOTICE", "msg": message}
        message = JsonFormatter().format(logging.makeLogRecord(fields))
    click.echo(message, err=True)
