#!/usr/bin/env bash
# The README's first command: the refunds fix on an embedded DuckDB file,
# from the Rust API (examples/refunds_fix.rs). Arguments go to the example:
#
#   ./scripts/demo.sh                    # run (or resume, or confirm done)
#   ./scripts/demo.sh --stop-after 40    # stop part-way; run again to resume
#   ./scripts/demo.sh --fresh            # start over with a new database
set -euo pipefail
target="$("$(dirname "$0")/build.sh")"
exec "$target/debug/examples/refunds_fix" "$@"
