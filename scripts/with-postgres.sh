#!/usr/bin/env bash
# Runs a command against a throwaway PostgreSQL cluster.
#
#   ./scripts/with-postgres.sh cargo test -p backfill-postgres
#
# The cluster comes from the local PostgreSQL binaries (installed with apt
# if missing): `initdb` runs as the `postgres` user (initdb refuses root),
# with trust authentication, a free port on 127.0.0.1, a temporary data
# directory and fsync off. The command sees the server through
# BACKFILL_PG_URL (a libpq connection string). The cluster is stopped and
# its directory removed when the command ends, however it ends.
set -euo pipefail

find_bindir() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then
      echo "$d"
    fi
  done | sort -V | tail -n 1
}

BINDIR="${PG_BINDIR:-$(find_bindir)}"
if [ -z "$BINDIR" ]; then
  echo "with-postgres: PostgreSQL server binaries not found; installing with apt" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
  BINDIR="$(find_bindir)"
fi
if [ -z "$BINDIR" ]; then
  echo "with-postgres: no initdb after install; giving up" >&2
  exit 1
fi

RUN_AS=()
if [ "$(id -u)" = "0" ]; then
  id postgres >/dev/null 2>&1 || useradd --system --home /var/lib/postgresql postgres
  RUN_AS=(runuser -u postgres --)
fi

PORT="$(python3 - <<'PY'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
)"
DATA="$(mktemp -d /tmp/backfill-pg.XXXXXX)"
chmod 755 "$DATA"
[ "${#RUN_AS[@]}" -gt 0 ] && chown postgres "$DATA"

cleanup() {
  "${RUN_AS[@]}" "$BINDIR/pg_ctl" -D "$DATA/db" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$DATA"
}
trap cleanup EXIT INT TERM

"${RUN_AS[@]}" "$BINDIR/initdb" -D "$DATA/db" -U postgres --auth=trust -E UTF8 --no-locale >"$DATA/initdb.log" 2>&1 \
  || { cat "$DATA/initdb.log" >&2; exit 1; }
"${RUN_AS[@]}" "$BINDIR/pg_ctl" -D "$DATA/db" -l "$DATA/server.log" -w -t 60 \
  -o "-p $PORT -h 127.0.0.1 -k $DATA -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
  start >/dev/null \
  || { cat "$DATA/server.log" >&2; exit 1; }

export BACKFILL_PG_URL="host=127.0.0.1 port=$PORT user=postgres dbname=postgres"
echo "with-postgres: PostgreSQL $("$BINDIR/postgres" --version | awk '{print $3}') on port $PORT" >&2
"$@"
