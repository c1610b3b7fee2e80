#!/usr/bin/env bash
# Runs every test of the workspace.
#
#   ./scripts/test.sh            # all tests
#   ./scripts/test.sh -p NAME    # extra arguments go to `cargo test`
#
# The build reuses a persistent target directory outside the checkout
# (override with CARGO_TARGET_DIR), so a second run only rebuilds what
# changed; the bundled DuckDB is compiled once.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/backfill-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

cargo test --workspace --all-targets "$@"
# Doc examples (the workspace's doc tests; adapters keep theirs no_run).
cargo test --workspace --doc "$@"
