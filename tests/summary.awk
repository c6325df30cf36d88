# Sums cargo test's `test result:` lines (one per test binary, doc-tests included) into the one line
# tests/run.sh ends with:
#     wharf tests: N passed, M failed
# and exits non-zero when a test failed or cargo itself failed (cargo_status, e.g. a crate that did
# not compile or a test binary that crashed: then some binaries have no `test result:` line at all).
/^test result: / {
    for (i = 2; i <= NF; i++) {
        if ($i ~ /^passed;?$/) passed += $(i - 1)
        if ($i ~ /^failed;?$/) failed += $(i - 1)
    }
}
END {
    line = sprintf("wharf tests: %d passed, %d failed", passed, failed)
    if (cargo_status != 0 && failed == 0)
        line = line sprintf("; cargo test exited with status %d before every test ran (a build error or a crashed test binary: see above)", cargo_status)
    print line
    exit (failed > 0 || cargo_status != 0) ? 1 : 0
}
