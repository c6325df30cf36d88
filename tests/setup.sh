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
fi

# containerd unpacks layers through mounts, so the containerd tests (mirror::containerd) need root; the
# Docker daemon test (mirror::docker_daemon) runs dockerd in a private network namespace, which needs root.
if [ "$#" -eq 0 ] && [ "$(id -u)" -ne 0 ]; then
    echo "tests/setup.sh: note: the containerd and Docker daemon end-to-end tests need root and fail without it" >&2
fi

# Garage (S3-compatible object storage) for the S3 content store's tests (wharf-test-servers'
# `Garage`): Debian does not package it, so it is built once from crates.io into the tools
# directory (~12 min on 2 cores), unless WHARF_GARAGE names a binary already.
if [ "$#" -eq 0 ] && [ -z "${WHARF_GARAGE:-}" ]; then
    garage_root="${WHARF_TOOLS_DIR:-$HOME/.cache/wharf-tools}/garage"
    if [ ! -x "$garage_root/bin/garage" ]; then
        echo "tests/setup.sh: building garage 2.x into $garage_root (once, ~12 min)" >&2
        cargo install --locked --quiet garage --version '^2' --root "$garage_root"
    fi
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
