#!/usr/bin/env bash
# What a table a [[tables]] pattern takes while `run` goes on costs the other tables, in each
# capture mode: a probe table takes a row every 10 ms (UTC_TIMESTAMP(6) as it is written),
# and a trigger on the target stamps each as it lands. After a few seconds, a ROWS-row table
# appears on the source (a RENAME of a seeded table) and the pattern takes it: a new round
# (polling: its first load in its own lane; binlog capture: its copy beside the stream). The
# probe's lag (landed - written) is reported for the rows written before the RENAME and for
# those written after it, in the same run; then the new table's rows are counted on the
# target.
#
#   benches/pattern.sh [ROWS] [SECONDS]    (defaults: 300000 rows; 8 s of probes)
#   MODES=binlog for one capture mode only (default: "poll binlog")
#
# Needs the local servers (scripts/services.sh); builds sluice in release mode.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ROWS=${1:-300000}
SECONDS_PROBED=${2:-8}
DB=sluice_pattern_bench
source benches/lib.sh
bench_setup "$DB"
export SLUICE_HTTP_ADDR=127.0.0.1:0
bench_work

for mode in ${MODES:-poll binlog}; do
    fresh_databases "$DB"
    probe_tables "$DB"
    "${MY[@]}" "$DB" -e "CREATE TABLE seed (id INT NOT NULL PRIMARY KEY, v VARCHAR(60) NOT NULL,
        upd DATETIME(6) NOT NULL DEFAULT NOW(6), KEY (upd));
      INSERT INTO seed (id, v) SELECT seq, REPEAT('x', 60) FROM seq_1_to_$ROWS"
    if [ "$mode" = poll ]; then
        printf '[[tables]]\nname = "probe"\ncursor = "at"\n[[tables]]\nname = "big*"\ncursor = "upd"\n' >"$WORK/c.toml"
    else
        printf '[source]\ncapture = "binlog"\n[[tables]]\nname = "probe"\n[[tables]]\nname = "big*"\n' >"$WORK/c.toml"
    fi
    /usr/bin/time -f '%M' -o "$WORK/rss" "$BIN" --config "$WORK/c.toml" run >"$WORK/run.log" 2>&1 &
    RUN=$!
    ( for _ in $(seq 1 $((SECONDS_PROBED * 100))); do echo "INSERT INTO probe (at) VALUES (UTC_TIMESTAMP(6)); DO SLEEP(0.01);"; done ) |
        "${MY[@]}" "$DB" &
    PROBER=$!
    sleep $((SECONDS_PROBED / 3))
    AT=$(now)
    "${MY[@]}" "$DB" -e "RENAME TABLE seed TO big"
    wait $PROBER
    for _ in $(seq 1 600); do
        [ "$("${PG[@]}" -d "$DB" -At -c "SELECT count(*) FROM pg_tables WHERE tablename = 'big'")" = 1 ] &&
            [ "$("${PG[@]}" -d "$DB" -At -c "SELECT count(*) FROM public.big")" = "$ROWS" ] && break
        sleep 0.1
    done
    kill -TERM "$(pgrep -P $RUN -f 'sluice.* run' || echo $RUN)" 2>/dev/null || true
    wait $RUN || { echo "sluice run failed:" >&2; cat "$WORK/run.log" >&2; exit 1; }
    got=$("${PG[@]}" -d "$DB" -At -c "SELECT count(*) FROM public.big")
    [ "$got" = "$ROWS" ] || { echo "$mode: the new table has $got of $ROWS rows" >&2; exit 1; }
    echo "== $mode: the probe's lag, ms (p50 / p99 / max, rows), before and after a $ROWS-row table appeared; peak RSS $(( $(cat "$WORK/rss") / 1024 )) MiB"
    "${PG[@]}" -d "$DB" -At -F ' ' -c "
      SELECT w, round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 1),
             round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 1),
             round(max(ms)::numeric, 1), count(*)
      FROM (SELECT CASE WHEN p.at AT TIME ZONE 'UTC' < to_timestamp($AT) THEN 'before' ELSE 'after' END AS w,
                   extract(epoch FROM l.at - (p.at AT TIME ZONE 'UTC')) * 1000 AS ms
            FROM public.probe p JOIN public.landed l USING (id)) x
      GROUP BY w ORDER BY w DESC"
done
"${MY[@]}" -e "DROP DATABASE IF EXISTS $DB"
"${PG[@]}" -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
