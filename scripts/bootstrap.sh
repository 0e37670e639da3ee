#!/usr/bin/env bash
# Sourced by run.sh, test.sh and bench.sh: makes .venv with the pinned project (the extras named in
# UPLION_EXTRAS: run.sh takes only what the platform runs, test.sh adds the dev tools) and checks the
# system tools the real services need: Java 17 and Maven for Apache Pulsar (installed with apt-get
# when missing and root), Go 1.21+ for the rate-limit service (a go older than ratelimit/go.mod's
# 1.26.0 fetches that toolchain through the Go module proxy), Node.js 20.19+ with npm for the web
# console's build, and for the tests (UPLION_TEST_TOOLS=1) openssl and the deploy and console
# suites' Debian packages. Idempotent and quick when done before.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

if ! command -v java >/dev/null || ! command -v mvn >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless maven >/dev/null
  else
    echo "Apache Pulsar needs java (17+) and mvn on PATH" >&2; exit 1
  fi
fi

if ! command -v go >/dev/null || ! go version | grep -qE 'go1\.(2[1-9]|[3-9][0-9])'; then
  echo "the rate-limit service (ratelimit/, Go) needs go 1.21 or newer on PATH (https://go.dev/doc/install)" >&2
  exit 1
fi

if [ "${UPLION_TEST_TOOLS:-0}" = 1 ] && ! command -v openssl >/dev/null; then
  echo "the operator's tests need openssl on PATH (apt-get install openssl)" >&2; exit 1
fi

# the web console is built with Vite 7 (the platform serves it; the tests drive it and the Node SDK)
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "the web console's build needs Node.js 20.19+ and npm on PATH (https://nodejs.org)" >&2; exit 1
fi
node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)' \
  || { echo "the web console's build needs Node.js 20.19+, found $(node --version)" >&2; exit 1; }

# The deploy and console suites: images built and run daemonless (buildah, podman with runc, skopeo, umoci; a
# Debian base made by debootstrap) and the console driven in Debian's Chromium. Installed with apt-get
# when missing and root; otherwise the run stops and names the packages.
if [ "${UPLION_TEST_TOOLS:-0}" = 1 ]; then
  declare -A deb_tools=([buildah]=buildah [podman]=podman [skopeo]=skopeo [umoci]=umoci
                        [debootstrap]=debootstrap [chromium]=chromium [newuidmap]=uidmap [runc]=runc)
  need=()
  for tool in "${!deb_tools[@]}"; do command -v "$tool" >/dev/null || need+=("${deb_tools[$tool]}"); done
  if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "installing Debian packages for the deploy and console tests: ${need[*]}"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    else
      echo "the test suite needs these Debian packages: apt-get install ${need[*]}" >&2; exit 1
    fi
  fi
fi

py=${UPLION_PYTHON:-}
if [ -z "$py" ]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      py=$cand; break
    fi
  done
fi
[ -n "$py" ] || { echo "uplion needs Python 3.11" >&2; exit 1; }

# The stamp holds the hash of pyproject.toml and the extras installed with it, written only after
# pip succeeded: a changed pyproject.toml, a missing extra or an interrupted install reinstalls.
extras=${UPLION_EXTRAS:-services,local,operator,dev}
stamp=.venv/.uplion-installed
want=$(sha256sum pyproject.toml | cut -c1-16)
read -r have_hash have_extras 2>/dev/null < "$stamp" || { have_hash=; have_extras=; }
missing=0
for e in ${extras//,/ }; do [[ ",$have_extras," == *",$e,"* ]] || missing=1; done
if [ ! -x .venv/bin/python ]; then "$py" -m venv .venv; fi
if [ "$have_hash" != "$want" ] || [ "$missing" = 1 ]; then
  [ "$have_hash" = "$want" ] && [ -n "$have_extras" ] && extras="$have_extras,$extras"
  echo "installing uplion[$extras] into .venv (pip's log: .venv/pip.log)"
  # xds-protos ships an old copy of OpenTelemetry's generated protos in the same files (whichever
  # installs last wins): opentelemetry-proto's own are put back last, for the OTLP exporter
  otel_proto=$(grep -o 'opentelemetry-proto==[^"]*' pyproject.toml)
  if ! { .venv/bin/python -m pip install -q --upgrade pip && .venv/bin/python -m pip install -q -e ".[$extras]" \
         && .venv/bin/python -m pip install -q --no-deps --force-reinstall "$otel_proto"; } > .venv/pip.log 2>&1; then
    tail -40 .venv/pip.log >&2; echo "pip install failed: see .venv/pip.log" >&2; exit 1
  fi
  echo "$want $extras" > "$stamp"
fi
export PATH="$root/.venv/bin:$PATH"
export VIRTUAL_ENV="$root/.venv"
