"""The AdminService servicer: authenticate the caller, check what they may do, then change
PostgreSQL (with an audit entry) and publish the change to Redis for the edge."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.timestamp_pb2 import Timestamp

from uplion.core.aimodels import name_problem, spec_problems
from uplion.core.credentials import well_formed
from uplion.core.errors import ApiError, abort
from uplion.core.redis_client import AnyRedis
from uplion.v1 import admin_pb2, admin_pb2_grpc, aimodel_pb2

from . import audit, quotas, sessions, tokens, usage, users
from .aimodels import Backlog, ModelStore, StoreError, event_message, page, spec_to_dict, to_message
from .config import AccountsConfig
from .convert import from_ts
from .convert import token as token_msg
from .convert import user as user_msg
from .logins import LoginLimiter, Throttle, client_address
from .publisher import Publisher
from .rules import (
    SCOPES,
    Limits,
    Principal,
    Refusal,
    Refused,
    Via,
    disabled_by_after,
    may_act_on_user,
    may_change_role_or_quota,
    may_roll_token,
    may_update_token,
    mint_limits,
    password_change_refusal,
    scope_refusal,
)
from .security import hash_password, issue_session, read_session, verify_password

log = logging.getLogger("uplion.accounts")
Ctx = grpc.aio.ServicerContext[Any, Any]
T = TypeVar("T")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024  # argon2 hashes whatever it is given: bound the work a request can ask for
MAX_EMAIL = 320
MAX_MODELS = 100
MAX_MODEL_NAME = 200
STORE_CODES = {"not_found": grpc.StatusCode.NOT_FOUND, "exists": grpc.StatusCode.ALREADY_EXISTS,
               "invalid": grpc.StatusCode.INVALID_ARGUMENT}  # fmt: skip
ANONYMOUS = "anonymous"  # the audit actor of a login that names no known user


def _err(status: grpc.StatusCode, message: str, param: str | None = None, code: str | None = None) -> ApiError:
    kind = {
        grpc.StatusCode.UNAUTHENTICATED: "invalid_request_error",
        grpc.StatusCode.PERMISSION_DENIED: "invalid_request_error",
        grpc.StatusCode.RESOURCE_EXHAUSTED: "rate_limit_error",
    }.get(status, "invalid_request_error")
    return ApiError(status, message, kind, param, code)


def unauthenticated() -> ApiError:
    return _err(
        grpc.StatusCode.UNAUTHENTICATED,
        "The admin API needs a valid session token (POST /admin/v1/login) or an admin-scoped API token;"
        " sessions end on logout, at expiry and when the password changes.",
        None,
        "invalid_api_key",
    )


def refused(r: Refusal) -> ApiError:
    return _err(grpc.StatusCode.PERMISSION_DENIED, r.message, r.param, r.code)


def too_many_logins(t: Throttle) -> ApiError:
    what = "for this email from your address" if t.limit == "email_address" else "from your address"
    return _err(grpc.StatusCode.RESOURCE_EXHAUSTED, f"Too many login attempts {what}; try again in a minute.",
                None, "rate_limit_exceeded")  # fmt: skip


def forbidden(what: str) -> ApiError:
    return _err(grpc.StatusCode.PERMISSION_DENIED, f"Only an admin may {what}.", None, "permission_denied")


def not_found(what: str) -> ApiError:
    return _err(grpc.StatusCode.NOT_FOUND, f"{what} not found.", None, "not_found")


def invalid(message: str, param: str) -> ApiError:
    return _err(grpc.StatusCode.INVALID_ARGUMENT, message, param)


def metadata(context: Ctx) -> dict[str, str]:
    return {k.lower(): v for k, v in context.invocation_metadata() or () if isinstance(v, str)}


def _models(models: list[str]) -> None:
    if len(models) > MAX_MODELS:
        raise invalid(f"allowed_models may name at most {MAX_MODELS} models", "allowed_models")
    if any(not m.strip() or len(m) > MAX_MODEL_NAME for m in models):
        raise invalid(f"each of allowed_models must have 1 to {MAX_MODEL_NAME} characters", "allowed_models")


def bearer(context: Ctx) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str) and value.lower().startswith("bearer "):
            return value[7:].strip()
    return None


class AdminService(admin_pb2_grpc.AdminServiceServicer):
    def __init__(
        self,
        cfg: AccountsConfig,
        pool: asyncpg.Pool,
        redis: AnyRedis | None,
        publisher: Publisher,
        models: ModelStore | None = None,
        reads: asyncpg.Pool | None = None,
    ) -> None:
        self.cfg = cfg
        self.reads = reads or pool  # usage queries: a read replica when configured
        self.models = models
        self.backlog = Backlog(cfg.pulsar_admin_url, cfg.pulsar.topics, cfg.pulsar.admin_headers())
        self.pool = pool
        self.redis = redis
        self.publish = publisher
        self.logins = LoginLimiter(redis, cfg.login_attempts_per_minute, cfg.login_attempts_per_address_per_minute)

    # --- who is calling --------------------------------------------------------------------------

    async def _principal(self, context: Ctx) -> Principal:
        """A session (from Login) or an admin-scoped API token; inference keys are refused."""
        cred = bearer(context)
        if not cred:
            raise unauthenticated()
        async with self.pool.acquire() as conn:
            if well_formed(cred):
                row = await tokens.credential(conn, cred)
                if row is None:
                    raise unauthenticated()
                wrong_scope = scope_refusal(row["scope"])
                if wrong_scope is not None:
                    raise refused(wrong_scope)
                return Principal(
                    row["user_id"], row["role"], Via.ADMIN_TOKEN, token_id=row["token_id"],
                    user_limits=Limits(limit_credits=row["u_limit_credits"], limit_tokens=row["u_limit_tokens"]),
                    token_limits=tokens.limits_of(row),
                )  # fmt: skip
            claims = read_session(self.cfg.session_secret, cred)
            user = await sessions.active_user(conn, claims.session_id, claims.user_id) if claims else None
            if claims is None or user is None:
                raise unauthenticated()
            return Principal(
                user["user_id"], user["role"], Via.SESSION, session_id=claims.session_id,
                user_limits=Limits(limit_credits=user["quota_limit_micro_credits"],
                                   limit_tokens=user["quota_limit_tokens"]),
            )  # fmt: skip

    async def _run(self, context: Ctx, body: Callable[[Principal], Awaitable[T]]) -> T:
        try:
            principal = await self._principal(context)
            return await body(principal)
        except ApiError as e:
            await abort(context, e)
        except Refused as e:
            await abort(context, refused(e.refusal))
        except users.Conflict as e:
            await abort(context, _err(grpc.StatusCode.ALREADY_EXISTS, str(e), "email"))
        except quotas.NoLimit as e:
            await abort(context, _err(grpc.StatusCode.FAILED_PRECONDITION, str(e)))
        except asyncpg.ForeignKeyViolationError:
            await abort(context, not_found("User"))

    async def _own_token(self, conn: Any, p: Principal, token_id: str, lock: bool = False) -> asyncpg.Record:
        row = await tokens.get(conn, token_id, lock)
        if row is None:
            raise not_found("Token")
        if not may_act_on_user(p, row["user_id"]):
            raise _err(grpc.StatusCode.PERMISSION_DENIED, "This token belongs to another user.", None,
                       "permission_denied")  # fmt: skip
        return row

    async def _publish_token(self, token_id: str) -> None:
        async with self.pool.acquire() as conn:
            found = await tokens.record(conn, token_id)
        if found is not None:
            await self.publish.token(found[0])
            await self.publish.limits("token", token_id, found[1])

    async def _publish_user(self, user_id: str) -> None:
        async with self.pool.acquire() as conn:
            found = await users.record(conn, user_id)
        if found is not None:
            await self.publish.user(found[0])
            await self.publish.limits("user", user_id, found[1])

    # --- login ------------------------------------------------------------------------------------

    def _client_address(self, context: Ctx) -> str:
        return client_address(context.peer(), metadata(context), self.cfg.trusted_proxies)

    async def _audit(self, actor: str, action: str, target: str, details: dict[str, Any]) -> None:
        async with self.pool.acquire() as conn:
            await audit.record(conn, actor, action, target, details)

    async def Login(self, request: admin_pb2.LoginRequest, context: Ctx) -> admin_pb2.LoginResponse:
        """Attempts are limited per (email, address) and per address; each success and failure (and
        the first refusal of a window) is audited with the client address, never the password."""
        email = request.email.strip().lower()
        address = self._client_address(context)
        try:
            if not email or len(email) > MAX_EMAIL:
                raise invalid(f"email must have 1 to {MAX_EMAIL} characters", "email")
            if len(request.password) > MAX_PASSWORD:
                raise invalid(f"password must have at most {MAX_PASSWORD} characters", "password")
            throttle = await self.logins.attempt(email, address)
            if throttle is not None:
                if throttle.first:
                    await self._audit(ANONYMOUS, "user.login_throttled", email,
                                      {"client_address": address, "limit": throttle.limit})  # fmt: skip
                raise too_many_logins(throttle)
            async with self.pool.acquire() as conn:
                row = await users.by_email(conn, email)
            stored = row["password_hash"] if row is not None else None
            ok = await asyncio.to_thread(verify_password, stored, request.password)
            if row is None or not ok or row["disabled"]:
                reason = "unknown_email" if row is None else ("wrong_password" if not ok else "user_disabled")
                target = row["user_id"] if row is not None else email
                await self._audit(ANONYMOUS, "user.login_failed", target, {"client_address": address,
                                                                           "reason": reason})  # fmt: skip
                raise _err(grpc.StatusCode.UNAUTHENTICATED, "Incorrect email or password.", None, "invalid_login")
            await self.logins.succeeded(email, address)
            async with self.pool.acquire() as conn:
                session_id, _ = await sessions.open_session(conn, row["user_id"], self.cfg.session_ttl_s, address)
            token, exp = issue_session(self.cfg.session_secret, row["user_id"], session_id, self.cfg.session_ttl_s)
        except ApiError as e:
            await abort(context, e)
        return admin_pb2.LoginResponse(session_token=token, expires_at=Timestamp(seconds=exp), user=user_msg(row))

    async def Logout(self, request: admin_pb2.LogoutRequest, context: Ctx) -> admin_pb2.LogoutResponse:
        async def body(p: Principal) -> admin_pb2.LogoutResponse:
            if p.via is not Via.SESSION:
                raise _err(grpc.StatusCode.FAILED_PRECONDITION,
                           "Logout ends a session, and this call was made with an admin-scoped token:"
                           " disable or delete the token to stop it.", None, "not_a_session")  # fmt: skip
            async with self.pool.acquire() as conn:
                await sessions.revoke(conn, p.user_id, p.user_id, None if request.everywhere else p.session_id)
            return admin_pb2.LogoutResponse()

        return await self._run(context, body)

    # --- users -----------------------------------------------------------------------------------

    async def CreateUser(self, request: admin_pb2.CreateUserRequest, context: Ctx) -> admin_pb2.User:
        async def body(p: Principal) -> admin_pb2.User:
            if not p.is_admin:
                raise forbidden("create users")
            if not _EMAIL.match(request.email.strip()):
                raise invalid("email must look like name@domain", "email")
            if request.password and len(request.password) < MIN_PASSWORD:
                raise invalid(f"password must have at least {MIN_PASSWORD} characters", "password")
            pw = await asyncio.to_thread(hash_password, request.password) if request.password else None
            async with self.pool.acquire() as conn:
                row = await users.create(conn, p.user_id, request, pw)
            await self._publish_user(row["user_id"])
            return user_msg(row)

        return await self._run(context, body)

    async def GetUser(self, request: admin_pb2.GetUserRequest, context: Ctx) -> admin_pb2.User:
        async def body(p: Principal) -> admin_pb2.User:
            user_id = request.user_id or p.user_id
            if not may_act_on_user(p, user_id):
                raise forbidden("read other users")
            async with self.pool.acquire() as conn:
                row = await users.get(conn, user_id)
            if row is None:
                raise not_found("User")
            return user_msg(row)

        return await self._run(context, body)

    async def ListUsers(self, request: admin_pb2.ListUsersRequest, context: Ctx) -> admin_pb2.ListUsersResponse:
        async def body(p: Principal) -> admin_pb2.ListUsersResponse:
            if not p.is_admin:
                raise forbidden("list users")
            async with self.pool.acquire() as conn:
                rows, next_token = await users.page(conn, request.page_size, request.page_token)
            return admin_pb2.ListUsersResponse(users=[user_msg(r) for r in rows], next_page_token=next_token)

        return await self._run(context, body)

    async def _check_password_change(self, p: Principal, request: admin_pb2.UpdateUserRequest, context: Ctx) -> None:
        """Setting one's own password needs the current one (guesses count as login attempts)."""
        if not MIN_PASSWORD <= len(request.password) <= MAX_PASSWORD:
            raise invalid(f"password must have {MIN_PASSWORD} to {MAX_PASSWORD} characters", "password")
        async with self.pool.acquire() as conn:
            target = await users.get(conn, request.user_id)
        if target is None:
            raise not_found("User")
        given = request.HasField("current_password")
        ok = False
        if given and p.user_id == request.user_id:
            if len(request.current_password) > MAX_PASSWORD:
                raise invalid(f"current_password must have at most {MAX_PASSWORD} characters", "current_password")
            address = self._client_address(context)
            throttle = await self.logins.attempt(target["email"], address)
            if throttle is not None:
                raise too_many_logins(throttle)
            ok = await asyncio.to_thread(verify_password, target["password_hash"], request.current_password)
            if ok:
                await self.logins.succeeded(target["email"], address)
        refusal = password_change_refusal(p, request.user_id, target["password_hash"] is not None, given, ok)
        if refusal is not None:
            raise refused(refusal)

    async def UpdateUser(self, request: admin_pb2.UpdateUserRequest, context: Ctx) -> admin_pb2.User:
        async def body(p: Principal) -> admin_pb2.User:
            if not may_act_on_user(p, request.user_id):
                raise forbidden("change other users")
            privileged = (
                request.role or request.HasField("disabled") or request.HasField("tier")
                or request.HasField("rate_limits") or request.HasField("quota_limit_micro_credits")
                or request.HasField("quota_limit_tokens")
            )  # fmt: skip
            if privileged and not may_change_role_or_quota(p):
                raise forbidden("change roles, tiers, limits or quotas")
            if request.HasField("current_password") and not request.HasField("password"):
                raise invalid("current_password is only used with password", "current_password")
            if request.HasField("password"):
                await self._check_password_change(p, request, context)
            pw = await asyncio.to_thread(hash_password, request.password) if request.HasField("password") else None
            async with self.pool.acquire() as conn:
                row = await users.update(conn, p.user_id, request.user_id, users.update_assignments(request, pw))
            if row is None:
                raise not_found("User")
            await self._publish_user(request.user_id)
            return user_msg(row)

        return await self._run(context, body)

    async def DeleteUser(self, request: admin_pb2.DeleteUserRequest, context: Ctx) -> admin_pb2.DeleteUserResponse:
        async def body(p: Principal) -> admin_pb2.DeleteUserResponse:
            if not p.is_admin:
                raise forbidden("delete users")
            async with self.pool.acquire() as conn:
                gone = await users.delete(conn, p.user_id, request.user_id)
            if gone is None:
                raise not_found("User")
            token_hashes, user_version = gone
            for hash_, version in token_hashes:
                await self.publish.token_gone(hash_, version)
            await self.publish.user_gone(request.user_id, user_version)
            return admin_pb2.DeleteUserResponse()

        return await self._run(context, body)

    # --- tokens ----------------------------------------------------------------------------------

    async def CreateToken(self, request: admin_pb2.CreateTokenRequest, context: Ctx) -> admin_pb2.CreateTokenResponse:
        async def body(p: Principal) -> admin_pb2.CreateTokenResponse:
            user_id = request.user_id or p.user_id
            if not request.name.strip() or len(request.name) > 200:
                raise invalid("name must have 1 to 200 characters", "name")
            scope = SCOPES.get(request.scope)
            if scope is None:
                raise invalid("scope must be TOKEN_SCOPE_INFERENCE or TOKEN_SCOPE_ADMIN", "scope")
            _models(list(request.allowed_models))
            for field in ("quota_limit_micro_credits", "quota_limit_tokens"):
                if request.HasField(field) and getattr(request, field) < 0:
                    raise invalid(f"{field} must not be negative (leave it unset for no limit)", field)
            expires = from_ts(request.expires_at)
            if expires is not None and expires.timestamp() <= time.time():
                raise invalid("expires_at must be in the future", "expires_at")
            has = request.HasField
            requested = Limits(
                allowed_models=tuple(request.allowed_models),
                limit_credits=request.quota_limit_micro_credits if has("quota_limit_micro_credits") else None,
                limit_tokens=request.quota_limit_tokens if has("quota_limit_tokens") else None,
                expires_at=expires,
                rate_limits=MessageToDict(request.rate_limits, preserving_proto_field_name=True),
            )
            limits = mint_limits(p, user_id, scope, requested, request.HasField("rate_limits"))
            async with self.pool.acquire() as conn:
                row, secret = await tokens.create(conn, p.user_id, user_id, request.name, limits, scope)
            await self._publish_token(row["token_id"])
            await self._publish_user(row["user_id"])
            return admin_pb2.CreateTokenResponse(token=token_msg(row), secret=secret)

        return await self._run(context, body)

    async def ListTokens(self, request: admin_pb2.ListTokensRequest, context: Ctx) -> admin_pb2.ListTokensResponse:
        async def body(p: Principal) -> admin_pb2.ListTokensResponse:
            user_id = request.user_id or p.user_id
            if not may_act_on_user(p, user_id):
                raise forbidden("list other users' tokens")
            async with self.pool.acquire() as conn:
                rows = await tokens.of_user(conn, user_id)
            return admin_pb2.ListTokensResponse(tokens=[token_msg(r) for r in rows])

        return await self._run(context, body)

    async def GetToken(self, request: admin_pb2.GetTokenRequest, context: Ctx) -> admin_pb2.ApiToken:
        async def body(p: Principal) -> admin_pb2.ApiToken:
            async with self.pool.acquire() as conn:
                return token_msg(await self._own_token(conn, p, request.token_id))

        return await self._run(context, body)

    async def UpdateToken(self, request: admin_pb2.UpdateTokenRequest, context: Ctx) -> admin_pb2.ApiToken:
        async def body(p: Principal) -> admin_pb2.ApiToken:
            if request.HasField("name") and (not request.name.strip() or len(request.name) > 200):
                raise invalid("name must have 1 to 200 characters", "name")
            if request.set_allowed_models:
                _models(list(request.allowed_models))
            sets = tokens.update_assignments(request)
            async with self.pool.acquire() as conn, conn.transaction():
                state = tokens.state_of(await self._own_token(conn, p, request.token_id, lock=True))
                refusal = may_update_token(p, state, sets)
                if refusal is not None:
                    raise refused(refusal)
                if "disabled" in sets:
                    sets["disabled_by"] = disabled_by_after(p, state, bool(sets["disabled"]))
                row = await tokens.update(conn, p.user_id, request.token_id, sets)
            if row is None:
                raise not_found("Token")
            await self._publish_token(request.token_id)
            return token_msg(row)

        return await self._run(context, body)

    async def RollToken(self, request: admin_pb2.RollTokenRequest, context: Ctx) -> admin_pb2.CreateTokenResponse:
        async def body(p: Principal) -> admin_pb2.CreateTokenResponse:
            async with self.pool.acquire() as conn:
                state = tokens.state_of(await self._own_token(conn, p, request.token_id))
                refusal = may_roll_token(p, request.token_id, state)
                if refusal is not None:
                    raise refused(refusal)
                rolled = await tokens.roll(conn, p.user_id, request.token_id)
            if rolled is None:
                raise not_found("Token")
            row, secret, old_hash, gone_version = rolled
            await self.publish.token_gone(old_hash, gone_version)
            await self._publish_token(request.token_id)
            return admin_pb2.CreateTokenResponse(token=token_msg(row), secret=secret)

        return await self._run(context, body)

    async def DeleteToken(self, request: admin_pb2.DeleteTokenRequest, context: Ctx) -> admin_pb2.DeleteTokenResponse:
        async def body(p: Principal) -> admin_pb2.DeleteTokenResponse:
            async with self.pool.acquire() as conn:
                await self._own_token(conn, p, request.token_id)
                gone = await tokens.delete(conn, p.user_id, request.token_id)
            if gone is None:
                raise not_found("Token")
            await self.publish.token_gone(*gone)
            return admin_pb2.DeleteTokenResponse()

        return await self._run(context, body)

    # --- prices, quotas, usage, audit ------------------------------------------------------------

    async def SetModelPrice(self, request: admin_pb2.SetModelPriceRequest, context: Ctx) -> admin_pb2.ModelPrice:
        async def body(p: Principal) -> admin_pb2.ModelPrice:
            if not p.is_admin:
                raise forbidden("set prices")
            if not request.model:
                raise invalid("model is required", "model")
            if request.prompt_micro_credits_per_1k < 0 or request.completion_micro_credits_per_1k < 0:
                raise invalid("prices must not be negative", "prompt_micro_credits_per_1k")
            async with self.pool.acquire() as conn:
                return await quotas.set_price(
                    conn, p.user_id, request.model, request.prompt_micro_credits_per_1k,
                    request.completion_micro_credits_per_1k, from_ts(request.effective_from),
                )  # fmt: skip

        return await self._run(context, body)

    async def ListModelPrices(
        self, request: admin_pb2.ListModelPricesRequest, context: Ctx
    ) -> admin_pb2.ListModelPricesResponse:
        async def body(p: Principal) -> admin_pb2.ListModelPricesResponse:
            async with self.pool.acquire() as conn:
                return await quotas.prices(conn, request.model)

        return await self._run(context, body)

    async def TopUpQuota(self, request: admin_pb2.TopUpQuotaRequest, context: Ctx) -> admin_pb2.Quota:
        async def body(p: Principal) -> admin_pb2.Quota:
            if not p.is_admin:
                raise forbidden("top up quotas")
            target = request.WhichOneof("target")
            if target is None:
                raise invalid("user_id or token_id is required", "user_id")
            if request.micro_credits < 0 or request.tokens < 0:
                raise invalid("top-ups must not be negative", "micro_credits")
            kind = "user" if target == "user_id" else "token"
            subject = getattr(request, target)
            async with self.pool.acquire() as conn:
                result = await quotas.top_up(
                    conn, p.user_id, kind, subject, request.micro_credits, request.tokens, request.idempotency_key
                )
            if result is None:
                raise not_found(kind.capitalize())
            q, applied = result
            if applied:
                await (self._publish_user(subject) if kind == "user" else self._publish_token(subject))
            return q

        return await self._run(context, body)

    async def QueryUsage(self, request: admin_pb2.QueryUsageRequest, context: Ctx) -> admin_pb2.QueryUsageResponse:
        async def body(p: Principal) -> admin_pb2.QueryUsageResponse:
            if not p.is_admin:
                if request.HasField("user_id") and request.user_id != p.user_id:
                    raise forbidden("query other users' usage")
                request.user_id = p.user_id
            async with self.reads.acquire() as conn:
                return await usage.query(conn, request)

        return await self._run(context, body)

    async def ListAuditLog(
        self, request: admin_pb2.ListAuditLogRequest, context: Ctx
    ) -> admin_pb2.ListAuditLogResponse:
        async def body(p: Principal) -> admin_pb2.ListAuditLogResponse:
            if not p.is_admin:
                raise forbidden("read the audit log")
            async with self.pool.acquire() as conn:
                return await audit.page(conn, request.page_size, request.page_token)

        return await self._run(context, body)

    # --- models (AIModel resources) ---------------------------------------------------------------

    def _store(self, p: Principal, what: str) -> ModelStore:
        if not p.is_admin:
            raise forbidden(what)
        if self.models is None:
            raise _err(grpc.StatusCode.FAILED_PRECONDITION, "Model management is not configured on this"
                       " accounts service (UPLION_MODEL_STORE: folder or kubernetes).", None,
                       "models_not_managed")  # fmt: skip
        return self.models

    async def _model_call(self, context: Ctx, what: str, call: Callable[[ModelStore, Principal], Awaitable[T]]) -> T:
        async def body(p: Principal) -> T:
            store = self._store(p, what)
            try:
                return await call(store, p)
            except StoreError as e:
                code = STORE_CODES.get(e.kind, grpc.StatusCode.UNAVAILABLE)
                raise _err(code, str(e), "spec" if e.kind == "invalid" else None, e.kind) from None

        return await self._run(context, body)

    async def _with_backlog(self, bodies: list[dict[str, Any]]) -> list[aimodel_pb2.AIModel]:
        models = [b.get("spec", {}).get("model", "") for b in bodies]
        backlog = await self.backlog.many([m for m in models if m])
        return [to_message(b, backlog.get(m, -1)) for b, m in zip(bodies, models, strict=True)]

    @staticmethod
    def _checked_spec(name: str, spec: aimodel_pb2.AIModelSpec) -> dict[str, Any]:
        problem = name_problem(name)
        if problem:
            raise invalid(problem, "name")
        out = spec_to_dict(spec)
        problems = spec_problems(out)
        if problems:
            raise invalid("; ".join(problems), "spec")
        return out

    async def ListAIModels(
        self, request: aimodel_pb2.ListAIModelsRequest, context: Ctx
    ) -> aimodel_pb2.ListAIModelsResponse:
        async def call(store: ModelStore, p: Principal) -> aimodel_pb2.ListAIModelsResponse:
            bodies = {b["metadata"]["name"]: b for b in await store.resources()}
            names, token = page(list(bodies), request.page_size, request.page_token)
            return aimodel_pb2.ListAIModelsResponse(models=await self._with_backlog([bodies[n] for n in names]),
                                                    next_page_token=token)  # fmt: skip

        return await self._model_call(context, "manage models", call)

    async def GetAIModel(self, request: aimodel_pb2.GetAIModelRequest, context: Ctx) -> aimodel_pb2.AIModel:
        async def call(store: ModelStore, p: Principal) -> aimodel_pb2.AIModel:
            return (await self._with_backlog([await store.get(request.name)]))[0]

        return await self._model_call(context, "manage models", call)

    async def CreateAIModel(self, request: aimodel_pb2.CreateAIModelRequest, context: Ctx) -> aimodel_pb2.AIModel:
        async def call(store: ModelStore, p: Principal) -> aimodel_pb2.AIModel:
            spec = self._checked_spec(request.model.name, request.model.spec)
            body = await store.create(request.model.name, spec)
            await self._audit(p.user_id, "aimodel.create", request.model.name, {"spec": spec})
            return to_message(body)

        return await self._model_call(context, "manage models", call)

    async def UpdateAIModel(self, request: aimodel_pb2.UpdateAIModelRequest, context: Ctx) -> aimodel_pb2.AIModel:
        async def call(store: ModelStore, p: Principal) -> aimodel_pb2.AIModel:
            spec = self._checked_spec(request.name, request.spec)
            body = await store.replace(request.name, spec)
            await self._audit(p.user_id, "aimodel.update", request.name, {"spec": spec})
            return to_message(body)

        return await self._model_call(context, "manage models", call)

    async def DeleteAIModel(
        self, request: aimodel_pb2.DeleteAIModelRequest, context: Ctx
    ) -> aimodel_pb2.DeleteAIModelResponse:
        async def call(store: ModelStore, p: Principal) -> aimodel_pb2.DeleteAIModelResponse:
            await store.delete(request.name)
            await self._audit(p.user_id, "aimodel.delete", request.name, {})
            return aimodel_pb2.DeleteAIModelResponse()

        return await self._model_call(context, "manage models", call)

    async def ListAIModelEvents(
        self, request: aimodel_pb2.ListAIModelEventsRequest, context: Ctx
    ) -> aimodel_pb2.ListAIModelEventsResponse:
        async def call(store: ModelStore, p: Principal) -> aimodel_pb2.ListAIModelEventsResponse:
            events = await store.events(request.name)
            return aimodel_pb2.ListAIModelEventsResponse(events=[event_message(e) for e in events])

        return await self._model_call(context, "manage models", call)
