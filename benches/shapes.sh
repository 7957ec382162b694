#!/usr/bin/env bash
# Catch-up throughput over several table shapes, side by side in one run: `sluice run --once`
# against the raw pipe (`mariadb --quick | psql \copy` into the keyed table) and the raw pipe
# with the key built after the copy, on the same N-row backlog, each into a fresh, empty target
# table with its primary key. Prints rows/s of every run, the medians and the ratios per shape.
#
#   benches/shapes.sh [ROWS] [ROUNDS] [SHAPES]   (defaults: 1000000 rows, 2 rounds,
#                                                  "orders ledger sbtest wide")
#
# Shapes:
#   orders  the demo: random UUID text key, DATETIME(6) cursor
#   ledger  ascending BIGINT key, two DECIMAL columns, CHAR(3), DATETIME(6) cursor
#   sbtest  sysbench's: INT key, INT, CHAR(120), CHAR(60), every row the same cursor value
#   wide    ascending BIGINT key, a 2 KB TEXT column, DATETIME(6) cursor (rows: ROWS / 10)
#
# SLUICE_EXTRA: more configuration for sluice's runs, e.g. SLUICE_EXTRA=$'[pipeline]\ncopy_format = "text"'
# INDEXES=0: no run builds the secondary index on the cursor (by default every run ends with it,
# as a replica with the source's indexes: see [pipeline] indexes)
#
# Needs the local servers (scripts/services.sh) and builds sluice in release mode.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ROWS=${1:-1000000}
ROUNDS=${2:-2}
SHAPES=${3:-orders ledger sbtest wide}
DB=sluice_shapes
source benches/lib.sh
bench_setup "$DB"

fresh_databases "$DB"

rows_of() { if [ "$1" = wide ]; then echo $((ROWS / 10)); else echo "$ROWS"; fi; }

seed() {
    local n; n=$(rows_of "$1")
    echo "seeding $n rows of $1"
    case $1 in
    orders)
        "${MY[@]}" "$DB" -e "CREATE TABLE orders (order_id VARCHAR(36) NOT NULL PRIMARY KEY, created DATETIME(6) NOT NULL, KEY (created));
          INSERT INTO orders
          SELECT CONCAT(SUBSTR(h,1,8),'-',SUBSTR(h,9,4),'-4',SUBSTR(h,14,3),'-a',SUBSTR(h,18,3),'-',SUBSTR(h,21,12)),
                 TIMESTAMP('2026-01-01') + INTERVAL seq * 997 MICROSECOND
          FROM (SELECT seq, MD5(CONCAT(seq, RAND())) AS h FROM seq_1_to_$n) s ORDER BY h" ;;
    ledger)
        "${MY[@]}" "$DB" -e "CREATE TABLE ledger (id BIGINT NOT NULL PRIMARY KEY, amount DECIMAL(12,2) NOT NULL,
            fee DECIMAL(10,4) NOT NULL, currency CHAR(3) NOT NULL, created DATETIME(6) NOT NULL, KEY (created));
          INSERT INTO ledger SELECT seq, (seq * 7919) % 10000000 / 100, (seq % 9973) / 10000,
                 ELT(1 + seq % 3, 'EUR', 'USD', 'GBP'), TIMESTAMP('2026-01-01') + INTERVAL seq * 997 MICROSECOND
          FROM seq_1_to_$n" ;;
    sbtest)
        "${MY[@]}" "$DB" -e "CREATE TABLE sbtest (id INT NOT NULL PRIMARY KEY, k INT NOT NULL, c CHAR(120) NOT NULL,
            pad CHAR(60) NOT NULL, updated DATETIME(6) NOT NULL, KEY (updated));
          INSERT INTO sbtest SELECT seq, seq % 100000,
                 SUBSTR(REPEAT(MD5(seq), 4), 1, 119), SUBSTR(REPEAT(MD5(seq + 1), 2), 1, 59), TIMESTAMP('2026-01-01')
          FROM seq_1_to_$n" ;;
    wide)
        "${MY[@]}" "$DB" -e "CREATE TABLE wide (id BIGINT NOT NULL PRIMARY KEY, payload TEXT NOT NULL,
            created DATETIME(6) NOT NULL, KEY (created));
          INSERT INTO wide SELECT seq, REPEAT(MD5(seq), 64), TIMESTAMP('2026-01-01') + INTERVAL seq * 1000 MICROSECOND
          FROM seq_1_to_$n" ;;
    esac
    "${MY[@]}" "$DB" -e "ANALYZE TABLE $1" >/dev/null
}

# The target table, keyed, as sluice would create it.
target_ddl() {
    case $1 in
    orders) echo "CREATE TABLE public.orders (order_id text PRIMARY KEY, created timestamp(6) NOT NULL)" ;;
    ledger) echo "CREATE TABLE public.ledger (id bigint PRIMARY KEY, amount numeric(12,2) NOT NULL, fee numeric(10,4) NOT NULL, currency text NOT NULL, created timestamp(6) NOT NULL)" ;;
    sbtest) echo "CREATE TABLE public.sbtest (id integer PRIMARY KEY, k integer NOT NULL, c text NOT NULL, pad text NOT NULL, updated timestamp(6) NOT NULL)" ;;
    wide)   echo "CREATE TABLE public.wide (id bigint PRIMARY KEY, payload text NOT NULL, created timestamp(6) NOT NULL)" ;;
    esac
}

pipe_select() {
    case $1 in
    orders) echo "SELECT order_id, DATE_FORMAT(created, '%Y-%m-%d %H:%i:%s.%f') FROM orders" ;;
    ledger) echo "SELECT id, amount, fee, currency, DATE_FORMAT(created, '%Y-%m-%d %H:%i:%s.%f') FROM ledger" ;;
    sbtest) echo "SELECT id, k, c, pad, DATE_FORMAT(updated, '%Y-%m-%d %H:%i:%s.%f') FROM sbtest" ;;
    wide)   echo "SELECT id, payload, DATE_FORMAT(created, '%Y-%m-%d %H:%i:%s.%f') FROM wide" ;;
    esac
}

key_of() { case $1 in orders) echo order_id ;; *) echo id ;; esac; }
cursor_of() { case $1 in sbtest) echo updated ;; *) echo created ;; esac; }

# The source's secondary index (on the cursor) is on the target at the end of every run:
# sluice builds it once its load is over ([pipeline] indexes, the default), the keyed pipe has
# it from the start, the key-after pipe builds it after the rows. INDEXES=0: nobody builds it.
INDEXES=${INDEXES:-1}
index_ddl() { echo "CREATE INDEX $1_$(cursor_of "$1") ON public.$1 ($(cursor_of "$1"))"; }

# $2: with the secondary index (the keyed pipe).
fresh_target() {
    "${PG[@]}" -d "$DB" -c "DROP TABLE IF EXISTS public.$1; DROP SCHEMA IF EXISTS sluice CASCADE; $(target_ddl "$1")" -c "CHECKPOINT"
    if [ "${2:-}" = index ] && [ "$INDEXES" = 1 ]; then "${PG[@]}" -d "$DB" -c "$(index_ddl "$1")"; fi
}

elapsed() { awk -v a="$1" -v b="$2" 'BEGIN{print b-a}'; }
rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", n / s }'; }

check_rows() {
    local got; got=$("${PG[@]}" -d "$DB" -At -c "SELECT count(*) FROM public.$1")
    [ "$got" = "$2" ] || { echo "$3 copied $got of $2 rows of $1" >&2; exit 1; }
}

run_sluice() {
    local shape=$1 n t0 t1 rss cfg
    n=$(rows_of "$shape")
    fresh_target "$shape"
    cfg=$(mktemp --suffix .toml)
    printf '%s\n[[tables]]\nname = "%s"\ncursor = "%s"\n' "$([ "$INDEXES" = 1 ] || printf '[pipeline]\nindexes = false\n')${SLUICE_EXTRA:-}" "$shape" "$(cursor_of "$shape")" > "$cfg"
    t0=$(now)
    rss=$( { /usr/bin/time -f '%M' env RUST_LOG=warn "$BIN" --config "$cfg" run --once >/dev/null; } 2>&1 | tail -1 )
    t1=$(now)
    rm -f "$cfg"
    check_rows "$shape" "$n" sluice
    R_SLUICE+=("$(rate "$n" "$(elapsed "$t0" "$t1")")"); R_RSS+=("$rss")
}

run_pipe() {
    local shape=$1 after=$2 n t0 t1
    n=$(rows_of "$shape")
    if [ "$after" = yes ]; then fresh_target "$shape"; else fresh_target "$shape" index; fi
    [ "$after" = yes ] && "${PG[@]}" -d "$DB" -c "ALTER TABLE public.$shape DROP CONSTRAINT ${shape}_pkey"
    t0=$(now)
    "${MY[@]}" --quick -N --batch "$DB" -e "$(pipe_select "$shape")" |
        "${PG[@]}" -d "$DB" -c "\\copy public.$shape from stdin"
    [ "$after" = yes ] && "${PG[@]}" -d "$DB" -c "ALTER TABLE public.$shape ADD PRIMARY KEY ($(key_of "$shape"))"
    if [ "$after" = yes ] && [ "$INDEXES" = 1 ]; then "${PG[@]}" -d "$DB" -c "$(index_ddl "$shape")"; fi
    t1=$(now)
    check_rows "$shape" "$n" "the pipe"
    if [ "$after" = yes ]; then R_AFTER+=("$(rate "$n" "$(elapsed "$t0" "$t1")")"); else R_PIPE+=("$(rate "$n" "$(elapsed "$t0" "$t1")")"); fi
}

SUMMARY=()
for shape in $SHAPES; do
    seed "$shape"
    R_SLUICE=(); R_RSS=(); R_PIPE=(); R_AFTER=()
    for round in $(seq 1 "$ROUNDS"); do
        run_sluice "$shape"; echo "$shape round $round  sluice run --once    ${R_SLUICE[-1]} rows/s  peak RSS $((R_RSS[-1] / 1024)) MiB"
        run_pipe "$shape" no; echo "$shape round $round  raw pipe            ${R_PIPE[-1]} rows/s"
        run_pipe "$shape" yes; echo "$shape round $round  raw pipe, key after ${R_AFTER[-1]} rows/s"
    done
    S=$(median "${R_SLUICE[@]}"); P=$(median "${R_PIPE[@]}"); A=$(median "${R_AFTER[@]}")
    RSS=$(( $(printf '%s\n' "${R_RSS[@]}" | sort -n | tail -1) / 1024 ))
    SUMMARY+=("$(awk -v sh="$shape" -v n="$(rows_of "$shape")" -v s="$S" -v p="$P" -v a="$A" -v m="$RSS" \
        'BEGIN { printf "| %-7s | %9d | %9d | %9d | %9d | %5.2fx | %5.2fx | %4d MiB |", sh, n, s, p, a, s / p, s / a, m }')")
done

echo
echo "rows: $ROWS, rounds: $ROUNDS (medians, rows/s)"
echo "| shape   |      rows |    sluice |  raw pipe | key after | /raw   | /after | peak RSS |"
echo "|---------|-----------|-----------|-----------|-----------|--------|--------|----------|"
printf '%s\n' "${SUMMARY[@]}"
"${MY[@]}" -e "DROP DATABASE IF EXISTS $DB"
"${PG[@]}" -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
