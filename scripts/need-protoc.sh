#!/usr/bin/env bash
# Makes sure `protoc` is installed: the Spark Connect client's build
# (backfill-spark) compiles Spark's protocol definitions with it. Installs
# Debian's protobuf-compiler when it is missing.
set -euo pipefail
if ! command -v protoc >/dev/null 2>&1; then
  echo "need-protoc: protoc not found; installing protobuf-compiler with apt" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq protobuf-compiler >&2
fi
