"""Registry: instance formats, watches, and the pool's life across ZooKeeper sessions closing,
servers stopping, restarting (with and without their data) and sessions expiring; static
instances as the only source or as the fallback of an empty ZooKeeper pool.

This module stops and restarts its ZooKeeper server: CTest runs it serially."""

import json
import re
import time
import uuid

import pytest

from zkharness import free_port, ini_text, reach, register, sample, wait_pool, wait_until


def zk_ini(zk, zpath, port, session_timeout="4s", instances=None, **kw):
    svc = {"zk_path": zpath, "listen": f"127.0.0.1:{port}", "balance": "random", **kw}
    if instances:
        svc["instances"] = instances
    return ini_text({"svc": svc}, zookeeper={"hosts": zk.hosts,
                                             "session_timeout": session_timeout})


def serving_only(port, names, duration, what):
    """Connect again and again for `duration` s: every connection must reach one of `names`;
    then 20 more connections must reach each of them."""
    names = set(names)
    t_end = time.monotonic() + duration
    n = 0
    while time.monotonic() < t_end:
        got = reach(port)
        n += 1
        assert got in names, f"{what}: connection {n} got {got!r}, expected one of {names}"
    seen = sample(port, 20)
    assert set(seen) == names, (f"{what}: after {duration} s (and {n} connections) 20 more "
                                f"connections reached {dict(seen)}, expected all of {names}")


def curator(name, port, ssl_port=None):
    return json.dumps({
        "name": name, "id": str(uuid.uuid4()), "address": "127.0.0.1", "port": port,
        "sslPort": ssl_port, "payload": None, "registrationTimeUTC": 1662110433938,
        "serviceType": "DYNAMIC", "uriSpec": None}).encode()


# (data, child name) for a backend on port p
FORMATS = {
    "url_tcp": lambda p: (f"tcp://127.0.0.1:{p}".encode(), None),
    "url_http_base_path": lambda p: (f"http://127.0.0.1:{p}/base/v1".encode(), None),
    "url_https": lambda p: (f"https://127.0.0.1:{p}".encode(), None),
    "curator_json": lambda p: (curator("svc", p), None),
    "curator_json_ssl_port": lambda p: (curator("svc", None, ssl_port=p), None),
    "host_port": lambda p: (f"127.0.0.1:{p}".encode(), None),
    "ipv6_host_port": lambda p: (f"[::1]:{p}".encode(), None),
    "empty_data_name_is_address": lambda p: (b"", f"127.0.0.1:{p}"),
}


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_decodes_instance_format(zk, kz, zpath, backends, gateway, fmt):
    b = backends("a", ipv6=fmt.startswith("ipv6"))
    data, name = FORMATS[fmt](b.port)
    register(kz, zpath, data, name=name)
    port = free_port()
    # https and sslPort registrations mean TLS (upstream_tls = auto; test_upstream_tls.py);
    # here the plain echo backend stands in for them, so TLS is turned off
    tls_marked = fmt in ("url_https", "curator_json_ssl_port")
    gateway(zk_ini(zk, zpath, port, **({"upstream_tls": "off"} if tls_marked else {})),
            listen=port)
    seen = wait_pool(port, ["a"])
    assert set(seen) == {"a"}, f"instance registered as {fmt} {data!r} not reached: {dict(seen)}"


def test_undecodable_children_are_skipped_and_logged(zk, kz, zpath, backends, gateway):
    good = backends("good")
    register(kz, zpath, f"tcp://{good.addr}".encode())
    bad = [register(kz, zpath, data) for data in
           (b"not an address", b'{"json":"without address"}', b"\xff\xfe\x00\x80garbage\x01")]
    port = free_port()
    gw = gateway(zk_ini(zk, zpath, port), listen=port)
    seen = wait_pool(port, ["good"])
    assert set(seen) == {"good"}, f"the decodable instance is not served alone: {dict(seen)}"
    assert sample(port, 20) == {"good": 20}
    for path in bad:
        assert gw.wait_log(path, 5), f"no warning naming the undecodable child {path}"


def test_missing_zk_path_is_watched_until_it_appears(zk, kz, zpath, backends, gateway):
    a = backends("a")
    zpath = zpath + "/not/yet/there"
    port = free_port()
    gateway(zk_ini(zk, zpath, port), listen=port)
    assert reach(port, 1.0) is None, "a service whose zk_path is missing served something"
    register(kz, zpath, f"tcp://{a.addr}".encode())
    seen = wait_pool(port, ["a"], timeout=10)
    assert set(seen) == {"a"}, f"instance under a zk_path created late not reached: {dict(seen)}"


def test_instance_of_closed_session_gets_no_new_connections(zk, kz, kazoo, zpath, backends,
                                                             gateway):
    a, b = backends("a", "b")
    register(kz, zpath, f"tcp://{a.addr}".encode())
    kz2 = kazoo()
    register(kz2, zpath, f"tcp://{b.addr}".encode())
    port = free_port()
    gateway(zk_ini(zk, zpath, port), listen=port)
    assert set(wait_pool(port, ["a", "b"])) == {"a", "b"}
    kz2.stop()
    kz2.close()
    # Gone from the pool as soon as the gateway hears of it (a child watch, ~ms on loopback;
    # how soon is the benchmark's business, not a timed test's): waited for, then checked.
    seen = wait_pool(port, ["a"], timeout=10)
    assert set(seen) == {"a"}, f"b's session closed, b still reached: {dict(seen)}"
    seen = sample(port, 30)
    assert seen == {"a": 30}, f"after b left the pool: {dict(seen)}"


def test_new_instance_gets_connections(zk, kz, zpath, backends, gateway):
    a, b = backends("a", "b")
    register(kz, zpath, f"tcp://{a.addr}".encode())
    port = free_port()
    gateway(zk_ini(zk, zpath, port), listen=port)
    assert set(wait_pool(port, ["a"])) == {"a"}
    register(kz, zpath, f"tcp://{b.addr}".encode())
    seen = wait_pool(port, ["a", "b"], timeout=10)
    assert set(seen) == {"a", "b"}, f"newly registered b not reached within 5 s: {dict(seen)}"


def test_keeps_last_pool_while_zookeeper_is_down(zk, kz, zpath, backends, gateway):
    a, b = backends("a", "b")
    register(kz, zpath, f"tcp://{a.addr}".encode())
    register(kz, zpath, f"tcp://{b.addr}".encode())
    port = free_port()
    gateway(zk_ini(zk, zpath, port, session_timeout="1s"), listen=port)
    assert set(wait_pool(port, ["a", "b"])) == {"a", "b"}
    zk.stop()
    serving_only(port, ["a", "b"], 3.0, "ZooKeeper down (session_timeout = 1s)")
    zk.start()


def test_changes_after_zookeeper_restart_are_seen(zk, kz, kazoo, zpath, backends, gateway):
    a, b, c = backends("a", "b", "c")
    path_a = register(kz, zpath, f"tcp://{a.addr}".encode())
    register(kz, zpath, f"tcp://{b.addr}".encode())
    port = free_port()
    gateway(zk_ini(zk, zpath, port), listen=port)
    assert set(wait_pool(port, ["a", "b"])) == {"a", "b"}
    zk.restart()
    fresh = kazoo()
    register(fresh, zpath, f"tcp://{c.addr}".encode())
    fresh.delete(path_a)
    seen = wait_pool(port, ["b", "c"], timeout=10)
    assert set(seen) == {"b", "c"}, (f"after a ZooKeeper restart, adding c and deleting a were "
                                     f"not picked up within 10 s: {dict(seen)}")


def test_resyncs_after_zookeeper_restart_with_empty_data(zk, kz, kazoo, zpath, backends,
                                                         gateway):
    a, b, c, d, e = backends("a", "b", "c", "d", "e")
    register(kz, zpath, f"tcp://{a.addr}".encode())
    register(kz, zpath, f"tcp://{b.addr}".encode())
    port = free_port()
    gateway(zk_ini(zk, zpath, port, session_timeout="1s"), listen=port)
    assert set(wait_pool(port, ["a", "b"])) == {"a", "b"}
    zk.restart(wipe=True)  # every session and znode forgotten: zkgate's session is refused
    serving_only(port, ["a", "b"], 2.5, "wiped ZooKeeper, before re-registration")
    fresh = kazoo()
    register(fresh, zpath, f"tcp://{c.addr}".encode())
    register(fresh, zpath, f"tcp://{d.addr}".encode())
    seen = wait_pool(port, ["c", "d"], timeout=15)
    assert set(seen) == {"c", "d"}, (f"instances registered on a wiped ZooKeeper not picked up "
                                     f"within 15 s: {dict(seen)}")


def test_recovers_from_session_expiry(zk, kz, kazoo, zpath, backends, gateway):
    a, b, c = backends("a", "b", "c")
    path_a = register(kz, zpath, f"tcp://{a.addr}".encode())
    register(kz, zpath, f"tcp://{b.addr}".encode())
    port = free_port()
    before = zk.sessions()
    gw = gateway(zk_ini(zk, zpath, port, session_timeout="1s"), listen=port)
    assert set(wait_pool(port, ["a", "b"])) == {"a", "b"}
    ours = zk.sessions() - before
    assert ours, "zkgate holds no ZooKeeper session"

    gw.pause()
    t_stop = time.monotonic()
    expired = wait_until(lambda: not (ours & zk.sessions()), 4.0, interval=0.1)
    assert expired, "test setup: zkgate's session did not expire while it was stopped"
    time.sleep(max(0.0, 4.0 - (time.monotonic() - t_stop)))
    gw.resume()

    serving_only(port, ["a", "b"], 1.5, "right after SIGCONT, with the session expired")
    fresh = kazoo()
    register(fresh, zpath, f"tcp://{c.addr}".encode())
    fresh.delete(path_a)
    seen = wait_pool(port, ["b", "c"], timeout=10)
    assert set(seen) == {"b", "c"}, (f"after session expiry, adding c and deleting a were not "
                                     f"picked up within 10 s: {dict(seen)}")


def session_expiries(admin):
    """zkgate_zookeeper_session_expiries_total from the admin's /metrics: sessions replaced."""
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
        text = r.read().decode()
    m = re.search(r"^zkgate_zookeeper_session_expiries_total (\d+)$", text, re.M)
    assert m, text
    return int(m.group(1))


def test_publication_pending_at_a_new_session_is_not_an_empty_pool(zk, kz, zpath, backends,
                                                                     gateway):
    # A change waits in the coalesce window when the session is lost and a new one begins
    # (ZooKeeper down past the session timeout): the new session forgets the children until
    # it has listed them. The window must not close on that and publish an empty pool.
    a, b, c, d, e = backends("a", "b", "c", "d", "e")
    # Persistent: ZooKeeper stays down longer than a kazoo session may last (4 s on this
    # server), and an ephemeral registry emptied by that would be right to empty the pool.
    nodes = [kz.create(f"{zpath}/i{i}", f"tcp://{x.addr}".encode(), makepath=True)
             for i, x in enumerate((a, b, c))]
    try:
        port, admin = free_port(), free_port()
        window_s = 5.0  # a change within it of the last publication waits for it
        conf = ini_text({"svc": {"zk_path": zpath, "listen": f"127.0.0.1:{port}"}},
                        zookeeper={"hosts": zk.hosts, "session_timeout": "1s",
                                   "coalesce_window": f"{window_s:g}s"},
                        proxy={"log_level": "debug"}, admin={"listen": f"127.0.0.1:{admin}"})
        gw = gateway(conf, listen=[port, admin])
        seen = wait_pool(port, ["a", "b", "c"], timeout=window_s + 10)
        assert set(seen) == {"a", "b", "c"}, dict(seen)
        # The first change after a quiet window is published at once; the next one, within
        # the window of that publication, waits for it.
        nodes.append(kz.create(f"{zpath}/i4", f"tcp://{e.addr}".encode()))
        seen = wait_pool(port, ["a", "b", "c", "e"], timeout=window_s + 10)
        assert set(seen) == {"a", "b", "c", "e"}, dict(seen)
        n_pools = gw.log_text().count(" pool v")
        nodes.append(kz.create(f"{zpath}/i3", f"tcp://{d.addr}".encode()))
        # Its data is decoded (debug line) just before the publication starts to wait.
        assert gw.wait_log(f"{nodes[-1]}: url instance", 10), "the new instance was never read"
        t_pending = time.monotonic()
        zk.stop()
        assert wait_until(lambda: session_expiries(admin) >= 1, window_s - 1), \
            "test setup: no new session within the window while ZooKeeper is down"
        # Past the window (its timer is the gateway's own: a late one is waited for too).
        # Until ZooKeeper is back the pool may change only by a publication, which is logged.
        serving_only(port, ["a", "b", "c", "e"], window_s + 1 - (time.monotonic() - t_pending),
                     "ZooKeeper down, a new session pending, a publication in the window")
        assert gw.log_text().count(" pool v") == n_pools, "a pool was published without ZooKeeper"
        zk.start()
        seen = wait_pool(port, ["a", "b", "c", "d", "e"], timeout=window_s + 10)
        assert set(seen) == {"a", "b", "c", "d", "e"}, f"not resynchronised: {dict(seen)}"
        empty = [line for line in gw.log_text().splitlines() if "pool v" in line
                 and " has 0 instances" in line]
        assert not empty, empty
    finally:
        if not zk.running:
            zk.start()
        for node in nodes:
            kz.retry(kz.delete, node)


def test_static_instances_only(backends, gateway):
    s1, s2 = backends("s1", "s2")
    port = free_port()
    gateway(ini_text({"svc": {"listen": f"127.0.0.1:{port}",
                              "instances": [s1.addr, s2.addr]}}), listen=port)
    seen = sample(port, 40)
    assert set(seen) == {"s1", "s2"}, f"40 connections over 2 static instances: {dict(seen)}"


@pytest.mark.parametrize("zk_path_state", ["empty", "missing"])
def test_static_instances_are_fallback_of_empty_zookeeper_pool(zk, kz, zpath, backends,
                                                               gateway, zk_path_state):
    s1, s2, z = backends("s1", "s2", "z")
    if zk_path_state == "empty":
        kz.ensure_path(zpath)
    port = free_port()
    gateway(zk_ini(zk, zpath, port, instances=[s1.addr, s2.addr]), listen=port)
    seen = sample(port, 40)
    assert set(seen) == {"s1", "s2"}, (f"zk_path {zk_path_state}: expected the static instances, "
                                       f"got {dict(seen)}")
    path_z = register(kz, zpath, f"tcp://{z.addr}".encode())
    seen = wait_pool(port, ["z"], timeout=10)
    assert set(seen) == {"z"}, f"a ZooKeeper instance registered: expected only z, got {dict(seen)}"
    assert sample(port, 30) == {"z": 30}
    kz.delete(path_z)
    seen = wait_pool(port, ["s1", "s2"], timeout=10)
    assert set(seen) == {"s1", "s2"}, (f"ZooKeeper pool empty again: expected the static "
                                       f"instances back, got {dict(seen)}")
