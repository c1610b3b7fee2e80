#!/usr/bin/env bash
# Runs every test of the workspace, the Postgres ones included: the tests
# run inside ./scripts/with-postgres.sh, which starts a throwaway cluster
# and stops it afterwards.
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

./scripts/with-postgres.sh cargo test --workspace --all-targets --all-features "$@"
# Doc examples.
cargo test --workspace --doc --all-features "$@"
