#!/usr/bin/env bash
# A CI job using wharf on localhost as its registry: push what the job built, pull it back by digest.
# With the [[push]] route of wharf.toml here, wharf also delivers the push to the real registry
# (README.md); skopeo reports failure if that registry refused it (write-through).
set -euo pipefail
WHARF=${WHARF:-127.0.0.1:5000}
image=${1:?usage: push-and-pull.sh oci-archive-or-dir [name:tag]}
ref=${2:-ci/app:${CI_COMMIT_SHA:-dev}}

skopeo copy --all --preserve-digests --dest-tls-verify=false "oci:$image" "docker://$WHARF/$ref"
digest=$(skopeo inspect --tls-verify=false --raw "docker://$WHARF/$ref" | sha256sum | cut -d' ' -f1)
echo "pushed $WHARF/$ref@sha256:$digest"
skopeo copy --all --src-tls-verify=false "docker://$WHARF/${ref%%:*}@sha256:$digest" "oci:/tmp/roundtrip:latest"
