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

fresh_databases() { # fresh_databases DB: an empty database of that name on both servers
    "${MY[@]}" -e "DROP DATABASE IF EXISTS $1; CREATE DATABASE $1 CHARACTER SET utf8mb4"
    "${PG[@]}" -d postgres -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1"
}
now() { date +%s.%N; }
rate() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN { printf "%.0f", n / (b - a) }'; }  # rate N T0 T1: N per second
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; }
bench_work() { # a scratch directory in $WORK, removed (and background jobs stopped) on exit
    WORK=$(mktemp -d)
    trap 'rm -rf "$WORK"; kill $(jobs -p) 2>/dev/null || true' EXIT
}
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
probe_tables() { # probe_tables DB: a probe table on both sides; the target stamps each row as it lands
    "${MY[@]}" "$1" -e "CREATE TABLE probe (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, at DATETIME(6) NOT NULL)"
    "${PG[@]}" -d "$1" -c "
      CREATE TABLE public.probe (id integer PRIMARY KEY, at timestamp(6) NOT NULL);
      CREATE TABLE public.landed (id integer PRIMARY KEY, at timestamptz NOT NULL);
      CREATE FUNCTION public.note_landed() RETURNS trigger LANGUAGE plpgsql AS
        \$\$ BEGIN INSERT INTO public.landed VALUES (NEW.id, clock_timestamp()); RETURN NULL; END \$\$;
      CREATE TRIGGER note_landed AFTER INSERT ON public.probe FOR EACH ROW EXECUTE FUNCTION public.note_landed();"
}
