"""Rate-limit rules in envoyproxy/ratelimit's YAML format, and the lookup of a descriptor's rule.

Parsing and lookup are pure. The format and the lookup follow the reference service: a domain
holds nested descriptors (`key`, optional `value`, possibly a `prefix*` wildcard value), each
optionally with `rate_limit {unit, requests_per_unit | unlimited, name, replaces}`,
`shadow_mode`; unknown keys are errors. uplion adds two keys, documented in docs/ratelimit.md:
`algorithm` in a rate_limit (`fixed_window`, the default, or `gcra`) and `failure_mode_deny` at
the domain level (refuse instead of allow when Redis cannot answer)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400, "month": 30 * 86400,
         "year": 365 * 86400}  # fmt: skip
ALGORITHMS = ("fixed_window", "gcra")
_ROOT_KEYS = {"domain", "descriptors", "failure_mode_deny"}
_DESCRIPTOR_KEYS = {"key", "value", "rate_limit", "descriptors", "shadow_mode", "quota_mode", "detailed_metric",
                    "value_to_metric", "share_threshold"}  # fmt: skip
_LIMIT_KEYS = {"unit", "requests_per_unit", "unlimited", "name", "replaces", "algorithm"}


class RuleError(ValueError):
    """A configuration file is invalid; the message names the file and the problem."""


@dataclass(frozen=True)
class Limit:
    requests_per_unit: int
    unit: str  # a key of UNITS; "" when unlimited
    unlimited: bool = False
    name: str = ""
    replaces: tuple[str, ...] = ()
    algorithm: str = "fixed_window"

    @property
    def window_s(self) -> int:
        return UNITS[self.unit]


@dataclass
class Node:
    path: str  # the rule's id in metrics: "generic_key_requests.user_id"
    limit: Limit | None = None
    shadow_mode: bool = False
    children: dict[str, Node] = field(default_factory=dict)
    wildcards: list[str] = field(default_factory=list)  # children keys ending in "*", in file order


@dataclass
class Domain:
    name: str
    root: Node
    failure_mode_deny: bool = False


def _check_keys(where: str, data: dict[str, Any], allowed: set[str]) -> None:
    for k in data:
        if k not in allowed:
            raise RuleError(f"{where}: unknown key '{k}'")


def _limit(where: str, raw: Any) -> Limit:
    if not isinstance(raw, dict):
        raise RuleError(f"{where}: rate_limit must be a mapping")
    _check_keys(where, raw, _LIMIT_KEYS)
    unit = str(raw.get("unit", "")).lower()
    unlimited = bool(raw.get("unlimited", False))
    if unlimited and unit in UNITS:
        raise RuleError(f"{where}: should not specify rate limit unit when unlimited")
    if not unlimited and unit not in UNITS:
        raise RuleError(f"{where}: invalid rate limit unit '{raw.get('unit', '')}'")
    rpu = raw.get("requests_per_unit", 0)
    if not isinstance(rpu, int) or rpu < 0 or rpu > 2**32 - 1:
        raise RuleError(f"{where}: requests_per_unit must be an integer from 0 to 4294967295")
    name = str(raw.get("name", "") or "")
    replaces = []
    for r in raw.get("replaces") or []:
        target = r.get("name", "") if isinstance(r, dict) else ""
        if not target:
            raise RuleError(f"{where}: should not have an empty replaces entry")
        if target == name:
            raise RuleError(f"{where}: replaces should not contain name of same descriptor")
        replaces.append(target)
    algorithm = str(raw.get("algorithm", "fixed_window"))
    if algorithm not in ALGORITHMS:
        raise RuleError(f"{where}: algorithm must be one of {', '.join(ALGORITHMS)}")
    if algorithm == "gcra" and rpu == 0 and not unlimited:
        raise RuleError(f"{where}: a gcra rule needs requests_per_unit > 0")
    return Limit(rpu, "" if unlimited else unit, unlimited, name, tuple(replaces), algorithm)


def _load(file: str, parent: Node, descriptors: Any) -> None:
    if descriptors is None:
        return
    if not isinstance(descriptors, list):
        raise RuleError(f"{file}: descriptors must be a list")
    for d in descriptors:
        if not isinstance(d, dict):
            raise RuleError(f"{file}: each descriptor must be a mapping")
        _check_keys(file, d, _DESCRIPTOR_KEYS)
        key = d.get("key")
        if not key:
            raise RuleError(f"{file}: descriptor has empty key")
        final = str(key) if d.get("value") in (None, "") else f"{key}_{d['value']}"
        path = f"{parent.path}.{final}" if parent.path else final
        if final in parent.children:
            raise RuleError(f"{file}: duplicate descriptor composite key '{path}'")
        node = Node(path, shadow_mode=bool(d.get("shadow_mode", False)))
        if d.get("rate_limit") is not None:
            node.limit = _limit(f"{file}: {path}", d["rate_limit"])
        if final.endswith("*"):
            parent.wildcards.append(final)
        _load(file, node, d.get("descriptors"))
        parent.children[final] = node


def parse(text: str, file: str = "<config>") -> Domain:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise RuleError(f"{file}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise RuleError(f"{file}: the top level must be a mapping with a domain")
    _check_keys(file, raw, _ROOT_KEYS)
    if not raw.get("domain"):
        raise RuleError(f"{file}: config file cannot have empty domain")
    root = Node("")
    _load(file, root, raw.get("descriptors"))
    return Domain(str(raw["domain"]), root, bool(raw.get("failure_mode_deny", False)))


def merge(domains: list[Domain]) -> dict[str, Domain]:
    out: dict[str, Domain] = {}
    for d in domains:
        if d.name in out:
            raise RuleError(f"duplicate domain '{d.name}' in config files")
        out[d.name] = d
    return out


@dataclass(frozen=True)
class Match:
    node: Node
    limit: Limit


def find(domain: Domain, entries: list[tuple[str, str]]) -> Match | None:
    """The rule for a descriptor: walk the tree by `key_value`, then a wildcard, then `key`; a
    limit applies only if the descriptor's last entry reaches a node that has one."""
    node = domain.root
    for i, (key, value) in enumerate(entries):
        nxt = node.children.get(f"{key}_{value}")
        if nxt is None:
            for w in node.wildcards:
                if f"{key}_{value}".startswith(w[:-1]):
                    nxt = node.children[w]
                    break
        if nxt is None:
            nxt = node.children.get(key)
        if nxt is None:
            return None
        if i == len(entries) - 1:
            return Match(nxt, nxt.limit) if nxt.limit is not None else None
        if not nxt.children:
            return None
        node = nxt
    return None
