#!/usr/bin/env bash
# Builds every WebAssembly plugin from source: the Rust plugins and test-only components in plugins/,
# and the Python and JavaScript examples in examples/plugins/. Installs what is missing first (the
# wasm32-wasip2 Rust target, componentize-py in plugins/.tools/venv, componentize-js in the JS example's
# node_modules). Ends by listing every component with its size.
#
# Idempotent and quick once built: cargo rebuilds only what changed, and the Python and JS examples are
# rebuilt only when a source (or the WIT, or the tool's version) is newer than their policy.wasm.
# Exits non-zero, naming the step, when anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
wit=$root/wit/policy.wit
tools=$root/plugins/.tools

# Pinned tool versions: components built by other versions may not load in wharf's wasmtime.
componentize_py=0.25.1

say() { echo "plugins/build.sh: $*" >&2; }
fail() {
    say "FAILED: $*"
    exit 1
}
# True when $1 exists and is newer than every other argument.
fresh() {
    local out=$1 src
    shift
    [ -e "$out" ] || return 1
    for src in "$@"; do
        [ "$out" -nt "$src" ] || return 1
    done
}
need() {
    command -v "$1" >/dev/null || fail "$1 is not installed; $2"
}

need cargo "install Rust (rustup) first"
need python3 "install Python 3.10+ (Debian: python3 python3-venv)"
need node "install Node.js 18+ (Debian: nodejs npm)"
need npm "install npm (Debian: npm)"

# --- Rust: plugins/ (its own workspace) -------------------------------------------------------------
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    say "adding the Rust target wasm32-wasip2"
    rustup target add wasm32-wasip2 >&2 || fail "rustup target add wasm32-wasip2"
fi
(cd plugins && cargo build --release --target wasm32-wasip2 --quiet) ||
    fail "cargo build --release --target wasm32-wasip2 in plugins/ (see the errors above)"

# --- Python example: componentize-py in a private venv ----------------------------------------------
venv=$tools/venv
if [ "$("$venv/bin/componentize-py" --version 2>/dev/null)" != "componentize-py $componentize_py" ]; then
    say "installing componentize-py $componentize_py into plugins/.tools/venv"
    python3 -m venv "$venv" || fail "python3 -m venv $venv (Debian: apt-get install python3-venv)"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$componentize_py" >&2 ||
        fail "pip install componentize-py==$componentize_py"
fi
py=examples/plugins/python
if ! fresh "$py/policy.wasm" "$py/app.py" "$wit" "$venv/bin/componentize-py" "$0"; then
    say "building $py/policy.wasm (componentize-py, about a minute)"
    (cd "$py" && "$venv/bin/componentize-py" -d ../../../wit -w access-policy componentize -p . app \
        -o policy.wasm.tmp >/dev/null && mv policy.wasm.tmp policy.wasm) ||
        fail "componentize-py for $py (see the errors above)"
fi

# --- JavaScript example: componentize-js from npm -----------------------------------------------------
js=examples/plugins/js
if ! fresh "$js/node_modules/.package-lock.json" "$js/package-lock.json" "$js/package.json"; then
    say "installing $js/node_modules (npm ci)"
    (cd "$js" && npm ci --no-audit --no-fund --loglevel=error >&2) || fail "npm ci in $js"
    touch "$js/node_modules/.package-lock.json"
fi
if ! fresh "$js/policy.wasm" "$js/policy.js" "$js/build.mjs" "$wit" "$js/node_modules/.package-lock.json" "$0"; then
    say "building $js/policy.wasm (componentize-js, about two minutes)"
    (cd "$js" && node build.mjs policy.wasm.tmp >/dev/null && mv policy.wasm.tmp policy.wasm) ||
        fail "node build.mjs in $js (see the errors above)"
fi

# --- Where everything is ------------------------------------------------------------------------------
say "components:"
for f in plugins/target/wasm32-wasip2/release/*.wasm "$py/policy.wasm" "$js/policy.wasm"; do
    printf '  %-60s %10s bytes\n' "$f" "$(stat -c %s "$f")" >&2
done
