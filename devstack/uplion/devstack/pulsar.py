"""Apache Pulsar standalone, assembled from Maven Central and run on free loopback ports, with token
authentication and authorization on (uplion.core.pulsar_auth): the broker trusts an HS256 key made
at its first start, the superuser `uplion-admin` is the devstack's own, and every service the
devstack starts gets a token for its role after its permissions are granted (`pulsar_credentials`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pulsar as pulsar_client

from uplion.core import pulsar_auth
from uplion.core.pulsar_auth import Permissions, PulsarAdmin
from uplion.core.topics import Topics

from .cache import Recipe, build, tool_version
from .procs import Proc, free_port, spawn, wait_until

PULSAR_VERSION = "4.0.7"
_HERE = Path(__file__).parent / "pulsar-maven"

# As in Pulsar's bin/pulsar: the broker and BookKeeper reflect into these JDK internals.
_ADD_OPENS = [
    "java.base/java.io",
    "java.base/java.util.zip",
    "java.base/sun.net",
    "java.management/sun.management",
    "jdk.management/com.sun.management.internal",
    "java.base/jdk.internal.platform",
    "java.base/java.lang",
    "java.base/java.nio",
    "java.base/jdk.internal.misc",
]


def pulsar_recipe() -> Recipe:
    """The lib folder depends on the pom (Pulsar's version and everything it pulls in) and Java."""
    return Recipe(
        f"pulsar-{PULSAR_VERSION}",
        {"pom.xml": (_HERE / "pom.xml").read_bytes(), "java": tool_version("java"), "maven": tool_version("mvn")},
    )


def _copy_dependencies(out: Path) -> None:
    # -B: no colours or prompts; the default settings (Maven Central), and ~/.m2 as the download cache
    pom, goal = str(_HERE / "pom.xml"), "dependency:copy-dependencies"
    subprocess.run(["mvn", "-B", "-q", "-f", pom, goal, f"-DoutputDirectory={out}/lib"], check=True)


def ensure_jars() -> Path:
    """The broker and its dependencies in the cache, assembled by Maven on first use of this recipe."""
    if shutil.which("mvn") is None or shutil.which("java") is None:
        raise RuntimeError("Apache Pulsar needs java (17+) and mvn: apt-get install openjdk-17-jre-headless maven")
    return build(pulsar_recipe(), _copy_dependencies) / "lib"


def _auth_settings(auth: BrokerAuth | None) -> dict[str, object]:
    if auth is None:
        return {"authenticationEnabled": "false", "authorizationEnabled": "false"}
    return {
        "authenticationEnabled": "true",
        "authenticationProviders": "org.apache.pulsar.broker.authentication.AuthenticationProviderToken",
        "tokenSecretKey": f"file://{auth.key_file}",
        "authorizationEnabled": "true",
        "superUserRoles": pulsar_auth.SUPERUSER,
        # the broker's own client (standalone creates its cluster, tenant and namespace through it)
        "brokerClientAuthenticationPlugin": "org.apache.pulsar.client.impl.auth.AuthenticationToken",
        # a file, not the token: the broker logs its settings
        "brokerClientAuthenticationParameters": f"file://{auth.superuser_token_file}",
    }


def _standalone_conf(broker_port: int, web_port: int, auth: BrokerAuth | None = None) -> str:
    settings = {
        "clusterName": "standalone",
        "bindAddress": "127.0.0.1",
        "advertisedAddress": "127.0.0.1",
        "brokerServicePort": broker_port,
        "webServicePort": web_port,
        "managedLedgerDefaultEnsembleSize": 1,
        "managedLedgerDefaultWriteQuorum": 1,
        "managedLedgerDefaultAckQuorum": 1,
        "allowAutoTopicCreation": "true",
        "allowAutoTopicCreationType": "non-partitioned",
        "brokerDeleteInactiveTopicsEnabled": "false",
        "transactionCoordinatorEnabled": "false",
        **_auth_settings(auth),
        "functionsWorkerEnabled": "false",
        "loadBalancerEnabled": "false",
        "managedLedgerCacheSizeMB": 64,
        "dbStorage_writeCacheMaxSizeMb": 32,
        "dbStorage_readAheadCacheMaxSizeMb": 32,
        "dbStorage_rocksDB_blockCacheSize": 33554432,
        "journalSyncData": "false",
        # latency over batching: flush the journal at once, and wake caught-up cursors at once
        # (the broker default re-checks for new entries every 10 ms, which every hop would pay)
        "journalMaxGroupWaitMSec": 0,
        "journalFlushWhenQueueEmpty": "true",
        "managedLedgerNewEntriesCheckDelayInMillis": 0,
        # retry backoff uses delayed delivery: honour sub-second delays (the default 1 s tick, not
        # strict, delivers anything due within a tick at once)
        "delayedDeliveryTickTimeMillis": 100,
        "isDelayedDeliveryDeliverAtTimeStrict": "true",
        # The bookie turns read-only (every new topic or cursor then times out) once its disk is
        # 95 % full by default. Test machines share big, mostly full disks where 5 % is still many
        # gigabytes, so stop only when the disk is truly full; start_pulsar checks free space.
        # the bookie reads this file too: it listens on loopback only (by default every interface)
        "listeningInterface": "lo",
        "allowLoopback": "true",
        "diskUsageThreshold": 0.999,
        "diskUsageWarnThreshold": 0.999,
        "diskUsageLwmThreshold": 0.998,
    }
    return "".join(f"{k}={v}\n" for k, v in settings.items())


def _write_private(path: Path, data: bytes) -> None:
    """A new file only its owner may read (made with that mode, never readable on the way)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


@dataclass(frozen=True)
class BrokerAuth:
    """The broker's token key and the superuser's token: 0600 files in its work folder, kept across
    restarts (the superuser's token is there for tools: `pulsar-admin --auth-params file://...`)."""

    key_file: Path
    superuser_token_file: Path

    @classmethod
    def in_folder(cls, workdir: Path) -> BrokerAuth:
        auth = cls(workdir / "token-secret.key", workdir / "superuser.token")
        if not auth.key_file.exists():
            _write_private(auth.key_file, pulsar_auth.new_secret_key())
        if not auth.superuser_token_file.exists():
            _write_private(auth.superuser_token_file, auth.token(pulsar_auth.SUPERUSER).encode())
        return auth

    def token(self, role: str) -> str:
        return pulsar_auth.mint(self.key_file.read_bytes(), role)

    @property
    def superuser_token(self) -> str:
        return self.token(pulsar_auth.SUPERUSER)


@dataclass
class Pulsar:
    proc: Proc
    broker_port: int
    web_port: int
    bookie_port: int = 0
    workdir: Path | None = None
    auth: BrokerAuth | None = None  # None: a broker without authentication

    @property
    def service_url(self) -> str:
        return f"pulsar://127.0.0.1:{self.broker_port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def admin(self) -> PulsarAdmin:
        """The admin REST API as the superuser."""
        return PulsarAdmin(self.admin_url, self.auth.superuser_token if self.auth else "")

    def token(self, role: str) -> str:
        """A token for `role` ("" on a broker without authentication)."""
        return self.auth.token(role) if self.auth else ""

    def authentication(self, role: str = pulsar_auth.SUPERUSER) -> pulsar_client.Authentication | None:
        """A Pulsar client's `authentication=` for `role` (by default the superuser: tests and tools)."""
        return pulsar_client.AuthenticationToken(self.token(role)) if self.auth else None

    def admin_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.auth.superuser_token}"} if self.auth else {}

    def admin_text(self, path: str) -> str:
        req = urllib.request.Request(self.admin_url + path, headers=self.admin_headers())  # noqa: S310 - loopback
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback
            return str(resp.read().decode())

    def admin_get(self, path: str) -> object:
        return json.loads(self.admin_text(path))

    def create_namespace(self, namespace: str) -> None:
        """Create `public/<namespace>` (tests isolate their topics this way)."""
        self.admin.create_namespace(f"public/{namespace}")

    def grant(self, permissions: Permissions) -> None:
        if self.auth is not None:
            self.admin.apply(permissions)

    def stop(self) -> None:
        self.proc.stop(timeout=30)


# The brokers this process started, by service and admin URL: the service starters (platform.py,
# local_models.py) find the broker a URL names, grant the role's permissions and pass its token.
_STARTED: dict[str, Pulsar] = {}


def pulsar_credentials(
    url: str, env: Mapping[str, str], role: str, permissions: Callable[[Topics], Permissions]
) -> dict[str, str]:
    """The settings a service started against the broker at `url` (its service or admin URL) needs
    beyond the URL: on a broker this process started with authentication, the token of `role` after
    `permissions` (of the tenant and namespace `env` names) are granted, and the reply namespace.
    Nothing for any other broker. A setting in `env` wins over these."""
    broker = _STARTED.get(url)
    if broker is None or broker.auth is None:
        return {}
    namespace = env.get("UPLION_PULSAR_NAMESPACE") or "default"
    replies = env.get("UPLION_PULSAR_REPLY_NAMESPACE") or pulsar_auth.reply_namespace(namespace)
    topics = Topics(env.get("UPLION_PULSAR_TENANT") or "public", namespace, replies)
    broker.grant(permissions(topics))
    return {"UPLION_PULSAR_TOKEN": broker.token(role), "UPLION_PULSAR_REPLY_NAMESPACE": replies}


MIN_FREE_BYTES = 1 << 30
_READ_ONLY = "Transitioning Bookie to ReadOnly"


def check_free_space(workdir: Path, minimum: int = MIN_FREE_BYTES) -> None:
    """Fail at once, and say why, when the bookie would have no room to write."""
    free = shutil.disk_usage(workdir).free
    if free < minimum:
        raise RuntimeError(f"Pulsar needs {minimum >> 20} MiB free under {workdir}, only {free >> 20} MiB left")


def restart_pulsar(pulsar: Pulsar, timeout: float = 180.0) -> Pulsar:
    """Start a stopped broker again on its data, ports and token key (a bookie is known by its
    address, so its port must not change): clients that kept the broker's URL reconnect by themselves."""
    assert pulsar.workdir is not None, "a broker started by start_pulsar"
    ports = (pulsar.broker_port, pulsar.web_port, pulsar.bookie_port)
    return start_pulsar(pulsar.workdir, timeout, ports=ports, auth=pulsar.auth is not None)


def _ready(pulsar: Pulsar) -> bool:
    url = f"{pulsar.admin_url}/admin/v2/namespaces/public/default"
    req = urllib.request.Request(url, headers=pulsar.admin_headers())  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(req, timeout=2) as resp:  # noqa: S310 - loopback
            return int(resp.status) == 200
    except OSError:  # refused, or an HTTP error status: not ready yet
        return False


def start_pulsar(
    workdir: Path, timeout: float = 180.0, ports: tuple[int, int, int] | None = None, auth: bool = True
) -> Pulsar:
    """A standalone broker on free loopback ports, or on `ports` (broker, web, bookie) again; with
    token authentication and authorization unless `auth` is False."""
    lib = ensure_jars()
    workdir.mkdir(parents=True, exist_ok=True)
    check_free_space(workdir)
    broker_port, web_port, bk_port = ports or (free_port(), free_port(), free_port())
    broker_auth = BrokerAuth.in_folder(workdir) if auth else None
    conf = workdir / "standalone.conf"
    conf.write_text(_standalone_conf(broker_port, web_port, broker_auth))
    java = [
        "java",
        # a heap of fixed size, touched at start, as Pulsar's own defaults size it (-Xms = -Xmx): a
        # heap that grows from a small -Xms towards -Xmx for minutes reads as a leak in the soak
        # benchmark's RSS (bench/soak.py), and grows to the maximum under load anyway
        "-Xms512m",
        "-Xmx512m",
        "-XX:+AlwaysPreTouch",
        "-XX:MaxDirectMemorySize=512m",
        "-XX:+UseG1GC",
        *[arg for mod in _ADD_OPENS for arg in ("--add-opens", f"{mod}=ALL-UNNAMED")],
        f"-Dlog4j.configurationFile={_HERE / 'log4j2.xml'}",
        f"-Dpulsar.log.dir={workdir}",
        "-Dio.netty.tryReflectionSetAccessible=true",
        "-cp",
        f"{lib}/*",
        "org.apache.pulsar.PulsarStandaloneStarter",
        "-c",
        str(conf),
        "-nfw",
        "-nss",
        "-a",
        "127.0.0.1",
        "--metadata-dir",
        str(workdir / "metadata"),
        "--bookkeeper-dir",
        str(workdir / "bookkeeper"),
        "--bookkeeper-port",
        str(bk_port),
    ]
    proc = spawn("pulsar", java, workdir / "pulsar.log", cwd=workdir)
    pulsar = Pulsar(proc, broker_port, web_port, bk_port, workdir, broker_auth)
    wait_until(proc, lambda: _ready(pulsar), timeout, interval=0.5)
    log = (workdir / "pulsar.log").read_text(errors="replace")
    if _READ_ONLY in log:
        pulsar.stop()
        raise RuntimeError(f"Pulsar's bookie started read-only (disk full?); see {workdir}/pulsar.log")
    _STARTED[pulsar.service_url] = _STARTED[pulsar.admin_url] = pulsar
    return pulsar
