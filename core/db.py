"""Database engine and sessions. PostgreSQL is the source of truth for every request and event."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

from sqlalchemy import text
from sqlalchemy.engine import Connection, CursorResult, Engine, Result
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, create_engine

from core.settings import get_settings

log = logging.getLogger("patchpilot.db")

_ENGINES: dict[str, Engine] = {}


def _engine_for(url: str) -> Engine:
    if url not in _ENGINES:
        _ENGINES[url] = _create(url)
    return _ENGINES[url]


def _create(url: str) -> Engine:
    return create_engine(
        url,
        pool_pre_ping=True,  # a PostgreSQL restart must not leave dead connections in the pool
        pool_size=10,
        max_overflow=20,
        pool_timeout=5,
        connect_args={"connect_timeout": 5},
    )


def rows_changed(result: Result[Any]) -> int:
    """How many rows an UPDATE or DELETE changed (`Session.execute` types its result as a plain `Result`)."""
    return cast(CursorResult[Any], result).rowcount


def get_engine() -> Engine:
    return _engine_for(get_settings().require_database_url())


def reset_engines() -> None:
    """Drop pooled connections (tests switch databases; forked workers must not share sockets)."""
    for engine in _ENGINES.values():
        engine.dispose()
    _ENGINES.clear()


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session that commits on success and rolls back on error (worker code and scripts)."""
    with Session(get_engine(), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def lock_key(namespace: str, request_id: str) -> int:
    """A stable signed 64-bit key for pg advisory locks."""
    digest = hashlib.blake2b(f"{namespace}:{request_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@contextmanager
def advisory_lock(namespace: str, request_id: str) -> Iterator[bool]:
    """A session-level PostgreSQL advisory lock on its own connection. Yields whether it was acquired.

    Held across slow calls (an AWX launch); if the process dies, PostgreSQL drops the connection and the lock
    with it, so a crashed launcher never blocks recovery. The lock is lost silently with its connection (a
    restart, a failover, PgBouncer in transaction mode, idle_session_timeout): it keeps live workers from
    racing, it never fences anything (the launch fence is a token in the request row, worker.execution).
    """
    key = lock_key(namespace, request_id)
    conn: Connection = get_engine().connect()
    try:
        acquired = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
        conn.commit()
        try:
            yield acquired
        finally:
            if acquired:
                try:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    conn.commit()
                except DBAPIError as exc:
                    # The connection was lost meanwhile (a restart, a failover, an idle timeout): PostgreSQL
                    # dropped the lock with it. Nothing to undo; callers never rely on the lock alone.
                    log.warning("advisory lock %s:%s was lost with its connection (%s)", namespace, request_id,
                                exc.__class__.__name__)
    finally:
        try:
            conn.close()
        except DBAPIError:
            pass


def ping() -> bool:
    try:
        with get_engine().connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False
