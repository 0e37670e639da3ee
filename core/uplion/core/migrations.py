"""Versioned schema migrations: numbered SQL files applied once each, in order, under a lock."""

from __future__ import annotations

import re
from importlib import resources
from importlib.resources.abc import Traversable

import asyncpg
from asyncpg.pool import PoolConnectionProxy

# a plain connection or one borrowed from a pool
Conn = asyncpg.Connection | PoolConnectionProxy

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def pending(files: list[str], applied: set[int]) -> list[tuple[int, str]]:
    """(version, file) of the migrations not yet applied, in version order (a pure decision)."""
    out = []
    for name in files:
        m = _NAME.match(name)
        if m is None:
            raise ValueError(f"migration file {name!r} must be named NNNN_description.sql")
        version = int(m.group(1))
        if version not in applied:
            out.append((version, name))
    versions = [v for v, _ in out]
    if len(set(versions)) != len(versions):
        raise ValueError("two migration files share a version number")
    return sorted(out)


async def migrate(conn: Conn, package: str, component: str) -> list[int]:
    """Apply `package`'s migrations/NNNN_*.sql not yet recorded for `component`; returns the versions
    applied. An advisory lock makes concurrent starters wait instead of racing."""
    folder: Traversable = resources.files(package).joinpath("migrations")
    files = sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql"))
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('uplion-migrations'))")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (component text, version int,"
            " applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (component, version))"
        )
        rows = await conn.fetch("SELECT version FROM schema_migrations WHERE component = $1", component)
        todo = pending(files, {r["version"] for r in rows})
        for version, name in todo:
            await conn.execute(folder.joinpath(name).read_text())
            await conn.execute("INSERT INTO schema_migrations (component, version) VALUES ($1, $2)", component, version)
    return [v for v, _ in todo]
