#!/usr/bin/env bash
# Wide rows: `sluice run --once` against the raw pipe on a table of large BLOBs (by default
# 2,000 rows of 512 KiB: 1 GiB), A/B/A/B in one run, each into a fresh, empty keyed target.
# Prints rows/s and MiB/s of each run, the ratio, and sluice's peak RSS (the memory bound:
# pages, batches and channels are sized in bytes, see docs/src/internals/how-it-works.md, "Memory is bounded in bytes, not rows").
#
# The raw pipe is `mariadb --quick … | psql -c '\copy … from stdin'`: the BLOB travels as
# hex (`CONCAT('\\x', HEX(data))`, bytea's text input), since COPY text cannot carry raw
# bytes; sluice reads the bytes and sends them with COPY binary.
#
#   benches/wide.sh [ROWS] [ROW_KIB] [ROUNDS]      (defaults: 2000 rows, 512 KiB, 2 rounds)
#   SLUICE_BIN=/path/to/sluice benches/wide.sh     (another build, e.g. an older one)
#   SEED_KEEP=0 benches/wide.sh                    (seed afresh, and drop the source after; by
#                                                   default the 1 GiB seed is kept for the next run)
#
# Needs the local servers (scripts/services.sh) and builds sluice in release mode.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ROWS=${1:-2000}
ROW_KIB=${2:-512}
ROUNDS=${3:-2}
DB=sluice_wide
source benches/lib.sh
bench_setup "$DB"
export SLUICE_HTTP_ADDR=127.0.0.1:0
CFG=$(mktemp --suffix .toml); RSS=$(mktemp); LOG=$(mktemp)
trap 'rm -f "$CFG" "$RSS" "$LOG"' EXIT
printf '[[tables]]\nname = "blobs"\ncursor = "id"\n' >"$CFG"

MIB=$(( ROWS * ROW_KIB / 1024 ))
# The seed is kept between runs of the same size (SEED_KEEP=0 to seed again).
SEEDED=$("${MY[@]}" -N -e "SELECT COUNT(*) FROM $DB.blobs WHERE LENGTH(data) = $ROW_KIB * 1024" 2>/dev/null || echo 0)
if [ "${SEED_KEEP:-1}" = 1 ] && [ "$SEEDED" = "$ROWS" ]; then
    echo "reusing the $ROWS rows of $ROW_KIB KiB ($MIB MiB) in MariaDB database $DB"
else
    echo "seeding $ROWS rows of $ROW_KIB KiB ($MIB MiB) into MariaDB database $DB"
    "${MY[@]}" -e "DROP DATABASE IF EXISTS $DB; CREATE DATABASE $DB"
    "${MY[@]}" "$DB" -e "CREATE TABLE blobs (id INT NOT NULL PRIMARY KEY, at DATETIME(6) NOT NULL, data LONGBLOB NOT NULL)"
    # Random kilobytes (repeated within a row), inserted 100 rows at a time.
    for start in $(seq 1 100 "$ROWS"); do
        end=$(( start + 99 < ROWS ? start + 99 : ROWS ))
        "${MY[@]}" "$DB" -e "INSERT INTO blobs SELECT seq, TIMESTAMP('2026-01-01') + INTERVAL seq SECOND,
            REPEAT(RANDOM_BYTES(1024), $ROW_KIB) FROM seq_${start}_to_${end}"
    done
fi
"${PG[@]}" -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"

fresh_target() {
    "${PG[@]}" -d "$DB" -c "DROP TABLE IF EXISTS public.blobs; DROP SCHEMA IF EXISTS sluice CASCADE;
      CREATE TABLE public.blobs (id integer PRIMARY KEY, at timestamp(6), data bytea NOT NULL)" -c "CHECKPOINT"
}

rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", n / s }'; }
check() {
    local got
    got=$("${PG[@]}" -d "$DB" -At -c "SELECT count(*) FROM public.blobs WHERE length(data) = $ROW_KIB * 1024")
    [ "$got" = "$ROWS" ] || { echo "$1 copied $got of $ROWS rows" >&2; exit 1; }
}

run_sluice() {
    fresh_target
    local t0 t1
    t0=$(now)
    if ! /usr/bin/time -f '%M' -o "$RSS" env RUST_LOG=warn "$BIN" --config "$CFG" run --once >/dev/null 2>"$LOG"; then
        echo "sluice failed:" >&2; cat "$LOG" >&2; exit 1
    fi
    t1=$(now)
    check sluice
    SLUICE_SECS+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')")
    SLUICE_RSS+=("$(tail -1 "$RSS")")
}

run_pipe() {
    fresh_target
    local t0 t1
    t0=$(now)
    "${MY[@]}" --quick -N --batch --max-allowed-packet=1G "$DB" -e \
        "SELECT id, DATE_FORMAT(at, '%Y-%m-%d %H:%i:%s.%f'), CONCAT('\\\\x', HEX(data)) FROM blobs" |
        "${PG[@]}" -d "$DB" -c '\copy public.blobs (id, at, data) from stdin'
    t1=$(now)
    check "raw pipe"
    PIPE_SECS+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')")
}

SLUICE_SECS=(); SLUICE_RSS=(); PIPE_SECS=()
for round in $(seq 1 "$ROUNDS"); do
    run_sluice; echo "round $round  sluice run --once  $(rate "$ROWS" "${SLUICE_SECS[-1]}") rows/s, $(rate "$MIB" "${SLUICE_SECS[-1]}") MiB/s, peak RSS $((SLUICE_RSS[-1] / 1024)) MiB"
    run_pipe;   echo "round $round  raw pipe           $(rate "$ROWS" "${PIPE_SECS[-1]}") rows/s, $(rate "$MIB" "${PIPE_SECS[-1]}") MiB/s"
done

S=$(median "${SLUICE_SECS[@]}"); P=$(median "${PIPE_SECS[@]}")
echo
echo "rows: $ROWS of $ROW_KIB KiB ($MIB MiB), rounds: $ROUNDS (medians)"
echo "sluice run --once : $(rate "$ROWS" "$S") rows/s, $(rate "$MIB" "$S") MiB/s, peak RSS $(( $(printf '%s\n' "${SLUICE_RSS[@]}" | sort -n | tail -1) / 1024 )) MiB"
echo "raw pipe          : $(rate "$ROWS" "$P") rows/s, $(rate "$MIB" "$P") MiB/s"
awk -v s="$S" -v p="$P" 'BEGIN { printf "ratio sluice / raw pipe : %.2fx\n", p / s }'
[ "${SEED_KEEP:-1}" = 1 ] || "${MY[@]}" -e "DROP DATABASE IF EXISTS $DB"
"${PG[@]}" -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
