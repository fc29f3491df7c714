#!/usr/bin/env bash
# Starts a local ZooKeeper server from Debian's packages (never as a system
# service) unless something already answers on HOST:PORT.
# Usage: scripts/zookeeper.sh [PORT] [DIR]   (default 2181, /tmp/zkgate-zookeeper)
set -euo pipefail

port=${1:-2181}
dir=${2:-/tmp/zkgate-zookeeper}

answers() {
  # The four-letter word srvr answers once the server serves.
  ( exec 3<>"/dev/tcp/127.0.0.1/$port" && printf 'srvr' >&3 &&
    timeout 5 grep -q 'Zookeeper version' <&3 ) 2>/dev/null
}

if answers; then
  echo "ZooKeeper already answers on 127.0.0.1:$port" >&2
  exit 0
fi

mkdir -p "$dir/data"
cat > "$dir/zoo.cfg" <<CFG
tickTime=2000
dataDir=$dir/data
clientPort=$port
clientPortAddress=127.0.0.1
maxClientCnxns=0
admin.enableServer=false
4lw.commands.whitelist=*
CFG
cp=/usr/share/java/zookeeper.jar:/usr/share/java/zookeeper-jute.jar
for j in slf4j-api slf4j-simple netty-handler netty-transport netty-common \
         netty-buffer netty-resolver netty-codec \
         netty-transport-native-unix-common netty-transport-native-epoll \
         metrics-core snappy-java; do
  [ -f "/usr/share/java/$j.jar" ] && cp="$cp:/usr/share/java/$j.jar"
done
nohup java -Xmx128m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
  -Djava.net.preferIPv4Stack=true -cp "$cp" \
  org.apache.zookeeper.server.ZooKeeperServerMain "$dir/zoo.cfg" \
  > "$dir/zookeeper.log" 2>&1 &
echo $! > "$dir/zookeeper.pid"
for _ in $(seq 1 100); do
  if answers; then
    echo "ZooKeeper started on 127.0.0.1:$port (pid $(cat "$dir/zookeeper.pid"), log $dir/zookeeper.log)" >&2
    exit 0
  fi
  sleep 0.2
done
echo "ZooKeeper did not start; see $dir/zookeeper.log" >&2
exit 1
