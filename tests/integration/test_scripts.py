"""The scripts behind the README's quick start: scripts/zookeeper.sh starts a local ZooKeeper
only when none answers, and scripts/deps.sh installs nothing when nothing is missing."""

import os
import signal
import subprocess
import time

from zkharness import free_port

SRC = os.environ.get("ZKGATE_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))


def srvr(port):
    import socket
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"srvr")
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    return data.decode(errors="replace")
                data += chunk
    except OSError:
        return ""


def test_zookeeper_script_starts_once_and_is_idempotent(tmp_path):
    port = free_port()
    script = os.path.join(SRC, "scripts", "zookeeper.sh")
    pidfile = tmp_path / "zookeeper.pid"
    try:
        first = subprocess.run(["bash", script, str(port), str(tmp_path)], capture_output=True,
                               text=True, timeout=60)
        assert first.returncode == 0, first.stderr
        assert "started" in first.stderr
        assert "Zookeeper version" in srvr(port)
        second = subprocess.run(["bash", script, str(port), str(tmp_path)], capture_output=True,
                                text=True, timeout=60)
        assert second.returncode == 0, second.stderr
        assert "already answers" in second.stderr, "a second server was started"
    finally:
        if pidfile.exists():
            pid = int(pidfile.read_text())
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and srvr(port):
                time.sleep(0.1)


def test_deps_script_installs_nothing_when_nothing_is_missing():
    # The suite is running, so every package is there: the script must not call apt-get.
    r = subprocess.run(["bash", os.path.join(SRC, "scripts", "deps.sh"), "test"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "installing" not in r.stderr, r.stderr
