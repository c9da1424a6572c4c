#!/usr/bin/env bash
# Isolation cost, before/after in one run (issue 12): pgbench select-only and tpcb-like through
# two tidepool binaries and directly, interleaved, on one throwaway PostgreSQL; then the number
# of session-state checks (each one extra round trip) per 1,000 transactions of a mixed workload.
#
#   benches/isolation.sh BEFORE_BINARY AFTER_BINARY [RUNS] [SECONDS]
#
# Needs PostgreSQL 15 (/usr/lib/postgresql/15/bin). Runs PostgreSQL as `postgres` when root.
set -euo pipefail
before=$(realpath "$1"); after=$(realpath "$2"); runs=${3:-3}; secs=${4:-8}
bin=/usr/lib/postgresql/15/bin
work=$(mktemp -d); chmod 755 "$work"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  as_pg "$bin/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
[ "$(id -u)" = 0 ] && chown postgres "$work"
pg_port=$(free_port)
as_pg "$bin/initdb" -D "$work/data" -U postgres --auth=trust >/dev/null
as_pg "$bin/pg_ctl" -D "$work/data" -l "$work/pg.log" -w \
  -o "-p $pg_port -k $work -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off" start >/dev/null
export PGHOST=127.0.0.1 PGUSER=postgres PGPASSWORD=bench
"$bin/psql" -qX -p "$pg_port" -c "ALTER ROLE postgres PASSWORD 'bench'" postgres
"$bin/pgbench" -q -i -s 10 -p "$pg_port" postgres >/dev/null 2>&1

start_tidepool() { # name binary -> port
  local port metrics
  port=$(free_port); metrics=$(free_port)
  cat > "$work/$1.toml" <<TOML
[proxy]
listen = "127.0.0.1:$port"
pool_mode = "transaction"
[pool]
default_pool_size = 20
[metrics]
listen = "127.0.0.1:$metrics"
[[nodes]]
host = "127.0.0.1"
port = $pg_port
[databases.postgres]
[[users]]
name = "postgres"
password = "bench"
TOML
  "$2" --config "$work/$1.toml" > "$work/$1.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 50); do "$bin/psql" -qXAt -p "$port" -c "SELECT 1" postgres >/dev/null 2>&1 && break; sleep 0.2; done
  echo "$port $metrics"
}
read -r before_port _ < <(start_tidepool before "$before")
read -r after_port after_metrics < <(start_tidepool after "$after")

tps() { # port args... -> tps
  "$bin/pgbench" -n -j 2 -T "$secs" -p "$1" "${@:2}" postgres 2>/dev/null | awk '/^tps/ {print int($3); exit}'
}
declare -A results
for run in $(seq "$runs"); do
  for cell in "select -S -M simple -c 16" "select -S -M prepared -c 16" "tpcb -M extended -c 32"; do
    read -r name args <<<"$cell"
    for target in direct:$pg_port before:$before_port after:$after_port; do
      results["$cell|${target%%:*}"]+="$(tps "${target##*:}" $args) "
    done
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "| workload | direct | before | after | after / before |"
echo "|---|---:|---:|---:|---:|"
for cell in "select -S -M simple -c 16" "select -S -M prepared -c 16" "tpcb -M extended -c 32"; do
  d=$(echo "${results["$cell|direct"]}" | median)
  b=$(echo "${results["$cell|before"]}" | median)
  a=$(echo "${results["$cell|after"]}" | median)
  echo "| ${cell/ -/ \`-}\` | $d | $b | $a | $(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.2f", a / b}') |"
done

# Instructions per transaction (callgrind: repeatable on a noisy machine): each binary forwards
# N and then 2N transactions; the difference over N leaves out start-up and logins.
instructions() { # binary workload-args n -> total instructions
  local port out pid
  port=$(free_port); out="$work/cg.$RANDOM"
  cat > "$work/cg.toml" <<TOML
[proxy]
listen = "127.0.0.1:$port"
pool_mode = "transaction"
[pool]
default_pool_size = 4
[[nodes]]
host = "127.0.0.1"
port = $pg_port
[databases.postgres]
[[users]]
name = "postgres"
password = "bench"
TOML
  valgrind --tool=callgrind --callgrind-out-file="$out" "$1" --config "$work/cg.toml" > "$work/cg.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do "$bin/psql" -qXAt -p "$port" -c "SELECT 1" postgres >/dev/null 2>&1 && break; sleep 0.3; done
  "$bin/pgbench" -n -c 4 -j 2 -t $(($3 / 4)) -p "$port" $2 postgres >/dev/null 2>&1
  kill -INT "$pid"; wait "$pid" 2>/dev/null || true
  awk '/^(summary|totals):/ {print $2; exit}' "$out"
}
if command -v valgrind >/dev/null; then
  n=4000
  echo
  echo "| instructions per transaction (callgrind) | before | after | after / before |"
  echo "|---|---:|---:|---:|"
  for cell in "-S -M simple" "-S -M extended" "-b tpcb-like -M extended"; do
    b1=$(instructions "$before" "$cell" $n); b2=$(instructions "$before" "$cell" $((2 * n)))
    a1=$(instructions "$after" "$cell" $n); a2=$(instructions "$after" "$cell" $((2 * n)))
    awk -v c="$cell" -v b1="$b1" -v b2="$b2" -v a1="$a1" -v a2="$a2" -v n=$n \
      'BEGIN {b = (b2 - b1) / n; a = (a2 - a1) / n; printf "| `%s` | %.0f | %.0f | %.2f |\n", c, b, a, a / b}'
  done
fi

# Mixed workload: tpcb-like and select-only transactions, and 1 in 100 a set_config (opaque).
cat > "$work/tenant.sql" <<'SQL'
\set aid random(1, 100000 * :scale)
SELECT set_config('app.tenant', :aid::text, false);
SQL
checks() { curl -s "http://127.0.0.1:$after_metrics/metrics" | awk '/^tidepool_isolation_checks_total/ {s += $2} END {print s + 0}'; }
c0=$(checks)
txns=$("$bin/pgbench" -n -j 2 -c 8 -t 1000 -M extended -b tpcb-like@49 -b select-only@50 \
  -f "$work/tenant.sql@1" -p "$after_port" postgres 2>/dev/null | awk '/actually processed/ {print $NF; exit}')
txns=${txns%%/*}
c1=$(checks)
echo
echo "mixed workload (tpcb-like 49%, select-only 50%, set_config 1%): $txns transactions, $((c1 - c0)) checks = \
$(awk -v c=$((c1 - c0)) -v t="$txns" 'BEGIN {printf "%.1f", 1000 * c / t}') extra round trips per 1,000 transactions"
