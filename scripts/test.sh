#!/usr/bin/env bash
# The whole test suite: contract checks, lint, types, then pytest against real services.
# Extra arguments go to pytest (e.g. scripts/test.sh -k pulsar).
set -euo pipefail
UPLION_TEST_TOOLS=1 source "$(dirname "$0")/bootstrap.sh"

echo "== contract: gen/ matches proto/, buf lint, buf breaking"
scripts/gen_proto.sh --check
buf lint
scripts/buf_breaking.sh

echo "== lint and types"
ruff check .
ruff format --check .
mypy
# the rate-limit service is Go (ratelimit/): formatted, vetted, its unit tests
(cd ratelimit && test -z "$(gofmt -l .)" || { gofmt -l .; echo "gofmt: the files above need formatting"; exit 1; })
(cd ratelimit && go vet ./... && go test ./...)

echo "== builds and fetches the tests need (each a cache lookup when its recipe is unchanged)"
python -m uplion.devstack.prebuild

echo "== tests"
python -m pytest -p no:cacheprovider "$@"
