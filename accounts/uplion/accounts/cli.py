"""`uplion`: the admin API from a shell, for operators and the quick start.

    uplion users create alice@example.com --token laptop     # a user and an API key in one step
    uplion tokens list <user_id> | uplion tokens disable <token_id>
    uplion tokens create <user_id> --name ci --scope admin   # a token for the admin API, not for inference
    uplion models list | uplion models apply models/echo.yaml | uplion models events echo
    uplion models set-price echo --prompt 100 --completion 200
    uplion quota topup --user <user_id> --credits 5000000
    uplion usage --by model,day
    uplion login me@example.com | uplion logout [--everywhere]

Settings: UPLION_ACCOUNTS (host:port of the accounts service, default 127.0.0.1:50061) and
UPLION_ADMIN_TOKEN: a session token from `uplion login` or an admin-scoped API token (such as the
one `python -m uplion.accounts bootstrap-admin` prints); inference API keys are refused by the
admin API. Output is a table (or `key  value` lines); `uplion --json ...` prints the API's JSON."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from uplion.v1 import admin_pb2, admin_pb2_grpc, aimodel_pb2

from .tables import render

ROLES: dict[str, admin_pb2.Role.ValueType] = {"admin": admin_pb2.ROLE_ADMIN, "member": admin_pb2.ROLE_MEMBER}
SCOPES: dict[str, admin_pb2.TokenScope.ValueType] = {
    "inference": admin_pb2.TOKEN_SCOPE_INFERENCE,
    "admin": admin_pb2.TOKEN_SCOPE_ADMIN,
}
GROUPS = {
    "user": admin_pb2.USAGE_GROUP_BY_USER,
    "token": admin_pb2.USAGE_GROUP_BY_TOKEN,
    "model": admin_pb2.USAGE_GROUP_BY_MODEL,
    "day": admin_pb2.USAGE_GROUP_BY_DAY,
}


class Client:
    """The admin API with one credential; every call returns the response message."""

    def __init__(self, target: str, credential: str) -> None:
        self.target = target
        self.channel = grpc.insecure_channel(target)
        self.stub = admin_pb2_grpc.AdminServiceStub(self.channel)
        self.metadata = [("authorization", f"Bearer {credential}")] if credential else []

    def call(self, method: str, request: Message) -> Any:
        return getattr(self.stub, method)(request, metadata=self.metadata, timeout=30)

    def create_user_with_token(
        self,
        email: str,
        role: admin_pb2.Role.ValueType = admin_pb2.ROLE_MEMBER,
        token_name: str = "default",  # noqa: S107 (a key's name, not a secret)
        **user: Any,
    ) -> tuple[admin_pb2.User, admin_pb2.CreateTokenResponse]:
        created = self.call("CreateUser", admin_pb2.CreateUserRequest(email=email, role=role, **user))
        token = self.call("CreateToken", admin_pb2.CreateTokenRequest(user_id=created.user_id, name=token_name))
        return created, token

    def set_price(self, model: str, prompt_per_1k: int, completion_per_1k: int) -> None:
        """The model's price in micro-credits per 1,000 tokens, in force since the epoch."""
        price = admin_pb2.SetModelPriceRequest(
            model=model, prompt_micro_credits_per_1k=prompt_per_1k, completion_micro_credits_per_1k=completion_per_1k
        )
        price.effective_from.FromSeconds(0)
        self.call("SetModelPrice", price)


def _show(msg: Message) -> dict[str, Any]:
    return MessageToDict(msg, preserving_proto_field_name=True)


def _quota(credits: int | None, tokens: int | None) -> admin_pb2.Quota:
    q = admin_pb2.Quota()
    if credits is not None:
        q.limit_micro_credits = credits
    if tokens is not None:
        q.limit_tokens = tokens
    return q


def _expiry(days: float | None) -> Timestamp | None:
    if days is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(datetime.now(UTC) + timedelta(days=days))
    return ts


def _day(text: str) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(datetime.fromisoformat(text).replace(tzinfo=UTC))
    return ts


def _users(c: Client, a: argparse.Namespace) -> Any:
    if a.action == "create":
        password = getpass.getpass("password: ") if a.password == "-" else (a.password or "")  # noqa: S105 (no password: none)
        fields: dict[str, Any] = {"display_name": a.name or "", "password": password, "tier": a.tier or "",
                                  "quota": _quota(a.credits, a.tokens)}  # fmt: skip
        if a.token:
            user, token = c.create_user_with_token(a.email, ROLES[a.role], a.token, **fields)
            return {"user": _show(user), "token": _show(token.token), "secret": token.secret}
        return c.call("CreateUser", admin_pb2.CreateUserRequest(email=a.email, role=ROLES[a.role], **fields))
    if a.action == "list":
        return c.call("ListUsers", admin_pb2.ListUsersRequest(page_size=a.limit))
    if a.action == "get":
        return c.call("GetUser", admin_pb2.GetUserRequest(user_id=a.id))
    if a.action in ("disable", "enable"):
        return c.call("UpdateUser", admin_pb2.UpdateUserRequest(user_id=a.id, disabled=a.action == "disable"))
    if a.action == "set-password":
        req = admin_pb2.UpdateUserRequest(user_id=a.id, password=getpass.getpass("new password: "))
        current = getpass.getpass("current password (empty when an admin resets another user's): ")
        if current:
            req.current_password = current
        return c.call("UpdateUser", req)
    return c.call("DeleteUser", admin_pb2.DeleteUserRequest(user_id=a.id))


def _tokens(c: Client, a: argparse.Namespace) -> Any:
    if a.action == "create":
        req = admin_pb2.CreateTokenRequest(user_id=a.id, name=a.name, allowed_models=a.models or [],
                                           expires_at=_expiry(a.expires_in_days), scope=SCOPES[a.scope])  # fmt: skip
        if a.credits is not None:
            req.quota_limit_micro_credits = a.credits
        if a.tokens is not None:
            req.quota_limit_tokens = a.tokens
        return c.call("CreateToken", req)
    if a.action == "list":
        return c.call("ListTokens", admin_pb2.ListTokensRequest(user_id=a.id))
    if a.action in ("disable", "enable"):
        return c.call("UpdateToken", admin_pb2.UpdateTokenRequest(token_id=a.id, disabled=a.action == "disable"))
    if a.action == "roll":
        return c.call("RollToken", admin_pb2.RollTokenRequest(token_id=a.id))
    return c.call("DeleteToken", admin_pb2.DeleteTokenRequest(token_id=a.id))


def _manifest(path: str) -> tuple[str, aimodel_pb2.AIModelSpec]:
    """An AIModel manifest file (as `kubectl apply -f` takes it): its name and spec."""
    import yaml
    from google.protobuf.json_format import ParseDict

    from uplion.core.aimodels import manifest_problems

    with open(path) as f:
        doc = yaml.safe_load(f)
    problems = manifest_problems(doc)
    if problems:
        raise SystemExit(f"{path}: " + "; ".join(problems))
    return doc["metadata"]["name"], ParseDict(doc["spec"], aimodel_pb2.AIModelSpec())


def _models(c: Client, a: argparse.Namespace) -> Any:
    if a.action == "list":
        return c.call("ListAIModels", aimodel_pb2.ListAIModelsRequest(page_size=a.limit))
    if a.action == "get":
        return c.call("GetAIModel", aimodel_pb2.GetAIModelRequest(name=a.name))
    if a.action == "events":
        return c.call("ListAIModelEvents", aimodel_pb2.ListAIModelEventsRequest(name=a.name))
    if a.action == "delete":
        return c.call("DeleteAIModel", aimodel_pb2.DeleteAIModelRequest(name=a.name))
    if a.action == "apply":
        name, spec = _manifest(a.file)
        try:
            return c.call("UpdateAIModel", aimodel_pb2.UpdateAIModelRequest(name=name, spec=spec))
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.NOT_FOUND:
                raise
        return c.call(
            "CreateAIModel", aimodel_pb2.CreateAIModelRequest(model=aimodel_pb2.AIModel(name=name, spec=spec))
        )
    if a.action == "set-price":
        req = admin_pb2.SetModelPriceRequest(model=a.model, prompt_micro_credits_per_1k=a.prompt,
                                             completion_micro_credits_per_1k=a.completion)  # fmt: skip
        return c.call("SetModelPrice", req)
    return c.call("ListModelPrices", admin_pb2.ListModelPricesRequest(model=a.model or ""))


def _quota_cmd(c: Client, a: argparse.Namespace) -> Any:
    req = admin_pb2.TopUpQuotaRequest(micro_credits=a.credits, tokens=a.tokens, idempotency_key=a.key or "")
    if a.user:
        req.user_id = a.user
    else:
        req.token_id = a.token
    return c.call("TopUpQuota", req)


def _usage(c: Client, a: argparse.Namespace) -> Any:
    req = admin_pb2.QueryUsageRequest(group_by=[GROUPS[g] for g in a.by.split(",") if g] if a.by else [])
    for field in ("user_id", "token_id", "model"):
        value = getattr(a, field)
        if value:
            setattr(req, field, value)
    if a.since:
        req.start.CopyFrom(_day(a.since))
    if a.until:
        req.end.CopyFrom(_day(a.until))
    return c.call("QueryUsage", req)


def _login(c: Client, a: argparse.Namespace) -> Any:
    return c.call("Login", admin_pb2.LoginRequest(email=a.email, password=getpass.getpass("password: ")))


def _logout(c: Client, a: argparse.Namespace) -> Any:
    return c.call("Logout", admin_pb2.LogoutRequest(everywhere=a.everywhere))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="uplion", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--json", action="store_true", help="print the API's JSON instead of tables")
    sub = p.add_subparsers(dest="group", required=True)

    u = sub.add_parser("users", help="create, list, disable users").add_subparsers(dest="action", required=True)
    create = u.add_parser("create")
    create.add_argument("email")
    create.add_argument("--role", choices=list(ROLES), default="member")
    create.add_argument("--name")
    create.add_argument("--password", help="'-' to be asked")
    create.add_argument("--tier")
    create.add_argument("--credits", type=int, help="quota limit in micro-credits")
    create.add_argument("--tokens", type=int, help="quota limit in tokens")
    create.add_argument("--token", metavar="NAME", help="also create an API key with this name; prints its secret")
    u.add_parser("list").add_argument("--limit", type=int, default=100)
    for action in ("get", "disable", "enable", "delete"):
        u.add_parser(action).add_argument("id")
    u.add_parser("set-password", help="asks for the new and the current password").add_argument("id")

    t = sub.add_parser("tokens", help="API keys").add_subparsers(dest="action", required=True)
    tc = t.add_parser("create")
    tc.add_argument("id", metavar="user_id")
    tc.add_argument("--name", required=True)
    tc.add_argument("--models", type=lambda s: [m for m in s.split(",") if m], help="allow-list, comma-separated")
    tc.add_argument("--expires-in-days", type=float)
    tc.add_argument("--credits", type=int)
    tc.add_argument("--tokens", type=int)
    tc.add_argument("--scope", choices=list(SCOPES), default="inference",
                    help="inference: an API key for /v1; admin: a credential for the admin API only")  # fmt: skip
    t.add_parser("list").add_argument("id", metavar="user_id", nargs="?", default="")
    for action in ("disable", "enable", "roll", "delete"):
        t.add_parser(action).add_argument("id", metavar="token_id")

    m = sub.add_parser("models", help="AIModels and prices").add_subparsers(dest="action", required=True)
    m.add_parser("list", help="AIModels with status, replicas and backlog").add_argument(
        "--limit", type=int, default=100
    )
    for action in ("get", "events", "delete"):
        m.add_parser(action).add_argument("name", help="the AIModel's name")
    m.add_parser("apply", help="create or replace an AIModel from its manifest file").add_argument("file")
    sp = m.add_parser("set-price")
    sp.add_argument("model")
    sp.add_argument("--prompt", type=int, required=True, help="micro-credits per 1k prompt tokens")
    sp.add_argument("--completion", type=int, required=True, help="micro-credits per 1k completion tokens")
    m.add_parser("prices").add_argument("model", nargs="?")

    q = sub.add_parser("quota", help="top-ups").add_subparsers(dest="action", required=True)
    top = q.add_parser("topup")
    who = top.add_mutually_exclusive_group(required=True)
    who.add_argument("--user")
    who.add_argument("--token")
    top.add_argument("--credits", type=int, default=0)
    top.add_argument("--tokens", type=int, default=0)
    top.add_argument("--key", help="idempotency key: a retried top-up applies once")

    us = sub.add_parser("usage", help="usage per user, token, model, day")
    us.add_argument("--user", dest="user_id")
    us.add_argument("--token", dest="token_id")
    us.add_argument("--model")
    us.add_argument("--by", help="comma-separated: user,token,model,day")
    us.add_argument("--since", help="YYYY-MM-DD (UTC)")
    us.add_argument("--until", help="YYYY-MM-DD (UTC), exclusive")

    sub.add_parser("audit", help="the audit log").add_argument("--limit", type=int, default=100)
    sub.add_parser("login", help="print a session token").add_argument("email")
    sub.add_parser("logout", help="end the session in UPLION_ADMIN_TOKEN").add_argument(
        "--everywhere", action="store_true", help="end every session of the user"
    )
    return p


COMMANDS: dict[str, Callable[[Client, argparse.Namespace], Any]] = {
    "users": _users, "tokens": _tokens, "models": _models, "quota": _quota_cmd, "usage": _usage, "login": _login,
    "logout": _logout,
    "audit": lambda c, a: c.call("ListAuditLog", admin_pb2.ListAuditLogRequest(page_size=a.limit)),
}  # fmt: skip


def error_text(e: grpc.RpcError) -> str:
    """The OpenAI-style error JSON the service attached, else the bare gRPC status."""
    call: Any = e
    for key, value in call.trailing_metadata() or ():
        if key == "x-uplion-error":
            return str(value)
    return json.dumps({"error": {"message": call.details(), "code": call.code().name}})


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    client = Client(os.environ.get("UPLION_ACCOUNTS", "127.0.0.1:50061"), os.environ.get("UPLION_ADMIN_TOKEN", ""))
    try:
        result = COMMANDS[args.group](client, args)
    except grpc.RpcError as e:
        print(error_text(e), file=sys.stderr)
        return 1
    shown = result if isinstance(result, dict) else _show(result)
    print(json.dumps(shown, indent=2) if args.json else render(shown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
