"""What the shared options settle for every command: the definitions, the as-of date (and
whether it was given), and whether the operator asked for quiet."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from ..definitions import Definitions


@dataclass(frozen=True, slots=True)
class Settings:
    definitions: Definitions
    as_of: date
    #: ``--as-of`` was given: a long-running command (serve) pins it instead of using each day.
    as_of_given: bool = False
    #: ``--quiet``: errors only on stderr, no progress.
    quiet: bool = False
