"""A real Kubernetes control plane for the operator's tests: etcd, kube-apiserver and
kube-controller-manager (Deployments, ReplicaSets, garbage collection), built once from the Go module
proxy into the cache and started on free loopback ports, the way controller-runtime's envtest runs
them. No kubelet: pods are created but never run (tests play the kubelet where they need to)."""

from __future__ import annotations

import json
import secrets
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from ssl import CERT_NONE, create_default_context

from .cache import Recipe, build
from .gotools import go_command, go_env, go_module_binary, go_recipe
from .procs import Proc, free_port, spawn, tcp_open, wait_until

KUBERNETES_VERSION = "1.35.4"
ETCD = ("go.etcd.io/etcd/server/v3", "v3.6.16")
COMPONENTS = ("kube-apiserver", "kube-controller-manager")


_TOOLS_GO = "//go:build tools\n\npackage tools\n\nimport (\n{imports}\n)\n"
_BUILD_MOD = "module uplionkube\n\ngo 1.25.0\n\nrequire k8s.io/kubernetes v{version}\n\nreplace (\n{replaces}\n)\n"


def version_flags(version: str) -> list[str]:
    """The version the binaries report (`/version`, what `helm` checks a chart's kubeVersion against):
    without these stamps a build from the module says v0.0.0-master."""
    major, minor = version.split(".")[:2]
    stamps = {"gitVersion": f"v{version}", "gitMajor": major, "gitMinor": minor, "gitTreeState": "clean"}
    return ["-ldflags", " ".join(f"-X k8s.io/component-base/version.{k}={v}" for k, v in stamps.items())]


def kubernetes_recipe(version: str = KUBERNETES_VERSION) -> Recipe:
    """kube-apiserver and kube-controller-manager: the version, the throwaway module's templates (every
    staging module pinned to v0.<minor>), the components, the version stamps and the Go toolchain."""
    return go_recipe(f"kubernetes-{version}", version=version, components=",".join(COMPONENTS),
                     module=_BUILD_MOD, tools=_TOOLS_GO, flags=" ".join(version_flags(version)))  # fmt: skip


def kubernetes_binaries(version: str = KUBERNETES_VERSION, timeout: float = 3600.0) -> Path:
    """kube-apiserver and kube-controller-manager for `version`, built once per recipe.
    k8s.io/kubernetes is not meant to be imported, so a throwaway module pins every staging module
    it replaces to the matching v0.x release."""

    def make(out: Path) -> None:
        go, env = go_command(), go_env(GOFLAGS="-mod=mod")
        info = json.loads(subprocess.run([go, "mod", "download", "-json", f"k8s.io/kubernetes@v{version}"], env=env,
                                         capture_output=True, text=True, check=True, timeout=600).stdout)  # fmt: skip
        gomod = Path(info["GoMod"]).read_text().splitlines()
        staging = [line.split()[0] for line in gomod if "=> ./staging/" in line]
        minor = version.split(".", 1)[1]
        with tempfile.TemporaryDirectory(prefix="uplion-kube-build-") as tmp:
            mod = Path(tmp)
            replaces = "\n".join(f"\t{m} => {m} v0.{minor}" for m in staging)
            (mod / "go.mod").write_text(_BUILD_MOD.format(version=version, replaces=replaces))
            imports = "\n".join(f'\t_ "k8s.io/kubernetes/cmd/{c}"' for c in COMPONENTS)
            (mod / "tools.go").write_text(_TOOLS_GO.format(imports=imports))
            subprocess.run([go, "mod", "tidy"], cwd=mod, env=env, check=True, timeout=timeout)
            subprocess.run([go, "build", *version_flags(version), "-o", f"{out}/",
                            *[f"k8s.io/kubernetes/cmd/{c}" for c in COMPONENTS]],
                           cwd=mod, env=env, check=True, timeout=timeout)  # fmt: skip

    return build(kubernetes_recipe(version), make)


def etcd_binary() -> Path:
    return go_module_binary(*ETCD, name="etcd")


@dataclass
class Kube:
    etcd: Proc
    apiserver: Proc
    controllers: Proc
    port: int
    token: str
    kubeconfig: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def stop(self) -> None:
        for p in (self.controllers, self.apiserver, self.etcd):
            p.stop(timeout=15)


def _ready(url: str, token: str) -> bool:
    ctx = create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = CERT_NONE  # before the API server is up its certificate may not exist yet
    req = urllib.request.Request(f"{url}/readyz", headers={"Authorization": f"Bearer {token}"})  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=2, context=ctx) as resp:  # noqa: S310 - loopback only
            return bool(resp.status == 200)
    except OSError:
        return False


def start_kube(workdir: Path, timeout: float = 120.0) -> Kube:
    workdir.mkdir(parents=True, exist_ok=True)
    bins = kubernetes_binaries()
    client_port, peer_port = free_port(), free_port()
    etcd = spawn("etcd", [
        str(etcd_binary()), "--name", "uplion", "--data-dir", str(workdir / "etcd"),
        "--listen-client-urls", f"http://127.0.0.1:{client_port}",
        "--advertise-client-urls", f"http://127.0.0.1:{client_port}",
        "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
        "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
        "--initial-cluster", f"uplion=http://127.0.0.1:{peer_port}",
        "--unsafe-no-fsync", "--log-level", "warn",
    ], workdir / "etcd.log")  # fmt: skip
    wait_until(etcd, lambda: tcp_open("127.0.0.1", client_port), 60, interval=0.1)

    token = secrets.token_urlsafe(32)
    (workdir / "tokens.csv").write_text(f"{token},admin,admin,system:masters\n")
    key, pub = workdir / "sa.key", workdir / "sa.pub"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
    subprocess.run(["openssl", "rsa", "-in", str(key), "-pubout", "-out", str(pub)], check=True, capture_output=True)
    port = free_port()
    apiserver = spawn("kube-apiserver", [
        str(bins / "kube-apiserver"),
        "--etcd-servers", f"http://127.0.0.1:{client_port}",
        "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1", "--secure-port", str(port),
        "--cert-dir", str(workdir / "certs"),
        "--token-auth-file", str(workdir / "tokens.csv"),
        "--authorization-mode", "RBAC",
        "--service-account-key-file", str(pub), "--service-account-signing-key-file", str(key),
        "--service-account-issuer", "https://kubernetes.default.svc",
        "--service-cluster-ip-range", "10.96.0.0/24",
        "--allow-privileged=true",
        "--v", "0",
    ], workdir / "kube-apiserver.log")  # fmt: skip
    url = f"https://127.0.0.1:{port}"
    wait_until(apiserver, lambda: _ready(url, token), timeout, interval=0.3)

    kubeconfig = workdir / "kubeconfig"
    ca = str(workdir / "certs" / "apiserver.crt")  # the API server made its own serving certificate
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "uplion",
        "clusters": [{"name": "uplion", "cluster": {"server": url, "certificate-authority": ca}}],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [{"name": "uplion", "context": {"cluster": "uplion", "user": "admin", "namespace": "default"}}],
    }))  # fmt: skip
    kubeconfig.chmod(0o600)
    controllers = spawn("kube-controller-manager", [
        str(bins / "kube-controller-manager"),
        "--kubeconfig", str(kubeconfig), "--authentication-kubeconfig", str(kubeconfig),
        "--authorization-kubeconfig", str(kubeconfig),
        "--controllers", "deployment,replicaset,garbagecollector,serviceaccount",
        "--leader-elect=false", "--bind-address", "127.0.0.1", "--secure-port", str(free_port()),
        "--concurrent-gc-syncs", "5",
        "--v", "0",
    ], workdir / "kube-controller-manager.log")  # fmt: skip
    time.sleep(0.5)
    if not controllers.alive():
        raise RuntimeError(f"kube-controller-manager exited: {controllers.log_tail()}")
    return Kube(etcd, apiserver, controllers, port, token, kubeconfig)
