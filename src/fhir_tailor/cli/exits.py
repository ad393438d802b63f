"""Exit codes of the ``fhir-tailor`` command and the way a command stops when it cannot start.

0 every patient succeeded; 1 at least one patient failed (see the report); 2 usage error
(click's own); 3 the run could not start (bad definitions, server unreachable or not R4);
4 the run stopped part-way (reading the patient list failed after some patients were done;
--state resumes it); 5 every patient done, but some plans were made from records lacking a
resource type the server gives no way to read (named per patient in the report).
"""

from __future__ import annotations

import sys
from typing import NoReturn

from ..logs import notice

#: Some patients (sync) or definitions (catalog publish) failed; the rest were written.
EXIT_PARTIAL_FAILURE = 1
EXIT_CANNOT_START = 3
#: The run stopped part-way: the patient list failed after some patients were done, or standard
#: output was closed (``sync --out - | head``).
EXIT_STOPPED = 4
#: Every patient done, but some records lack a type the server cannot give (a QuestionnaireResponse
#: can carry an urgent finding): not a failure, since no retry could read more, yet not a plain
#: success either, so a scheduled job can tell.
EXIT_INCOMPLETE = 5


def fail(message: str) -> NoReturn:
    """Say why the command cannot start, and exit with :data:`EXIT_CANNOT_START`."""
    notice(f"error: {message}", error=True)
    sys.exit(EXIT_CANNOT_START)
