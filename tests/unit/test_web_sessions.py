"""Server-side sessions: unguessable ids, expiry after idle time, rotation at sign-in."""

from __future__ import annotations

from fhir_tailor.web.sessions import SessionStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_session_expires_after_ttl_without_use() -> None:
    clock = Clock()
    store = SessionStore(ttl=60, clock=clock)
    session = store.create()
    clock.now += 59
    assert store.get(session.id) is session  # use pushes expiry back
    clock.now += 59
    assert store.get(session.id) is session
    clock.now += 61
    assert store.get(session.id) is None


def test_rotation_gives_new_id_and_csrf_and_forgets_the_old_id() -> None:
    store = SessionStore()
    session = store.create()
    old_id, old_csrf = session.id, session.csrf
    session.grant = "kept"
    store.rotate(session)
    assert store.get(old_id) is None
    assert store.get(session.id) is session and session.grant == "kept"
    assert session.csrf != old_csrf and len(session.id) >= 43


def test_unknown_or_missing_ids_have_no_session() -> None:
    store = SessionStore()
    store.create()
    assert store.get(None) is None
    assert store.get("guess") is None
    assert "grant" not in repr(store.create())
