#!/usr/bin/env bash
# Installs, from Debian's archive, whatever zkgate needs that is missing.
# Usage: scripts/deps.sh [build|test|bench]
#   test adds what the test suite uses; bench what bench/run.sh runs beside
#   zkgate (wrk, HAProxy, nginx with its stream module, valgrind).
set -euo pipefail

what=${1:-build}
pkgs=(build-essential cmake pkg-config libuv1-dev libssl-dev libinih-dev
      libcmocka-dev libzookeeper-st-dev node-llhttp libjansson-dev
      libzookeeper-java default-jre-headless libnghttp2-dev)
if [ "$what" = test ]; then
  pkgs+=(python3 python3-kazoo python3-pytest curl clang-14 libclang-rt-14-dev
         clang-format systemd python3-yaml podman runc debootstrap
         nghttp2-client python3-grpcio python3-grpc-tools etcd-server etcd-client python3-h2
         chromium python3-websocket)
fi
if [ "$what" = bench ]; then
  pkgs+=(wrk haproxy nginx-light libnginx-mod-stream valgrind python3 python3-kazoo
         nghttp2-client etcd-server python3-grpcio
         util-linux)
fi

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
# The Dockerfile linters run through npx. Debian's npm provides it, unless a
# Node.js from elsewhere (which bundles npm, and conflicts with Debian's) does.
if [ "$what" = test ] && ! command -v npx >/dev/null; then
  missing+=(npm)
fi
# nginx-light is one of several flavours: any installed nginx will do.
if [ "$what" = bench ] && [[ " ${missing[*]} " == *" nginx-light "* ]] &&
   command -v nginx >/dev/null; then
  missing=("${missing[@]/nginx-light/}")
  read -r -a missing <<<"${missing[*]}"
fi
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing: ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
apt_opts=(-o DPkg::Lock::Timeout=600 -q)
$sudo apt-get "${apt_opts[@]}" update
DEBIAN_FRONTEND=noninteractive $sudo apt-get "${apt_opts[@]}" install -y \
  --no-install-recommends "${missing[@]}"
