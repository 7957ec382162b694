#!/usr/bin/env bash
# The validators the tests call instead of hand checks, installed if missing:
# - promtool (Debian's `prometheus` package): the alert rules, their unit tests, the
#   Prometheus config, and /metrics as scraped;
# - kubernetes-validate (PyPI, in a virtualenv of its own): the Kubernetes manifests against
#   the real API schemas, strictly (an unknown field fails);
# - mdbook (crates.io, `cargo install`): builds the book in docs/ (scripts/test.sh runs
#   `mdbook build docs`).
# - Chromium (Debian's chromium and chromium-driver), Node.js, and tests/browser's npm
#   packages (playwright-core, axe-core; no browser download): tests/page.rs drives the
#   status page in the browser with them.
# Source it (`. scripts/tools.sh`) to get them on PATH; scripts/test.sh does.
set -euo pipefail

tools_dir="${SLUICE_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice-tools}"
kv_version=1.37.0
mdbook_version=0.5.4

if ! command -v promtool >/dev/null 2>&1; then
    echo "[tools] installing promtool (Debian package prometheus)"
    sudo_=""
    [ "$(id -u)" -eq 0 ] || sudo_="sudo"
    $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus ||
        { $sudo_ apt-get update && $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus; }
fi

if [ ! -x "$tools_dir/venv/bin/kubernetes-validate" ] ||
    [ "$("$tools_dir/venv/bin/kubernetes-validate" --version 2>/dev/null)" != "$kv_version" ]; then
    echo "[tools] installing kubernetes-validate $kv_version into $tools_dir/venv"
    if ! python3 -m venv "$tools_dir/venv" 2>/dev/null; then
        sudo_=""
        [ "$(id -u)" -eq 0 ] || sudo_="sudo"
        $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv
        python3 -m venv "$tools_dir/venv"
    fi
    "$tools_dir/venv/bin/pip" install --quiet "kubernetes-validate==$kv_version"
fi

export PATH="$tools_dir/venv/bin:${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
if ! command -v mdbook >/dev/null 2>&1 || [ "$(mdbook --version 2>/dev/null)" != "mdbook v$mdbook_version" ]; then
    echo "[tools] installing mdbook $mdbook_version (cargo install)"
    cargo install mdbook --locked --version "$mdbook_version"
fi

apt_install() {
    sudo_=""
    [ "$(id -u)" -eq 0 ] || sudo_="sudo"
    $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" ||
        { $sudo_ apt-get update && $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"; }
}
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    echo "[tools] installing Chromium (Debian packages chromium, chromium-driver)"
    apt_install chromium chromium-driver
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "[tools] installing Node.js (Debian packages nodejs, npm)"
    apt_install nodejs npm
fi
browser_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/browser"
# Installed again when package-lock.json changed since the last install.
lock_sum="$(sha256sum "$browser_dir/package-lock.json" | cut -d' ' -f1)"
if [ "$(cat "$browser_dir/node_modules/.sluice-lock-sum" 2>/dev/null)" != "$lock_sum" ]; then
    echo "[tools] installing tests/browser's npm packages (npm ci)"
    (cd "$browser_dir" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$lock_sum" > "$browser_dir/node_modules/.sluice-lock-sum"
fi

echo "[tools] promtool $(promtool --version 2>&1 | head -1 | awk '{print $3}'), kubernetes-validate $(kubernetes-validate --version), $(mdbook --version), $(/usr/bin/chromium --version 2>/dev/null | head -1), node $(node --version)"
