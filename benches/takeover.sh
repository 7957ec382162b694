#!/usr/bin/env bash
# Takeover time in a group of `sluice run` members sharing one pipeline's tables: KILLS times,
# kill -9 a member holding tables while rows stream into every table, and time from the kill
# to the first commit by the new owner of each of its tables (the slowest of them counts);
# then start the member again and wait until the share is even. Prints each takeover and the
# p50 and max.
#
#   benches/takeover.sh [KILLS] [MEMBERS] [TABLES]      (defaults: 10 kills, 2 members, 4 tables)
#   CAPTURE=binlog benches/takeover.sh                   (binlog capture instead of polling)
#
# Needs the local servers (scripts/services.sh); builds sluice in release mode.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

KILLS=${1:-10}
MEMBERS=${2:-2}
TABLES=${3:-4}
CAPTURE=${CAPTURE:-poll}
DB=sluice_takeover
source benches/lib.sh
bench_setup "$DB"
CONFIG=$(mktemp --suffix .toml)
LOGDIR=$(mktemp -d)
PIDS=()
LOAD_PID=
cleanup() {
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    [ -n "$LOAD_PID" ] && kill "$LOAD_PID" 2>/dev/null || true
    rm -rf "$CONFIG" "$LOGDIR"
}
trap cleanup EXIT

fresh_databases "$DB"
[ "$CAPTURE" = binlog ] && printf '[source]\ncapture = "binlog"\n' >"$CONFIG"
for i in $(seq 1 "$TABLES"); do
    "${MY[@]}" "$DB" -e "CREATE TABLE k$i (id BIGINT AUTO_INCREMENT PRIMARY KEY, at DATETIME(6) NOT NULL, KEY (at));
      INSERT INTO k$i (at) SELECT NOW(6) - INTERVAL 1 HOUR FROM seq_1_to_1000"
    if [ "$CAPTURE" = binlog ]; then
        printf '[[tables]]\nname = "k%s"\n' "$i" >>"$CONFIG"
    else
        printf '[[tables]]\nname = "k%s"\ncursor = "at"\n' "$i" >>"$CONFIG"
    fi
done

start_member() {
    RUST_LOG=info SLUICE_HTTP_ADDR=127.0.0.1:0 "$BIN" --config "$CONFIG" run \
        2>"$LOGDIR/member-$RANDOM.log" >/dev/null &
    PIDS+=($!)
}

# Tables each live member holds, by the state rows: "pid count" lines.
held() {
    "${PG[@]}" -d "$DB" -At -F ' ' -c "SELECT split_part(owner, ':', 2), count(*) FROM sluice.replication_state GROUP BY 1"
}

# Waits until every member in PIDS holds its share (within one of the others).
wait_even() {
    local share=$(( (TABLES + ${#PIDS[@]} - 1) / ${#PIDS[@]} ))
    for _ in $(seq 1 600); do
        local ok=1 n=0
        for p in "${PIDS[@]}"; do
            local c; c=$(held 2>/dev/null | awk -v p="$p" '$1 == p { print $2 }') || c=
            [ -n "$c" ] && [ "$c" -ge $((share - 1)) ] || ok=0
            n=$((n + ${c:-0}))
        done
        [ $ok = 1 ] && [ $n = "$TABLES" ] && return 0
        sleep 0.1
    done
    echo "the members did not share the tables within 60 s" >&2
    return 1
}

for _ in $(seq 1 "$MEMBERS"); do start_member; done
wait_even
# A row into every table every 10 ms, from one client.
( while :; do
    for i in $(seq 1 "$TABLES"); do echo "INSERT INTO k$i (at) VALUES (NOW(6));"; done
    sleep 0.01
  done | "${MY[@]}" "$DB" 2>/dev/null ) &
LOAD_PID=$!

TIMES=()
for kill in $(seq 1 "$KILLS"); do
    victim=${PIDS[0]}
    tables=$("${PG[@]}" -d "$DB" -At -c "SELECT string_agg(quote_literal(table_name), ',') FROM sluice.replication_state WHERE split_part(owner, ':', 2) = '$victim'")
    killed_at=$("${PG[@]}" -d "$DB" -At -c "SELECT clock_timestamp()")
    kill -9 "$victim"
    wait "$victim" 2>/dev/null || true
    PIDS=("${PIDS[@]:1}")
    # Every one of its tables committed by another member after the kill.
    took=
    for _ in $(seq 1 600); do
        took=$("${PG[@]}" -d "$DB" -At -c "
          SELECT CASE WHEN bool_and(split_part(owner, ':', 2) <> '$victim' AND updated_at > '$killed_at')
                      THEN round(extract(epoch FROM max(updated_at) - '$killed_at'::timestamptz)::numeric * 1000) END
          FROM sluice.replication_state WHERE table_name IN ($tables)")
        [ -n "$took" ] && break
        sleep 0.05
    done
    [ -n "$took" ] || { echo "kill $kill: not taken over within 30 s" >&2; exit 1; }
    TIMES+=("$took")
    echo "kill $kill: member $victim held $(echo "$tables" | tr -cd ',' | wc -c | awk '{print $1 + 1}') table(s); first commits by their new owners after $took ms"
    start_member
    wait_even
done
echo "$CAPTURE: takeover (kill -9 to the first commit by the new owner) over $KILLS kills, $MEMBERS members, $TABLES tables: p50 $(median "${TIMES[@]}") ms, max $(printf '%s\n' "${TIMES[@]}" | sort -n | tail -1) ms"
kill "$LOAD_PID" 2>/dev/null || true
wait "$LOAD_PID" 2>/dev/null || true
LOAD_PID=
for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
PIDS=()
"${MY[@]}" -e "DROP DATABASE IF EXISTS $DB"
"${PG[@]}" -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
