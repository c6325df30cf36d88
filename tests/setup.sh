#!/usr/bin/env bash
# Installs the real peers the end-to-end tests drive (Debian packages), only those that are missing.
# Idempotent and silent when everything is already there. With arguments, installs those packages
# instead (tests/bench/run.sh uses it for its own tools).
set -euo pipefail

if [ "$#" -gt 0 ]; then
    packages=("$@")
else
    # chromium: the status page test (status_page) loads /ui headless and takes a screenshot.
    packages=(docker-registry skopeo containerd docker.io jq chromium)
    # The deployment image test (deploy_image): builds examples/deploy/Containerfile and runs it.
    packages+=(buildah podman runc file)
    # htpasswd (apache2-utils): the auth test reads a user file written by the tool operators use.
    packages+=(apache2-utils)
    # The shared backends' metadata database (tests start throw-away clusters of it, never the
    # package's own service).
    packages+=(postgresql)
    # The load balancer the replica tests put in front of three wharfs (round-robin, no stickiness).
    packages+=(nginx-light)
    # ss: the test servers check that the ports they listen on are their own.
    packages+=(iproute2)
fi

# Garage, the S3-compatible store the shared-backend tests run wharf on: not packaged by Debian, so
# built from crates.io once (about 12 minutes on 2 cores) into a cache outside the checkout, and
# reused while its version is the one pinned here.
install_garage() {
    local version=2.5.0
    local root="${WHARF_TOOLS_DIR:-$HOME/.cache/wharf-tools}/garage"
    if "$root/bin/garage" --version 2>/dev/null | grep -q "[:v]$version "; then
        return 0
    fi
    echo "tests/setup.sh: building garage $version (once; about 12 minutes on 2 cores)" >&2
    # Only what the tests use: the sqlite metadata engine (bundled, no system library), no lmdb, no
    # K2V API, no metrics exporters (OpenTelemetry, Prometheus): 265 crates to build instead of 286.
    cargo install --quiet --locked garage --version "$version" --root "$root" \
        --no-default-features --features bundled-libs,sqlite
}

# containerd unpacks layers through mounts, so the containerd tests (mirror::containerd) need root; the
# Docker daemon test (mirror::docker_daemon) runs dockerd in a private network namespace, which needs root.
if [ "$#" -eq 0 ] && [ "$(id -u)" -ne 0 ]; then
    echo "tests/setup.sh: note: the containerd and Docker daemon end-to-end tests need root and fail without it" >&2
fi

# WHARF_GARAGE may name a garage binary already there (wharf-test-servers uses it then).
if [ "$#" -eq 0 ] && [ -z "${WHARF_GARAGE:-}" ]; then
    install_garage
fi

missing=()
for pkg in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$pkg")
    fi
done
if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    sudo=(sudo)
fi
# Packages may start their own services (nginx on :80, the registry on :5000); tests and benchmarks
# do not use them: they run their own instances on free loopback ports.
echo "tests/setup.sh: installing ${missing[*]}" >&2
# Wait for a concurrent apt/dpkg (e.g. unattended upgrades) instead of failing on its lock.
apt_opts=(-q -o DPkg::Lock::Timeout=600)
"${sudo[@]}" apt-get "${apt_opts[@]}" update >/dev/null
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y "${missing[@]}" >/dev/null
