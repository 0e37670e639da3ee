#!/usr/bin/env bash
# Runs a benchmark and prints its table: ./scripts/bench.sh spine [--duration S]
# (spine, billing, authz, ratelimit, edge, peers, responses: bench/<name>.py; the soak takes
# ./scripts/bench.sh soak [--minutes M] [--rate R] [--interval S] instead)
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh"
name=${1:?usage: scripts/bench.sh <spine|billing|authz|ratelimit|edge|peers|responses|soak> [args]}; shift
exec python -m "bench.$name" "$@"
