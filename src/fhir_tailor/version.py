"""The package version, in a module of its own: the client's User-Agent and the Provenance's
agent name it, and importing it from the package itself would make every such module part of an
import cycle through ``fhir_tailor/__init__.py``. Keep it equal to ``project.version`` in
``pyproject.toml``."""

__version__ = "0.1.0"
