#!/usr/bin/env bash
# Installs the real peers the end-to-end tests drive (Debian packages), only those that are missing.
# Idempotent and silent when everything is already there.
set -euo pipefail

packages=(docker-registry skopeo containerd docker.io jq)

# containerd unpacks layers through mounts, so the containerd tests (mirror::containerd) need root; the
# Docker daemon test (mirror::docker_daemon) runs dockerd in a private network namespace, which needs root.
if [ "$(id -u)" -ne 0 ]; then
    echo "tests/setup.sh: note: the containerd and Docker daemon end-to-end tests need root and fail without it" >&2
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
echo "tests/setup.sh: installing ${missing[*]}" >&2
# Wait for a concurrent apt/dpkg (e.g. unattended upgrades) instead of failing on its lock.
apt_opts=(-q -o DPkg::Lock::Timeout=600)
"${sudo[@]}" apt-get "${apt_opts[@]}" update >/dev/null
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y "${missing[@]}" >/dev/null
