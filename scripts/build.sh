#!/usr/bin/env bash
# Builds what ./scripts/test.sh builds, in the same target directory and
# with the same flags, so that the README's commands share one build of
# the bundled DuckDB; prints the target directory.
#
#   ./scripts/build.sh            # build; print the target directory
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/backfill-target}"
./scripts/need-protoc.sh
cargo test --workspace --all-targets --all-features --no-run --quiet >&2
echo "$CARGO_TARGET_DIR"
