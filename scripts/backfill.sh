#!/usr/bin/env bash
# The `backfill` command from this checkout, built like ./scripts/test.sh
# builds it (one shared build). Arguments go to the command:
#
#   ./scripts/backfill.sh --help
#   ./scripts/backfill.sh plan -f examples/refunds_fix.yaml
set -euo pipefail
target="$("$(dirname "$0")/build.sh")"
exec "$target/debug/backfill" "$@"
