#!/usr/bin/env bash
# Benchmarks wharf against nginx and the CNCF distribution registry on loopback (issue 5):
# installs the tools that are missing (Debian packages only), builds wharf and the driver in release,
# runs every case against all three servers and prints one table. Figures: tests/bench/out/.
# As root the run moves to a network namespace of its own and repeats the mirror cases with the
# upstream paced at 1 and 10 Gbit/s (tc, from iproute2); without root those are skipped.
#   tests/bench/run.sh            full run (1 GiB blobs, about 15 minutes on 2 cores)
#   tests/bench/run.sh --quick    smoke run (128 MiB blobs, fewer repetitions, under 2 minutes)
# Other arguments go to the driver (wharf-bench --help), e.g. --only 3, --keep, --baseline PATH or
# --backends (cases 1, 3 and 4 also on S3 + Postgres).
set -euo pipefail
cd "$(dirname "$0")/../.."

# nginx-light: the smallest Debian nginx (sendfile is in every build). HEAD load comes from the driver
# itself (wrk 4.1 stalls on HEAD), so apache2-utils is not needed. curl: the TLS client of case 11.
tests/setup.sh nginx-light docker-registry wrk iproute2 curl
# --backends runs wharf on a throw-away Postgres cluster and a Garage node (issue 26). Garage is not
# packaged: tests/setup.sh without arguments builds it once (about 12 minutes).
for arg in "$@"; do
    if [ "$arg" = --backends ]; then
        tests/setup.sh postgresql
        garage="${WHARF_GARAGE:-${WHARF_TOOLS_DIR:-$HOME/.cache/wharf-tools}/garage/bin/garage}"
        if [ ! -x "$garage" ]; then
            echo "run.sh: --backends needs Garage at $garage: run tests/setup.sh (no arguments) once" >&2
            exit 1
        fi
    fi
done
# Case 7 loads the first-party Rust plugin and the Python and JS example policies.
plugins/build.sh

cargo build --release -q -p wharf -p wharf-bench
exec target/release/wharf-bench "$@"
