#!/usr/bin/env bash
# The one script that turns proto/ into gen/: Python messages, gRPC stubs, mypy stubs, and the
# descriptor set Envoy's gRPC-JSON transcoder loads. `--check` regenerates into a temporary
# directory and fails if gen/ differs (stale or hand-edited).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
py=${PYTHON:-python}

site=$("$py" -c 'import google.api, os; print(os.path.dirname(os.path.dirname(google.api.__path__[0])))')
deps=build/proto-deps
mkdir -p "$deps/google/api"
for f in annotations http httpbody; do cp "$site/google/api/$f.proto" "$deps/google/api/$f.proto"; done

out=gen
if [ "${1:-}" = "--check" ]; then out=$(mktemp -d); trap 'rm -rf "$out"' EXIT; fi
rm -rf "$out/python/uplion" "$out/descriptor" "$out/openapi"
mkdir -p "$out/python" "$out/descriptor" "$out/openapi"

mapfile -t protos < <(cd proto && find uplion -name '*.proto' | LC_ALL=C sort)
"$py" -m grpc_tools.protoc -I proto -I "$deps" \
  --python_out="$out/python" --grpc_python_out="$out/python" \
  --mypy_out="$out/python" --mypy_grpc_out="$out/python" \
  --include_imports --include_source_info=false --descriptor_set_out="$out/descriptor/uplion.pb" \
  "${protos[@]}" 2> >(grep -v "^Writing mypy to" >&2)

# the OpenAPI document of the REST surface, from the same descriptor set
PYTHONPATH="$root/edge${PYTHONPATH:+:$PYTHONPATH}" "$py" -m uplion.edge.openapi \
  --descriptor "$out/descriptor/uplion.pb" --out "$out/openapi/uplion.openapi.json"

if [ "${1:-}" = "--check" ]; then
  if ! cmp -s "$out/openapi/uplion.openapi.json" gen/openapi/uplion.openapi.json; then
    echo "gen/openapi is stale relative to proto/: run scripts/gen_proto.sh and commit gen/" >&2
    exit 1
  fi
  if ! diff -r "$out/python/uplion" gen/python/uplion >/dev/null || ! cmp -s "$out/descriptor/uplion.pb" gen/descriptor/uplion.pb; then
    echo "gen/ is stale relative to proto/: run scripts/gen_proto.sh and commit gen/" >&2
    diff -r "$out/python/uplion" gen/python/uplion | head -20 >&2 || true
    exit 1
  fi
  echo "gen/ is up to date"
fi

# the Istio EnvoyFilter embeds the descriptor set: regenerate it with gen/ (tests/edge/test_manifests.py
# fails when it is stale)
if [ "${1:-}" != "--check" ]; then
  PYTHONPATH="$root/edge${PYTHONPATH:+:$PYTHONPATH}" "$py" -m uplion.edge.istio
fi

# the Helm chart carries copies of the CRD, the Istio manifests and the Envoy edge's configuration
# (with the descriptor set): regenerate them too (tests/deploy/test_helm.py fails when they are stale)
if [ "${1:-}" != "--check" ]; then
  "$py" deploy/helm/generate.py
fi
