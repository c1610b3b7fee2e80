#!/usr/bin/env bash
# Runs every test of the workspace, the Postgres and Spark ones included:
# the tests run inside ./scripts/with-postgres.sh and ./scripts/with-spark.sh,
# which start a throwaway PostgreSQL cluster and a Sail server (installing
# what is missing) and stop them afterwards.
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

./scripts/with-postgres.sh ./scripts/with-spark.sh \
  cargo test --workspace --all-targets --all-features "$@"
# Doc examples.
cargo test --workspace --doc --all-features "$@"
