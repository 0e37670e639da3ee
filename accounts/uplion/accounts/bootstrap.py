"""The first admin: created straight in PostgreSQL by whoever holds the database credential, with
an admin-scoped API token (a credential for the admin API and the `uplion` CLI, refused at the
inference edge) printed once. Running it again for the same email adds a new token."""

from __future__ import annotations

import argparse
import asyncio
import json
import os

import asyncpg

from uplion.v1 import admin_pb2

from . import tokens, users
from .rules import SCOPE_ADMIN, Limits

BOOTSTRAP_ACTOR = "bootstrap"


async def bootstrap(dsn: str, email: str, token_name: str) -> dict[str, str]:
    from .__main__ import apply_migrations

    conn = await asyncpg.connect(dsn)
    try:
        await apply_migrations(conn)
        row = await users.by_email(conn, email)
        if row is None:
            req = admin_pb2.CreateUserRequest(email=email, display_name="admin", role=admin_pb2.ROLE_ADMIN)
            row = await users.create(conn, BOOTSTRAP_ACTOR, req, None)
        elif row["role"] != admin_pb2.ROLE_ADMIN:
            raise SystemExit(f"{email} exists and is not an admin")
        token, secret = await tokens.create(conn, BOOTSTRAP_ACTOR, row["user_id"], token_name, Limits(), SCOPE_ADMIN)
    finally:
        await conn.close()
    return {"user_id": row["user_id"], "token_id": token["token_id"], "secret": secret}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="uplion-accounts bootstrap-admin", description=__doc__)
    parser.add_argument("email")
    parser.add_argument("--token-name", default="admin")
    args = parser.parse_args(argv)
    dsn = os.environ.get("UPLION_DATABASE_URL")
    if not dsn:
        parser.error("UPLION_DATABASE_URL is required")
    print(json.dumps(asyncio.run(bootstrap(dsn, args.email, args.token_name))))
    return 0
