#!/usr/bin/env bash
# Column mapping's cost: the same work with and without a mapping, in the same run, A/B/A/B.
# The mapping is the one issue #30 names: two columns excluded, one masked (sha256), one
# renamed, and a `where` filter keeping half the rows. Two table shapes:
#   customers  a BIGINT key, text columns (email, name, a hash, an SSN, a note), a DATETIME(6)
#   ledger     a random-UUID key, INT, DECIMAL, a card number, a CVV, a memo, a DATETIME(6)
#
# 1. Polling, first load: `run --once` of ROWS rows into a fresh target.
# 2. Binlog capture, insert backlog: the table followed from the binlog, sluice stopped, ROWS
#    rows inserted in transactions of 10,000, then `run --once` catches up.
#    Both rates count the source's rows (the work sluice reads and decides on), so a filter
#    that keeps half shows what it costs, not the half it saves on the target.
# 3. Lag: customers rows inserted at RATE rows/s for SECONDS (10 per statement, created =
#    NOW(6)) while `run` follows, in each capture mode; a trigger stamps each row as it lands
#    on the target; lag = landed - created, over the rows the target gets.
# Prints every run, the medians and the ratios (mapped / plain), and sluice's peak RSS.
#
#   benches/mapping.sh [ROWS] [ROUNDS] [SECONDS] [RATE]   (defaults: 500000, 2, 20, 1000)
#
# Needs the local servers (scripts/services.sh) and python3; builds sluice in release mode.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ROWS=${1:-500000}
ROUNDS=${2:-2}
SECONDS_LIVE=${3:-20}
RATE=${4:-1000}
DB=sluice_mapping_bench
source benches/lib.sh
bench_setup "$DB"
export SLUICE_HTTP_ADDR=127.0.0.1:0
export RUST_LOG=warn
bench_work

PEAK_RSS=0
note_rss() {
    local r
    r=$(tail -1 "$WORK/rss")
    [ "$r" -gt "$PEAK_RSS" ] && PEAK_RSS=$r
    return 0
}
sluice_once() { # sluice_once CONFIG
    /usr/bin/time -f '%M' -o "$WORK/rss" "$BIN" --config "$1" run --once >/dev/null
    note_rss
}

# Each shape: its source DDL, a seed of rows $2..$3 into table $1, its mapping, and the
# condition (in MySQL) of the rows the filter keeps.
ddl_customers() {
    echo "CREATE TABLE $1 (id BIGINT NOT NULL PRIMARY KEY, email VARCHAR(80) NOT NULL,
      fname VARCHAR(40) NOT NULL, password_hash CHAR(64) NOT NULL, ssn CHAR(11) NOT NULL,
      region CHAR(2) NOT NULL, note VARCHAR(200) NOT NULL, created DATETIME(6) NOT NULL, KEY (created))"
}
seed_customers() {
    echo "INSERT INTO $1 SELECT seq, CONCAT('user', seq, '@example.com'), CONCAT('First', seq),
      SHA2(seq, 256), LPAD(seq MOD 1000000000, 11, '0'), IF(seq MOD 2 = 0, 'EU', 'US'),
      CONCAT('note ', MD5(seq)), TIMESTAMP('2026-01-01') + INTERVAL seq * 997 MICROSECOND
      FROM seq_$2_to_$3"
}
map_customers() {
    printf '%s\n' 'exclude_columns = ["password_hash", "ssn"]' 'mask_columns = { email = "sha256" }' \
        'rename_columns = { fname = "first_name" }' "where = \"region = 'EU'\""
}
kept_customers() { echo "region = 'EU'"; }
ddl_ledger() {
    echo "CREATE TABLE $1 (id CHAR(36) NOT NULL PRIMARY KEY, account INT NOT NULL,
      amount DECIMAL(14,2) NOT NULL, currency CHAR(3) NOT NULL, card VARCHAR(19) NOT NULL,
      cvv CHAR(3) NOT NULL, memo VARCHAR(64) NOT NULL, created DATETIME(6) NOT NULL, KEY (created))"
}
seed_ledger() {
    echo "INSERT INTO $1 SELECT CONCAT(SUBSTR(h,1,8),'-',SUBSTR(h,9,4),'-4',SUBSTR(h,14,3),'-a',SUBSTR(h,18,3),'-',SUBSTR(h,21,12)),
      seq MOD 50000, (seq MOD 100000) / 100, IF(seq MOD 2 = 0, 'EUR', 'USD'),
      CONCAT('4111', LPAD(seq, 12, '0')), LPAD(seq MOD 1000, 3, '0'), CONCAT('memo ', seq),
      TIMESTAMP('2026-01-01') + INTERVAL seq * 997 MICROSECOND
      FROM (SELECT seq, MD5(CONCAT(seq, '$1')) AS h FROM seq_$2_to_$3) s"
}
map_ledger() {
    printf '%s\n' 'exclude_columns = ["cvv", "memo"]' 'mask_columns = { card = "sha256" }' \
        'rename_columns = { account = "account_id" }' "where = \"currency = 'EUR'\""
}
kept_ledger() { echo "currency = 'EUR'"; }

config() { # config FILE MODE VARIANT SHAPE TABLE: the variant lands in its own schema
    local f=$1 mode=$2 variant=$3 shape=$4 table=$5
    printf '[source]\ncapture = "%s"\n[target]\nschema = "%s"\n[[tables]]\nname = "%s"\n' \
        "$mode" "$variant" "$table" >"$f"
    [ "$mode" = poll ] && echo 'cursor = "created"' >>"$f"
    [ "$variant" = mapped ] && map_"$shape" >>"$f"
    return 0
}
fresh_target() { # fresh_target VARIANT
    "${PG[@]}" -d "$DB" -c "DROP SCHEMA IF EXISTS $1 CASCADE; DROP SCHEMA IF EXISTS sluice CASCADE" -c "CHECKPOINT"
}
expect_rows() { # expect_rows VARIANT SHAPE TABLE WHO: the target holds what the variant keeps
    local want got
    if [ "$1" = mapped ]; then
        want=$("${MY[@]}" -N "$DB" -e "SELECT COUNT(*) FROM $3 WHERE $(kept_"$2")")
    else
        want=$("${MY[@]}" -N "$DB" -e "SELECT COUNT(*) FROM $3")
    fi
    got=$("${PG[@]}" -d "$DB" -At -c "SELECT count(*) FROM $1.$3")
    [ "$got" = "$want" ] || { echo "$4 ($1) left $got of $want rows in $3" >&2; exit 1; }
    "$BIN" --config "$WORK/$1.toml" verify >/dev/null || { echo "$4 ($1): verify found differences" >&2; exit 1; }
}

fresh_databases "$DB"

declare -A RES
for shape in customers ledger; do
    src=${shape}_src
    echo "== $shape: seeding $ROWS rows"
    "${MY[@]}" "$DB" -e "$(ddl_$shape "$src"); $(seed_$shape "$src" 1 "$ROWS"); ANALYZE TABLE $src" >/dev/null
    declare -A L=() B=()
    for round in $(seq 1 "$ROUNDS"); do
        line="round $round:"
        for variant in plain mapped; do
            # Polling's first load.
            config "$WORK/$variant.toml" poll "$variant" "$shape" "$src"
            fresh_target "$variant"
            t0=$(now); sluice_once "$WORK/$variant.toml"; t1=$(now)
            L[$variant]+=" $(rate "$ROWS" "$t0" "$t1")"
            expect_rows "$variant" "$shape" "$src" "the first load"
            # Binlog capture's insert backlog.
            bl=${shape}_backlog
            "${MY[@]}" "$DB" -e "DROP TABLE IF EXISTS $bl; $(ddl_$shape "$bl")"
            config "$WORK/$variant.toml" binlog "$variant" "$shape" "$bl"
            fresh_target "$variant"
            sluice_once "$WORK/$variant.toml"
            step=10000
            for ((from = 1; from <= ROWS; from += step)); do
                to=$((from + step - 1)); [ $to -gt "$ROWS" ] && to=$ROWS
                seed_$shape "$bl" "$from" "$to"; echo ";"
            done | "${MY[@]}" "$DB"
            "${PG[@]}" -d "$DB" -c "CHECKPOINT"
            t0=$(now); sluice_once "$WORK/$variant.toml"; t1=$(now)
            B[$variant]+=" $(rate "$ROWS" "$t0" "$t1")"
            expect_rows "$variant" "$shape" "$bl" "the insert backlog"
            line+=" $variant: first load $(echo ${L[$variant]} | awk '{print $NF}'), insert backlog $(echo ${B[$variant]} | awk '{print $NF}') rows/s;"
        done
        echo "$line"
    done
    # shellcheck disable=SC2086
    RES[$shape]="$(median ${L[plain]}) $(median ${L[mapped]}) $(median ${B[plain]}) $(median ${B[mapped]})"
    unset L B
done

# Lag at RATE rows/s, plain and mapped, in each capture mode.
generate() { # generate TABLE: RATE rows/s for SECONDS_LIVE, paced, one statement per 10 rows
    python3 - "$1" "$RATE" "$SECONDS_LIVE" <<'EOF'
import sys, time
table, rate, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
start = time.time()
for first in range(1, rate * secs + 1, 10):
    wait = start + (first - 1) / rate - time.time()
    if wait > 0:
        time.sleep(wait)
    rows = ",".join(
        f"({i}, 'user{i}@example.com', 'First{i}', SHA2({i}, 256), '000-00-0000', "
        f"'{'EU' if i % 2 == 0 else 'US'}', 'note {i}', NOW(6))"
        for i in range(first, first + 10)
    )
    print(f"INSERT INTO {table} VALUES {rows};", flush=True)
EOF
}
declare -A LAG
for mode in poll binlog; do
    for variant in plain mapped; do
        live=live
        "${MY[@]}" "$DB" -e "DROP TABLE IF EXISTS $live; $(ddl_customers "$live")"
        config "$WORK/$variant.toml" "$mode" "$variant" customers "$live"
        fresh_target "$variant"
        "${PG[@]}" -d "$DB" -c "DROP TABLE IF EXISTS public.arrivals" \
            -c "CREATE TABLE public.arrivals (id bigint PRIMARY KEY, at timestamptz NOT NULL)"
        /usr/bin/time -f '%M' -o "$WORK/rss" "$BIN" --config "$WORK/$variant.toml" run >"$WORK/run.log" 2>&1 &
        RUN=$!
        for _ in $(seq 1 600); do
            [ "$("${PG[@]}" -d "$DB" -At -c "SELECT count(*) FROM pg_tables WHERE schemaname = '$variant' AND tablename = '$live'")" = 1 ] && break
            sleep 0.05
        done
        "${PG[@]}" -d "$DB" -c "
          CREATE OR REPLACE FUNCTION public.note_arrival() RETURNS trigger LANGUAGE plpgsql AS
            \$\$ BEGIN INSERT INTO public.arrivals VALUES (NEW.id, clock_timestamp()) ON CONFLICT DO NOTHING; RETURN NULL; END \$\$;
          CREATE TRIGGER note_arrival AFTER INSERT ON $variant.$live FOR EACH ROW EXECUTE FUNCTION public.note_arrival();"
        generate "$live" | "${MY[@]}" "$DB"
        want=$((RATE * SECONDS_LIVE))
        [ "$variant" = mapped ] && want=$((want / 2))
        for _ in $(seq 1 600); do
            [ "$("${PG[@]}" -d "$DB" -At -c "SELECT count(*) FROM public.arrivals")" -ge "$want" ] && break
            sleep 0.05
        done
        kill -TERM "$(pgrep -P $RUN -f 'sluice.* run' || echo $RUN)" 2>/dev/null || true
        wait $RUN || { echo "sluice run failed:" >&2; cat "$WORK/run.log" >&2; exit 1; }
        note_rss
        got=$("${PG[@]}" -d "$DB" -At -c "SELECT count(*) FROM public.arrivals")
        [ "$got" = "$want" ] || { echo "$mode $variant: $got of $want rows arrived" >&2; exit 1; }
        LAG[$mode.$variant]=$("${PG[@]}" -d "$DB" -At -F ' ' -c "
          SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 1),
                 round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 1),
                 round(max(ms)::numeric, 1)
          FROM (SELECT extract(epoch FROM a.at - (l.created AT TIME ZONE 'UTC')) * 1000 AS ms
                FROM $variant.$live l JOIN public.arrivals a USING (id)) x")
        echo "lag, $mode, $variant: p50 p99 max ms: ${LAG[$mode.$variant]} ($got rows)"
    done
done

echo
echo "rows: $ROWS, rounds: $ROUNDS (medians), source rows/s; mapping: 2 excluded, 1 masked (sha256), 1 renamed, a filter keeping half"
printf '%-10s %-26s %10s %10s %8s\n' shape work plain mapped ratio
for shape in customers ledger; do
    read -r lp lm bp bm <<<"${RES[$shape]}"
    printf '%-10s %-26s %10s %10s %8s\n' "$shape" "polling first load" "$lp" "$lm" "$(ratio "$lm" "$lp")"
    printf '%-10s %-26s %10s %10s %8s\n' "$shape" "binlog insert backlog" "$bp" "$bm" "$(ratio "$bm" "$bp")"
done
echo "lag at $RATE rows/s for ${SECONDS_LIVE}s (customers), ms: p50 / p99 / max"
for mode in poll binlog; do
    read -r a b c <<<"${LAG[$mode.plain]}"
    read -r d e f <<<"${LAG[$mode.mapped]}"
    echo "  $mode: plain $a / $b / $c, mapped $d / $e / $f"
done
echo "sluice peak RSS over all runs: $((PEAK_RSS / 1024)) MiB"
"${MY[@]}" -e "DROP DATABASE IF EXISTS $DB"
"${PG[@]}" -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
