#!/usr/bin/env bash
# The one test command, used by README and CI alike:
#   scripts/test.sh [extra cargo test args...]
# e.g. scripts/test.sh -- --nocapture
#
# Makes sure MariaDB (binlog ROW) and PostgreSQL are up (scripts/services.sh),
# then runs the whole workspace's tests against them. Tests create their own
# databases on the servers named by SLUICE_TEST_MYSQL_URL / SLUICE_TEST_PG_URL.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

export RUST_BACKTRACE=1
export SLUICE_TEST_MYSQL_URL="${SLUICE_TEST_MYSQL_URL:-mysql://root@127.0.0.1:3306}"
export SLUICE_TEST_PG_URL="${SLUICE_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432}"

if command -v docker-compose >/dev/null 2>&1; then
    echo "[test] checking docker-compose.yml"
    docker-compose -f docker-compose.yml config -q
    docker-compose -f docker-compose.yml -f deploy/mysql8.compose.yml config -q
else
    echo "[test] docker-compose not installed; skipping docker-compose.yml check"
fi

bash scripts/services.sh
# The validators tests/deploy.rs and tests/ops.rs call (promtool, kubernetes-validate), and mdbook.
. scripts/tools.sh

# The book (docs/): a page that does not build fails the run; the HTML goes to docs/book/ (ignored).
echo "[test] mdbook build docs"
mdbook build docs

echo "[test] SLUICE_TEST_MYSQL_URL=$SLUICE_TEST_MYSQL_URL SLUICE_TEST_PG_URL=$SLUICE_TEST_PG_URL"
echo "[test] cargo test --workspace --locked $*"
exec cargo test --workspace --locked "$@"
