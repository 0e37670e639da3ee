"""Client addresses as limits count them (authz's unknown-key budget, accounts' login limits)."""

from __future__ import annotations

import ipaddress


def address_bucket(text: str | None) -> str:
    """The bucket a client address counts in: the IPv4 address, the /64 of an IPv6 address (one
    subscriber's block; an IPv4-mapped address counts as its IPv4 one), "" when it is not an
    address. A port (`1.2.3.4:5`, `[::1]:5`) is ignored."""
    if not text:
        return ""
    text = text.strip()
    if text.startswith("["):
        text, closed, _ = text[1:].partition("]")
        if not closed:
            return ""
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return ""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)
