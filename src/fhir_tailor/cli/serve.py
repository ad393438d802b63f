"""``fhir-tailor serve``: the SMART on FHIR app where a clinician reviews and approves a plan."""

from __future__ import annotations

from typing import Any

import click

from ..errors import FhirTailorError
from ..logs import notice
from .exits import fail
from .group import command, pass_settings
from .options import requester_option
from .settings import Settings


@command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, type=int, show_default=True, help="Port to listen on.")
@click.option("--client-id", required=True, envvar="FHIR_TAILOR_CLIENT_ID", help="OAuth client id.")
@click.option(
    "--client-secret",
    envvar="FHIR_TAILOR_CLIENT_SECRET",
    help="Secret of a confidential client (env var preferred). Default: a public client.",
)
@click.option("--fhir-server", help="FHIR base URL for standalone launches (also trusted as iss).")
@click.option(
    "--allow-iss",
    multiple=True,
    help="Another FHIR server an EHR launch may name (repeatable). Default: --fhir-server only.",
)
@click.option("--public-url", help="URL browsers reach the app at. Default: http://HOST:PORT.")
@click.option(
    "--scope-syntax",
    type=click.Choice(["v1", "v2"]),
    default="v1",
    show_default=True,
    help="SMART scope syntax: v1 (patient/*.read) or v2 (patient/*.rs).",
)
@requester_option
@pass_settings
def serve(
    settings: Settings,
    /,
    host: str,
    port: int,
    client_id: str,
    client_secret: str | None,
    fhir_server: str | None,
    allow_iss: tuple[str, ...],
    public_url: str | None,
    scope_syntax: Any,
    requester: str | None,
) -> None:
    """Serve the SMART on FHIR app: review a patient's plan, drop activities, approve it."""
    try:
        import uvicorn

        from ..web.app import AppConfig, create_app
    except ImportError:
        fail("the app needs the serve extra: pip install 'fhir-tailor[serve]'")
    config = AppConfig(
        client_id=client_id,
        definitions=settings.definitions,
        public_url=public_url or f"http://{host}:{port}",
        fhir_server=fhir_server,
        client_secret=client_secret,
        scope_syntax=scope_syntax,
        allowed_issuers=frozenset(allow_iss),
        as_of=settings.as_of if settings.as_of_given else None,
        requester=requester,
    )
    if not config.issuers:
        notice("warning: no --fhir-server or --allow-iss: any FHIR server may launch this app")
    try:
        app = create_app(config)
    except FhirTailorError as exc:
        fail(str(exc))
    uvicorn.run(app, host=host, port=port, log_level="warning")
