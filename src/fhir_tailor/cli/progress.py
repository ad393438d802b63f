"""Progress of a run over patients, on stderr."""

from __future__ import annotations

import sys
import time

import click


class Progress:
    """A patient counter on stderr, shown only when stderr is a terminal."""

    def __init__(self) -> None:
        self.count = 0
        self.shown = sys.stderr.isatty()
        self.started = time.monotonic()

    def __call__(self) -> None:
        self.count += 1
        if self.shown:
            rate = self.count / max(time.monotonic() - self.started, 1e-9)
            click.echo(f"\r{self.count} patients ({rate:.0f}/s)", err=True, nl=False)

    def done(self) -> None:
        if self.shown and self.count:
            click.echo("", err=True)
