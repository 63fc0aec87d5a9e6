#!/usr/bin/env bash
# Build the local base image (Debian bookworm minbase + python3, python3-venv, ca-certificates)
# with debootstrap and `docker import` it. The rootfs tarball is cached so a rebuild of the
# image (e.g. after `docker system prune`) takes seconds.
#
#   build.sh IMAGE_TAG CACHE_DIR [EXTRA_PACKAGES]
set -euo pipefail

tag=$1 cache=$2 extra=${3:-}
docker=${DOCKER:-docker}
mirror=${MLMODEL_DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=bookworm
pkgs="python3,python3-venv,ca-certificates${extra:+,$extra}"
key=$(echo "$suite $pkgs $mirror v1" | sha256sum | cut -c1-12)
tarball="$cache/rootfs-$suite-$key.tar"

if [ ! -s "$tarball" ]; then
    command -v debootstrap >/dev/null || { echo "debootstrap is missing (apt-get install debootstrap)" >&2; exit 1; }
    root=$(mktemp -d "$cache/rootfs.XXXXXX")
    trap 'rm -rf "$root"' EXIT
    echo "[base-image] debootstrap $suite ($pkgs) into $root"
    debootstrap --variant=minbase --include="$pkgs" "$suite" "$root" "$mirror"
    cat >"$root/etc/apt/sources.list" <<SRC
deb $mirror $suite main
deb $mirror $suite-updates main
deb http://deb.debian.org/debian-security $suite-security main
SRC
    # Keep the image small and reproducible-ish: no apt lists, caches or logs.
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
        "$root"/var/log/* "$root"/tmp/* "$root"/root/.cache
    : >"$root/etc/machine-id"
    tar --numeric-owner -C "$root" -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
fi
echo "[base-image] importing $tarball as $tag"
"$docker" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    "$tarball" "$tag" >/dev/null
"$docker" image inspect --format '{{.Id}} {{.Size}}' "$tag"
