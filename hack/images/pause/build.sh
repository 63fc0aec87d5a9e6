#!/usr/bin/env bash
# Build the pod sandbox image: one static binary at /pause, imported with `docker import`.
#   build.sh IMAGE_TAG
set -euo pipefail
tag=$1 source=${2:-unknown}
docker=${DOCKER:-docker}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/root"
gcc -Os -static -s -o "$work/root/pause" "$here/pause.c"
"$work/root/pause" -v >/dev/null
tar --numeric-owner --owner=0 --group=0 -C "$work/root" -cf "$work/pause.tar" pause
"$docker" import --change 'ENTRYPOINT ["/pause"]' --change "USER 65535:65535" --change "LABEL mlmodel.source=$source" "$work/pause.tar" "$tag" >/dev/null
echo "[pause-image] built $tag"
