#!/usr/bin/env bash
# Builds the container image of docker/Dockerfile with podman, on a machine
# with no Docker engine and no registry: the base image debian:bookworm-slim
# is made locally with debootstrap (from Debian's archive) and imported under
# that name, so that the Dockerfile's FROM resolves without a pull.
#
# Usage: scripts/image.sh [build [TAG]]     build the image (default zkgate:latest)
#        scripts/image.sh podman ARGS...    podman with the same settings, e.g.
#                                           scripts/image.sh podman run --rm zkgate -V
#
# Everything is kept in $ZKGATE_IMAGE_CACHE (default /var/cache/zkgate-test):
# the debootstrapped root file system (base.tar, remade after 30 days),
# podman's storage (overlay, or vfs where overlay cannot mount) with the build
# cache, and the podman settings that work here (PLATFORM.md: runc, cgroupfs,
# file events, nofile ulimit, host network; ZKGATE_STORAGE_DRIVER=vfs forces
# vfs). Delete the directory to start from scratch. Needs root (or sudo):
# debootstrap and podman's root storage.
set -euo pipefail
cd "$(dirname "$0")/.."

cache=${ZKGATE_IMAGE_CACHE:-/var/cache/zkgate-test}
base=docker.io/library/debian:bookworm-slim
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if [ "$(id -u)" -ne 0 ]; then
  exec sudo --preserve-env=ZKGATE_IMAGE_CACHE,DEBIAN_MIRROR "$0" "$@"
fi

mkdir -p "$cache"
cat > "$cache/containers.conf.new" <<'CONF'
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
netns = "host"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
mv "$cache/containers.conf.new" "$cache/containers.conf"

# overlay when the kernel mounts it on this file system (40 s for a build
# from scratch, 2 s from cache, here), else vfs (a full copy per layer: 150 s
# and 80 s). One storage per driver: podman refuses to switch in place.
storage_driver() {
  local d
  d=$(mktemp -d "$cache/probe.XXXXXX")
  mkdir "$d/l" "$d/u" "$d/w" "$d/m"
  if mount -t overlay overlay -o "lowerdir=$d/l,upperdir=$d/u,workdir=$d/w" "$d/m" 2>/dev/null; then
    umount "$d/m"
    echo overlay
  else
    echo vfs
  fi
  rm -rf "$d"
}
driver=${ZKGATE_STORAGE_DRIVER:-$(storage_driver)}

pm() {
  CONTAINERS_CONF="$cache/containers.conf" podman --root "$cache/storage-$driver" \
    --runroot "$cache/run-$driver" --storage-driver "$driver" "$@"
}

step_start=0
step() { step_start=$SECONDS; echo "== image: $*" >&2; }
step_done() { echo "   ($((SECONDS - step_start)) s)" >&2; }

make_base() {
  # Remade monthly so that the packages the image starts from stay current.
  find "$cache" -maxdepth 1 -name base.tar -mtime +30 -delete
  if [ ! -f "$cache/base.tar" ]; then
    step "debootstrap --variant=minbase bookworm ($mirror)"
    local root
    root=$(mktemp -d "$cache/rootfs.XXXXXX")
    chmod 0755 "$root"  # it becomes the image's /, and mktemp made it 0700
    debootstrap --variant=minbase bookworm "$root" "$mirror" > "$cache/debootstrap.log" 2>&1 ||
      { tail -20 "$cache/debootstrap.log" >&2; rm -rf "$root"; return 1; }
    # What debian:bookworm-slim leaves out too: downloaded packages and lists.
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" -cf "$cache/base.tar.new" .
    rm -rf "$root"
    mv "$cache/base.tar.new" "$cache/base.tar"
    step_done
  fi
  # Imported with the configuration of the official image (its PATH), again
  # when the image is missing, the tarball newer, or these settings changed.
  local stamp="$cache/base.imported"
  local changes='ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
CMD ["bash"]'
  if ! pm image exists "$base" || [ "$cache/base.tar" -nt "$stamp" ] ||
     [ "$(cat "$stamp" 2>/dev/null)" != "$changes" ]; then
    step "import base.tar as $base"
    # Build-cache lookups compare layers, not image configurations: start
    # with empty storage, or the layers of the previous base would be reused.
    pm rmi --all --force >/dev/null
    local args=()
    while IFS= read -r c; do args+=(--change "$c"); done <<< "$changes"
    pm import --quiet "${args[@]}" "$cache/base.tar" "$base" >/dev/null
    printf '%s' "$changes" > "$stamp"
    step_done
  fi
}

build() {
  local tag=${1:-zkgate:latest}
  make_base
  # The build stage is tagged too, so that pruning the previous build's
  # leftovers below keeps the layers with the installed build dependencies.
  step "build $tag from docker/Dockerfile"
  pm build --pull=never --format docker --network host --layers \
    --target build -t localhost/zkgate-build:cache -f docker/Dockerfile . >&2
  pm build --pull=never --format docker --network host --layers \
    -t "$tag" -f docker/Dockerfile . >&2
  step_done
  pm image prune -f >/dev/null
}

# One build at a time per cache (CI runs of several checkouts may share it).
exec 9> "$cache/lock"
flock 9
case "${1:-build}" in
  build) build "${2:-}" ;;
  podman) shift; flock -u 9; pm "$@" ;;
  *) echo "usage: $0 [build [TAG]] | podman ARGS..." >&2; exit 2 ;;
esac
