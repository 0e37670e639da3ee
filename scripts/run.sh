#!/usr/bin/env bash
# Starts the uplion platform locally on embedded defaults (no cloud account), until Ctrl-C.
set -euo pipefail
UPLION_EXTRAS=services,local source "$(dirname "$0")/bootstrap.sh"
exec python -m uplion.devstack up "$@"
