#!/usr/bin/env bash
# Builds wharf and runs every test of the workspace, end-to-end tests included.
# Extra arguments go to `cargo test`, e.g. `tests/run.sh -- crash`.
# The last line sums up the whole run: `wharf tests: N passed, M failed` (N and M over every test
# binary: cargo's own last line is the doc-tests' `0 passed`, which reads as if nothing ran). The exit
# status is non-zero when a test failed or anything did not build.
set -euo pipefail
cd "$(dirname "$0")/.."

tests/setup.sh
plugins/build.sh
# The e2e tests run the binary (target/debug/wharf), which `cargo test` alone does not build.
if ! cargo build -p wharf; then
    echo "wharf tests: 0 passed, 0 failed; cargo build -p wharf failed (see above), no test ran"
    exit 1
fi
# The deploy test's image is FROM scratch around a static wharf: this build relinked with glibc linked
# in (only wharf's own crate is compiled again, in seconds; a static release build would compile
# wasmtime a second time). cargo keeps that binary apart from the usual one, which the last command
# puts back at target/debug/wharf without compiling anything.
if ! { cargo rustc -p wharf --bin wharf -- -C target-feature=+crt-static &&
    mkdir -p target/deploy-static &&
    strip -o target/deploy-static/wharf target/debug/wharf &&
    cargo build -p wharf; }; then
    echo "wharf tests: 0 passed, 0 failed; the static relink of wharf failed (see above), no test ran"
    exit 1
fi
# cargo's output streams as usual; its stdout (where each binary's `test result:` line goes) is also
# kept for the summary.
log=$(mktemp "${TMPDIR:-/tmp}/wharf-tests.XXXXXX")
trap 'rm -f "$log"' EXIT
# --no-fail-fast: a failing unit test must not hide the end-to-end results (the exit code still fails).
status=0
cargo test --workspace --no-fail-fast "$@" | tee "$log" || status=${PIPESTATUS[0]}
# The end-to-end suite again, every wharf on its own Postgres and Garage instead of files + redb (the
# shared backends, README). Left out, each for a reason: the shared backends' own tests (they ran above,
# on those backends already) and the tests of what only the embedded backends have (listed in
# FS_ONLY below, with why).
FS_ONLY=(
    # they start the shared backends themselves
    shared_backends::
    replicas::
    push::replicas::
    storage_copy::
    # rot or remove files under blobs/ and check meta.redb's pages: on S3 the bucket's copy is the one
    # scrubbed (wharf-storage's store::s3 and scrub tests do that against Garage)
    fsck::
    # the modes of an old data directory's meta.redb and blob files
    exposure::an_old_data_dir_is_made_private_at_start
    # a damaged meta.redb, and one another user owns: Postgres has its own logins and permissions
    plain_words::a_truncated_metadata_file_is_called_damaged_and_names_fsck
    plain_words::gc_as_another_user_is_told_it_is_a_permission_problem
    # counts every descriptor wharf holds: on these backends it also keeps pooled connections to
    # Garage and Postgres open, by design
    hardening::stalls::clients_that_stop_reading_are_dropped_and_their_descriptors_freed
)
if [ "$#" -eq 0 ]; then
    shared_args=(--)
    for t in "${FS_ONLY[@]}"; do shared_args+=(--skip "$t"); done
else
    shared_args=("$@")
fi
echo "tests/run.sh: the end-to-end suite on the shared backends (Garage + Postgres)" >&2
WHARF_E2E_BACKENDS=shared cargo test -p wharf-e2e --test e2e --no-fail-fast "${shared_args[@]}" |
    tee -a "$log" || status=${PIPESTATUS[0]}
# The first-party plugins' own unit tests (config parsing, globs, rewrites), on the host target: their
# workspace is separate from wharf's (it builds for wasm32-wasip2).
if [ "$#" -eq 0 ] && [ -f plugins/Cargo.toml ]; then
    (cd plugins && cargo test --no-fail-fast) | tee -a "$log" || status=${PIPESTATUS[0]}
fi
awk -v cargo_status="$status" -f tests/summary.awk "$log"
