#!/usr/bin/env bash
# Copies beside the stream (binlog capture): a table of ROWS rows appears on the source (a
# RENAME of a seeded table) while a pipeline runs whose [[tables]] pattern takes it, and is
# copied a chunk at a time while the pipeline's other table streams. A probe table takes a
# row every 10 ms (about 100 rows/s, UTC_TIMESTAMP(6) as it is written), and a trigger on the
# target stamps each as it lands: the probe's lag (landed - written) is measured first with
# nothing to copy, then from the RENAME (the pattern's pick-up, the round that takes the new
# table in, the copy) until the copy is done, and over the copy alone (its first chunk to its
# last), in the same run.
# The copy's rate (rows / the time between sluice's "copy … started" and "copy … done" log
# lines) is set beside the key-after pipe's for the same table in the same run
# (`mariadb --quick | psql \copy` into a keyless table, then ADD PRIMARY KEY: the fastest
# plain copy). Two table shapes: sysbench's (INT key) and the demo's (random UUID text key).
# Prints per shape: baseline lag p50/p99/max, lag during the copy p50/p99/max, copy rate,
# key-after rate, the ratio, and sluice's peak RSS.
#
#   benches/beside.sh [ROWS]     (default 2000000; SHAPES="orders" for one shape)
#
# Needs the local servers (scripts/services.sh); builds sluice in release mode.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ROWS=${1:-2000000}
DB=sluice_beside_bench
source benches/lib.sh
bench_setup "$DB"
export SLUICE_HTTP_ADDR=127.0.0.1:0
bench_work

ddl_sbtest() { echo "CREATE TABLE big (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, k INT NOT NULL DEFAULT 0, c CHAR(120) NOT NULL DEFAULT '', pad CHAR(60) NOT NULL DEFAULT '', KEY k_1 (k))"; }
pg_sbtest() { echo "CREATE TABLE public.big (id integer PRIMARY KEY, k integer NOT NULL, c text NOT NULL, pad text NOT NULL)"; }
pipe_sbtest() { echo "SELECT id, k, c, pad FROM big"; }
seed_sbtest() {
    echo "INSERT INTO big SELECT seq, seq MOD 100000, CONCAT(MD5(seq), MD5(seq + 1), MD5(seq + 2), LEFT(MD5(seq + 3), 24)),
            CONCAT(MD5(-seq), LEFT(MD5(seq * 7), 28)) FROM seq_1_to_$ROWS"
}
ddl_orders() { echo "CREATE TABLE big (order_id VARCHAR(36) NOT NULL PRIMARY KEY, created DATETIME(6) NOT NULL)"; }
pg_orders() { echo "CREATE TABLE public.big (order_id text PRIMARY KEY, created timestamp(6) NOT NULL)"; }
pipe_orders() { echo "SELECT order_id, DATE_FORMAT(created, '%Y-%m-%d %H:%i:%s.%f') FROM big"; }
seed_orders() { echo "INSERT INTO big SELECT UUID(), TIMESTAMP('2026-01-01') + INTERVAL seq SECOND FROM seq_1_to_$ROWS"; }

config() { # config FILE TABLE...
    local file=$1
    shift
    printf '[source]\ncapture = "binlog"\n' >"$file"
    for t in "$@"; do printf '[[tables]]\nname = "%s"\n' "$t" >>"$file"; done
}
lag() { # lag FROM TO: the probe rows written between two epoch times
    "${PG[@]}" -d "$DB" -At -F ' ' -c "
      SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 1),
             round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 1),
             round(max(ms)::numeric, 1), count(*)
      FROM (SELECT extract(epoch FROM l.at - (p.at AT TIME ZONE 'UTC')) * 1000 AS ms
            FROM public.probe p JOIN public.landed l USING (id)
            WHERE p.at AT TIME ZONE 'UTC' BETWEEN to_timestamp($1) AND to_timestamp($2)) x"
}
log_epoch() { # log_epoch FILE NEEDLE: the time of the first log line holding NEEDLE
    grep -m1 "$2" "$1" | cut -d' ' -f1 | xargs -I{} date -d {} +%s.%N
}

for shape in ${SHAPES:-sbtest orders}; do
    echo "== $shape: seeding $ROWS rows"
    fresh_databases "$DB"
    "${MY[@]}" "$DB" -e "$(ddl_$shape); $(seed_$shape); ANALYZE TABLE big" >/dev/null

    # The reference: the key-after pipe for the same table.
    "${PG[@]}" -d "$DB" -c "$(pg_$shape)" -c "ALTER TABLE public.big DROP CONSTRAINT big_pkey" -c "CHECKPOINT"
    t0=$(now)
    "${MY[@]}" --quick -N --batch "$DB" -e "$(pipe_$shape)" | "${PG[@]}" -d "$DB" -c "\\copy public.big from stdin"
    "${PG[@]}" -d "$DB" -c "ALTER TABLE public.big ADD PRIMARY KEY ($([ $shape = orders ] && echo order_id || echo id))"
    t1=$(now)
    KEY_AFTER=$(rate "$ROWS" "$t0" "$t1")
    "${PG[@]}" -d "$DB" -c "DROP TABLE public.big" -c "CHECKPOINT"

    # Out of the pattern's sight until it appears.
    "${MY[@]}" "$DB" -e "RENAME TABLE big TO staged"
    # The probe streams on its own first (its lag with nothing to copy).
    probe_tables "$DB"
    config "$WORK/probe.toml" probe
    config "$WORK/both.toml" probe 'big*'
    RUST_LOG=warn "$BIN" --config "$WORK/probe.toml" run --once >/dev/null
    ( while :; do echo "INSERT INTO probe (at) VALUES (UTC_TIMESTAMP(6)); DO SLEEP(0.01);"; done ) |
        "${MY[@]}" "$DB" &
    PROBER=$!
    /usr/bin/time -f '%M' -o "$WORK/rss" env RUST_LOG=info "$BIN" --config "$WORK/both.toml" run >"$WORK/run.log" 2>&1 &
    RUN=$!
    sleep 1
    B0=$(now); sleep 8; B1=$(now)

    # Then the big table appears: the pattern takes it, and it is copied beside the stream.
    A0=$(now)
    "${MY[@]}" "$DB" -e "RENAME TABLE staged TO big"
    for _ in $(seq 1 6000); do
        grep -q "copy of the table done" "$WORK/run.log" && break
        sleep 0.1
    done
    grep -q "copy of the table done" "$WORK/run.log" || { echo "the copy did not end in 10 min" >&2; cat "$WORK/run.log" >&2; exit 1; }
    sleep 2
    kill $PROBER 2>/dev/null || true
    wait $PROBER 2>/dev/null || true
    sleep 1
    kill -TERM "$(pgrep -P $RUN -f 'sluice.* run' || echo $RUN)" 2>/dev/null || true
    wait $RUN || { echo "sluice run failed:" >&2; cat "$WORK/run.log" >&2; exit 1; }
    C0=$(log_epoch "$WORK/run.log" "copy of the table started beside the stream")
    C1=$(log_epoch "$WORK/run.log" "copy of the table done")
    COPY=$(rate "$ROWS" "$C0" "$C1")
    RUST_LOG=warn "$BIN" --config "$WORK/both.toml" verify >/dev/null || { echo "verify found differences" >&2; exit 1; }
    read -r bp50 bp99 bmax bn <<<"$(lag "$B0" "$B1")"
    read -r cp50 cp99 cmax cn <<<"$(lag "$A0" "$C1")"
    read -r dp50 dp99 dmax dn <<<"$(lag "$C0" "$C1")"
    echo "$shape: probe lag alone p50 ${bp50} ms, p99 ${bp99} ms, max ${bmax} ms ($bn rows);" \
        "from its appearance to the end of the copy p50 ${cp50} ms, p99 ${cp99} ms, max ${cmax} ms ($cn rows);" \
        "from the copy's first chunk to its last (the round that takes the table in left out) p50 ${dp50} ms, p99 ${dp99} ms, max ${dmax} ms ($dn rows);" \
        "copy $COPY rows/s in $(awk -v a="$C0" -v b="$C1" 'BEGIN { printf "%.1f", b - a }') s," \
        "key-after pipe $KEY_AFTER rows/s ($(awk -v a="$COPY" -v b="$KEY_AFTER" 'BEGIN { printf "%.2f", a / b }')x);" \
        "peak RSS $(( $(tail -1 "$WORK/rss") / 1024 )) MiB"
done
"${MY[@]}" -e "DROP DATABASE IF EXISTS $DB"
"${PG[@]}" -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
