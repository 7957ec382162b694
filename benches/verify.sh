#!/usr/bin/env bash
# What the background verify ([verify] interval_s) costs replication, against the same run
# with it off, A/B in one run. The check runs without rest (interval_s = 1: a new comparison
# starts as soon as one ends) at its default read budget (max_rows_per_s = 200000), over a
# table that already holds ROWS replicated rows: the worst case. (It waits while a table
# catches up a backlog, so part 1 measures what is left of its cost then.)
#
# 1. Catch-up throughput, per shape (orders: random UUID text key; ledger: ascending BIGINT
#    key, DECIMAL columns): ROWS rows replicated, then a backlog of BACKLOG more written while
#    sluice is stopped; rows/s of `sluice run` until the backlog is on the target.
# 2. Steady-state lag (orders, as benches/latency.sh measures it): the generator inserts RATE
#    rows/s for SECONDS s; p50/p95/p99/max of arrival on the target minus creation.
#
#   benches/verify.sh [ROWS] [BACKLOG] [SECONDS] [RATE] [ROUNDS]
#                     (defaults: 300000 rows, 1000000 backlog, 20 s at 1000 rows/s, 2 rounds)
#   SHAPES=ledger benches/verify.sh …   (part 1 for these shapes only)
#
# Needs the local servers (scripts/services.sh); builds sluice in release mode.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ROWS=${1:-300000}
BACKLOG=${2:-1000000}
SECONDS_LAG=${3:-20}
RATE=${4:-1000}
ROUNDS=${5:-2}
DB=sluice_verify_bench
source benches/lib.sh
bench_setup "$DB"
CONFIG=$(mktemp --suffix .toml)
LOG=$(mktemp)
trap 'rm -f "$CONFIG" "$LOG"' EXIT

fresh() {
    fresh_databases "$DB"
}

# Rows FROM..TO of a shape. The first ROWS are a day old; later ones (the backlog) are
# stamped from now on, a microsecond apart, so they are past the watermark the first run left.
insert() {
    local shape=$1 from=$2 to=$3
    local at="NOW(6) - INTERVAL 1 DAY + INTERVAL seq MICROSECOND"
    [ "$from" -gt 1 ] && at="NOW(6) + INTERVAL (seq - $from) MICROSECOND"
    case $shape in
    orders) "${MY[@]}" "$DB" -e "INSERT INTO orders (order_id, created)
          SELECT CONCAT(SUBSTR(h,1,8),'-',SUBSTR(h,9,4),'-4',SUBSTR(h,14,3),'-a',SUBSTR(h,18,3),'-',SUBSTR(h,21,12)), $at
          FROM (SELECT seq, MD5(CONCAT(seq, RAND())) AS h FROM seq_${from}_to_${to}) s ORDER BY h" ;;
    ledger) "${MY[@]}" "$DB" -e "INSERT INTO ledger SELECT seq, (seq * 7919) % 10000000 / 100, (seq % 9973) / 10000,
                 ELT(1 + seq % 3, 'EUR', 'USD', 'GBP'), $at
          FROM seq_${from}_to_${to}" ;;
    esac
}

create() {
    case $1 in
    orders) RUST_LOG=warn "$BIN" migrate >/dev/null ;;
    ledger) "${MY[@]}" "$DB" -e "CREATE TABLE ledger (id BIGINT NOT NULL PRIMARY KEY, amount DECIMAL(12,2) NOT NULL,
            fee DECIMAL(10,4) NOT NULL, currency CHAR(3) NOT NULL, created DATETIME(6) NOT NULL, KEY (created))" ;;
    esac
}

# config SHAPE on|off
config() {
    printf '[[tables]]\nname = "%s"\ncursor = "created"\n' "$1" >"$CONFIG"
    [ "$2" = on ] && printf '[verify]\ninterval_s = 1\n' >>"$CONFIG"
    return 0
}

count() { "${PG[@]}" -d "$DB" -At -c "SELECT count(*) FROM public.$1"; }

# The last background report, as "rows compared in s".
last_check() {
    "${PG[@]}" -d "$DB" -At -c "SELECT COALESCE((verify->>'source_rows') || ' rows in ' || round((verify->>'seconds')::numeric, 1) || ' s', 'none') FROM sluice.replication_state LIMIT 1"
}

stop_run() {
    kill -TERM "$(pgrep -P "$1" -f 'sluice.* run' || echo "$1")" 2>/dev/null || true
    wait "$1" || true
}

declare -A RESULT
echo "== catch-up throughput: $ROWS rows replicated, then $BACKLOG more to catch up, verify off/on, $ROUNDS rounds"
for shape in ${SHAPES:-orders ledger}; do
    for round in $(seq 1 "$ROUNDS"); do
        for mode in off on; do
            fresh
            create "$shape"
            insert "$shape" 1 "$ROWS"
            config "$shape" "$mode"
            RUST_LOG=warn "$BIN" --config "$CONFIG" run --once >/dev/null
            insert "$shape" $((ROWS + 1)) $((ROWS + BACKLOG))
            total=$((ROWS + BACKLOG))
            ( RUST_LOG=info exec "$BIN" --config "$CONFIG" run 2>"$LOG" >/dev/null ) &
            pid=$!
            start=$(now)
            until [ "$(count "$shape")" -ge "$total" ]; do
                sleep 0.05
                if awk -v a="$start" -v b="$(now)" 'BEGIN { exit !(b - a > 600) }'; then
                    echo "the backlog did not arrive within 600 s" >&2; stop_run "$pid"; exit 1
                fi
            done
            secs=$(awk -v a="$start" -v b="$(now)" 'BEGIN { print b - a }')
            # Let a comparison run to its end before stopping, to show what one costs.
            [ "$mode" = on ] && for _ in $(seq 1 600); do grep -q "background verify" "$LOG" && break; sleep 0.1; done
            stop_run "$pid"
            rate=$(awk -v n="$BACKLOG" -v s="$secs" 'BEGIN { printf "%.0f", n / s }')
            RESULT[$shape,$mode]="${RESULT[$shape,$mode]:-} $rate"
            echo "$shape round $round, verify $mode: $BACKLOG rows in $(printf %.2f "$secs") s = $rate rows/s$([ "$mode" = on ] && echo "; last check: $(last_check)")"
        done
    done
done
for shape in ${SHAPES:-orders ledger}; do
    # shellcheck disable=SC2086
    off=$(median ${RESULT[$shape,off]}); on=$(median ${RESULT[$shape,on]})
    echo "$shape: catch-up with verify on / off = $(awk -v a="$on" -v b="$off" 'BEGIN { printf "%.2f", a / b }') (median $on vs $off rows/s)"
done

echo "== steady-state lag: orders with $ROWS rows replicated, $RATE rows/s for $SECONDS_LAG s, verify off/on"
declare -A LAG
for mode in off on; do
    fresh
    create orders
    insert orders 1 "$ROWS"
    config orders "$mode"
    RUST_LOG=warn "$BIN" --config "$CONFIG" run --once >/dev/null
    "${PG[@]}" -d "$DB" -c "
      CREATE TABLE public.arrivals (order_id text PRIMARY KEY, arrived timestamptz NOT NULL);
      CREATE FUNCTION public.note_arrival() RETURNS trigger LANGUAGE plpgsql AS
        \$\$ BEGIN INSERT INTO public.arrivals VALUES (NEW.order_id, clock_timestamp()); RETURN NULL; END \$\$;
      CREATE TRIGGER note_arrival AFTER INSERT ON public.orders FOR EACH ROW EXECUTE FUNCTION public.note_arrival();"
    ( RUST_LOG=info exec "$BIN" --config "$CONFIG" run 2>"$LOG" >/dev/null ) &
    pid=$!
    sleep 1
    total=$((RATE * SECONDS_LAG))
    RUST_LOG=warn "$BIN" generate --rate "$RATE" --total "$total" >/dev/null
    for _ in $(seq 1 300); do
        [ "$("${PG[@]}" -d "$DB" -At -c "SELECT count(*) FROM public.arrivals")" -ge "$total" ] && break
        sleep 0.1
    done
    stop_run "$pid"
    checks=$(grep -c "background verify" "$LOG" || true)
    LAG[$mode]=$("${PG[@]}" -d "$DB" -At -F ' ' -c "
      SELECT round(percentile_cont(0.50) WITHIN GROUP (ORDER BY ms)::numeric, 1),
             round(percentile_cont(0.95) WITHIN GROUP (ORDER BY ms)::numeric, 1),
             round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 1),
             round(max(ms)::numeric, 1)
      FROM (SELECT extract(epoch FROM a.arrived - (o.created AT TIME ZONE 'UTC')) * 1000 AS ms
            FROM public.orders o JOIN public.arrivals a USING (order_id)) l")
    read -r p50 p95 p99 max <<<"${LAG[$mode]}"
    echo "verify $mode: lag p50 $p50 / p95 $p95 / p99 $p99 / max $max ms$([ "$mode" = on ] && echo "; $checks comparisons during the run, last: $(last_check)")"
done
read -r a50 a95 a99 _ <<<"${LAG[off]}"
read -r b50 b95 b99 _ <<<"${LAG[on]}"
echo "lag with verify on / off: p50 $(awk -v a="$b50" -v b="$a50" 'BEGIN { printf "%.2f", a / b }'), p95 $(awk -v a="$b95" -v b="$a95" 'BEGIN { printf "%.2f", a / b }'), p99 $(awk -v a="$b99" -v b="$a99" 'BEGIN { printf "%.2f", a / b }')"
"${MY[@]}" -e "DROP DATABASE IF EXISTS $DB"
"${PG[@]}" -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
