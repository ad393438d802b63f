"""``fhir-tailor serve``: the SMART on FHIR app where a clinician reviews and approves a plan.

It serves HTTPS itself (``--tls-cert``/``--tls-key``) or sits behind a TLS proxy
(``--public-url https://...``): the public URL's scheme decides whether the session cookie is
fit for an EHR's iframe. It refuses to start without the EHRs it trusts (``--fhir-server``,
``--allow-iss``) unless told to accept any (``--allow-any-iss``).
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import FhirTailorError
from ..logs import notice
from .exits import fail
from .group import command, pass_settings
from .options import base_url, base_urls, requester_option
from .settings import Settings

if TYPE_CHECKING:
    from ..web.cds_hooks import CdsSettings


@command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, type=int, show_default=True, help="Port to listen on.")
@click.option("--client-id", required=True, envvar="FHIR_TAILOR_CLIENT_ID", help="OAuth client id.")
@click.option(
    "--client-secret",
    envvar="FHIR_TAILOR_CLIENT_SECRET",
    help="Secret of a confidential client (env var preferred). Default: a public client.",
)
@click.option(
    "--fhir-server",
    callback=base_url,
    help="FHIR base URL for standalone launches (also trusted as iss).",
)
@click.option(
    "--allow-iss",
    multiple=True,
    callback=base_urls,
    help="Another FHIR server an EHR launch may name (repeatable). Default: --fhir-server only.",
)
@click.option(
    "--allow-any-iss",
    is_flag=True,
    help="Accept a launch from any FHIR server (local development only): without it, "
    "--fhir-server or --allow-iss is required.",
)
@click.option(
    "--frame-ancestor",
    multiple=True,
    metavar="ORIGIN",
    help="An EHR origin whose pages may embed the app in an iframe (repeatable). "
    "Default: the origins of --fhir-server and --allow-iss.",
)
@click.option(
    "--public-url",
    help="URL browsers reach the app at, https:// behind a TLS proxy. "
    "Default: http://HOST:PORT, or https://HOST:PORT with --tls-cert.",
)
@click.option(
    "--tls-cert",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Serve HTTPS with this PEM certificate (chain); needs --tls-key.",
)
@click.option(
    "--tls-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The PEM private key of --tls-cert.",
)
@click.option(
    "--scope-syntax",
    type=click.Choice(["v1", "v2"]),
    default="v1",
    show_default=True,
    help="SMART scope syntax: v1 (patient/*.read) or v2 (patient/*.rs).",
)
@click.option(
    "--cds-client",
    "cds_clients",
    multiple=True,
    metavar="ISS=JWKS",
    envvar="FHIR_TAILOR_CDS_CLIENTS",
    help="A CDS client the CDS Hooks service answers: its JWT iss and its JWK Set, an https "
    "URL or a file (repeatable; the env var separates them with spaces). Without one, every "
    "CDS call is refused.",
)
@click.option(
    "--cds-insecure-no-client-auth",
    is_flag=True,
    help="Answer CDS calls without a client JWT: for local development only.",
)
@click.option(
    "--cds-cors-origin",
    multiple=True,
    metavar="ORIGIN",
    help="A browser origin allowed to call the CDS Hooks service (repeatable). Default: any.",
)
@click.option(
    "--cds-feedback-file",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Append each CDS card feedback (ids and outcomes) to this file as a JSON line.",
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
    allow_any_iss: bool,
    frame_ancestor: tuple[str, ...],
    public_url: str | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    scope_syntax: Any,
    requester: str | None,
    cds_clients: tuple[str, ...],
    cds_insecure_no_client_auth: bool,
    cds_cors_origin: tuple[str, ...],
    cds_feedback_file: Path | None,
) -> None:
    """Serve the SMART on FHIR app: review a patient's plan, drop activities, approve it."""
    try:
        import uvicorn

        from ..web.app import AppConfig, ConfigError, create_app
    except ImportError:
        fail("the app needs the serve extra: pip install 'fhir-tailor[serve]'")
    if allow_any_iss and allow_iss:
        raise click.UsageError("--allow-any-iss accepts any FHIR server: give no --allow-iss")
    if not (fhir_server or allow_iss or allow_any_iss):
        raise click.UsageError(
            "name the EHRs' FHIR servers that may launch the app (--fhir-server, --allow-iss, "
            "repeatable), or accept any with --allow-any-iss (local development only)"
        )
    _check_tls(tls_cert, tls_key)
    scheme = "https" if tls_cert else "http"
    config = AppConfig(
        client_id=client_id,
        definitions=settings.definitions,
        public_url=public_url or f"{scheme}://{host}:{port}",
        fhir_server=fhir_server,
        client_secret=client_secret,
        scope_syntax=scope_syntax,
        allowed_issuers=frozenset(allow_iss),
        as_of=settings.as_of if settings.as_of_given else None,
        requester=requester,
        allow_any_issuer=allow_any_iss,
        frame_ancestors=frozenset(frame_ancestor),
        cds=_cds_settings(
            cds_clients, cds_insecure_no_client_auth, cds_cors_origin, cds_feedback_file
        ),
    )
    if allow_any_iss:
        notice("warning: --allow-any-iss: any FHIR server may launch this app")
    try:
        app = create_app(config)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    except FhirTailorError as exc:
        fail(str(exc))
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning",
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
    )


def _cds_settings(
    clients: tuple[str, ...], insecure: bool, origins: tuple[str, ...], feedback: Path | None
) -> CdsSettings:
    """The CDS Hooks options, checked; whom the service answers said at start."""
    from ..web.cds_auth import ConfigError as CdsConfigError
    from ..web.cds_auth import TrustedClient
    from ..web.cds_cors import ANY_ORIGIN
    from ..web.cds_hooks import CdsSettings
    from ..web.launch import LaunchError, origin

    if insecure and clients:
        raise click.UsageError("--cds-insecure-no-client-auth answers anyone: give no --cds-client")
    try:
        trusted = tuple(TrustedClient.parse(setting) for setting in clients)
        allowed = tuple(o if o == "*" else origin(o, "CORS origin") for o in origins)
    except (CdsConfigError, LaunchError) as exc:
        raise click.BadParameter(str(exc), param_hint="--cds-client/--cds-cors-origin") from None
    if insecure:
        notice(
            "WARNING: --cds-insecure-no-client-auth: the CDS Hooks service answers ANY caller, "
            "unauthenticated. For local development only; never where patient data is real."
        )
    elif not trusted:
        notice("CDS Hooks: no --cds-client: every CDS call is refused (discovery answers)")
    return CdsSettings(trusted, insecure, allowed or ANY_ORIGIN, feedback)


def _check_tls(cert: Path | None, key: Path | None) -> None:
    """Both or neither of ``--tls-cert`` and ``--tls-key``, and a pair TLS can serve: checked
    here, so a bad file is a usage error naming it instead of a traceback from the server."""
    if (cert is None) != (key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    if cert is None or key is None:
        return
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (ssl.SSLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or type(exc).__name__
        raise click.BadParameter(
            f"{cert} and {key} are not a PEM certificate and its private key ({reason})",
            param_hint="--tls-cert/--tls-key",
        ) from None
