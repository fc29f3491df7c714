#!/usr/bin/env bash
# Sets up and runs the gateway on conf/zkgate.ini: installs what is missing,
# builds, starts a local ZooKeeper on 127.0.0.1:2181 unless one answers there,
# then runs zkgate in the foreground (Ctrl-C stops it).
# Usage: scripts/run.sh [CONFIG]
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-conf/zkgate.ini}

scripts/deps.sh build
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" --target zkgate zkgate-register >/dev/null
scripts/zookeeper.sh 2181
exec build/zkgate -c "$config"
