#!/usr/bin/env bash
# Benchmarks wharf against nginx and the CNCF distribution registry on loopback (issue 5):
# installs the tools that are missing (Debian packages only), builds wharf and the driver in release,
# runs every case against all three servers and prints one table. Figures: tests/bench/out/.
#   tests/bench/run.sh            full run (1 GiB blobs, under 15 minutes on 2 cores)
#   tests/bench/run.sh --quick    smoke run (128 MiB blobs, fewer repetitions, under 2 minutes)
# Other arguments go to the driver (wharf-bench --help), e.g. --only 3 or --keep.
set -euo pipefail
cd "$(dirname "$0")/../.."

# nginx-light: the smallest Debian nginx (sendfile is in every build). HEAD load comes from the driver
# itself (wrk 4.1 stalls on HEAD), so apache2-utils is not needed.
packages=(nginx-light docker-registry wrk)
missing=()
for pkg in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$pkg")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        sudo=(sudo)
    fi
    echo "tests/bench/run.sh: installing ${missing[*]}" >&2
    apt_opts=(-q -o DPkg::Lock::Timeout=600)
    "${sudo[@]}" apt-get "${apt_opts[@]}" update >/dev/null
    # The packages may start their own services (nginx on :80, the registry on :5000); the bench does
    # not use them: it runs its own instances on free loopback ports.
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y "${missing[@]}" >/dev/null
fi

cargo build --release -q -p wharf -p wharf-bench
exec target/release/wharf-bench "$@"
