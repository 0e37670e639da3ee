"""Where a login comes from, and how many attempts it may make.

The client address is the one the edge determined: Envoy (use_remote_address) overwrites
`x-envoy-external-address` and appends the connection's peer to `x-forwarded-for`, so these headers
are believed only when the gRPC peer is a trusted proxy (the edge); anyone else is known by their
own peer address.

Attempts are counted per (email, address) and per address across emails, in fixed one-minute
windows, in Redis (an in-process counter when the service runs without Redis). Keying the lockout by
email *and* address means a stranger who guesses an admin's password ten times locks out only
themselves; the per-address count stops one client from spraying many emails. A successful login
clears its (email, address) count and is not counted against its address.
"""

from __future__ import annotations

import hashlib
import ipaddress
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from uplion.core.addresses import address_bucket
from uplion.core.redis_client import ERRORS as REDIS_ERRORS
from uplion.core.redis_client import AnyRedis

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# where proxies live: loopback and the private ranges (pods, nodes); override with UPLION_TRUSTED_PROXIES
DEFAULT_TRUSTED_PROXIES = "127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7"
EXTERNAL_ADDRESS = "x-envoy-external-address"
FORWARDED_FOR = "x-forwarded-for"
WINDOW_S = 60
MAX_LOCAL_KEYS = 100_000


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """Comma-separated CIDRs (raises ValueError naming the bad one)."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            out.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(f"not an IP network: {part!r}") from None
    return tuple(out)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def peer_ip(peer: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP of a gRPC peer string ("ipv4:10.0.0.1:5000", "ipv6:[::1]:5000", "ipv6:%5B::1%5D:5000")."""
    kind, _, rest = urllib.parse.unquote(peer).partition(":")
    if kind == "ipv4":
        return _ip(rest.rpartition(":")[0])
    if kind == "ipv6":
        return _ip(rest.rpartition(":")[0].strip("[]"))
    return None


def client_address(peer: str, metadata: Mapping[str, str], trusted: Iterable[IPNetwork]) -> str:
    """The address a request comes from: what a trusted proxy (the edge) says, else the peer itself
    ("local" for a Unix socket)."""
    ip = peer_ip(peer)
    if ip is None:
        return "local"
    if any(ip in net for net in trusted if ip.version == net.version):
        said = _ip(metadata.get(EXTERNAL_ADDRESS, ""))
        if said is None:
            said = _ip(metadata.get(FORWARDED_FOR, "").rsplit(",", 1)[-1])  # the entry the edge appended
        if said is not None:
            return str(said)
    return str(ip)


def address_key(address: str) -> str:
    """What attempts from `address` are counted under: an IPv4 address, or an IPv6 /64 (one host
    commonly has a whole /64 to pick addresses from); anything else as it is ("local")."""
    return address_bucket(address) or address


@dataclass(frozen=True)
class Throttle:
    """A refused attempt: which limit (`email_address` or `address`), and whether it is the first
    refusal of its window (the one written to the audit log)."""

    limit: str
    first: bool


def throttled(pair_count: int, address_count: int, per_pair: int, per_address: int) -> Throttle | None:
    """The decision for an attempt, given the counts including it (pure)."""
    if pair_count > per_pair:
        return Throttle("email_address", pair_count == per_pair + 1)
    if address_count > per_address:
        return Throttle("address", address_count == per_address + 1)
    return None


def _pair_key(email: str, address: str) -> str:
    digest = hashlib.sha256(f"{email}\0{address_key(address)}".encode()).hexdigest()[:32]
    return f"uplion:login:{{{_address_tag(address)}}}:pair:{digest}"


def _address_key(address: str) -> str:
    """The address's count; its pairs share its hash tag, so REFUND touches one Redis Cluster slot."""
    return f"uplion:login:{{{_address_tag(address)}}}:n"


def _address_tag(address: str) -> str:
    return hashlib.sha256(address_key(address).encode()).hexdigest()[:16]


# KEYS[1] = pair key, KEYS[2] = address key: forget the pair's failures and refund the address
REFUND = """
redis.call('DEL', KEYS[1])
local n = tonumber(redis.call('GET', KEYS[2]) or '0')
if n > 0 then redis.call('DECR', KEYS[2]) end
return 0
"""


class LoginLimiter:
    def __init__(self, redis: AnyRedis | None, per_pair: int, per_address: int) -> None:
        self.redis = redis
        self.per_pair = per_pair
        self.per_address = per_address
        self._local: dict[str, tuple[float, int]] = {}  # when Redis is absent or failing

    async def attempt(self, email: str, address: str) -> Throttle | None:
        """Count an attempt; a Throttle if it must be refused."""
        keys = (_pair_key(email, address), _address_key(address))
        counts: list[int] | None = None
        if self.redis is not None:
            try:
                async with self.redis.pipeline(transaction=True) as pipe:
                    for key in keys:
                        pipe.set(key, 0, ex=WINDOW_S, nx=True)
                        pipe.incr(key)
                    replies = await pipe.execute()
                counts = [int(replies[1]), int(replies[3])]
            except REDIS_ERRORS:
                counts = None
        if counts is None:
            counts = [self._local_incr(k, 1) for k in keys]
        return throttled(counts[0], counts[1], self.per_pair, self.per_address)

    async def succeeded(self, email: str, address: str) -> None:
        pair, addr = _pair_key(email, address), _address_key(address)
        if self.redis is not None:
            try:
                await self.redis.eval(REFUND, 2, pair, addr)
                return
            except REDIS_ERRORS:
                pass
        self._local.pop(pair, None)
        if self._local.get(addr, (0.0, 0))[1] > 0:
            self._local_incr(addr, -1)

    def _local_incr(self, key: str, by: int) -> int:
        now = time.monotonic()
        if len(self._local) >= MAX_LOCAL_KEYS:
            self._local = {k: v for k, v in self._local.items() if now - v[0] < WINDOW_S}
            if len(self._local) >= MAX_LOCAL_KEYS:
                self._local.clear()
        started, count = self._local.get(key, (now, 0))
        if now - started >= WINDOW_S:
            started, count = now, 0
        self._local[key] = (started, count + by)
        return count + by
