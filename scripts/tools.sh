#!/usr/bin/env bash
# The validators the tests call instead of hand checks, installed if missing:
# - promtool (Debian's `prometheus` package): the alert rules, their unit tests, the
#   Prometheus config, and /metrics as scraped;
# - kubernetes-validate (PyPI, in a virtualenv of its own): the Kubernetes manifests against
#   the real API schemas, strictly (an unknown field fails);
# - mdbook (crates.io, `cargo install`): builds the book in docs/ (scripts/test.sh runs
#   `mdbook build docs`).
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

echo "[tools] promtool $(promtool --version 2>&1 | head -1 | awk '{print $3}'), kubernetes-validate $(kubernetes-validate --version), $(mdbook --version)"
