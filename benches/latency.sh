#!/usr/bin/env bash
# Steady-state lag: the generator inserts demo orders at RATE rows/s (created = the server's
# NOW(6) as each insert statement starts) while `sluice run` replicates continuously. A
# trigger on the target records clock_timestamp() as each row arrives; lag = arrival -
# created. Prints p50/p95/p99/max per rate, the p50 over the first and the last fifth of the
# rows (equal when lag stays bounded, growing when sluice falls behind), the insert rate the
# generators reached, and sluice's peak RSS.
#
#   benches/latency.sh [SECONDS] [RATE...]     (defaults: 20 s at 1000 rows/s, then 5000 rows/s)
#   GENERATORS=4 benches/latency.sh 15 40000   (the rate split over 4 generator processes: one
#                                               inserts at most ~20,000 rows/s here)
#   CAPTURE=binlog benches/latency.sh          (binlog capture instead of polling; lag is then
#                                               commit on the source to visible on the target)
#
# Needs the local servers (scripts/services.sh); builds sluice in release mode.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SECONDS_PER_RATE=${1:-20}
shift || true
RATES=("${@:-1000}")
[ $# -gt 0 ] || RATES=(1000 5000)
DB=sluice_latency
GENERATORS=${GENERATORS:-1}
CAPTURE=${CAPTURE:-poll}
source benches/lib.sh
bench_setup "$DB"
CONFIG=$(mktemp --suffix .toml)
trap 'rm -f "$CONFIG"' EXIT
case "$CAPTURE" in
    poll) printf '[[tables]]\nname = "orders"\ncursor = "created"\n' >"$CONFIG" ;;
    binlog) printf '[source]\ncapture = "binlog"\n[[tables]]\nname = "orders"\n' >"$CONFIG" ;;
    *) echo "CAPTURE must be poll or binlog" >&2; exit 2 ;;
esac

for RATE in "${RATES[@]}"; do
    fresh_databases "$DB"
    RUST_LOG=warn "$BIN" migrate >/dev/null
    "${PG[@]}" -d "$DB" -c "
      CREATE TABLE public.arrivals (order_id text PRIMARY KEY, arrived timestamptz NOT NULL);
      CREATE FUNCTION public.note_arrival() RETURNS trigger LANGUAGE plpgsql AS
        \$\$ BEGIN INSERT INTO public.arrivals VALUES (NEW.order_id, clock_timestamp()); RETURN NULL; END \$\$;
      CREATE TRIGGER note_arrival AFTER INSERT ON public.orders FOR EACH ROW EXECUTE FUNCTION public.note_arrival();"
    TOTAL=$((RATE * SECONDS_PER_RATE))
    RSS_FILE=$(mktemp)
    ( RUST_LOG=warn /usr/bin/time -f "%M" -o "$RSS_FILE" "$BIN" --config "$CONFIG" run >/dev/null ) &
    RUN_PID=$!
    sleep 1
    GEN_START=$(date +%s.%N)
    GEN_PIDS=()
    for _ in $(seq 1 "$GENERATORS"); do
        RUST_LOG=warn "$BIN" generate --rate "$(awk -v r="$RATE" -v g="$GENERATORS" 'BEGIN { print r / g }')" \
            --total "$((TOTAL / GENERATORS))" >/dev/null &
        GEN_PIDS+=($!)
    done
    wait "${GEN_PIDS[@]}"
    TOTAL=$(( (TOTAL / GENERATORS) * GENERATORS ))
    REACHED=$(awk -v n="$TOTAL" -v a="$GEN_START" -v b="$(date +%s.%N)" 'BEGIN { printf "%.0f", n / (b - a) }')
    # Wait (bounded) for the last rows to arrive, then stop sluice.
    for _ in $(seq 1 300); do
        got=$("${PG[@]}" -d "$DB" -At -c "SELECT count(*) FROM public.arrivals")
        [ "$got" -ge "$TOTAL" ] && break
        sleep 0.1
    done
    kill -TERM "$(pgrep -P $RUN_PID -f 'sluice.* run' || echo $RUN_PID)" 2>/dev/null || true
    wait $RUN_PID || true
    echo "$CAPTURE: rate $RATE rows/s for ${SECONDS_PER_RATE}s ($GENERATORS generator(s), reached $REACHED rows/s): $got of $TOTAL rows arrived; peak RSS $(( $(cat "$RSS_FILE" 2>/dev/null || echo 0) / 1024 )) MiB"
    "${PG[@]}" -d "$DB" -c "
      SELECT round(percentile_cont(0.50) WITHIN GROUP (ORDER BY ms)::numeric, 1) AS p50_ms,
             round(percentile_cont(0.95) WITHIN GROUP (ORDER BY ms)::numeric, 1) AS p95_ms,
             round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 1) AS p99_ms,
             round(max(ms)::numeric, 1) AS max_ms,
             round((percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) FILTER (WHERE fifth = 1))::numeric, 1) AS p50_first_fifth_ms,
             round((percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) FILTER (WHERE fifth = 5))::numeric, 1) AS p50_last_fifth_ms
      FROM (SELECT extract(epoch FROM a.arrived - (o.created AT TIME ZONE 'UTC')) * 1000 AS ms,
                   ntile(5) OVER (ORDER BY o.created) AS fifth
            FROM public.orders o JOIN public.arrivals a USING (order_id)) l"
    rm -f "$RSS_FILE"
done
"${MY[@]}" -e "DROP DATABASE IF EXISTS $DB"
"${PG[@]}" -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
