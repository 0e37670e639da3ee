"""A fresh database on the session's PostgreSQL, for a suite that wants its own schema and rows."""

from __future__ import annotations

import asyncio

import asyncpg

from uplion.devstack.postgres import Postgres


def new_database(postgres: Postgres, name: str) -> str:
    """CREATE DATABASE `name`; its DSN."""

    async def create() -> None:
        conn = await asyncpg.connect(postgres.dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    return postgres.dsn.rsplit("/", 1)[0] + f"/{name}"
