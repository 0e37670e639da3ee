"""The devstack's port picker: below the kernel's ephemeral range, never the same port twice."""

from __future__ import annotations

import socket
from pathlib import Path

from uplion.devstack.procs import free_port, free_port_block, port_pool


def test_the_pool_lies_below_the_ephemeral_range() -> None:
    assert port_pool((32768, 60999)) == range(10000, 32768)
    assert port_pool((12000, 60999)) == range(0)  # too little room below: the kernel picks


def test_free_ports_are_bindable_distinct_and_not_ephemeral() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    if port_pool((low, 0)):
        assert all(p < low for p in ports)
    for port in ports[:5]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_a_block_is_consecutive_and_never_handed_out_again() -> None:
    base = free_port_block(4)
    block = set(range(base, base + 4))
    assert not block & {free_port() for _ in range(200)}
