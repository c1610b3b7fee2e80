#!/usr/bin/env bash
# Formatting and clippy (warnings are errors) for the whole workspace.
#
# Clippy runs as the compiler wrapper of a normal build, so it reuses the
# compiled bundled DuckDB instead of building it a second time in check
# mode.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/backfill-target}"
./scripts/need-protoc.sh

cargo fmt --all -- --check
# Core stays a layered graph (see backfill-core/src/lib.rs).
python3 scripts/modcycles.py backfill-core/src --fail
RUSTC_WORKSPACE_WRAPPER="$(rustup which clippy-driver)" \
CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__" \
  cargo build --workspace --all-targets --all-features
# Rustdoc for the crates that do not link DuckDB (documenting the DuckDB
# adapter would also build DuckDB in check mode); its docs are checked by
# the missing_docs lint above.
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps -p backfill-core -p backfill-testkit -p backfill-postgres -p backfill-spark
