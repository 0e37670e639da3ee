"""Pulsar token authentication and authorization for uplion's components.

Pure part: the role (JWT `sub`) of each component and the permissions it needs (`Grant`s on a topic
or a whole namespace, and which roles may use each durable subscription), and the HS256 tokens for
those roles. I/O part: `PulsarAdmin` applies (and revokes) them through the broker's admin REST API as
a superuser.

Who needs what (docs/pulsar-auth.md says why, and what the code that uses each topic does):

- `uplion-gateway`: produce and consume on the task namespace (every model's tasks and cancels,
  `usage`; consume only to create the durable subscriptions, uplion.core.subscriptions), consume
  on the reply namespace (its reply topic; `usage-recovery`, only to create billing's subscription).
- `uplion-worker-<model>`: produce and consume `model-<model>` (produce: retries), consume
  `model-<model>-cancel`, produce `model-<model>-dlq`, produce on the reply namespace (replies, and
  recovery records on `usage-recovery`).
- `uplion-billing`: consume `usage` and `usage-recovery`, produce `usage-dlq`. `uplion-settler`:
  consume `usage`.
- `uplion-accounts`: produce on the task namespace, for the backlog in the admin API: Pulsar 4.0
  shows a topic's stats to any role that may produce or consume it, and produce reads nothing.

Durable subscriptions are tied to roles too: `billing` and `billing-recovery` to billing (and the
gateway, which creates them), `ratelimit` to the settler, `model-<model>-subscription` to that
model's workers (and the gateway), so a role allowed to consume `usage` cannot take the other
consumer's events.

Replies live in their own namespace (`<namespace>-replies`, `UPLION_PULSAR_REPLY_NAMESPACE`):
reply topics are made per gateway instance, so workers are granted produce on that namespace as a
whole, which gives them no access to any task, cancel or usage topic.
"""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field

import jwt

from .subscriptions import BILLING_SUBSCRIPTION, RECOVERY_SUBSCRIPTION
from .topics import Topics, safe_name

SUPERUSER = "uplion-admin"
GATEWAY = "uplion-gateway"
BILLING = "uplion-billing"
SETTLER = "uplion-settler"
ACCOUNTS = "uplion-accounts"
PRODUCE, CONSUME = "produce", "consume"

SETTLER_SUBSCRIPTION = "ratelimit"  # the settler's on `usage` (uplion.ratelimit.settle.SUBSCRIPTION)


def worker_role(model: str) -> str:
    return f"uplion-worker-{safe_name(model)}"


def reply_namespace(namespace: str) -> str:
    """The namespace of the reply topics when authorization is on (workers may produce to all of it)."""
    return f"{namespace}-replies"


@dataclass(frozen=True)
class Grant:
    """`role` may do `actions` on `target`: a topic (`persistent://tenant/ns/name`) or every topic of
    a namespace (`tenant/ns`)."""

    role: str
    target: str
    actions: tuple[str, ...]

    @property
    def on_namespace(self) -> bool:
        return not self.target.startswith("persistent://")

    def admin_path(self) -> str:
        if self.on_namespace:
            return f"/admin/v2/namespaces/{self.target}/permissions/{self.role}"
        return f"/admin/v2/persistent/{self.target.removeprefix('persistent://')}/permissions/{self.role}"


@dataclass(frozen=True)
class SubscriptionRoles:
    """Only `roles` may use durable subscription `subscription` on the topics of `namespace` (`tenant/ns`)."""

    namespace: str
    subscription: str
    roles: tuple[str, ...]

    def admin_path(self) -> str:
        return f"/admin/v2/namespaces/{self.namespace}/permissions/subscription/{self.subscription}"


@dataclass(frozen=True)
class Permissions:
    grants: tuple[Grant, ...] = ()
    subscriptions: tuple[SubscriptionRoles, ...] = ()

    def __add__(self, other: Permissions) -> Permissions:
        return Permissions(self.grants + other.grants, self.subscriptions + other.subscriptions)

    def namespaces(self) -> list[str]:
        """Every namespace these permissions name (it must exist before a grant on it)."""
        out = [g.target if g.on_namespace else _namespace_of(g.target) for g in self.grants]
        out += [s.namespace for s in self.subscriptions]
        return list(dict.fromkeys(out))


def _namespace_of(topic: str) -> str:
    tenant, namespace, _ = topic.removeprefix("persistent://").split("/", 2)
    return f"{tenant}/{namespace}"


def _ns(topics: Topics) -> str:
    return f"{topics.tenant}/{topics.namespace}"


def _replies_ns(topics: Topics) -> str:
    return f"{topics.tenant}/{topics.reply_namespace or topics.namespace}"


def gateway_permissions(topics: Topics) -> Permissions:
    return Permissions(
        (Grant(GATEWAY, _ns(topics), (PRODUCE, CONSUME)), Grant(GATEWAY, _replies_ns(topics), (CONSUME,)))
    )


def worker_permissions(model: str, topics: Topics) -> Permissions:
    role = worker_role(model)
    grants = (
        Grant(role, topics.tasks(model), (PRODUCE, CONSUME)),
        Grant(role, topics.cancels(model), (CONSUME,)),
        Grant(role, topics.dead_letters(model), (PRODUCE,)),
        Grant(role, _replies_ns(topics), (PRODUCE,)),
    )
    return Permissions(grants, (SubscriptionRoles(_ns(topics), topics.subscription(model), (role, GATEWAY)),))


def billing_permissions(topics: Topics) -> Permissions:
    grants = (
        Grant(BILLING, topics.usage(), (CONSUME,)),
        Grant(BILLING, topics.usage() + "-dlq", (PRODUCE,)),
        Grant(BILLING, topics.usage_recovery(), (CONSUME,)),
    )
    subscriptions = (
        SubscriptionRoles(_ns(topics), BILLING_SUBSCRIPTION, (BILLING, GATEWAY)),
        SubscriptionRoles(_replies_ns(topics), RECOVERY_SUBSCRIPTION, (BILLING, GATEWAY)),
    )
    return Permissions(grants, subscriptions)


def settler_permissions(topics: Topics) -> Permissions:
    return Permissions(
        (Grant(SETTLER, topics.usage(), (CONSUME,)),),
        (SubscriptionRoles(_ns(topics), SETTLER_SUBSCRIPTION, (SETTLER,)),),
    )


def accounts_permissions(topics: Topics) -> Permissions:
    return Permissions((Grant(ACCOUNTS, _ns(topics), (PRODUCE,)),))


# --- tokens -----------------------------------------------------------------------------------------


def new_secret_key() -> bytes:
    """An HS256 key (256 bits: the broker's JWT library refuses shorter ones)."""
    return secrets.token_bytes(32)


def mint(secret_key: bytes, role: str) -> str:
    """A token for `role`, as `pulsar tokens create --secret-key` makes one (no expiry)."""
    return jwt.encode({"sub": role}, secret_key, algorithm="HS256")


def role_of(token: str, secret_key: bytes) -> str:
    claims = jwt.decode(token, secret_key, algorithms=["HS256"], options={"require": ["sub"]})
    return str(claims["sub"])


# --- applying them (the broker's admin REST API, as a superuser) ------------------------------------


class AdminError(RuntimeError):
    pass


@dataclass(frozen=True)
class PulsarAdmin:
    """Blocking calls, for tooling (the devstack's starters run in threads; an asyncio caller would
    use asyncio.to_thread)."""

    url: str  # http://host:port
    token: str = field(repr=False)  # a superuser's ("" for a broker without authentication)
    timeout_s: float = 10.0

    def _call(self, method: str, path: str, body: object | None = None, ok: Iterable[int] = ()) -> bytes:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)  # noqa: S310 - admin URL
        if self.token:
            req.add_header("authorization", f"Bearer {self.token}")
        if data is not None:
            req.add_header("content-type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310 - admin URL
                return bytes(resp.read())
        except urllib.error.HTTPError as e:
            if e.code in ok:
                return b""
            detail = e.read().decode(errors="replace")[:500]
            raise AdminError(f"{method} {path}: HTTP {e.code} {detail}") from None

    def create_namespace(self, namespace: str) -> None:
        """`tenant/ns`; one that exists already is left as it is."""
        self._call("PUT", f"/admin/v2/namespaces/{namespace}", ok=(409,))

    def create_topic(self, topic: str) -> None:
        """A non-partitioned `persistent://` topic (as auto-creation makes them); one that exists is kept."""
        self._call("PUT", f"/admin/v2/persistent/{topic.removeprefix('persistent://')}", ok=(409,))

    def apply(self, permissions: Permissions) -> None:
        """Create the namespaces and topics they name (if missing: the broker grants nothing on a
        topic that does not exist), then grant every permission. Granting again replaces a role's
        actions on that target with the same set: applying twice changes nothing."""
        for namespace in permissions.namespaces():
            self.create_namespace(namespace)
        for grant in permissions.grants:
            if not grant.on_namespace:
                self.create_topic(grant.target)
            self._call("POST", grant.admin_path(), list(grant.actions))
        for sub in _merged(permissions.subscriptions):
            self._call("POST", sub.admin_path(), list(sub.roles))

    def revoke(self, permissions: Permissions) -> None:
        """Take back what `apply` granted: DELETE on every grant's path, and each grantee's place on
        the subscriptions these permissions name (`.../permissions/<subscription>/<role>`). Roles
        without a grant here keep their place (the gateway on a model's subscription). A grant already
        revoked, or on a topic or namespace that no longer exists, is skipped: revoking twice is
        the same as once. Namespaces and topics stay."""
        grantees = {g.role for g in permissions.grants}
        for grant in permissions.grants:
            self._call("DELETE", grant.admin_path(), ok=_GONE)
        for sub in _merged(permissions.subscriptions):
            for role in sub.roles:
                if role in grantees:
                    path = f"/admin/v2/namespaces/{sub.namespace}/permissions/{sub.subscription}/{role}"
                    self._call("DELETE", path, ok=_GONE)


# What the broker answers a revoke of something not there: 404 (no such topic or namespace), 412
# (no permission set for that role there)
_GONE = (404, 412)


def _merged(subscriptions: Iterable[SubscriptionRoles]) -> list[SubscriptionRoles]:
    """One entry per (namespace, subscription) with every role named for it."""
    roles: dict[tuple[str, str], list[str]] = {}
    for s in subscriptions:
        roles.setdefault((s.namespace, s.subscription), []).extend(s.roles)
    return [SubscriptionRoles(ns, sub, tuple(dict.fromkeys(r))) for (ns, sub), r in roles.items()]
