#!/usr/bin/env bash
# Binlog capture, measured against references taken in the same run, on four table shapes:
#   orders   the demo's: a random-UUID text key and a DATETIME(6)
#   sbtest   sysbench's: an INT key, an INT with a secondary index, CHAR(120), CHAR(60)
#   ledger   an ascending BIGINT key, two DECIMAL columns, CHAR(3), a DATETIME(6)
#   wide     an ascending BIGINT key and a 2 KB TEXT column (ROWS / 10 rows)
#
# 1. Snapshot: `run --once` with capture = "binlog" on a fresh target (snapshot of ROWS rows,
#    then the stream up to the position as of start) against the raw pipe
#    `mariadb --quick | psql \copy` into a keyed table, and the key-after pipe (the same into a
#    keyless table, then ADD PRIMARY KEY).
# 2. Backlog: with the table followed from the binlog and sluice stopped, ROWS rows inserted in
#    transactions of 10,000 rows, then the same rows all updated (16 transactions);
#    `run --once` catches up with each backlog; rows/s against the raw pipe's rate for the
#    same table, and inserts also against the raw pipe of the same rows in the order they were
#    inserted (commit order: on a random key, the order a replica must apply them in). Updates are also set beside PostgreSQL's own rate for the same upserts
#    (`INSERT … ON CONFLICT DO UPDATE` from a table already holding the new rows, into a
#    fresh copy of the target table): a floor for writing whole rows; and beside the best
#    hand-made way to bring them over (#27's reference): the raw pipe of the updated rows
#    into an unlogged staging table, ANALYZE, then one `UPDATE … FROM` it, into a vacuumed
#    copy of the target table with the target's indexes. Both set every column outside the
#    key (a pipe cannot know which ones the updates changed); sluice sets the changed ones.
# 3. Peak write load: sysbench oltp_write_only (8 threads: index and non-index updates, a
#    delete and an insert per transaction) for LOAD_SECONDS, first alone (the source's peak),
#    then with `sluice run` following its tables. A probe row is inserted every 100 ms on
#    the source (UTC_TIMESTAMP(6)) and stamped by a trigger as it lands on the target: lag =
#    landed - written, during the load; "drained" = how long after sysbench stopped the
#    target had everything (a marker row written as it stopped landed). Then `verify`.
# Prints every rate, the ratios, sluice's own CPU seconds (user + system) per million rows of
# each run and while it follows the peak write load, and sluice's peak RSS over all runs.
#
#   benches/binlog.sh [ROWS] [ROUNDS] [LOAD_SECONDS]   (defaults: 1000000 rows, 2 rounds, 30 s)
#   SHAPES="orders sbtest" for some shapes only (default: all four)
#
# Needs the local servers (scripts/services.sh, which turns on the ROW binlog) and sysbench
# (installed from Debian if missing); builds sluice in release mode.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ROWS=${1:-1000000}
ROUNDS=${2:-2}
LOAD_SECONDS=${3:-30}
DB=sluice_binlog_bench
source benches/lib.sh
bench_setup "$DB"
command -v sysbench >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y sysbench >/dev/null
export SLUICE_HTTP_ADDR=127.0.0.1:0
export RUST_LOG=warn
bench_work

PEAK_RSS=0
CPU=0 # sluice's own CPU seconds (user + system) in its last run
note_rss() {
    local r u s
    read -r r u s < <(tail -1 "$WORK/rss")
    [ "$r" -gt "$PEAK_RSS" ] && PEAK_RSS=$r
    CPU=$(awk -v u="${u:-0}" -v s="${s:-0}" 'BEGIN { print u + s }')
    return 0
}
per_million() { awk -v c="$CPU" -v n="$1" 'BEGIN { printf "%.2f", c * 1000000 / n }'; }
config() { # config FILE TABLE...
    local f=$1; shift
    printf '[source]\ncapture = "binlog"\n' >"$f"
    for t in "$@"; do printf '[[tables]]\nname = "%s"\n' "$t" >>"$f"; done
}
sluice_once() { # sluice_once CONFIG: run --once, peak RSS noted
    /usr/bin/time -f '%M %U %S' -o "$WORK/rss" "$BIN" --config "$1" run --once >/dev/null
    note_rss
}
pg_count() { "${PG[@]}" -d "$DB" -At -c "SELECT count(*) FROM public.$1"; }
expect_rows() { # expect_rows TABLE N WHO
    local got; got=$(pg_count "$1")
    [ "$got" = "$2" ] || { echo "$3 left $got of $2 rows in $1" >&2; exit 1; }
}

fresh_databases "$DB"

# Each shape: its source DDL, target DDL (what sluice creates), primary key, the SELECT the
# raw pipe runs, a seed of rows $1..$2, and an update of every row in chunks of 10 % or so.
ddl_orders() { echo "CREATE TABLE $1 (order_id VARCHAR(36) NOT NULL PRIMARY KEY, created DATETIME(6) NOT NULL)"; }
pg_orders() { echo "CREATE TABLE public.$1 (order_id text PRIMARY KEY, created timestamp(6) NOT NULL)"; }
pipe_orders() { echo "SELECT order_id, DATE_FORMAT(created, '%Y-%m-%d %H:%i:%s.%f') FROM $1"; }
inserted_orders() { echo created; } # the column that orders rows as they were inserted
seed_orders() { # seed_orders TABLE FROM TO
    echo "INSERT INTO $1 SELECT CONCAT(SUBSTR(h,1,8),'-',SUBSTR(h,9,4),'-4',SUBSTR(h,14,3),'-a',SUBSTR(h,18,3),'-',SUBSTR(h,21,12)),
            TIMESTAMP('2026-01-01') + INTERVAL seq * 997 MICROSECOND
          FROM (SELECT seq, MD5(CONCAT(seq, '$1')) AS h FROM seq_$2_to_$3) s"
}
index_orders() { echo "SET search_path = public"; } # no secondary index: a statement that does nothing
set_orders() { echo "created = EXCLUDED.created"; }
change_orders() { echo "created = created + interval '1 second'"; }
key_orders() { echo order_id; }
update_orders() { # one statement per leading hex digit: 16 transactions
    for d in 0 1 2 3 4 5 6 7 8 9 a b c d e f; do
        echo "UPDATE $1 SET created = created + INTERVAL 1 SECOND WHERE order_id LIKE '$d%';"
    done
}
ddl_sbtest() { echo "CREATE TABLE $1 (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, k INT NOT NULL DEFAULT 0, c CHAR(120) NOT NULL DEFAULT '', pad CHAR(60) NOT NULL DEFAULT '', KEY k_1 (k))"; }
pg_sbtest() { echo "CREATE TABLE public.$1 (id integer PRIMARY KEY, k integer NOT NULL, c text NOT NULL, pad text NOT NULL)"; }
index_sbtest() { echo "CREATE INDEX $1_k_1 ON public.$1 (k)"; }
pipe_sbtest() { echo "SELECT id, k, c, pad FROM $1"; }
inserted_sbtest() { echo id; }
seed_sbtest() {
    echo "INSERT INTO $1 SELECT seq, seq MOD 100000, CONCAT(MD5(seq), MD5(seq + 1), MD5(seq + 2), LEFT(MD5(seq + 3), 24)),
            CONCAT(MD5(-seq), LEFT(MD5(seq * 7), 28)) FROM seq_$2_to_$3"
}
set_sbtest() { echo "k = EXCLUDED.k, c = EXCLUDED.c, pad = EXCLUDED.pad"; }
change_sbtest() { echo "k = k + 1"; }
key_sbtest() { echo id; }
update_sbtest() { by_id_ranges "$1" "k = k + 1"; }

ddl_ledger() { echo "CREATE TABLE $1 (id BIGINT NOT NULL PRIMARY KEY, amount DECIMAL(12,2) NOT NULL, fee DECIMAL(10,4) NOT NULL, currency CHAR(3) NOT NULL, created DATETIME(6) NOT NULL)"; }
pg_ledger() { echo "CREATE TABLE public.$1 (id bigint PRIMARY KEY, amount numeric(12,2) NOT NULL, fee numeric(10,4) NOT NULL, currency text NOT NULL, created timestamp(6) NOT NULL)"; }
pipe_ledger() { echo "SELECT id, amount, fee, currency, DATE_FORMAT(created, '%Y-%m-%d %H:%i:%s.%f') FROM $1"; }
inserted_ledger() { echo id; }
seed_ledger() {
    echo "INSERT INTO $1 SELECT seq, (seq * 7919) % 10000000 / 100, (seq % 9973) / 10000, ELT(1 + seq % 3, 'EUR', 'USD', 'GBP'),
            TIMESTAMP('2026-01-01') + INTERVAL seq * 997 MICROSECOND FROM seq_$2_to_$3"
}
index_ledger() { index_orders; }
set_ledger() { echo "amount = EXCLUDED.amount, fee = EXCLUDED.fee, currency = EXCLUDED.currency, created = EXCLUDED.created"; }
change_ledger() { echo "amount = amount + 1"; }
key_ledger() { echo id; }
update_ledger() { by_id_ranges "$1" "amount = amount + 1"; }
ddl_wide() { echo "CREATE TABLE $1 (id BIGINT NOT NULL PRIMARY KEY, payload TEXT NOT NULL, created DATETIME(6) NOT NULL)"; }
pg_wide() { echo "CREATE TABLE public.$1 (id bigint PRIMARY KEY, payload text NOT NULL, created timestamp(6) NOT NULL)"; }
pipe_wide() { echo "SELECT id, payload, DATE_FORMAT(created, '%Y-%m-%d %H:%i:%s.%f') FROM $1"; }
inserted_wide() { echo id; }
seed_wide() {
    echo "INSERT INTO $1 SELECT seq, REPEAT(MD5(seq), 64), TIMESTAMP('2026-01-01') + INTERVAL seq * 1000 MICROSECOND FROM seq_$2_to_$3"
}
index_wide() { index_orders; }
set_wide() { echo "payload = EXCLUDED.payload, created = EXCLUDED.created"; }
change_wide() { echo "created = created + interval '1 second'"; }
key_wide() { echo id; }
update_wide() { by_id_ranges "$1" "created = created + INTERVAL 1 SECOND"; }
by_id_ranges() { # by_id_ranges TABLE SET: every row updated, in 16 transactions by key range
    local step=$((N / 16 + 1))
    for i in $(seq 0 15); do echo "UPDATE $1 SET $2 WHERE id > $((i * step)) AND id <= $(((i + 1) * step));"; done
}
rows_of() { if [ "$1" = wide ]; then echo $((ROWS / 10)); else echo "$ROWS"; fi; }
SHAPES=${SHAPES:-orders sbtest ledger wide}

fresh_target() { # fresh_target SHAPE TABLE [keyless]
    "${PG[@]}" -d "$DB" -c "DROP TABLE IF EXISTS public.$2; DROP SCHEMA IF EXISTS sluice CASCADE" -c "$(pg_"$1" "$2")"
    [ "${3:-}" = keyless ] && "${PG[@]}" -d "$DB" -c "ALTER TABLE public.$2 DROP CONSTRAINT $2_pkey"
    "${PG[@]}" -d "$DB" -c "CHECKPOINT"
}
upsert_reference() { # upsert_reference SHAPE TABLE: PostgreSQL's own upsert of the updated rows
    "${PG[@]}" -d "$DB" -c "DROP TABLE IF EXISTS public.ref, public.ref_new" \
        -c "CREATE TABLE public.ref AS SELECT * FROM public.$2" -c "ALTER TABLE public.ref ADD PRIMARY KEY ($(key_"$1"))" \
        -c "CREATE UNLOGGED TABLE public.ref_new AS SELECT * FROM public.ref" \
        -c "UPDATE public.ref_new SET $(change_"$1")" -c "ANALYZE public.ref_new" -c "CHECKPOINT"
    local t0 t1
    t0=$(now)
    "${PG[@]}" -d "$DB" -c "INSERT INTO public.ref SELECT * FROM public.ref_new ON CONFLICT ($(key_"$1")) DO UPDATE SET $(set_"$1")"
    t1=$(now)
    "${PG[@]}" -d "$DB" -c "DROP TABLE public.ref, public.ref_new"
    rate "$N" "$t0" "$t1"
}
pipe_update_reference() { # pipe_update_reference SHAPE TABLE: the pipe + UPDATE … FROM, rows/s
    "${PG[@]}" -d "$DB" -c "DROP TABLE IF EXISTS public.ref, public.ref_stage" \
        -c "CREATE TABLE public.ref (LIKE public.$2 INCLUDING ALL)" -c "INSERT INTO public.ref SELECT * FROM public.$2" \
        -c "VACUUM ANALYZE public.ref" -c "CREATE UNLOGGED TABLE public.ref_stage (LIKE public.$2)" -c "CHECKPOINT"
    local t0 t1
    t0=$(now)
    "${MY[@]}" --quick -N --batch "$DB" -e "$(pipe_"$1" "$2")" | "${PG[@]}" -d "$DB" -c "\\copy public.ref_stage from stdin"
    "${PG[@]}" -d "$DB" -c "ANALYZE public.ref_stage" -c "UPDATE public.ref SET $(set_"$1" | sed 's/EXCLUDED\./s./g') FROM public.ref_stage s WHERE public.ref.$(key_"$1") = s.$(key_"$1")"
    t1=$(now)
    "${PG[@]}" -d "$DB" -c "DROP TABLE public.ref, public.ref_stage" -c "CHECKPOINT"
    rate "$N" "$t0" "$t1"
}
pipe() { # pipe SHAPE TABLE [SUFFIX]
    "${MY[@]}" --quick -N --batch "$DB" -e "$(pipe_"$1" "$2") ${3:-}" | "${PG[@]}" -d "$DB" -c "\\copy public.$2 from stdin"
}

declare -A RES CPUS
for shape in $SHAPES; do
    src=${shape}_1m
    N=$(rows_of "$shape")
    echo "== $shape: seeding $N rows"
    "${MY[@]}" "$DB" -e "$(ddl_$shape "$src"); $(seed_$shape "$src" 1 "$N"); ANALYZE TABLE $src" >/dev/null
    config "$WORK/snap.toml" "$src"
    P=(); PI=(); A=(); S=(); BI=(); BU=(); U=(); UF=(); SC=(); BIC=(); BUC=()
    for round in $(seq 1 "$ROUNDS"); do
        # The pipes build the secondary indexes sluice gives its target (the source's):
        # the raw pipe has them from the start, the key-after pipe builds them after the key.
        fresh_target "$shape" "$src"
        "${PG[@]}" -d "$DB" -c "$(index_"$shape" "$src")"
        t0=$(now); pipe "$shape" "$src"; t1=$(now); P+=("$(rate "$N" "$t0" "$t1")")
        # In commit order: on an ascending key the same order, so the same run.
        if [ "$(inserted_$shape)" = "$(key_$shape)" ]; then
            PI+=("${P[-1]}")
        else
            fresh_target "$shape" "$src"
            "${PG[@]}" -d "$DB" -c "$(index_"$shape" "$src")"
            t0=$(now); pipe "$shape" "$src" "ORDER BY $(inserted_$shape)"; t1=$(now); PI+=("$(rate "$N" "$t0" "$t1")")
        fi
        fresh_target "$shape" "$src" keyless
        t0=$(now); pipe "$shape" "$src"
        "${PG[@]}" -d "$DB" -c "ALTER TABLE public.$src ADD PRIMARY KEY ($(key_"$shape"))" -c "$(index_"$shape" "$src")"
        t1=$(now); A+=("$(rate "$N" "$t0" "$t1")")
        fresh_target "$shape" "$src"
        t0=$(now); sluice_once "$WORK/snap.toml"; t1=$(now); S+=("$(rate "$N" "$t0" "$t1")"); SC+=("$(per_million "$N")")
        expect_rows "$src" "$N" "the snapshot"

        # The backlog: a table followed from the binlog, sluice stopped, then ROWS changes.
        bl=${shape}_backlog
        "${MY[@]}" "$DB" -e "DROP TABLE IF EXISTS $bl; $(ddl_$shape "$bl")"
        "${PG[@]}" -d "$DB" -c "DROP TABLE IF EXISTS public.$bl"
        config "$WORK/backlog.toml" "$bl"
        sluice_once "$WORK/backlog.toml"
        step=10000
        for ((from = 1; from <= N; from += step)); do
            to=$((from + step - 1)); [ $to -gt "$N" ] && to=$N
            seed_$shape "$bl" "$from" "$to"; echo ";"
        done | "${MY[@]}" "$DB"
        t0=$(now); sluice_once "$WORK/backlog.toml"; t1=$(now); BI+=("$(rate "$N" "$t0" "$t1")"); BIC+=("$(per_million "$N")")
        expect_rows "$bl" "$N" "the insert backlog"
        U+=("$(upsert_reference "$shape" "$bl")")
        update_$shape "$bl" | "${MY[@]}" "$DB"
        UF+=("$(pipe_update_reference "$shape" "$bl")")
        t0=$(now); sluice_once "$WORK/backlog.toml"; t1=$(now); BU+=("$(rate "$N" "$t0" "$t1")"); BUC+=("$(per_million "$N")")
        "$BIN" --config "$WORK/backlog.toml" verify >/dev/null || { echo "verify found differences after the update backlog" >&2; exit 1; }
        echo "round $round: raw pipe ${P[-1]} (in commit order ${PI[-1]}), key-after pipe ${A[-1]}, snapshot ${S[-1]}, insert backlog ${BI[-1]}, update backlog ${BU[-1]} rows/s (PostgreSQL's own upsert ${U[-1]}, the pipe + UPDATE … FROM ${UF[-1]}); sluice's CPU s per million rows: snapshot ${SC[-1]}, inserts ${BIC[-1]}, updates ${BUC[-1]}; peak RSS $((PEAK_RSS / 1024)) MiB so far"
    done
    RES[$shape]="$(median "${P[@]}") $(median "${PI[@]}") $(median "${A[@]}") $(median "${S[@]}") $(median "${BI[@]}") $(median "${BU[@]}") $(median "${U[@]}") $(median "${UF[@]}")"
    CPUS[$shape]="$(median "${SC[@]}") $(median "${BIC[@]}") $(median "${BUC[@]}")"
done

# Peak write load: sysbench oltp_write_only, alone, then followed by sluice.
SB=(sysbench oltp_write_only --db-driver=mysql --mysql-host=127.0.0.1 --mysql-user=root --mysql-password=
    --mysql-db="$DB" --tables=4 --table-size=100000)
echo "== sysbench oltp_write_only, 8 threads, ${LOAD_SECONDS}s"
"${SB[@]}" prepare >/dev/null
tps_of() { awk '/transactions:/ { gsub(/[()]/, "", $3); print $3 }' "$1"; }
"${SB[@]}" --threads=8 --time="$LOAD_SECONDS" run >"$WORK/alone.txt"
TPS_ALONE=$(tps_of "$WORK/alone.txt")
probe_tables "$DB"
config "$WORK/load.toml" sbtest1 sbtest2 sbtest3 sbtest4 probe
sluice_once "$WORK/load.toml"  # the snapshot of the sysbench tables
/usr/bin/time -f '%M %U %S' -o "$WORK/rss" "$BIN" --config "$WORK/load.toml" run >"$WORK/run.log" 2>&1 &
RUN=$!
PROBES=$((LOAD_SECONDS * 10 + 20))
( for _ in $(seq 1 "$PROBES"); do echo "INSERT INTO probe (at) VALUES (UTC_TIMESTAMP(6)); DO SLEEP(0.1);"; done ) |
    "${MY[@]}" "$DB" &
PROBER=$!
sleep 1
LOAD_START=$(now)
"${SB[@]}" --threads=8 --time="$LOAD_SECONDS" run >"$WORK/followed.txt"
LOAD_END=$(now)
"${MY[@]}" "$DB" -e "INSERT INTO probe (id, at) VALUES (1000000, UTC_TIMESTAMP(6))"
TPS_FOLLOWED=$(tps_of "$WORK/followed.txt")
for _ in $(seq 1 600); do
    [ "$("${PG[@]}" -d "$DB" -At -c "SELECT count(*) FROM public.landed WHERE id = 1000000")" = 1 ] && break
    sleep 0.05
done
MARKER_AT=$(now)
wait $PROBER
kill -TERM "$(pgrep -P $RUN -f 'sluice.* run' || echo $RUN)" 2>/dev/null || true
wait $RUN || { echo "sluice run failed:" >&2; cat "$WORK/run.log" >&2; exit 1; }
note_rss
"$BIN" --config "$WORK/load.toml" verify >/dev/null || { echo "verify found differences after the load" >&2; exit 1; }
LAG=$("${PG[@]}" -d "$DB" -At -F ' ' -c "
  SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 1),
         round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 1),
         round(max(ms)::numeric, 1), count(*)
  FROM (SELECT extract(epoch FROM l.at - (p.at AT TIME ZONE 'UTC')) * 1000 AS ms
        FROM public.probe p JOIN public.landed l USING (id)
        WHERE p.at AT TIME ZONE 'UTC' BETWEEN to_timestamp($LOAD_START) AND to_timestamp($LOAD_END)) x")
read -r LAG_P50 LAG_P99 LAG_MAX LAG_N <<<"$LAG"
# The last sysbench transaction committed at LOAD_END; the marker, written after it, landed at
# MARKER_AT (polled every 50 ms): everything before it had landed by then.
DRAINED=$(awk -v a="$LOAD_END" -v b="$MARKER_AT" 'BEGIN { printf "%.2f", b - a }')
CHANGES=$(awk "/write:/ { print \$2 }" "$WORK/followed.txt")

echo
echo "rows: $ROWS (wide: $((ROWS / 10))), rounds: $ROUNDS (medians), rows/s"
printf '%-8s %10s %10s %10s %12s %12s %12s %14s\n' shape "raw pipe" "key-after" snapshot "ins. backlog" "upd. backlog" "pg upsert" "pipe+upd.from"
for shape in $SHAPES; do
    read -r p pi a s bi bu u uf <<<"${RES[$shape]}"
    printf '%-8s %10s %10s %10s %12s %12s %12s %14s\n' "$shape" "$p" "$a" "$s" "$bi" "$bu" "$u" "$uf"
    echo "         snapshot / key-after pipe $(ratio "$s" "$a"); insert backlog / raw pipe $(ratio "$bi" "$p"), / the raw pipe in commit order $(ratio "$bi" "$pi"); update backlog / raw pipe $(ratio "$bu" "$p"), / PostgreSQL's own upsert $(ratio "$bu" "$u"), / the pipe + UPDATE … FROM $(ratio "$bu" "$uf")"
    read -r sc bic buc <<<"${CPUS[$shape]}"
    echo "         sluice's CPU seconds per million rows: snapshot $sc, insert backlog $bic, update backlog $buc"
done
echo "sysbench oltp_write_only 8 threads ${LOAD_SECONDS}s: $TPS_ALONE tps alone, $TPS_FOLLOWED tps followed by sluice ($(ratio "$TPS_FOLLOWED" "$TPS_ALONE")), $CHANGES row-changing statements"
echo "lag during the load ($LAG_N probes): p50 ${LAG_P50} ms, p99 ${LAG_P99} ms, max ${LAG_MAX} ms; everything landed ${DRAINED} s after the load stopped; verify: equal"
echo "sluice's CPU while following the load: $CPU s, $(awk -v c="$CPU" -v n="$CHANGES" 'BEGIN { printf "%.2f", c * 1000000 / n }') ms per 1,000 row-changing statements"
echo "sluice peak RSS over all runs: $((PEAK_RSS / 1024)) MiB"
"${MY[@]}" -e "DROP DATABASE IF EXISTS $DB"
"${PG[@]}" -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
