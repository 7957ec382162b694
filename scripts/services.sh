#!/usr/bin/env bash
# Ensure the MariaDB and PostgreSQL servers that sluice's tests need are
# installed, configured and running on this (Debian) machine:
#
#   MariaDB     127.0.0.1:3306, root with empty password, database `test`,
#               binary log ON, binlog_format=ROW, server_id=1, binlog_row_image=FULL,
#               binlog_row_metadata=FULL (column names in row events: binlog capture maps
#               columns by name), binary logs kept one day
#   PostgreSQL  127.0.0.1:5432, user postgres with trust auth, database `test`
#
# Idempotent: running it again when everything is already fine changes nothing
# and restarts nothing. Meant to run as root (CI, dev containers); no systemd
# is needed (servers are started with start-stop-daemon / pg_ctlcluster).
#
# Environment:
#   SERVICES_WAIT_TIMEOUT  seconds to wait for each server to come up (default 60)
set -euo pipefail

MYSQL_HOST=127.0.0.1
MYSQL_PORT=3306
PG_HOST=127.0.0.1
PG_PORT=5432
WAIT_TIMEOUT="${SERVICES_WAIT_TIMEOUT:-60}"

MARIADBD=/usr/sbin/mariadbd
MARIADB_CONF_DIR=/etc/mysql/mariadb.conf.d
MARIADB_DROPIN="$MARIADB_CONF_DIR/60-sluice.cnf"
MARIADB_RUN_DIR=/run/mysqld
MARIADB_PID_FILE="$MARIADB_RUN_DIR/mysqld.pid"

log() { printf '[services] %s\n' "$*"; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

if [ "$(id -u)" -ne 0 ]; then
    die "must run as root (it installs packages and manages the database servers)"
fi

# Never prompt (CI has no stdin); fail fast on unreachable servers.
export PGCONNECT_TIMEOUT=3
export DEBIAN_FRONTEND=noninteractive

# Clients used below. All use TCP to 127.0.0.1 except *_sock, which use the
# local unix socket as the OS root user (works with unix_socket auth).
my_tcp() { mariadb --protocol=tcp -h"$MYSQL_HOST" -P"$MYSQL_PORT" -uroot --connect-timeout=3 "$@"; }
my_sock() { mariadb --protocol=socket -uroot --connect-timeout=3 "$@"; }
pg_tcp() { psql -w -X -h "$PG_HOST" -p "$PG_PORT" -U postgres "$@"; }

# wait_until TIMEOUT DESCRIPTION CMD...: poll CMD every 0.5 s until it succeeds.
wait_until() {
    local timeout="$1" desc="$2"
    shift 2
    local deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "timed out after ${timeout}s waiting for $desc"
            return 1
        fi
        sleep 0.5
    done
}

# ---------------------------------------------------------------------------
# 1. Packages
# ---------------------------------------------------------------------------
pg_bin_present() { compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; }

missing=()
[ -x "$MARIADBD" ] || missing+=(mariadb-server)
command -v mariadb >/dev/null 2>&1 && command -v mariadb-admin >/dev/null 2>&1 || missing+=(mariadb-client)
pg_bin_present && command -v pg_ctlcluster >/dev/null 2>&1 || missing+=(postgresql)
command -v psql >/dev/null 2>&1 && command -v pg_isready >/dev/null 2>&1 || missing+=(postgresql-client)

if [ "${#missing[@]}" -gt 0 ]; then
    log "missing: ${missing[*]}; installing from Debian packages"
    apt-get update
    apt-get install -y mariadb-server mariadb-client postgresql postgresql-client
else
    log "packages: mariadb and postgresql already installed"
fi

# ---------------------------------------------------------------------------
# 2. MariaDB configuration (binary log in ROW format)
# ---------------------------------------------------------------------------
DROPIN_CONTENT='# Written by sluice scripts/services.sh: sluice reads the binary log.
[mysqld]
log_bin          = mysql-bin
binlog_format    = ROW
server_id        = 1
binlog_row_image = FULL
binlog_row_metadata = FULL
binlog_expire_logs_seconds = 86400
'
mkdir -p "$MARIADB_CONF_DIR"
if [ -f "$MARIADB_DROPIN" ] && [ "$(cat "$MARIADB_DROPIN")" = "$(printf '%s' "$DROPIN_CONTENT")" ]; then
    log "mariadb: $MARIADB_DROPIN up to date"
else
    printf '%s' "$DROPIN_CONTENT" >"$MARIADB_DROPIN"
    chmod 644 "$MARIADB_DROPIN"
    log "mariadb: wrote $MARIADB_DROPIN"
fi

# The drop-in only counts if the server's option files include its directory.
# Debian's stock /etc/mysql/my.cnf (-> mariadb.cnf) does; a hand-written
# my.cnf may not, in which case add the !includedir line to it.
dropin_effective() {
    local defaults
    defaults="$("$MARIADBD" --print-defaults 2>/dev/null || true)"
    [[ "$defaults" =~ --binlog[-_]format=ROW ]]
}
if ! dropin_effective; then
    main_cnf="$(readlink -f /etc/mysql/my.cnf 2>/dev/null || true)"
    if [ -z "$main_cnf" ] || [ ! -f "$main_cnf" ]; then
        die "mariadb: $MARIADB_DROPIN is not read and /etc/mysql/my.cnf does not exist"
    fi
    log "mariadb: $main_cnf does not include $MARIADB_CONF_DIR/; adding !includedir"
    printf '\n# Added by sluice scripts/services.sh\n!includedir %s/\n' "$MARIADB_CONF_DIR" >>"$main_cnf"
    dropin_effective || die "mariadb: $MARIADB_DROPIN still not picked up (check '$MARIADBD --print-defaults')"
fi

# ---------------------------------------------------------------------------
# 3. MariaDB: start if stopped, restart if the binlog settings are not live
# ---------------------------------------------------------------------------
mariadb_alive() { mariadb-admin --protocol=socket --connect-timeout=2 ping >/dev/null 2>&1; }

mariadb_start() {
    mkdir -p "$MARIADB_RUN_DIR"
    chown mysql:mysql "$MARIADB_RUN_DIR"
    # Matched by its pidfile as well as its executable: --exec alone matches any mariadbd
    # on the machine (a test's second server, a developer's own) and would start nothing.
    # A no-op when the server the pidfile names is running.
    start-stop-daemon --start --oknodo --background --pidfile "$MARIADB_PID_FILE" --exec "$MARIADBD"
    if ! wait_until "$WAIT_TIMEOUT" "mariadb to accept connections on its socket" mariadb_alive; then
        tail -n 20 /var/log/mysql/error.log >&2 2>/dev/null || true
        die "mariadb did not start (expected on ${MYSQL_HOST}:${MYSQL_PORT}); see /var/log/mysql/error.log"
    fi
}

MARIADB_OLD_PID=""
mariadb_gone() {
    ! mariadb_alive && { [ -z "$MARIADB_OLD_PID" ] || ! kill -0 "$MARIADB_OLD_PID" 2>/dev/null; }
}

mariadb_stop() {
    MARIADB_OLD_PID=""
    if [ -r "$MARIADB_PID_FILE" ]; then MARIADB_OLD_PID="$(cat "$MARIADB_PID_FILE")"; fi
    mariadb-admin --protocol=socket -uroot shutdown || die "mariadb: 'mariadb-admin -uroot shutdown' failed"
    wait_until "$WAIT_TIMEOUT" "mariadb (pid ${MARIADB_OLD_PID:-?}) to exit" mariadb_gone ||
        die "mariadb did not shut down within ${WAIT_TIMEOUT}s"
}

binlog_settings() { my_sock -N -B -e 'SELECT @@log_bin, @@binlog_format, @@server_id, @@binlog_row_image' | tr '\t' ' '; }
WANT_BINLOG="1 ROW 1 FULL"

if mariadb_alive; then
    log "mariadb: running"
else
    log "mariadb: not running; starting"
    mariadb_start
    log "mariadb: started"
fi

have="$(binlog_settings)" || die "mariadb: cannot query settings as root over the unix socket"
if [ "$have" = "$WANT_BINLOG" ]; then
    log "mariadb: binlog on (log_bin binlog_format server_id binlog_row_image: $have)"
else
    log "mariadb: live settings '$have' (log_bin binlog_format server_id binlog_row_image), want '$WANT_BINLOG'; restarting"
    mariadb_stop
    log "mariadb: stopped"
    mariadb_start
    have="$(binlog_settings)" || die "mariadb: cannot query settings after restart"
    [ "$have" = "$WANT_BINLOG" ] || die "mariadb: after restart settings are '$have', want '$WANT_BINLOG'"
    log "mariadb: restarted with binlog on ($have)"
fi

# The dynamic settings: a server started before the drop-in had them gets them live.
for setting in "binlog_row_metadata FULL" "binlog_expire_logs_seconds 86400"; do
    read -r name want <<<"$setting"
    have="$(my_sock -N -B -e "SELECT @@$name")"
    if [ "$have" != "$want" ]; then
        case "$want" in *[!0-9]*) value="'$want'" ;; *) value="$want" ;; esac
        my_sock -e "SET GLOBAL $name = $value"
        log "mariadb: $name was '$have'; set to $want"
    fi
done

# ---------------------------------------------------------------------------
# 4. MariaDB: root over TCP with empty password; database `test`
# ---------------------------------------------------------------------------
if ! err="$(my_tcp -e 'SELECT 1' 2>&1 >/dev/null)"; then
    case "$err" in
    # 1045 Access denied (e.g. unix_socket-only root), 1130 host not allowed
    # (no root@127.0.0.1 account while skip-name-resolve is on), 1698.
    *"Access denied"* | *"not allowed to connect"* | *1045* | *1130* | *1698*)
        log "mariadb: root@${MYSQL_HOST} cannot log in over TCP with empty password (${err//$'\n'/ }); fixing accounts"
        # Keep unix_socket for the OS root user, add an empty native password,
        # and a root@127.0.0.1 account for servers running with skip-name-resolve.
        my_sock -e "
            ALTER USER 'root'@'localhost' IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD('');
            CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
            ALTER USER 'root'@'127.0.0.1' IDENTIFIED BY '';
            GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
            FLUSH PRIVILEGES;" ||
            die "mariadb: could not change root authentication over the unix socket"
        ;;
    *)
        log "mariadb: TCP login not working yet: ${err//$'\n'/ }"
        ;;
    esac
fi
wait_until "$WAIT_TIMEOUT" "mariadb on ${MYSQL_HOST}:${MYSQL_PORT}" my_tcp -e 'SELECT 1' ||
    die "mariadb is not reachable on ${MYSQL_HOST}:${MYSQL_PORT} as root with empty password: $(my_tcp -e 'SELECT 1' 2>&1 || true)"

if [ -z "$(my_tcp -N -B -e "SHOW DATABASES LIKE 'test'")" ]; then
    my_tcp -e 'CREATE DATABASE IF NOT EXISTS test'
    log "mariadb: created database test"
fi

# ---------------------------------------------------------------------------
# 5. PostgreSQL: cluster, start, trust auth on 127.0.0.1, database `test`
# ---------------------------------------------------------------------------
# The cluster on port 5432 ("ver name"), else the first cluster, else none.
pg_cluster() {
    pg_lsclusters -h 2>/dev/null | awk -v p="$PG_PORT" '$3 == p { print $1, $2; found = 1; exit }
        NR == 1 { first = $1 " " $2 } END { if (!found && first != "") print first }'
}

cluster="$(pg_cluster)"
if [ -z "$cluster" ]; then
    ver="$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -n | tail -n 1)"
    [ -n "$ver" ] || die "postgresql: no server version under /usr/lib/postgresql"
    log "postgresql: no cluster found; creating $ver/main on port $PG_PORT"
    pg_createcluster --port="$PG_PORT" "$ver" main
    cluster="$ver main"
fi
read -r pg_ver pg_name <<<"$cluster"
pg_port_of_cluster="$(pg_lsclusters -h | awk -v v="$pg_ver" -v n="$pg_name" '$1 == v && $2 == n { print $3 }')"
[ "$pg_port_of_cluster" = "$PG_PORT" ] ||
    die "postgresql: cluster $pg_ver/$pg_name uses port $pg_port_of_cluster, expected $PG_PORT"

pg_online() {
    local status
    status="$(pg_lsclusters -h | awk -v v="$pg_ver" -v n="$pg_name" '$1 == v && $2 == n { print $4 }')"
    [[ "$status" == online* ]]
}
if pg_online; then
    log "postgresql: cluster $pg_ver/$pg_name running"
else
    log "postgresql: cluster $pg_ver/$pg_name not running; starting"
    pg_ctlcluster --skip-systemctl-redirect "$pg_ver" "$pg_name" start ||
        die "postgresql: cluster $pg_ver/$pg_name failed to start (expected on ${PG_HOST}:${PG_PORT}); see /var/log/postgresql/postgresql-${pg_ver}-${pg_name}.log"
    log "postgresql: started"
fi
wait_until "$WAIT_TIMEOUT" "postgresql on ${PG_HOST}:${PG_PORT}" pg_isready -q -h "$PG_HOST" -p "$PG_PORT" ||
    die "postgresql is not accepting connections on ${PG_HOST}:${PG_PORT}; see /var/log/postgresql/postgresql-${pg_ver}-${pg_name}.log"

if ! err="$(pg_tcp -d postgres -Atc 'SELECT 1' 2>&1 >/dev/null)"; then
    case "$err" in
    *"authentication failed"* | *"no pg_hba.conf entry"* | *"password"*)
        hba="/etc/postgresql/$pg_ver/$pg_name/pg_hba.conf"
        [ -f "$hba" ] || die "postgresql: auth failed and $hba not found: $err"
        log "postgresql: postgres@${PG_HOST} needs trust auth; adding it at the top of $hba"
        tmp="$(mktemp)"
        {
            echo '# Added by sluice scripts/services.sh: trust local TCP for tests'
            echo 'host    all    all    127.0.0.1/32    trust'
            echo 'host    all    all    ::1/128         trust'
            cat "$hba"
        } >"$tmp"
        cat "$tmp" >"$hba" # keep owner and mode of the original file
        rm -f "$tmp"
        pg_ctlcluster --skip-systemctl-redirect "$pg_ver" "$pg_name" reload
        ;;
    *)
        log "postgresql: TCP login not working yet: ${err//$'\n'/ }"
        ;;
    esac
fi
wait_until "$WAIT_TIMEOUT" "postgresql login on ${PG_HOST}:${PG_PORT}" pg_tcp -d postgres -Atc 'SELECT 1' ||
    die "postgresql is not reachable on ${PG_HOST}:${PG_PORT} as postgres without password: $(pg_tcp -d postgres -Atc 'SELECT 1' 2>&1 || true)"

if [ "$(pg_tcp -d postgres -Atc "SELECT 1 FROM pg_database WHERE datname = 'test'")" != 1 ]; then
    pg_tcp -d postgres -qc 'CREATE DATABASE test'
    log "postgresql: created database test"
fi

# ---------------------------------------------------------------------------
# 6. Final check: exactly what the tests use
# ---------------------------------------------------------------------------
wait_until "$WAIT_TIMEOUT" "mariadb on ${MYSQL_HOST}:${MYSQL_PORT}" mariadb -h"$MYSQL_HOST" -P"$MYSQL_PORT" -uroot -e 'select 1' ||
    die "mariadb did not come up on ${MYSQL_HOST}:${MYSQL_PORT} within ${WAIT_TIMEOUT}s"
wait_until "$WAIT_TIMEOUT" "postgresql on ${PG_HOST}:${PG_PORT}" psql -w -h "$PG_HOST" -p "$PG_PORT" -U postgres -d test -c 'select 1' ||
    die "postgresql did not come up on ${PG_HOST}:${PG_PORT} within ${WAIT_TIMEOUT}s"
log "ready: mariadb ${MYSQL_HOST}:${MYSQL_PORT} (binlog ROW), postgresql ${PG_HOST}:${PG_PORT}"
