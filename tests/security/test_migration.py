"""Migration 0002 on a database made before it: the bootstrap admin's token keeps working as the
admin API's credential (now admin-scoped), other keys stay inference keys, an earlier disable counts
as an admin's, and the sessions table starts empty (a session token issued before it names no
session, so it stops working: tests/unit/test_authz_decisions.py)."""

from __future__ import annotations

from importlib import resources

import asyncpg

from tests.edge.conftest import _new_database
from uplion.accounts.__main__ import apply_migrations
from uplion.core.credentials import new_secret, secret_hash
from uplion.core.migrations import migrate
from uplion.devstack.postgres import Postgres


async def test_migration_scopes_existing_tokens(postgres: Postgres) -> None:
    conn = await asyncpg.connect(await _new_database(postgres, "migration_0002"))
    try:
        # the schema as it was: billing's migrations and accounts' 0001 only
        await migrate(conn, "uplion.billing", "billing")
        first = resources.files("uplion.accounts").joinpath("migrations", "0001_accounts.sql").read_text()
        await conn.execute(first)
        await conn.execute("INSERT INTO schema_migrations (component, version) VALUES ('accounts', 1)")
        await conn.execute("INSERT INTO users (user_id, email, role) VALUES ('u_a', 'a@x', 1), ('u_m', 'm@x', 2)")
        for token_id, user_id, disabled in (("tok_boot", "u_a", False), ("tok_key", "u_m", False),
                                            ("tok_off", "u_m", True)):  # fmt: skip
            await conn.execute(
                "INSERT INTO api_tokens (token_id, user_id, name, prefix, secret_hash, disabled)"
                " VALUES ($1, $2, 'n', 'upl-x', $3, $4)",
                token_id, user_id, secret_hash(new_secret()), disabled,
            )  # fmt: skip
        await conn.execute(
            "INSERT INTO audit_log (actor_user_id, action, target) VALUES ('bootstrap', 'token.create', 'tok_boot'),"
            " ('u_a', 'token.create', 'tok_key'), ('u_m', 'token.create', 'tok_off')"
        )
        await apply_migrations(conn)
        rows = {r["token_id"]: (r["scope"], r["disabled_by"]) for r in await conn.fetch("SELECT * FROM api_tokens")}
        assert rows == {
            "tok_boot": ("admin", None),
            "tok_key": ("inference", None),
            "tok_off": ("inference", "admin"),
        }
        assert await conn.fetchval("SELECT count(*) FROM sessions") == 0
    finally:
        await conn.close()
