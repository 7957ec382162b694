#!/usr/bin/env bash
# Catch-up throughput: `sluice run --once` against the raw pipe
#   mariadb --quick … | psql -c '\copy … from stdin'
# (and pgloader when installed) on the same N-row demo backlog, A/B/A/B, each into a fresh,
# empty target table with its primary key. Prints rows/s of each run, the ratios, and
# sluice's peak RSS. Every run ends with the same table: all rows, primary key and the source's
# secondary index (on created) in place (INDEXES=0: without the secondary index).
#
# sluice, on an empty target, defers the primary key ([pipeline] defer_key: it drops the key,
# copies the backlog and builds the key once caught up), as pgloader does. So the raw pipe
# is also timed that way, by hand ("raw pipe, key after": drop the key, pipe, ADD PRIMARY KEY),
# to show what the strategy alone is worth.
#
#   benches/throughput.sh [ROWS] [ROUNDS]      (defaults: 1000000 rows, 2 rounds)
#
# Needs the local servers (scripts/services.sh) and builds sluice in release mode.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ROWS=${1:-1000000}
ROUNDS=${2:-2}
DB=sluice_bench
source benches/lib.sh
bench_setup "$DB"

echo "seeding $ROWS orders into MariaDB database $DB"
fresh_databases "$DB"
RUST_LOG=warn "$BIN" migrate >/dev/null
# Random v4-style UUIDs and distinct microsecond timestamps: the demo's shape.
"${MY[@]}" "$DB" -e "INSERT INTO orders (order_id, created)
  SELECT CONCAT(SUBSTR(h,1,8),'-',SUBSTR(h,9,4),'-4',SUBSTR(h,14,3),'-a',SUBSTR(h,18,3),'-',SUBSTR(h,21,12)),
         TIMESTAMP('2026-01-01') + INTERVAL seq * 997 MICROSECOND
  FROM (SELECT seq, MD5(CONCAT(seq, RAND())) AS h FROM seq_1_to_$ROWS) s
  ORDER BY h"  # in primary-key order, so InnoDB's pages end up full, as after a table rebuild
"${MY[@]}" "$DB" -e "ANALYZE TABLE orders" >/dev/null

# The source's secondary index (orders.created) is on the target at the end of every run:
# sluice builds it once its load is over ([pipeline] indexes, the default), the keyed pipe has it
# from the start, the key-after pipe builds it after the rows, pgloader builds its own.
# INDEXES=0: nobody builds it (sluice with indexes = false).
INDEXES=${INDEXES:-1}
CONFIG=$(mktemp --suffix .toml)
trap 'rm -f "$CONFIG"' EXIT
[ "$INDEXES" = 1 ] || printf '[pipeline]\nindexes = false\n' > "$CONFIG"

# $1: with the secondary index (the pipes) or without (sluice makes its own).
fresh_target() {
    "${PG[@]}" -d "$DB" -c "DROP TABLE IF EXISTS public.orders; DROP SCHEMA IF EXISTS sluice CASCADE;
      CREATE TABLE public.orders (order_id text PRIMARY KEY, created timestamp(6) NOT NULL)"
    if [ "${1:-}" = index ] && [ "$INDEXES" = 1 ]; then
        "${PG[@]}" -d "$DB" -c "CREATE INDEX orders_created ON public.orders (created)"
    fi
    "${PG[@]}" -d "$DB" -c "CHECKPOINT"
}

rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", n / s }'; }

run_sluice() {
    fresh_target
    local t0 t1 rss
    t0=$(now)
    rss=$( { /usr/bin/time -f '%M' env RUST_LOG=warn "$BIN" --config "$CONFIG" run --once >/dev/null; } 2>&1 | tail -1 )
    t1=$(now)
    local got
    got=$("${PG[@]}" -d "$DB" -At -c "SELECT count(*) FROM public.orders")
    [ "$got" = "$ROWS" ] || { echo "sluice copied $got of $ROWS rows" >&2; exit 1; }
    SLUICE_RATES+=("$(rate "$ROWS" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')")")
    SLUICE_RSS+=("$rss")
}

run_pipe() {
    fresh_target index
    local t0 t1
    t0=$(now)
    "${MY[@]}" --quick -N --batch "$DB" -e "SELECT order_id, DATE_FORMAT(created, '%Y-%m-%d %H:%i:%s.%f') FROM orders" |
        "${PG[@]}" -d "$DB" -c '\copy public.orders (order_id, created) from stdin'
    t1=$(now)
    PIPE_RATES+=("$(rate "$ROWS" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')")")
}

run_pipe_key_after() {
    fresh_target
    "${PG[@]}" -d "$DB" -c "ALTER TABLE public.orders DROP CONSTRAINT orders_pkey"
    local t0 t1
    t0=$(now)
    "${MY[@]}" --quick -N --batch "$DB" -e "SELECT order_id, DATE_FORMAT(created, '%Y-%m-%d %H:%i:%s.%f') FROM orders" |
        "${PG[@]}" -d "$DB" -c '\copy public.orders (order_id, created) from stdin'
    "${PG[@]}" -d "$DB" -c "ALTER TABLE public.orders ADD PRIMARY KEY (order_id)"
    [ "$INDEXES" = 1 ] && "${PG[@]}" -d "$DB" -c "CREATE INDEX orders_created ON public.orders (created)"
    t1=$(now)
    AFTER_RATES+=("$(rate "$ROWS" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')")")
}

run_pgloader() {
    # pgloader creates its own schema named after the source database, then builds the
    # primary key after loading (its default).
    "${PG[@]}" -d "$DB" -c "DROP SCHEMA IF EXISTS $DB CASCADE" -c "CHECKPOINT"
    local t0 t1 got
    t0=$(now)
    pgloader --quiet "mysql://root@127.0.0.1/$DB" "postgresql://postgres@127.0.0.1/$DB" >/dev/null 2>&1 || true
    t1=$(now)
    got=$("${PG[@]}" -d "$DB" -At -c "SELECT count(*) FROM $DB.orders" 2>/dev/null || echo 0)
    [ "$got" = "$ROWS" ] || { echo "pgloader copied $got of $ROWS rows" >&2; exit 1; }
    PGLOADER_RATES+=("$(rate "$ROWS" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')")")
}

SLUICE_RATES=(); SLUICE_RSS=(); PIPE_RATES=(); AFTER_RATES=(); PGLOADER_RATES=()
for round in $(seq 1 "$ROUNDS"); do
    run_sluice; echo "round $round  sluice run --once  ${SLUICE_RATES[-1]} rows/s  peak RSS $((SLUICE_RSS[-1] / 1024)) MiB"
    run_pipe;   echo "round $round  raw pipe           ${PIPE_RATES[-1]} rows/s"
    run_pipe_key_after; echo "round $round  raw pipe, key after ${AFTER_RATES[-1]} rows/s"
    if command -v pgloader >/dev/null; then
        run_pgloader; echo "round $round  pgloader           ${PGLOADER_RATES[-1]} rows/s"
    fi
done

S=$(median "${SLUICE_RATES[@]}"); P=$(median "${PIPE_RATES[@]}"); A=$(median "${AFTER_RATES[@]}")
echo
echo "rows: $ROWS, rounds: $ROUNDS (medians)"
echo "sluice run --once : $S rows/s, peak RSS $(( $(printf '%s\n' "${SLUICE_RSS[@]}" | sort -n | tail -1) / 1024 )) MiB"
echo "raw pipe          : $P rows/s"
echo "raw pipe, key after: $A rows/s"
awk -v s="$S" -v p="$P" 'BEGIN { printf "ratio sluice / raw pipe : %.2fx\n", s / p }'
awk -v s="$S" -v a="$A" 'BEGIN { printf "ratio sluice / raw pipe, key after: %.2fx\n", s / a }'
if [ ${#PGLOADER_RATES[@]} -gt 0 ]; then
    G=$(median "${PGLOADER_RATES[@]}")
    echo "pgloader          : $G rows/s"
    awk -v s="$S" -v g="$G" 'BEGIN { printf "ratio sluice / pgloader: %.2fx\n", s / g }'
fi
"${MY[@]}" -e "DROP DATABASE IF EXISTS $DB"
"${PG[@]}" -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
