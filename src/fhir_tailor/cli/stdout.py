"""Standard output whose reader may go away: ``fhir-tailor sync --out - | head``.

Writing to a closed pipe raises ``BrokenPipeError``; caught as any other error, it would fail
each patient in turn, printing one error per patient. :func:`echo` turns it into
:class:`OutputClosed`, which ends the run instead.
"""

from __future__ import annotations

import io
import os
import sys

import click


class OutputClosed(BaseException):
    """Standard output's reader has gone. A ``BaseException``, as ``KeyboardInterrupt`` is, so
    the pipeline's per-patient guard, which makes every ``Exception`` that patient's failure,
    lets it through: it is no patient's fault, and nothing more can be shown."""


def echo(message: str) -> None:
    """``click.echo`` to standard output; :class:`OutputClosed` once its reader has gone."""
    try:
        click.echo(message)
    except BrokenPipeError:
        _silence()
        raise OutputClosed from None


def _silence() -> None:
    """Point standard output at the null device: what is still buffered is dropped there, not
    flushed into the closed pipe again when Python exits (another BrokenPipeError, printed as
    "Exception ignored")."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, io.UnsupportedOperation):  # not a file (a test's capture)
        return
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, fd)
    os.close(null)
