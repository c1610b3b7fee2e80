#!/usr/bin/env bash
# Kills real backfills with SIGKILL at random moments and resumes them with
# one plain rerun:
#
#   - DuckDB: the refunds example (`--orders`, 300k by default) on a file;
#     each trial kills the run at a random moment, reruns the same command
#     once, and compares the revenue table's checksum with a clean run's.
#   - PostgreSQL: the workers example with four worker processes; each
#     trial kills one worker at a random moment, lets the others finish,
#     reruns once, and checks that the table equals the corrected source.
#
#   ./scripts/chaos.sh [DUCKDB_TRIALS] [POSTGRES_TRIALS]    # 50 and 20
#
# One line per trial (where the kill landed, how long the resume took,
# whether the table is right), then a summary; `chaos-results.txt` keeps
# the lines. Exits non-zero if any trial ends with a wrong table or a
# resume that does not complete.
set -euo pipefail
cd "$(dirname "$0")/.."

DUCK_TRIALS="${1:-50}"
PG_TRIALS="${2:-20}"
ORDERS="${CHAOS_ORDERS:-300000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/backfill-target}"
cargo build --workspace --all-targets --all-features >&2
BIN="$CARGO_TARGET_DIR/debug/examples"
WORK="$(mktemp -d /tmp/backfill-chaos.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
OUT=chaos-results.txt
: >"$OUT"
bad=0

now() { date +%s.%N; }
rnd() { python3 -c "import random; print(round(random.uniform($1, $2), 2))"; }
checksum_of() { grep -o 'revenue table checksum: .*' "$1" | head -n 1 || true; }

if [ "$DUCK_TRIALS" -gt 0 ]; then
  echo "duckdb: a clean run of the refunds example ($ORDERS orders)" >&2
  t0=$(now)
  "$BIN/refunds_fix" --fresh --orders "$ORDERS" --db "$WORK/clean.duckdb" >"$WORK/clean.log" 2>&1
  clean_secs=$(python3 -c "print(round($(now) - $t0, 1))")
  clean=$(checksum_of "$WORK/clean.log")
  [ -n "$clean" ] || { echo "the clean run printed no checksum" >&2; cat "$WORK/clean.log" >&2; exit 1; }
  echo "duckdb: clean run ${clean_secs}s, $clean" | tee -a "$OUT"
  for i in $(seq 1 "$DUCK_TRIALS"); do
    db="$WORK/trial.duckdb"
    rm -f "$db" "$db.wal"
    at=$(rnd 0.3 "$clean_secs")
    "$BIN/refunds_fix" --orders "$ORDERS" --db "$db" >"$WORK/killed.log" 2>&1 &
    pid=$!
    sleep "$at"
    if kill -9 "$pid" 2>/dev/null; then killed=yes; else killed=no; fi
    wait "$pid" 2>/dev/null || true
    # Where it landed: the last step the killed run printed.
    where=$(grep -E '^(-- |wrote |== )' "$WORK/killed.log" | tail -n 1 | cut -c1-40)
    t0=$(now)
    rc=0
    "$BIN/refunds_fix" --orders "$ORDERS" --db "$db" >"$WORK/resume.log" 2>&1 || rc=$?
    resume=$(python3 -c "print(round($(now) - $t0, 2))")
    got=$(checksum_of "$WORK/resume.log")
    wrote=$(grep -oE '^wrote [0-9]+ batches|^nothing to do' "$WORK/resume.log" | head -n 1 || true)
    ok=no
    if [ "$rc" = 0 ] && [ "$got" = "$clean" ]; then ok=yes; else bad=$((bad + 1)); fi
    printf 'duckdb trial %2d: killed at %5.2fs (%s) after "%s"; resume rc=%s in %ss (%s); table equals a clean run: %s\n' \
      "$i" "$at" "$killed" "${where:-start}" "$rc" "$resume" "${wrote:-?}" "$ok" | tee -a "$OUT"
  done
fi

if [ "$PG_TRIALS" -gt 0 ]; then
  cat >"$WORK/pg.sh" <<EOF
set -u
bad=0
for i in \$(seq 1 $PG_TRIALS); do
  "$BIN/pg_workers" --reset --processes >"$WORK/pg1.log" 2>&1 &
  pid=\$!
  at=\$(python3 -c "import random; print(round(random.uniform(0.3, 2.5), 2))")
  sleep "\$at"
  victim=\$(pgrep -f "pg_workers --worker" | shuf -n 1 || true)
  if [ -n "\$victim" ] && kill -9 "\$victim" 2>/dev/null; then killed=yes; else killed=no; fi
  wait "\$pid" || true
  first=\$(grep -oE '^(done|incomplete)' "$WORK/pg1.log" | head -n 1)
  t0=\$(date +%s.%N)
  rc=0
  "$BIN/pg_workers" --processes >"$WORK/pg2.log" 2>&1 || rc=\$?
  resume=\$(python3 -c "print(round(\$(date +%s.%N) - \$t0, 2))")
  equal=\$(grep -oE 'equals the corrected source: (yes|no)' "$WORK/pg2.log" | grep -oE '(yes|no)\$')
  ok=no
  if [ "\$rc" = 0 ] && [ "\$equal" = yes ]; then ok=yes; else bad=\$((bad + 1)); fi
  printf 'postgres trial %2d: a worker killed at %5.2fs (%s); survivors ended "%s"; resume rc=%s in %ss; table equals the corrected source: %s\n' \
    "\$i" "\$at" "\$killed" "\$first" "\$rc" "\$resume" "\$ok"
done
exit \$bad
EOF
  pg_rc=0
  ./scripts/with-postgres.sh bash "$WORK/pg.sh" | tee -a "$OUT" || pg_rc=$?
  bad=$((bad + pg_rc))
fi

total=$((DUCK_TRIALS + PG_TRIALS))
echo "$((total - bad)) passed, $bad failed" | tee -a "$OUT"
[ "$bad" = 0 ]
