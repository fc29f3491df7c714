"""ZooKeeper session life: host names that do not resolve at start, a slow or failing resolver
(names are resolved off the loop that forwards traffic), and a watch set that has outgrown the
server's jute.maxbuffer (the reconnection is refused again and again).

The resolver tests run zkgate in a mount namespace of its own (unshare -m) where a test
resolv.conf names a small DNS server of the test's own on a loopback address: nothing of the
machine's resolver configuration changes. This module starts servers of its own: CTest runs it
serially."""

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request

import pytest
from kazoo.client import KazooClient

from dnsfake import NAME, dns, namespaced  # noqa: F401 (dns: a fixture)
from zkcut import OP_EXISTS, ZkCutRelay
from zkharness import (Gateway, ZkServer, free_port, ini_text, reach, register, wait_pool,
                       wait_until, zkgate_bin)

ZK_NAME = NAME


def wrapped_bin(tmp_path, prefix, binary):
    """An executable script running `binary` under `prefix` (the harness starts ZKGATE_BIN)."""
    script = tmp_path / f"{os.path.basename(binary)}-ns.sh"
    quoted = " ".join(f"'{p}'" for p in prefix)
    script.write_text(f"#!/bin/sh\nexec {quoted} '{binary}' \"$@\"\n")
    script.chmod(0o755)
    return str(script)


def start_gateway(tmp_path, ini, port, dns, timeout_s=5, name="gw"):
    real = zkgate_bin()
    old = os.environ["ZKGATE_BIN"]
    os.environ["ZKGATE_BIN"] = wrapped_bin(tmp_path, namespaced(tmp_path, dns, timeout_s), real)
    try:
        gw = Gateway(tmp_path, ini, name=name)
    finally:
        os.environ["ZKGATE_BIN"] = old
    gw.wait_listening(port)
    return gw


def count_lines(gw, text):
    return sum(1 for line in gw.log_text().splitlines() if text in line)


def session_ids(gw):
    return [int(x, 16) for x in re.findall(r"ZooKeeper session 0x([0-9a-f]+)", gw.log_text())]


def answered_quickly(port, name, duration, limit_s=1.0):
    """Connect again and again for `duration` s: each must reach `name` within `limit_s`."""
    t_end = time.monotonic() + duration
    worst, n = 0.0, 0
    while time.monotonic() < t_end:
        t0 = time.monotonic()
        try:
            got = reach(port, timeout=limit_s + 1)
        except OSError as e:
            got = repr(e)
        took = time.monotonic() - t0
        worst = max(worst, took)
        n += 1
        assert got == name and took < limit_s, (
            f"connection {n} got {got!r} after {took:.2f} s (expected {name!r} within "
            f"{limit_s} s)")
        time.sleep(0.05)
    return worst


# ---------------------------------------------------------------------------------------------
# point 12: names that do not resolve at start


def test_unresolvable_hosts_start_and_serve_static(tmp_path, dns, backends, zpath):
    static = backends("static")
    port, zport = free_port(), free_port()
    ini = ini_text({"static": {"listen": f"127.0.0.1:{port}", "instances": static.addr},
                    "reg": {"listen": f"127.0.0.1:{zport}", "zk_path": zpath}},
                   zookeeper={"hosts": "nonexistent.invalid:2181", "session_timeout": "2s"})
    # The check does not resolve: a name may resolve later, like a server may come up later.
    ini_path = tmp_path / "check.ini"
    ini_path.write_text(ini)
    check = subprocess.run([zkgate_bin(), "-t", "-c", str(ini_path)], capture_output=True,
                           text=True, timeout=10)
    assert check.returncode == 0, check.stderr
    gw = start_gateway(tmp_path, ini, port, dns)
    try:
        answered_quickly(port, "static", 3.0)
        assert gw.running, gw.log_text()
        assert dns.queries > 0, "zkgate never asked the name server"
        assert gw.wait_log("cannot resolve ZooKeeper host name(s): nonexistent.invalid", 2), \
            gw.log_text()
        # Retried in the background (the name server keeps being asked), logged once.
        asked = dns.queries
        assert wait_until(lambda: dns.queries > asked, 5), "no retry in the background"
        assert count_lines(gw, "cannot resolve ZooKeeper") <= 2, gw.log_text()
        assert count_lines(gw, "cannot create a ZooKeeper handle") == 0, gw.log_text()
    finally:
        assert gw.stop() == 0, gw.log_text()


# ---------------------------------------------------------------------------------------------
# point 11: a slow or failing resolver never blocks the loop


@pytest.fixture
def zk_named(zk):
    """The module's server under the name ZK_NAME (answered by the test's name server)."""
    return f"{ZK_NAME}:{zk.port}"


def named_gateway(tmp_path, dns, zk_named, zpath, backends, kz, timeout_s=5):
    static, dyn = backends("static", "dyn")
    register(kz, zpath, f"tcp://{dyn.addr}".encode())
    port, zport = free_port(), free_port()
    ini = ini_text({"static": {"listen": f"127.0.0.1:{port}", "instances": static.addr},
                    "reg": {"listen": f"127.0.0.1:{zport}", "zk_path": zpath}},
                   zookeeper={"hosts": zk_named, "session_timeout": "2s"})
    gw = start_gateway(tmp_path, ini, port, dns, timeout_s)
    assert set(wait_pool(zport, ["dyn"], timeout=10)) == {"dyn"}, gw.log_text()
    return gw, port, zport


def test_slow_resolver_does_not_stall_traffic(tmp_path, dns, zk, zk_named, zpath, backends, kz):
    dns.mode, dns.delay = "slow", 2.5
    gw, port, zport = named_gateway(tmp_path, dns, zk_named, zpath, backends, kz)
    try:
        # Resolved once (slowly, off the loop) and connected; from here on every answer is
        # slow, and the traffic must not notice.
        answered_quickly(port, "static", 4.0)
        answered_quickly(zport, "dyn", 1.0)
        assert gw.running
    finally:
        assert gw.stop() == 0, gw.log_text()


def test_failing_resolver_keeps_the_session(tmp_path, dns, zk, zpath, backends, kz):
    # The disconnection is a cut connection (a relay drops it at the next ping), not a server
    # restart: a restart that outlasts the 2 s session on a busy machine is, rightly, taken
    # for an expiry (a new session), and made this test fail one run in ten.
    from zkcut import ZkCutRelay
    relay = ZkCutRelay(zk.port)
    try:
        gw, port, zport = named_gateway(tmp_path, dns, f"{ZK_NAME}:{relay.port}", zpath,
                                        backends, kz, timeout_s=1)
        try:
            sid = session_ids(gw)
            assert sid, gw.log_text()
            dns.mode = "drop"  # a resolver outage: no answer at all
            # Longer than the session timeout (2 s), past a disconnection too: the numeric
            # address zkgate has keeps serving, and the session is never given up.
            answered_quickly(port, "static", 3.0)
            relay.cut_at(11)  # the next ping: the connection drops, the session lives
            assert wait_until(lambda: relay.cuts == 1, 10), "no ping went through the relay"
            answered_quickly(port, "static", 1.0)
            assert wait_until(lambda: len(session_ids(gw)) > len(sid), 10), gw.log_text()
            assert set(session_ids(gw)) == {sid[0]}, (
                f"a new session while the resolver was down:\n{gw.log_text()}")
            b = backends("later")
            register(kz, zpath, f"tcp://{b.addr}".encode())
            assert "later" in wait_pool(zport, ["dyn", "later"], timeout=10), gw.log_text()
            assert "expired" not in gw.log_text()
        finally:
            assert gw.stop() == 0, gw.log_text()
    finally:
        relay.close()


# zkgate-register resolves through the same helper (src/registry/zkconn.c).

def register_bin():
    path = os.environ.get("ZKGATE_REGISTER_BIN")
    if not path:
        raise RuntimeError("ZKGATE_REGISTER_BIN is not set: point it at zkgate-register")
    return path


def test_register_with_slow_resolver_keeps_its_session(tmp_path, dns, zk, zk_named, zpath,
                                                       backends, kz):
    dns.mode, dns.delay = "slow", 2.5
    inst = backends("inst")
    log_path = tmp_path / "register.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([*namespaced(tmp_path, dns), register_bin(), "--zk", zk_named,
                                 "--path", zpath, "--address", inst.addr, "--session-timeout",
                                 "2s"], stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        def node():
            kids = kz.get_children(zpath) if kz.exists(zpath) else []
            return kz.get(f"{zpath}/{kids[0]}")[1] if len(kids) == 1 else None
        first = wait_until(node, 15)
        assert first, log_path.read_text()
        # Every answer of the name server is late from here on: the session (2 s) must live
        # on, and with it the same ephemeral znode.
        t_end = time.monotonic() + 6.0
        while time.monotonic() < t_end:
            now = node()
            assert now and now.ephemeralOwner == first.ephemeralOwner, log_path.read_text()
            time.sleep(0.2)
        text = log_path.read_text()
        assert "lost the ZooKeeper connection" not in text and "expired" not in text, text
        assert proc.poll() is None, text
    finally:
        if proc.poll() is None:
            proc.terminate()
        assert proc.wait(10) == 0, log_path.read_text()


# ---------------------------------------------------------------------------------------------
# point 10: a watch set over the server's jute.maxbuffer


FILLERS = 300
FILLER_NAME = "instance-with-a-rather-long-name-{:04d}"  # 300 data watches: ~15 KB to re-set


def test_watch_set_over_jute_maxbuffer_recovers(tmp_path, backends):
    """The server takes packets of 8 KiB at most, and the watch budget (default 960k) does not
    know: after a disconnection, the client's one SetWatches packet with every watch of the
    session is refused, connection after connection. zkgate must notice (by the connections
    that drop right after each reconnection) and open a new session, so that changes made
    after the disconnection route; that session keeps under half of what was refused."""
    server = ZkServer(tmp_path / "zk", tick_ms=500, jvm_args=["-Djute.maxbuffer=8192"])
    server.start()
    kz = KazooClient(hosts=server.hosts, timeout=10.0)
    kz.start(timeout=15)
    gw = None
    try:
        a, b = backends("a", "b")
        big, small = "/big/svc", "/small/svc"
        kz.ensure_path(big)
        kz.ensure_path(small)
        for i in range(FILLERS):
            kz.create(f"{big}/{FILLER_NAME.format(i)}", f"tcp://{a.addr}".encode())
        port_big, port_small = free_port(), free_port()
        zookeeper = {"hosts": server.hosts, "session_timeout": "8s"}
        ini = ini_text({"big": {"listen": f"127.0.0.1:{port_big}", "zk_path": big},
                        "small": {"listen": f"127.0.0.1:{port_small}", "zk_path": small}},
                       zookeeper=zookeeper, proxy={"log_level": "debug"})
        gw = Gateway(tmp_path, ini)
        gw.wait_listening(port_big)
        # Every filler read (and so data-watched) before the disconnection.
        assert wait_until(lambda: count_lines(gw, "instance 127.0.0.1") >= FILLERS, 20), \
            gw.log_text()[-3000:]
        assert set(wait_pool(port_big, ["a"])) == {"a"}
        sid = session_ids(gw)[-1]

        server.restart()  # same data: the session lives on, and reconnects
        kz.retry(kz.create, f"{small}/later", f"tcp://{b.addr}".encode())
        seen = wait_pool(port_small, ["b"], timeout=30)
        assert set(seen) == {"b"}, (f"a child created after the disconnection does not route "
                                    f"within 30 s: {dict(seen)}\n{gw.log_text()[-4000:]}")
        text = gw.log_text()
        assert "jute.maxbuffer" in text, text[-4000:]
        assert "with the watch budget lowered" in text, text[-4000:]
        assert any(s != sid for s in session_ids(gw)), "no new session"
        assert set(wait_pool(port_big, ["a"])) == {"a"}

        # The new session keeps its watches under half of what was refused: the next
        # disconnection is ridden out in the same session.
        assert wait_until(lambda: "watch budget is reached" in gw.log_text(), 20), \
            gw.log_text()[-3000:]
        ids = session_ids(gw)
        server.restart()
        kz.retry(kz.create, f"{small}/later2", f"tcp://{a.addr}".encode())
        seen = wait_pool(port_small, ["a", "b"], timeout=30)
        assert set(seen) == {"a", "b"}, f"{dict(seen)}\n{gw.log_text()[-4000:]}"
        assert len(session_ids(gw)) > len(ids), gw.log_text()[-3000:]
        assert set(session_ids(gw)[len(ids):]) == {ids[-1]}, gw.log_text()[-4000:]
    finally:
        if gw is not None:
            assert gw.stop() == 0, gw.log_text()[-3000:]
        kz.stop()
        kz.close()
        server.stop()


def admin_get(admin, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}{path}", timeout=5) as r:
        return r.read().decode()


def registry_metrics(admin):
    out = {}
    for line in admin_get(admin, "/metrics").splitlines():
        if line.startswith("zkgate_zookeeper_"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def pool_addresses(admin, name):
    """znode -> address of the instances in service `name`'s pool, from /services."""
    services = json.loads(admin_get(admin, "/services"))["services"]
    svc = next(s for s in services if s["name"] == name)
    return {i["znode"]: i["address"] for i in svc["instances"]}


def test_watch_budget_keeps_the_session_over_reconnections(tmp_path, backends):
    """Past the watch budget, instances are read without a data watch, so that a reconnection
    re-registers less than the server's jute.maxbuffer: the session survives a cut connection
    (before, a watch set over the budget cost a new session and a full re-read at each
    disconnection). Children still come and go at once (the child watch), a watched instance's
    change in place is applied by its data watch, an unwatched one's by the data sweep."""
    server = ZkServer(tmp_path / "zk", tick_ms=500, jvm_args=["-Djute.maxbuffer=8192"])
    server.start()
    relay = ZkCutRelay(server.port)
    kz = KazooClient(hosts=server.hosts, timeout=10.0)
    kz.start(timeout=15)
    gw = None
    try:
        b, c, d = backends("b", "c", "d")
        big = "/big/svc"
        kz.ensure_path(big)
        # One address each (a pool counts an address once); no traffic goes to them.
        for i in range(FILLERS):
            kz.create(f"{big}/{FILLER_NAME.format(i)}", f"tcp://127.0.0.2:{10000 + i}".encode())
        port, admin = free_port(), free_port()
        ini = ini_text({"big": {"listen": f"127.0.0.1:{port}", "zk_path": big}},
                       zookeeper={"hosts": relay.hosts, "session_timeout": "8s",
                                  "max_watch_bytes": "4k", "data_sweep": "1s"},
                       proxy={"log_level": "debug"}, admin={"listen": f"127.0.0.1:{admin}"})
        gw = Gateway(tmp_path, ini)
        gw.wait_listening(port)
        gw.wait_listening(admin)
        assert wait_until(lambda: len(pool_addresses(admin, "big")) == FILLERS, 20), \
            gw.log_text()[-3000:]

        # The bound: each data watch is its path in the packet (a length and the bytes), and
        # all of them with the path's child watch fit in 4k; the rest go without.
        cost = 4 + len(f"{big}/{FILLER_NAME.format(0)}")
        m = registry_metrics(admin)
        watched = int(m['zkgate_zookeeper_watches{kind="data"}'])
        assert m['zkgate_zookeeper_watches{kind="child"}'] == 1, m
        assert 0 < watched < FILLERS, m
        assert watched * cost + 4 + len(big) <= 4096, m
        assert m['zkgate_zookeeper_watch_bytes{kind="used"}'] <= 4096, m
        assert m["zkgate_zookeeper_unwatched_instances"] == FILLERS - watched, m
        assert wait_until(lambda: "watch budget is reached" in gw.log_text(), 5), \
            gw.log_text()[-3000:]
        assert count_lines(gw, "watch budget is reached") == 1, gw.log_text()[-3000:]

        # Cut the connection at the data sweep's next stat (the sweep keeps the connection
        # busy: the client sends no pings): the client reconnects to the same session and
        # re-registers its watches, which the server must take.
        sid = session_ids(gw)
        assert len(sid) == 1, gw.log_text()[-3000:]
        relay.cut_at(OP_EXISTS)
        assert wait_until(lambda: relay.cuts == 1, 15), "no stat went through the relay"
        assert wait_until(lambda: len(session_ids(gw)) > 1, 15), gw.log_text()[-3000:]
        text = gw.log_text()
        assert set(session_ids(gw)) == set(sid), f"a new session:\n{text[-4000:]}"
        assert "new session" not in text, text[-4000:]
        # A child created now is seen through the child watch set again by SetWatches.
        register(kz, big, f"tcp://{b.addr}".encode(), name="zz-new")
        assert wait_until(lambda: pool_addresses(admin, "big").get(f"{big}/zz-new") == b.addr,
                          10), gw.log_text()[-3000:]
        assert count_lines(gw, "lost the ZooKeeper connection") == 1, gw.log_text()[-4000:]
        assert set(session_ids(gw)) == set(sid), gw.log_text()[-4000:]

        # Children are read in name order, so the first filler holds a data watch and the
        # last one does not.
        first, last = f"{big}/{FILLER_NAME.format(0)}", f"{big}/{FILLER_NAME.format(FILLERS - 1)}"
        kz.set(first, f"tcp://{c.addr}".encode())
        assert wait_until(lambda: pool_addresses(admin, "big").get(first) == c.addr, 10), \
            gw.log_text()[-3000:]
        assert f"{FILLER_NAME.format(0)}: data changed (data watch)" in gw.log_text()
        kz.set(last, f"tcp://{d.addr}".encode())
        assert wait_until(lambda: pool_addresses(admin, "big").get(last) == d.addr, 10), \
            gw.log_text()[-3000:]
        assert (f"{FILLER_NAME.format(FILLERS - 1)}: data changed (seen by the data sweep)"
                in gw.log_text()), gw.log_text()[-3000:]

        m = registry_metrics(admin)
        assert m['zkgate_zookeeper_watches{kind="data"}'] * cost + 4 + len(big) <= 4096, m
        assert m['zkgate_zookeeper_watch_bytes{kind="used"}'] <= 4096, m
        assert m['zkgate_zookeeper_reads_total{kind="stat"}'] > 0, m

        # Watched instances go away: the sweep gives their room to unwatched ones, in name
        # order, which are then read with a data watch (promoted).
        before = m["zkgate_zookeeper_unwatched_instances"]
        t = kz.transaction()
        for i in range(100):
            t.delete(f"{big}/{FILLER_NAME.format(i)}")
        assert all(r is True for r in t.commit())

        def promoted():
            m = registry_metrics(admin)
            return (m["zkgate_zookeeper_unwatched_instances"] <= before - 50 and
                    m['zkgate_zookeeper_watches{kind="data"}'] >= watched - 1) and m
        m = wait_until(promoted, 10)
        assert m, registry_metrics(admin)
        assert m['zkgate_zookeeper_watches{kind="data"}'] * cost + 4 + len(big) <= 4096, m
        assert m['zkgate_zookeeper_watch_bytes{kind="used"}'] <= 4096, m
        assert len(pool_addresses(admin, "big")) == FILLERS + 1 - 100
        third = f"{big}/{FILLER_NAME.format(100)}"
        kz.set(third, b"tcp://127.0.0.2:30000")
        assert wait_until(lambda: pool_addresses(admin, "big").get(third) == "127.0.0.2:30000",
                          10), \
            gw.log_text()[-3000:]
        assert f"{FILLER_NAME.format(100)}: data changed (data watch)" in gw.log_text()

        # An unwatched instance deleted and created again in one transaction (point 9): its
        # name stays in the list, and the sweep sees the new znode by its mzxid.
        t = kz.transaction()
        t.delete(last)
        t.create(last, b"tcp://127.0.0.2:30001")
        assert all(r is not None and not isinstance(r, Exception) for r in t.commit())
        assert wait_until(lambda: pool_addresses(admin, "big").get(last) == "127.0.0.2:30001",
                          10), gw.log_text()[-3000:]
        assert set(session_ids(gw)) == set(sid), gw.log_text()[-4000:]
    finally:
        if gw is not None:
            assert gw.stop() == 0, gw.log_text()[-3000:]
        kz.stop()
        kz.close()
        relay.close()
        server.stop()


def test_paths_added_over_a_full_watch_budget_lead_to_a_new_session(tmp_path, backends):
    """Child watches are not optional: services added by a reload after the data watches have
    filled the budget (past the sixteenth kept for them) put the estimate over it. The next
    lost connection then opens a new session, which counts the new paths before it sets data
    watches, so that the disconnection after is ridden out in that session."""
    server = ZkServer(tmp_path / "zk", tick_ms=500, jvm_args=["-Djute.maxbuffer=8192"])
    server.start()
    relay = ZkCutRelay(server.port)
    kz = KazooClient(hosts=server.hosts, timeout=10.0)
    kz.start(timeout=15)
    gw = None
    try:
        big = "/big/svc"
        kz.ensure_path(big)
        for i in range(FILLERS):
            kz.create(f"{big}/{FILLER_NAME.format(i)}", f"tcp://127.0.0.2:{10000 + i}".encode())
        longs = [f"/long/{'x' * 150}/svc{n}" for n in range(3)]
        for path in longs:
            kz.ensure_path(path)
        port, admin = free_port(), free_port()
        zookeeper = {"hosts": relay.hosts, "session_timeout": "8s", "max_watch_bytes": "4k",
                     "data_sweep": "1s"}
        services = {"big": {"listen": f"127.0.0.1:{port}", "zk_path": big}}
        gw = Gateway(tmp_path, ini_text(services, zookeeper=zookeeper,
                                        admin={"listen": f"127.0.0.1:{admin}"}))
        gw.wait_listening(admin)
        assert wait_until(lambda: len(pool_addresses(admin, "big")) == FILLERS, 20), \
            gw.log_text()[-3000:]
        assert registry_metrics(admin)['zkgate_zookeeper_watch_bytes{kind="used"}'] <= 4096

        for n, path in enumerate(longs):
            services[f"long{n}"] = {"listen": f"127.0.0.1:{free_port()}", "zk_path": path}
        before = gw.log_text().count("reloaded:")
        with open(gw.ini_path, "w") as f:
            f.write(ini_text(services, zookeeper=zookeeper, admin={"listen": f"127.0.0.1:{admin}"}))
        gw.proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: gw.log_text().count("reloaded:") > before, 5), \
            gw.log_text()[-2000:]
        m = wait_until(lambda: (lambda m: m['zkgate_zookeeper_watches{kind="child"}'] == 4 and m)(
            registry_metrics(admin)), 5)
        assert m and m['zkgate_zookeeper_watch_bytes{kind="used"}'] > 4096, m

        sid = session_ids(gw)
        relay.cut_at(OP_EXISTS)
        assert wait_until(lambda: len(set(session_ids(gw))) == 2, 15), gw.log_text()[-3000:]
        assert "over [zookeeper] max_watch_bytes" in gw.log_text(), gw.log_text()[-3000:]
        assert wait_until(lambda: len(pool_addresses(admin, "big")) == FILLERS, 20), \
            gw.log_text()[-3000:]
        m = registry_metrics(admin)
        assert m['zkgate_zookeeper_watch_bytes{kind="used"}'] <= 4096, m
        assert 0 < m['zkgate_zookeeper_watches{kind="data"}'], m

        ids = session_ids(gw)
        assert ids[-1] not in sid
        relay.cut_at(OP_EXISTS)
        assert wait_until(lambda: relay.cuts == 2, 15), "no stat went through the relay"
        assert wait_until(lambda: len(session_ids(gw)) > len(ids), 15), gw.log_text()[-3000:]
        assert set(session_ids(gw)[len(ids):]) == {ids[-1]}, gw.log_text()[-4000:]
        kz.create(f"{big}/zz-new", b"tcp://127.0.0.2:30002")
        assert wait_until(lambda: pool_addresses(admin, "big").get(f"{big}/zz-new") ==
                          "127.0.0.2:30002", 10), gw.log_text()[-3000:]
        assert set(session_ids(gw)[len(ids):]) == {ids[-1]}, gw.log_text()[-4000:]
    finally:
        if gw is not None:
            assert gw.stop() == 0, gw.log_text()[-3000:]
        kz.stop()
        kz.close()
        relay.close()
        server.stop()


def test_service_removed_and_added_back_gets_its_data_watches_back(zk, kz, gateway):
    """A reload removes a service whose instances hold data watches, a later one adds it back.
    Its old watches are still in the client (they fire only on a change, or end with the
    session) and, the path being the same, they come back with it: the budget must count them
    once, as before the removal, not as watches of a removed path plus nothing for the
    returning instances (which were then all read without a watch for the session's life,
    their changes waiting for the data sweep)."""
    names = [f"instance-with-a-rather-long-name-{i:04d}" for i in range(40)]
    paths = {"a": "/budget-back/a", "b": "/budget-back/b"}
    for path in paths.values():
        kz.ensure_path(path)
        for i, n in enumerate(names):
            kz.create(f"{path}/{n}", f"tcp://127.0.0.2:{10000 + i}".encode())
    admin = free_port()
    zookeeper = {"hosts": zk.hosts, "session_timeout": "8s", "max_watch_bytes": "4k",
                 "data_sweep": "200ms"}

    def config(which):
        return ini_text({k: {"listen": f"127.0.0.1:{free_port()}", "zk_path": paths[k]}
                         for k in which},
                        zookeeper=zookeeper, admin={"listen": f"127.0.0.1:{admin}"})

    def reload(gw, which):
        before = gw.log_text().count("reloaded:")
        with open(gw.ini_path, "w") as f:
            f.write(config(which))
        gw.proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: gw.log_text().count("reloaded:") > before, 5), \
            gw.log_text()[-2000:]

    gw = gateway(config("ab"), listen=admin)
    assert wait_until(lambda: all(len(pool_addresses(admin, k)) == len(names) for k in paths),
                      20), gw.log_text()[-3000:]
    first = registry_metrics(admin)
    unwatched = first["zkgate_zookeeper_unwatched_instances"]
    assert 0 < unwatched < 2 * len(names), first  # the budget is reached, and holds some

    reload(gw, "a")
    reload(gw, "ab")
    assert wait_until(lambda: len(pool_addresses(admin, "b")) == len(names), 10)
    # A few sweeps of 200 ms: time enough to promote what the budget has room for.
    settled = wait_until(lambda: registry_metrics(admin)[
        "zkgate_zookeeper_unwatched_instances"] <= unwatched, 5)
    m = registry_metrics(admin)
    assert settled, (f"{m['zkgate_zookeeper_unwatched_instances']:.0f} instances without a data "
                     f"watch after service b came back, {unwatched:.0f} before it left: {m}")
    assert m['zkgate_zookeeper_watch_bytes{kind="used"}'] <= 4096, m


def test_room_freed_in_the_budget_is_given_back_with_the_sweep_off(zk, kz, gateway):
    """data_sweep = 0: instances past the budget are read without a watch and their changes in
    place are not seen, as documented. Once watched instances leave (a deploy's old ones), the
    budget has room again and the others must get their data watches: an instance left
    unwatched for good would never show a change of its data (a Curator `enabled: false`
    before it goes, a weight, a status)."""
    path = "/budget-room/svc"
    names = [f"instance-with-a-rather-long-name-{i:04d}" for i in range(100)]
    kz.ensure_path(path)
    for i, n in enumerate(names):
        kz.create(f"{path}/{n}", f"tcp://127.0.0.2:{10000 + i}".encode())
    admin = free_port()
    gw = gateway(ini_text({"svc": {"listen": f"127.0.0.1:{free_port()}", "zk_path": path}},
                          zookeeper={"hosts": zk.hosts, "session_timeout": "8s",
                                     "max_watch_bytes": "4k", "data_sweep": "0"},
                          admin={"listen": f"127.0.0.1:{admin}"}), listen=admin)
    assert wait_until(lambda: len(pool_addresses(admin, "svc")) == len(names), 20), \
        gw.log_text()[-3000:]
    assert registry_metrics(admin)["zkgate_zookeeper_unwatched_instances"] > 0
    for n in names[:60]:  # the first read watched these (name order)
        kz.delete(f"{path}/{n}")
    assert wait_until(lambda: len(pool_addresses(admin, "svc")) == 40, 10)
    last = f"{path}/{names[-1]}"
    kz.set(last, b"tcp://127.0.0.3:20000")
    seen = wait_until(lambda: pool_addresses(admin, "svc").get(last) == "127.0.0.3:20000", 5)
    m = registry_metrics(admin)
    assert seen, (f"a change of {last} not seen with room for every watch again: "
                  f"{pool_addresses(admin, 'svc').get(last)}, {m}")


# ---------------------------------------------------------------------------------------------
# shutdown while a resolution is out


def test_sigterm_while_the_resolver_hangs_stops_promptly(tmp_path, dns, backends, zpath):
    """A name server that never answers holds a getaddrinfo() for the resolver's whole timeout
    (here 6 s; resolv.conf's default is 5 s x 2 attempts, as long as `docker stop` waits before
    SIGKILL). SIGTERM must not wait for it."""
    dns.mode = "drop"
    static = backends("static")
    port, zport = free_port(), free_port()
    ini = ini_text({"static": {"listen": f"127.0.0.1:{port}", "instances": static.addr},
                    "reg": {"listen": f"127.0.0.1:{zport}", "zk_path": zpath}},
                   zookeeper={"hosts": f"{ZK_NAME}:2181", "session_timeout": "2s"})
    gw = start_gateway(tmp_path, ini, port, dns, timeout_s=6)
    assert wait_until(lambda: dns.queries > 0, 5), "zkgate never asked the name server"
    t0 = time.monotonic()
    code = gw.stop(timeout=30)
    took = time.monotonic() - t0
    assert code == 0, gw.log_text()
    assert took < 3, f"SIGTERM took {took:.1f} s while a resolution was out:\n{gw.log_text()}"


def test_sigterm_while_an_instance_name_resolution_hangs_stops_promptly(tmp_path, dns,
                                                                        backends):
    """An instance registered by host name on a name server that never answers: each client
    connection starts a lookup that holds one of libuv's pool threads for the resolver's whole
    timeout (connect_timeout gives up on the connection, not on the lookup). SIGTERM must not
    wait for them (nor may they hold the pool the state file is written on)."""
    dns.mode = "drop"
    live = backends("live")
    port = free_port()
    ini = ini_text({"named": {"listen": f"127.0.0.1:{port}",
                              "instances": f"{ZK_NAME}:{live.port}"}},
                   proxy={"connect_timeout": "500ms", "drain_timeout": "1s"})
    gw = start_gateway(tmp_path, ini, port, dns, timeout_s=6)
    clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(5)]
    try:
        assert wait_until(lambda: dns.queries > 0, 5), f"zkgate never asked the name server"
        t0 = time.monotonic()
        code = gw.stop(timeout=30)
        took = time.monotonic() - t0
    finally:
        for c in clients:
            c.close()
    assert code == 0, gw.log_text()
    assert took < 3, f"SIGTERM took {took:.1f} s while lookups were out:\n{gw.log_text()}"


def state_written_ms(path):
    try:
        with open(path) as f:
            return json.load(f)["written_ms"]
    except (OSError, ValueError, KeyError):
        return None


def test_sigterm_while_a_resolution_hangs_still_drains_and_writes_the_state_file(
        tmp_path, dns, zk, zpath, backends, kz):
    """Connected through the address in `hosts` while the other server's name hangs: SIGTERM
    must stop promptly and still do the shutdown's work, the final state file write included
    (it runs on libuv's pool, which a resolution no longer occupies)."""
    dns.mode = "drop"
    dyn = backends("dyn")
    register(kz, zpath, f"tcp://{dyn.addr}".encode())
    port = free_port()
    state = str(tmp_path / "state.json")
    ini = ini_text({"reg": {"listen": f"127.0.0.1:{port}", "zk_path": zpath}},
                   zookeeper={"hosts": f"127.0.0.1:{zk.port},{ZK_NAME}:{zk.port}",
                              "session_timeout": "2s", "state_file": state})
    gw = start_gateway(tmp_path, ini, port, dns, timeout_s=6)
    assert "dyn" in wait_pool(port, ["dyn"], timeout=10), gw.log_text()
    assert wait_until(lambda: dns.queries > 0, 5), "zkgate never asked the name server"
    before = wait_until(lambda: state_written_ms(state), 5)
    assert before, gw.log_text()
    # The final write must be told apart from the one before it by its time.
    wait_until(lambda: time.time() * 1000 > before + 20, 2)
    t0 = time.monotonic()
    code = gw.stop(timeout=30)
    took = time.monotonic() - t0
    assert code == 0, gw.log_text()
    assert took < 3, f"SIGTERM took {took:.1f} s while a resolution was out:\n{gw.log_text()}"
    after = state_written_ms(state)
    assert after and after > before, f"no state file write at shutdown:\n{gw.log_text()}"
    assert "stopped" in gw.log_text()


def test_register_sigterm_while_a_resolution_hangs_stops_promptly(tmp_path, dns, zk, zpath,
                                                                   backends, kz):
    """zkgate-register resolves through the same helper: registered through the address in
    --zk while the other server's name hangs, SIGTERM ends its session (the znode goes) and
    exits promptly."""
    dns.mode = "drop"
    inst = backends("inst")
    log_path = tmp_path / "register.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([*namespaced(tmp_path, dns, 6), register_bin(), "--zk",
                                 f"127.0.0.1:{zk.port},{ZK_NAME}:{zk.port}", "--path", zpath,
                                 "--address", inst.addr, "--session-timeout", "2s"],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        assert wait_until(lambda: kz.exists(zpath) and kz.get_children(zpath), 15), \
            log_path.read_text()
        assert wait_until(lambda: dns.queries > 0, 5), "zkgate-register never asked"
        t0 = time.monotonic()
        proc.terminate()
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            code = None
        took = time.monotonic() - t0
        assert code == 0, log_path.read_text()
        assert took < 3, f"SIGTERM took {took:.1f} s while a resolution was out:\n" + \
            log_path.read_text()
        assert kz.get_children(zpath) == [], "the znode outlived the session"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
