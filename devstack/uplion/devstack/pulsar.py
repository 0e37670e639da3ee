"""Apache Pulsar standalone, assembled from Maven Central and run on free loopback ports."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .cache import Recipe, build, tool_version
from .procs import Proc, free_port, http_status, spawn, wait_until

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


def _standalone_conf(broker_port: int, web_port: int) -> str:
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
        "authenticationEnabled": "false",
        "authorizationEnabled": "false",
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


@dataclass
class Pulsar:
    proc: Proc
    broker_port: int
    web_port: int
    bookie_port: int = 0
    workdir: Path | None = None

    @property
    def service_url(self) -> str:
        return f"pulsar://127.0.0.1:{self.broker_port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def admin_text(self, path: str) -> str:
        with urllib.request.urlopen(self.admin_url + path, timeout=10) as resp:  # noqa: S310 - loopback
            return str(resp.read().decode())

    def admin_get(self, path: str) -> object:
        return json.loads(self.admin_text(path))

    def create_namespace(self, namespace: str) -> None:
        """Create `public/<namespace>` (tests isolate their topics this way)."""
        url = f"{self.admin_url}/admin/v2/namespaces/public/{namespace}"
        req = urllib.request.Request(url, method="PUT")  # noqa: S310 - loopback
        with urllib.request.urlopen(req, timeout=10):  # noqa: S310 - loopback
            pass

    def stop(self) -> None:
        self.proc.stop(timeout=30)


MIN_FREE_BYTES = 1 << 30
_READ_ONLY = "Transitioning Bookie to ReadOnly"


def check_free_space(workdir: Path, minimum: int = MIN_FREE_BYTES) -> None:
    """Fail at once, and say why, when the bookie would have no room to write."""
    free = shutil.disk_usage(workdir).free
    if free < minimum:
        raise RuntimeError(f"Pulsar needs {minimum >> 20} MiB free under {workdir}, only {free >> 20} MiB left")


def restart_pulsar(pulsar: Pulsar, timeout: float = 180.0) -> Pulsar:
    """Start a stopped broker again on its data and ports (a bookie is known by its address, so its
    port must not change): clients that kept the broker's URL reconnect by themselves."""
    assert pulsar.workdir is not None, "a broker started by start_pulsar"
    return start_pulsar(pulsar.workdir, timeout, ports=(pulsar.broker_port, pulsar.web_port, pulsar.bookie_port))


def start_pulsar(workdir: Path, timeout: float = 180.0, ports: tuple[int, int, int] | None = None) -> Pulsar:
    """A standalone broker on free loopback ports, or on `ports` (broker, web, bookie) again."""
    lib = ensure_jars()
    workdir.mkdir(parents=True, exist_ok=True)
    check_free_space(workdir)
    broker_port, web_port, bk_port = ports or (free_port(), free_port(), free_port())
    conf = workdir / "standalone.conf"
    conf.write_text(_standalone_conf(broker_port, web_port))
    java = [
        "java",
        "-Xms128m",
        "-Xmx512m",
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
    pulsar = Pulsar(proc, broker_port, web_port, bk_port, workdir)
    wait_until(
        proc,
        lambda: http_status(f"{pulsar.admin_url}/admin/v2/namespaces/public/default") == 200,
        timeout,
        interval=0.5,
    )
    log = (workdir / "pulsar.log").read_text(errors="replace")
    if _READ_ONLY in log:
        pulsar.stop()
        raise RuntimeError(f"Pulsar's bookie started read-only (disk full?); see {workdir}/pulsar.log")
    return pulsar
