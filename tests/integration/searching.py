"""Reading what the integration tests' server holds."""

from __future__ import annotations

from typing import Any

import httpx


def search_all(http: httpx.Client, url: str) -> list[dict[str, Any]]:
    """Every resource a search finds, following ``next`` links (outcome entries left out)."""
    resources: list[dict[str, Any]] = []
    next_url: str | None = url
    while next_url:
        bundle = http.get(next_url).raise_for_status().json()
        resources += [
            e["resource"]
            for e in bundle.get("entry", [])
            if e.get("search", {}).get("mode") != "outcome"
        ]
        next_url = next(
            (link["url"] for link in bundle.get("link", []) if link["relation"] == "next"), None
        )
    return resources
