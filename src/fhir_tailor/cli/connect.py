"""Clients for the servers the options name: the FHIR server (``--server``) and the
terminology server (``--terminology``), with the auth their options ask for."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

import click
import httpx

from ..auth import auth_from_settings
from ..client import FhirClient
from ..errors import FhirServerError, FhirTailorError, InvalidResponseError
from ..retry import RetryPolicy
from ..smart import smart_auth_from_settings
from ..terminology.expand import ExpansionCache, ServerExpander, default_cache_dir
from .exits import fail
from .options import TERMINOLOGY_SCOPE


def connect(stack: ExitStack, params: dict[str, Any]) -> FhirClient:
    """A client for ``--server``, checked to be a reachable FHIR R4 server."""
    retry = RetryPolicy(total_budget=params["retry_budget"])
    client = FhirClient(
        params["server"],
        auth=auth(params, params["server"], timeout=params["timeout"]),
        timeout=params["timeout"],
        retry=retry,
        max_connections=params["concurrency"],
        show_server_diagnostics=params["show_server_diagnostics"],
    )
    stack.enter_context(client)
    try:
        client.capabilities()
    except FhirTailorError as exc:
        fail(f"cannot use server: {_not_fhir(exc, client.base_url) or exc}")
    return client


def _not_fhir(exc: FhirTailorError, base_url: str) -> str | None:
    """What to say when ``base_url``/metadata answered, but not as a FHIR server does: a web
    page, or a 4xx without an OperationOutcome. The usual cause is a URL that is not the FHIR
    base (a site's home page, a path missing its ``/fhir``), so the message says to check it
    instead of quoting the page's HTML. ``None`` for other failures, told as they are."""
    if isinstance(exc, InvalidResponseError):
        what = str(exc)
    elif isinstance(exc, FhirServerError) and 400 <= exc.status < 500 and not exc.issues:
        if exc.status in (401, 403, 407):  # credentials, not the URL
            return None
        what = f"HTTP {exc.status} from {exc.method} {exc.url_path}, which is not a FHIR answer"
    else:
        return None
    return (
        f"{what}; check that {base_url} is the server's FHIR base URL "
        f"({base_url}/metadata answers with its CapabilityStatement)"
    )


def auth(
    params: dict[str, Any],
    server: str,
    *,
    prefix: str = "",
    timeout: float = 30.0,
    default_scope: str | None = None,
) -> httpx.Auth | None:
    """The auth the options of :func:`.options.auth_options` (with ``prefix``) ask for, or
    ``None``."""
    key = prefix.replace("-", "_")
    try:
        basic_or_token = auth_from_settings(
            params[f"{key}token"], params[f"{key}username"], params[f"{key}password"]
        )
        smart = smart_auth_from_settings(
            server,
            params[f"{key}client_id"],
            private_key=params[f"{key}private_key"],
            kid=params[f"{key}kid"],
            client_secret=params[f"{key}client_secret"],
            token_url=params[f"{key}token_url"],
            scope=params[f"{key}scope"] or default_scope,
            timeout=timeout,
        )
    except ValueError as exc:
        label = f"{prefix.removesuffix('-')} server: " if prefix else ""
        raise click.UsageError(f"{label}{exc}") from exc
    except FhirTailorError as exc:
        fail(str(exc))
    if smart is not None:
        if basic_or_token is not None:
            raise click.UsageError(
                f"--{prefix}client-id cannot be combined with --{prefix}token or --{prefix}username"
            )
        return smart
    return basic_or_token


def expander(params: dict[str, Any]) -> ServerExpander | None:
    """What expands value sets for ``load_definitions``: ``--terminology``, through the cache;
    ``None`` without it. Nothing is requested here: the server is asked only for a value set
    that is neither shipped expanded nor cached."""
    server = params["terminology"]
    if not server:
        return None
    server_auth = auth(params, server, prefix="terminology-", default_scope=TERMINOLOGY_SCOPE)
    cache = ExpansionCache(params["terminology_cache"] or default_cache_dir())
    return ServerExpander(server, cache, auth=server_auth)
