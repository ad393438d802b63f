"""What the group's options settle for every command: the definitions and the as-of date."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from ..definitions import Definitions


@dataclass(frozen=True, slots=True)
class Settings:
    definitions: Definitions
    as_of: date
