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

pkgs=(wrk haproxy nginx-light libnginx-mod-stream valgrind python3 python3-kazoo
      util-linux)
missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
# nginx-light is one of several flavours: any installed nginx with the stream
# module will do.
if [[ " ${missing[*]} " == *" nginx-light "* ]] && command -v nginx >/dev/null; then
  missing=("${missing[@]/nginx-light/}")
fi
scripts/deps.sh build # compilers, libraries, ZooKeeper server (java)
if [ -n "${missing[*]// /}" ]; then
  echo "installing: ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  apt_opts=(-o DPkg::Lock::Timeout=600 -q)
  $sudo apt-get "${apt_opts[@]}" update
  # shellcheck disable=SC2068 # empty entries must vanish
  DEBIAN_FRONTEND=noninteractive $sudo apt-get "${apt_opts[@]}" install -y \
    --no-install-recommends ${missing[@]}
fi

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
        --per-service 5 --changes 2 --no-callgrind --out bench/results/quick.md)
fi
exec /usr/bin/python3 bench/bench.py --zkgate "$build/zkgate" \
  --tcpbulk "$build/tcpbulk" --command "$command" "${args[@]}" "$@"
