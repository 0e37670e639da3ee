#!/usr/bin/env bash
# buf breaking on the committed descriptor sets: the working tree's gen/ against HEAD's when proto
# changed since HEAD, else HEAD's against its parent's. A commit that breaks the contract on
# purpose says "[breaking-proto]" in its message.
set -euo pipefail
cd "$(dirname "$0")/.."
desc=gen/descriptor/uplion.pb
git rev-parse -q --verify HEAD >/dev/null || { echo "buf breaking: no commit yet"; exit 0; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
if ! git diff --quiet HEAD -- proto gen/descriptor; then
  new=$desc; base=HEAD
else
  git rev-parse -q --verify HEAD~1 >/dev/null || { echo "buf breaking: first commit"; exit 0; }
  if git log -1 --format=%B HEAD | grep -qF '[breaking-proto]'; then
    echo "buf breaking: HEAD declares [breaking-proto]"; exit 0
  fi
  git show "HEAD:$desc" > "$tmp/new.binpb" 2>/dev/null || { echo "buf breaking: no descriptor at HEAD"; exit 0; }
  new=$tmp/new.binpb; base=HEAD~1
fi
git show "$base:$desc" > "$tmp/old.binpb" 2>/dev/null || { echo "buf breaking: no descriptor at $base"; exit 0; }
buf breaking "$new#format=binpb" --against "$tmp/old.binpb#format=binpb"
echo "buf breaking: no breaking change against $base"
