#!/usr/bin/env bash
# Builds wharf and runs every test of the workspace, end-to-end tests included.
# Extra arguments go to `cargo test`, e.g. `tests/run.sh -- crash`.
set -euo pipefail
cd "$(dirname "$0")/.."

tests/setup.sh
# The e2e tests run the binary (target/debug/wharf), which `cargo test` alone does not build.
cargo build -p wharf
# --no-fail-fast: a failing unit test must not hide the end-to-end results (the exit code still fails).
cargo test --workspace --no-fail-fast "$@"
