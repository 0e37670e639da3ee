#!/usr/bin/env bash
# Runs a benchmark and prints its table: ./scripts/bench.sh spine [--duration S]
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh"
name=${1:?usage: scripts/bench.sh <spine> [args]}; shift
exec python -m "bench.$name" "$@"
