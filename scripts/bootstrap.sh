#!/usr/bin/env bash
# Sourced by run.sh and test.sh: makes .venv with the pinned project and the system tools the
# real services need (Java 17 and Maven for Apache Pulsar; Go 1.21+ for the rate-limit service, which
# fetches the toolchain its go.mod names). Idempotent and quick when done before.
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
  echo "the rate-limit service (ratelimit/, Go) needs go 1.21 or newer on PATH" >&2; exit 1
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

stamp=.venv/.uplion-installed
want=$(cat pyproject.toml | sha256sum | cut -c1-16)
if [ ! -x .venv/bin/python ]; then "$py" -m venv .venv; fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[services,dev,local,operator]"
  echo "$want" > "$stamp"
fi
export PATH="$root/.venv/bin:$PATH"
export VIRTUAL_ENV="$root/.venv"
