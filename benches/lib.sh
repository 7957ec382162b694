# Sourced by the benchmark scripts: the database clients, the local servers, a release build.
#   bench_setup DB   makes sure both servers run (scripts/services.sh), builds sluice (unless
#                    SLUICE_BIN names another build) into $BIN, and points sluice at DB on both
MY=(mariadb -h127.0.0.1 -uroot)
PG=(psql -h127.0.0.1 -Upostgres -v ON_ERROR_STOP=1 -q)
export PGOPTIONS='-c client_min_messages=warning'

bench_setup() {
    bash scripts/services.sh >/dev/null
    command -v /usr/bin/time >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y time >/dev/null
    if [ -z "${SLUICE_BIN:-}" ]; then
        cargo build --release --locked --bin sluice 2>&1 | tail -1
    fi
    BIN=${SLUICE_BIN:-target/release/sluice}
    export SLUICE_SOURCE_URL="mysql://root@127.0.0.1:3306/$1"
    export SLUICE_TARGET_URL="postgres://postgres@127.0.0.1:5432/$1"
}

now() { date +%s.%N; }
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
