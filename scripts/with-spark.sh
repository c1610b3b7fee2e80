#!/usr/bin/env bash
# Runs a command against two throwaway Spark Connect servers:
#   - Sail (a Spark Connect server written in Rust, with Delta tables);
#   - Apache Spark 4.0.1 (the JVM engine, from the pyspark wheel, which
#     bundles its jars and the Spark Connect server; tables in parquet,
#     since the Delta jars come only from Maven), as a standalone cluster:
#     a master, a worker whose executor runs the queries, and the Spark
#     Connect server as the driver.
#
#   ./scripts/with-spark.sh cargo test -p backfill-spark
#
# Installs what is missing: protoc and Java 17 (Debian), and pysail and
# pyspark from PyPI into virtual environments under ~/.cache/backfill-spark
# (outside the checkout; override with BACKFILL_SPARK_CACHE). Starts both on
# free ports of 127.0.0.1, waits until they listen, and exports
#   BACKFILL_SPARK_SAIL_URL    sc://127.0.0.1:PORT of Sail
#   BACKFILL_SPARK_JVM_URL     sc://127.0.0.1:PORT of Apache Spark
#   BACKFILL_SPARK_WAREHOUSE   a temporary directory for their tables
# The servers are stopped and the directory removed when the command ends,
# however it ends.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
"$ROOT/scripts/need-protoc.sh"
CACHE="${BACKFILL_SPARK_CACHE:-$HOME/.cache/backfill-spark}"

# Installs a PyPI package into its own virtual environment under the cache,
# once: built beside it and moved in whole, so an interrupted install is
# never taken for a finished one. (The environment's scripts keep naming
# the interpreter by the path it was built at; the servers are started
# through the interpreter, so the move is harmless.)
venv() {
  local dir="$CACHE/$1" package="$2"
  if [ ! -d "$dir" ]; then
    echo "with-spark: installing $package into $dir" >&2
    mkdir -p "$CACHE"
    rm -rf "$dir.partial"
    python3 -m venv "$dir.partial"
    "$dir.partial/bin/pip" install --quiet --disable-pip-version-check "$package" >&2
    mv "$dir.partial" "$dir"
  fi
}

SAIL_VERSION=0.7.2
VENV="$CACHE/sail-$SAIL_VERSION"
venv "sail-$SAIL_VERSION" "pysail==$SAIL_VERSION"
SPARK_VERSION=4.0.1
SPARK_VENV="$CACHE/spark-$SPARK_VERSION"
venv "spark-$SPARK_VERSION" "pyspark==$SPARK_VERSION"
SPARK_HOME="$(echo "$SPARK_VENV"/lib/python3*/site-packages/pyspark)"
if ! command -v java >/dev/null 2>&1; then
  echo "with-spark: java not found; installing openjdk-17-jre-headless with apt" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq openjdk-17-jre-headless >&2
fi

free_port() {
  python3 - <<'PY'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
}
SAIL_PORT="$(free_port)"
# Distinct free ports: Sail, Spark Connect, the master, and the master's
# and worker's web pages.
PORTS=()
while [ "${#PORTS[@]}" -lt 4 ]; do
  p="$(free_port)"
  case " $SAIL_PORT ${PORTS[*]} " in
    *" $p "*) ;;
    *) PORTS+=("$p") ;;
  esac
done
JVM_PORT="${PORTS[0]}"
MASTER_PORT="${PORTS[1]}"
DATA="$(mktemp -d /tmp/backfill-spark.XXXXXX)"
mkdir -p "$DATA/warehouse"

PIDS=()
# Stops every server's whole process group: TERM, up to 10 s to go, then
# KILL; only then is their directory removed.
CMD=""
cleanup() {
  local p
  if [ -n "$CMD" ]; then
    kill -TERM "$CMD" 2>/dev/null || true
  fi
  for p in "${PIDS[@]}"; do
    kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || true
  done
  for _ in $(seq 1 100); do
    local alive=0
    for p in "${PIDS[@]}"; do
      if kill -0 -- "-$p" 2>/dev/null; then alive=1; fi
    done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for p in "${PIDS[@]}"; do
    kill -KILL -- "-$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  rm -rf "$DATA"
}
trap cleanup EXIT
# A signal ends the script (and so runs the cleanup) at once.
trap 'exit 130' INT
trap 'exit 143' TERM

# Each in its own process group, so that stopping it stops all of it.
# Sail runs in one process (`local`; BACKFILL_SAIL_MODE=local-cluster for
# its driver and workers apart, where it has been seen to fail a query
# with "a different attempt has already produced job output").
( cd "$DATA" && SAIL_MODE="${BACKFILL_SAIL_MODE:-local}" exec setsid "$VENV/bin/python" "$VENV/bin/sail" \
    spark server --ip 127.0.0.1 --port "$SAIL_PORT" ) >"$DATA/sail.log" 2>&1 &
PIDS+=($!)
MASTER="spark://127.0.0.1:$MASTER_PORT"
( cd "$DATA" && SPARK_HOME="$SPARK_HOME" SPARK_LOCAL_IP=127.0.0.1 exec setsid \
    "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.master.Master \
    --host 127.0.0.1 --port "$MASTER_PORT" --webui-port "${PORTS[2]}" ) >"$DATA/master.log" 2>&1 &
PIDS+=($!)
# The worker starts its executors in its own process group, so stopping
# the group stops them too.
mkdir -p "$DATA/work"
( cd "$DATA" && SPARK_HOME="$SPARK_HOME" SPARK_LOCAL_IP=127.0.0.1 exec setsid \
    "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.worker.Worker \
    --host 127.0.0.1 --cores 2 --memory 2g --webui-port "${PORTS[3]}" \
    --work-dir "$DATA/work" "$MASTER" ) >"$DATA/worker.log" 2>&1 &
PIDS+=($!)
( cd "$DATA" && SPARK_HOME="$SPARK_HOME" SPARK_LOCAL_IP=127.0.0.1 exec setsid \
    "$SPARK_HOME/bin/spark-submit" \
    --class org.apache.spark.sql.connect.service.SparkConnectServer \
    --name backfill-spark-connect --master "$MASTER" \
    --driver-memory 1g --conf spark.executor.memory=1g \
    --conf spark.connect.grpc.binding.address=127.0.0.1 \
    --conf "spark.connect.grpc.binding.port=$JVM_PORT" \
    --conf "spark.sql.warehouse.dir=$DATA/warehouse/jvm" \
    --conf spark.ui.enabled=false \
    spark-internal ) >"$DATA/spark.log" 2>&1 &
PIDS+=($!)

# Waits until a server's port accepts connections (or the server exits).
await() {
  local name="$1" port="$2" pid="$3" log="$4"
  for _ in $(seq 1 1200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "with-spark: $name exited before listening:" >&2
      cat "$log" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "with-spark: $name is not listening on $port after 120 s:" >&2
  cat "$log" >&2
  exit 1
}
await Sail "$SAIL_PORT" "${PIDS[0]}" "$DATA/sail.log"
await "the Spark master" "$MASTER_PORT" "${PIDS[1]}" "$DATA/master.log"
await "Apache Spark" "$JVM_PORT" "${PIDS[3]}" "$DATA/spark.log"

export BACKFILL_SPARK_SAIL_URL="sc://127.0.0.1:$SAIL_PORT"
export BACKFILL_SPARK_JVM_URL="sc://127.0.0.1:$JVM_PORT"
export BACKFILL_SPARK_WAREHOUSE="$DATA/warehouse"
echo "with-spark: Sail $SAIL_VERSION on port $SAIL_PORT, Apache Spark $SPARK_VERSION on port $JVM_PORT (a standalone cluster, master on port $MASTER_PORT)" >&2
# The command runs in the background and is waited for, so that a signal
# to this script is handled at once (a trap waits for a foreground
# command) and the command is stopped with the servers.
"$@" &
CMD=$!
wait "$CMD"
