"""Checks of the harness itself (no zkgate needed): if these fail, the other integration tests'
failures say nothing about zkgate."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from kazoo.client import KazooClient
from kazoo.retry import KazooRetry

from zkharness import (Blackhole, ZkServer, free_port, reach, register, wait_until,
                       zk_classpath)


def test_zookeeper_serves_and_keeps_data_across_restart(tmp_path):
    # A server of its own that allows long sessions: a restart on a busy machine (the JVM's
    # start) may take longer than the 4 s the suite's servers allow, and the live session's
    # ephemeral must survive it here.
    zk = ZkServer(tmp_path / "zk")
    zk.extra_cfg = "maxSessionTimeout=60000\n"
    zk.start()
    # kazoo waits session_timeout / len(hosts) for the answer to a connect: the host named
    # three times bounds an attempt that meets the server mid-restart to 10 s, and the retry
    # policy tries again within a second instead of backing off towards an hour.
    kz = KazooClient(hosts=",".join([zk.hosts] * 3), timeout=30.0,
                     connection_retry=KazooRetry(max_tries=-1, delay=0.1, max_delay=1.0))
    try:
        kz.start(timeout=15)
        assert "Mode: standalone" in zk.four_letter("srvr")
        ephemeral = register(kz, "/harness/a/b", b"tcp://127.0.0.1:1")
        assert ephemeral.startswith("/harness/a/b/inst-")
        kz.create("/harness/persistent", b"x")
        port = zk.port
        zk.restart()
        assert zk.port == port and zk.hosts == f"127.0.0.1:{port}"
        assert wait_until(lambda: kz.connected, 40), \
            f"kazoo did not reconnect after the restart; server log:\n{zk.log_tail()}"
        assert kz.exists("/harness/persistent") is not None, "persistent znode lost on restart"
        assert kz.exists(ephemeral) is not None, "live session's ephemeral lost on restart"
    finally:
        kz.stop()
        kz.close()
        zk.stop()


def test_zookeeper_wipe_forgets_everything(zk, kazoo):
    kz = kazoo()
    kz.create("/harness_wipe", b"x")
    zk.restart(wipe=True)
    fresh = kazoo()
    assert fresh.exists("/harness_wipe") is None, "data survived a wiped restart"


def test_dump_lists_sessions_until_closed(zk, kazoo):
    before = zk.sessions()
    kz = kazoo()
    sid = kz.client_id[0]
    assert sid in zk.sessions() and sid not in before
    kz.stop()
    kz.close()
    assert wait_until(lambda: sid not in zk.sessions(), 1.0), "closed session still in dump"


def test_dump_keeps_session_of_dropped_socket(zk):
    """The signal test relies on this: a client that dies without closeSession stays listed
    until its session times out."""
    code = ("import time, sys\nfrom kazoo.client import KazooClient\n"
            f"kz = KazooClient(hosts='{zk.hosts}', timeout=4)\nkz.start(10)\n"
            "print(kz.client_id[0], flush=True)\ntime.sleep(60)\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        sid = int(child.stdout.readline())
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    assert sid in zk.sessions()
    time.sleep(1.5)
    assert sid in zk.sessions(), "a dropped (not closed) session left dump before its timeout"


def test_backend_greets_echoes_and_says_bye(backends):
    b = backends("alpha")
    assert reach(b.port) == "alpha"
    with socket.create_connection(("127.0.0.1", b.port), timeout=2) as s:
        s.sendall(b"hello")
        s.shutdown(socket.SHUT_WR)
        got = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
    assert got == b"alpha\nhellobye\n"
    assert wait_until(lambda: b.accepted == 2, 1.0), f"accepted = {b.accepted}"


def test_backend_on_ipv6_loopback(backends):
    b = backends("six", ipv6=True)
    assert b.addr == f"[::1]:{b.port}"
    assert reach(b.port, host="::1") == "six"


def test_reach_reports_close_and_refusal():
    port = free_port()
    ls = socket.socket()
    ls.bind(("127.0.0.1", port))
    ls.listen(8)

    def close_one():
        conn, _ = ls.accept()
        conn.close()

    t = threading.Thread(target=close_one, daemon=True)
    t.start()
    try:
        assert reach(port, timeout=1) is None, "closed without data must give None"
        t.join(1)
        with pytest.raises(TimeoutError):  # accepted (backlog) but never answered
            reach(port, timeout=0.3)
    finally:
        ls.close()
    with pytest.raises(ConnectionRefusedError):
        reach(port)


def test_blackhole_connect_hangs():
    hole = Blackhole()
    try:
        for _ in range(3):
            assert hole.connect_hangs(0.3)
    finally:
        hole.close()


def test_free_ports_are_distinct_and_outside_the_ephemeral_range():
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        lo = int(f.read().split()[0])
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    assert all(p < lo for p in ports)


def test_zookeeper_classpath_exists():
    for jar in zk_classpath().split(":"):
        assert os.path.exists(jar), jar


def test_children_die_with_the_test_process(tmp_path):
    """Gateways and ZooKeeper are started through `setpriv --pdeathsig KILL`: a child whose
    parent dies is killed instead of lingering (CTest kills only the pytest process)."""
    code = ("import subprocess, sys, time\n"
            f"sys.path.insert(0, {os.path.dirname(__file__)!r})\n"
            "from zkharness import _die_with_parent\n"
            "p = subprocess.Popen([*_die_with_parent(), 'sleep', '60'])\n"
            "print(p.pid, flush=True)\ntime.sleep(60)\n")
    # (the parent is killed only once setpriv has exec'd sleep, i.e. after its prctl)
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    pid = int(parent.stdout.readline())
    assert wait_until(lambda: os.readlink(f"/proc/{pid}/exe").endswith("/sleep"), 3.0)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    parent.stdout.close()

    def gone():
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().split(") ")[1].split()[0] in ("Z", "X")  # zombie: it died
        except FileNotFoundError:
            return True

    assert wait_until(gone, 3.0), f"child {pid} outlived its killed parent"
