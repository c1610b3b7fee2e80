#!/usr/bin/env bash
# Runs the benchmark harness (benches/harness.rs) against an embedded DuckDB,
# a throwaway PostgreSQL cluster and a Sail Spark Connect server, and prints
# the table the README shows.
#
#   ./scripts/bench.sh                    # everything, 10M rows on both engines
#   ./scripts/bench.sh --only refunds     # one group: plan, inspect, refunds, workers
#   ./scripts/bench.sh --rows 1000000     # smaller tables to inspect (--pg-rows N for Postgres)
#   ./scripts/bench.sh --orders 1000000   # a smaller refunds workload (--pg-orders N, --spark-orders N)
#   ./scripts/bench.sh --only spark       # the refunds fix on Spark (Sail, Delta tables)
#
# It builds in the dev profile, which already optimizes the bundled DuckDB
# (see Cargo.toml), so the tests, the examples and the benchmarks share one
# DuckDB build. Figures are ratios against hand-written SQL measured in the
# same run.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/backfill-target}"
./scripts/need-protoc.sh
exec ./scripts/with-postgres.sh ./scripts/with-spark.sh cargo bench --profile dev --all-features --bench harness -- "$@"
