#!/usr/bin/env bash
# The zkgate benchmark, one command: installs what is missing (Debian's
# packages only), builds zkgate in Release, then measures zkgate beside
# HAProxy and nginx and prints one Markdown table (also written to
# bench/results/latest.md). Not a test: nothing here runs in CI.
# Usage: bench/run.sh [--quick] [bench.py options, see bench/bench.py --help]
#   --quick   a smoke run in well under a minute: 1 short round, 200 idle
#             connections, 100 instances, no callgrind (figures not meaningful)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh bench # wrk, haproxy, nginx, valgrind and what zkgate builds with

build="$PWD/build-release"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j"$(nproc)" --target zkgate >/dev/null
cc -O2 -std=c11 -Wall -Wextra -o "$build/tcpbulk" bench/tcpbulk.c

# 10,000 idle clients, the proxies' ends of them and upstream connections.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

command="bench/run.sh${*:+ $*}"
args=()
if [ "${1:-}" = --quick ]; then
  shift
  args=(--rounds 1 --duration 1 --bulk-seconds 1 --idle-conns 200 --services 20
        --per-service 5 --changes 2 --route-samples 3 --no-callgrind --no-record
        --out bench/results/quick.md)
fi
exec /usr/bin/python3 bench/bench.py --zkgate "$build/zkgate" \
  --tcpbulk "$build/tcpbulk" --command "$command" "${args[@]}" "$@"
