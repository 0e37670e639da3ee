"""OpenTofu and the Terraform providers uplion's modules use (`terraform/`), built from their sources
through the Go module proxy into the cache, and a CLI config that makes `tofu init` install the
providers from that local filesystem mirror only (the public registries are not reachable here).

Each program is built inside its own module's source (so its go.mod's `replace` directives apply),
downloaded with `go mod download` at a pinned version. Only versions the module proxy serves can be
built: the providers' v2+ tags are not valid Go module versions, and this machine's proxy answers 403
"This module version is not available." for every pseudo-version of the provider modules, so the
providers are pinned to the newest versions the proxy lists (see terraform/README.md)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .cache import Recipe, build
from .gotools import go_command, go_env, go_recipe

REGISTRY = "registry.opentofu.org"
PLATFORM = "linux_amd64"
_BUILD = ["build", "-trimpath"]


@dataclass(frozen=True)
class GoProgram:
    """A main package built inside the source of the module that holds it."""

    module: str
    version: str
    package: str  # relative to the module root, e.g. "./cmd/tofu"
    name: str
    ldflags: str = ""
    replaces: tuple[str, ...] = ()  # `go mod edit -replace old=new@version` (dependency fixes)
    pins: tuple[str, ...] = ()  # `go get module@version` run before the build (dependency fixes)

    def recipe(self) -> Recipe:
        return go_recipe(self.name, module=self.module, version=self.version, package=self.package,
                         ldflags=self.ldflags, replaces=",".join(self.replaces), pins=",".join(self.pins),
                         command="go mod download; go mod edit -replace; go get; " + " ".join(_BUILD))  # fmt: skip


@dataclass(frozen=True)
class Provider:
    namespace: str
    type: str
    version: str  # the version tofu sees (required_providers constraints match it)
    program: GoProgram

    @property
    def address(self) -> str:
        return f"{REGISTRY}/{self.namespace}/{self.type}"

    def mirror_path(self) -> str:
        """Where the unpacked filesystem-mirror layout puts the executable."""
        return f"{self.address}/{self.version}/{PLATFORM}/terraform-provider-{self.type}_v{self.version}"


OPENTOFU = GoProgram("github.com/opentofu/opentofu", "v1.12.6", "./cmd/tofu", "tofu",
                     ldflags="-s -w -X github.com/opentofu/opentofu/version.dev=no")  # fmt: skip

# Fixes for the 2020/2021 provider sources: vbom.ml (a dead vanity host; the proxy answers 403) is in
# their module graph but no package of it is built, and reflect2 < 1.0.2 crashes on Go >= 1.18.
_OLD_PROVIDER_REPLACES = ("vbom.ml/util=github.com/fvbommel/sortorder@v1.0.1",)
_OLD_PROVIDER_PINS = ("github.com/modern-go/reflect2@v1.0.2", "github.com/json-iterator/go@v1.1.12")
KUBERNETES = Provider("hashicorp", "kubernetes", "1.13.4", GoProgram(
    "github.com/hashicorp/terraform-provider-kubernetes", "v1.13.4", ".", "terraform-provider-kubernetes",
    ldflags="-s -w", replaces=_OLD_PROVIDER_REPLACES, pins=_OLD_PROVIDER_PINS))  # fmt: skip
HELM = Provider("hashicorp", "helm", "1.3.2", GoProgram(
    "github.com/hashicorp/terraform-provider-helm", "v1.3.2", ".", "terraform-provider-helm",
    ldflags="-s -w", replaces=_OLD_PROVIDER_REPLACES, pins=_OLD_PROVIDER_PINS))  # fmt: skip
# The AWS provider: the proxy lists only v1.x and refuses its pseudo-versions. v1.60.0, the newest,
# builds but speaks Terraform 0.11's plugin protocol 4, which OpenTofu refuses ("incompatible API
# version with plugin. Plugin version: 4, Client versions: [5 6]"); it is in no mirror, and kept here
# only to reproduce that (terraform/README.md).
AWS = Provider("hashicorp", "aws", "1.60.0", GoProgram(
    "github.com/hashicorp/terraform-provider-aws", "v1.60.0", ".", "terraform-provider-aws",
    ldflags="-s -w"))  # fmt: skip

PLATFORM_PROVIDERS: tuple[Provider, ...] = (KUBERNETES, HELM)


def _make_writable(root: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        for n in [*dirnames, *filenames]:
            p = Path(dirpath) / n
            if not p.is_symlink():
                p.chmod(p.stat().st_mode | stat.S_IWUSR)
    root.chmod(root.stat().st_mode | stat.S_IWUSR)


def build_program(program: GoProgram, timeout: float = 3600.0) -> Path:
    """The program's binary, built once per recipe inside a writable copy of its module's source."""

    def make(out: Path) -> None:
        go, env = go_command(), go_env(GOFLAGS="-mod=mod")
        ref = f"{program.module}@{program.version}"
        got = subprocess.run([go, "mod", "download", "-json", ref], env=env, capture_output=True, text=True,
                             timeout=timeout)  # fmt: skip
        if got.returncode != 0:  # the JSON on stdout carries the proxy's answer (e.g. 403 not available)
            raise RuntimeError(f"go mod download {ref} failed: {got.stdout.strip()} {got.stderr.strip()}")
        info = json.loads(got.stdout)
        with tempfile.TemporaryDirectory(prefix=f"uplion-{program.name}-src-") as tmp:
            src = Path(tmp) / "src"
            shutil.copytree(info["Dir"], src, symlinks=True)
            _make_writable(src)
            for replace in program.replaces:
                subprocess.run([go, "mod", "edit", "-replace", replace], cwd=src, env=env, check=True)
            for pin in program.pins:
                subprocess.run([go, "get", pin], cwd=src, env=env, check=True, timeout=timeout)
            cmd = [go, *_BUILD, "-ldflags", program.ldflags, "-o", str(out / program.name), program.package]
            subprocess.run(cmd, cwd=src, env=env, check=True, timeout=timeout)

    return build(program.recipe(), make) / program.name


def tofu_binary() -> Path:
    return build_program(OPENTOFU)


def provider_binary(provider: Provider) -> Path:
    return build_program(provider.program)


def mirror_recipe(providers: Sequence[Provider]) -> Recipe:
    inputs: dict[str, str] = {}
    for p in providers:
        inputs[p.address] = f"{p.version} {p.program.recipe().key}"
    return Recipe("tofu-providers", inputs)


def provider_mirror(providers: Sequence[Provider] = PLATFORM_PROVIDERS) -> Path:
    """A filesystem mirror (unpacked layout) holding `providers`, each built from source first."""
    binaries = {p: provider_binary(p) for p in providers}

    def make(out: Path) -> None:
        for p, binary in binaries.items():
            dest = out / p.mirror_path()
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(binary, dest)

    return build(mirror_recipe(providers), make)


def cli_config_text(mirror: Path, plugin_cache: Path | None = None) -> str:
    """A tofu CLI config that installs every provider from `mirror` and never from a registry."""
    lines = [
        "provider_installation {",
        "  filesystem_mirror {",
        f"    path    = {json.dumps(str(mirror))}",
        f'    include = ["{REGISTRY}/*/*"]',
        "  }",
        "}",
    ]
    if plugin_cache is not None:
        lines.append(f"plugin_cache_dir = {json.dumps(str(plugin_cache))}")
    return "\n".join(lines) + "\n"


def write_cli_config(path: Path, mirror: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(cli_config_text(mirror))
    return path


def tofu_env(cli_config: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment tofu runs with: the offline CLI config, no update checks, no prompts."""
    return {**os.environ, "TF_CLI_CONFIG_FILE": str(cli_config), "TF_IN_AUTOMATION": "1",
            "CHECKPOINT_DISABLE": "1", "TF_INPUT": "0", **(extra or {})}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """`python -m uplion.devstack.tofu`: build tofu and the providers, write an offline CLI config and
    print how to use them."""
    import argparse
    import time

    parser = argparse.ArgumentParser(prog="python -m uplion.devstack.tofu", description=main.__doc__)
    parser.add_argument("--cli-config", type=Path, default=Path("build/tofu/tofu.rc"), help="where to write it")
    args = parser.parse_args(argv)
    start = time.monotonic()
    tofu = tofu_binary()
    mirror = provider_mirror()
    rc = write_cli_config(args.cli_config.resolve(), mirror)
    providers = ", ".join(f"{p.address} {p.version}" for p in PLATFORM_PROVIDERS)
    print(f"built in {time.monotonic() - start:.0f} s; providers: {providers}")
    print(f"export TF_CLI_CONFIG_FILE={rc}\nalias tofu={tofu}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
