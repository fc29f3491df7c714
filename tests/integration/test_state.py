"""Riding out ZooKeeper trouble with a state file and max_stale: the last known pools are
written to [zookeeper] state_file, a gateway started while ZooKeeper is down serves them, and
max_stale bounds how long last known pools serve without ZooKeeper. Entries are keyed by path and
endpoint; max_stale counts from the time the file records; the file is only ever replaced whole;
a clean shutdown writes it last."""

import glob
import json
import os
import threading
import time
import urllib.error
import urllib.request

import pytest

from zkharness import free_port, ini_text, reach, register, sample, wait_pool, wait_until


def ini(zk, zpath, port, **zookeeper):
    return ini_text({"svc": {"zk_path": zpath, "listen": f"127.0.0.1:{port}"}},
                    zookeeper={"hosts": zk.hosts, "session_timeout": "1s", **zookeeper})


def read_state(path):
    with open(path) as f:
        return json.load(f)


def entry(state, zpath, endpoint=None):
    """The state file's entry for (zpath, endpoint); KeyError when there is none."""
    services = read_state(state)["services"]
    if isinstance(services, dict):  # format 1, keyed by path alone: read by older versions
        return services[zpath]
    for e in services:
        if e["zk_path"] == zpath and e.get("endpoint") == endpoint:
            return e
    raise KeyError((zpath, endpoint))


def temporaries(state):
    return glob.glob(glob.escape(state) + ".tmp*")


def test_state_file_follows_the_pools(zk, kz, zpath, backends, gateway, tmp_path):
    a, b = backends("a", "b")
    state = str(tmp_path / "state.json")
    register(kz, zpath, f"http://127.0.0.1:{a.port}/base".encode())
    port = free_port()
    gateway(ini(zk, zpath, port, state_file=state), listen=port)
    assert set(wait_pool(port, ["a"])) == {"a"}

    def ports_in_file():
        try:
            found = entry(state, zpath)
        except (OSError, ValueError, KeyError):
            return None
        return sorted(i["port"] for i in found["instances"])

    assert wait_until(lambda: ports_in_file() == [a.port], 3), ports_in_file()
    inst = entry(state, zpath)["instances"][0]
    assert inst["format"] == "url" and inst["base_path"] == "/base"
    assert inst["znode"].startswith(zpath + "/")
    register(kz, zpath, f"127.0.0.1:{b.port}".encode())
    assert wait_until(lambda: ports_in_file() == sorted([a.port, b.port]), 3), ports_in_file()
    assert not temporaries(state), "temporary file left behind"


def test_starts_from_state_file_while_zookeeper_is_down(zk, kz, zpath, backends, gateway,
                                                         tmp_path):
    a, b = backends("a", "b")
    state = str(tmp_path / "state.json")
    register(kz, zpath, f"127.0.0.1:{a.port}".encode())
    register(kz, zpath, f"127.0.0.1:{b.port}".encode())
    port = free_port()
    first = gateway(ini(zk, zpath, port, state_file=state), listen=port, name="first")
    assert set(wait_pool(port, ["a", "b"])) == {"a", "b"}
    assert first.stop() == 0
    assert len(entry(state, zpath)["instances"]) == 2

    zk.stop()
    try:
        port2 = free_port()
        second = gateway(ini(zk, zpath, port2, state_file=state), listen=port2, name="second")
        seen = wait_pool(port2, ["a", "b"], timeout=5)
        assert set(seen) == {"a", "b"}, f"state file pools not served: {dict(seen)}"
        assert "from the state file" in second.log_text()
    finally:
        zk.start()


def test_broken_state_file_is_ignored_with_a_warning(zk, kz, zpath, backends, gateway,
                                                     tmp_path):
    a = backends("a")
    state = tmp_path / "state.json"
    state.write_text('{"format": 1, "services": {"' + zpath + '": {"updated_ms": 1, '
                     '"instances": [{"host": "no such", "port": 99999}]}}}')
    register(kz, zpath, f"127.0.0.1:{a.port}".encode())
    port = free_port()
    gw = gateway(ini(zk, zpath, port, state_file=str(state)), listen=port)
    assert set(wait_pool(port, ["a"])) == {"a"}
    assert "ignoring the state file" in gw.log_text()


def test_max_stale_bounds_last_known_pools(zk, kz, zpath, backends, gateway):
    a = backends("a")
    register(kz, zpath, f"127.0.0.1:{a.port}".encode())
    port = free_port()
    gw = gateway(ini(zk, zpath, port, max_stale="1500ms"), listen=port)
    assert set(wait_pool(port, ["a"])) == {"a"}
    zk.stop()
    try:
        t0 = time.monotonic()
        # Within max_stale: still served.
        assert set(sample(port, 10)) == {"a"}
        assert time.monotonic() - t0 < 1.0
        # Past it: no instance, logged.
        assert wait_until(lambda: reach(port, timeout=1) is None, 4), "still served past max_stale"
        assert time.monotonic() - t0 >= 1.4, "pool dropped before max_stale"
        assert "past max_stale" in gw.log_text()
    finally:
        zk.start()
    # ZooKeeper back: the registry's pool serves again.
    seen = wait_pool(port, ["a"], timeout=15)
    assert set(seen) == {"a"}, f"not served again after ZooKeeper came back: {dict(seen)}"


def serverset(host, main, **endpoints):
    return json.dumps({"serviceEndpoint": {"host": host, "port": main},
                       "additionalEndpoints": {k: {"host": host, "port": p}
                                               for k, p in endpoints.items()},
                       "status": "ALIVE"}).encode()


def test_entries_are_keyed_by_path_and_endpoint(zk, kz, zpath, backends, gateway, tmp_path):
    """Three services read one path through the main endpoint and two others: three entries,
    each restored to its own service; a service whose zk_path changed gets nothing."""
    a, b, c = backends("a", "b", "c")
    state = str(tmp_path / "state.json")
    kz.create(zpath + "/member_", serverset("127.0.0.1", a.port, alpha=b.port, beta=c.port),
              ephemeral=True, sequence=True, makepath=True)
    ports = {n: free_port() for n in ("main", "alpha", "beta")}
    services = {"main": {"zk_path": zpath, "listen": f"127.0.0.1:{ports['main']}"},
                "alpha": {"zk_path": zpath, "endpoint": "alpha",
                          "listen": f"127.0.0.1:{ports['alpha']}"},
                "beta": {"zk_path": zpath, "endpoint": "beta",
                         "listen": f"127.0.0.1:{ports['beta']}"}}
    zookeeper = {"hosts": zk.hosts, "session_timeout": "1s", "state_file": state}
    first = gateway(ini_text(services, zookeeper=zookeeper), listen=list(ports.values()),
                    name="first")
    for name, want in (("main", "a"), ("alpha", "b"), ("beta", "c")):
        assert set(wait_pool(ports[name], [want])) == {want}, name
    assert first.stop() == 0
    for endpoint, backend in ((None, a), ("alpha", b), ("beta", c)):
        assert [i["port"] for i in entry(state, zpath, endpoint)["instances"]] == \
            [backend.port], endpoint

    zk.stop()
    try:
        moved = free_port()
        services["main"] = {"zk_path": zpath + "-moved", "listen": f"127.0.0.1:{moved}"}
        del ports["main"]
        second = gateway(ini_text(services, zookeeper=zookeeper),
                         listen=[moved, *ports.values()], name="second")
        for name, want in (("alpha", "b"), ("beta", "c")):
            seen = wait_pool(ports[name], [want], timeout=5)
            assert set(seen) == {want}, f"{name} serves {dict(seen)} from the state file"
        assert reach(moved, timeout=1) is None, "a moved zk_path got another path's instances"
        assert "from the state file" in second.log_text()
    finally:
        zk.start()


def shift_times(state, by_ms):
    doc = read_state(state)
    doc["written_ms"] += by_ms
    services = doc["services"]
    for e in services.values() if isinstance(services, dict) else services:
        e["updated_ms"] += by_ms
        if "fresh_ms" in e:
            e["fresh_ms"] += by_ms
    with open(state, "w") as f:
        json.dump(doc, f)


def test_max_stale_counts_from_the_age_in_the_file(zk, kz, zpath, backends, gateway, tmp_path):
    """A file known current an hour ago with max_stale = 10m: stale from the start. The same file
    known current just now serves."""
    a = backends("a")
    state = str(tmp_path / "state.json")
    register(kz, zpath, f"127.0.0.1:{a.port}".encode())
    port = free_port()
    first = gateway(ini(zk, zpath, port, state_file=state), listen=port, name="first")
    assert set(wait_pool(port, ["a"])) == {"a"}
    assert first.stop() == 0
    with open(state) as f:
        current = f.read()

    zk.stop()
    try:
        shift_times(state, -3600 * 1000)
        port2, admin = free_port(), free_port()
        old = gateway(ini_text({"svc": {"zk_path": zpath, "listen": f"127.0.0.1:{port2}"}},
                               zookeeper={"hosts": zk.hosts, "session_timeout": "1s",
                                          "state_file": state, "max_stale": "10m"},
                               admin={"listen": f"127.0.0.1:{admin}"}),
                      listen=[port2, admin], name="old")
        assert wait_until(lambda: "from the state file" in old.log_text(), 5), old.log_text()
        assert reach(port2, timeout=1) is None, "an hour-old pool served with max_stale = 10m"
        assert "past max_stale, not served" in old.log_text()
        with pytest.raises(urllib.error.HTTPError) as ready:
            urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=5)
        assert ready.value.code == 503
        assert "past max_stale" in ready.value.read().decode()
        assert old.stop() == 0

        with open(state, "w") as f:
            f.write(current)
        port3 = free_port()
        recent = gateway(ini(zk, zpath, port3, state_file=state, max_stale="10m"),
                         listen=port3, name="recent")
        assert set(wait_pool(port3, ["a"], timeout=5)) == {"a"}
        assert "past max_stale" not in recent.log_text()
    finally:
        zk.start()
    fresh = json.loads(current)["services"][0]["fresh_ms"]
    assert abs(fresh / 1000 - time.time()) < 60, "a clean stop records the pools current"


def boot_seconds():
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


def test_ready_counts_from_a_file_older_than_the_machines_uptime(zk, kz, zpath, backends,
                                                                 gateway, tmp_path):
    """A host rebooted while ZooKeeper is down: the state file is older than the monotonic clock
    the gateway counts with. /ready must still count from the file's age (the pools it took are
    stale), not from the boot."""
    a = backends("a")
    state = str(tmp_path / "state.json")
    register(kz, zpath, f"127.0.0.1:{a.port}".encode())
    port = free_port()
    first = gateway(ini(zk, zpath, port, state_file=state), listen=port, name="first")
    assert set(wait_pool(port, ["a"])) == {"a"}
    assert first.stop() == 0

    zk.stop()
    try:
        up_s = int(boot_seconds())
        # Known current two hours before the boot; max_stale one hour longer than the uptime:
        # the file is past it, the time since the boot is not.
        shift_times(state, -(up_s + 7200) * 1000)
        port2, admin = free_port(), free_port()
        gw = gateway(ini_text({"svc": {"zk_path": zpath, "listen": f"127.0.0.1:{port2}"}},
                              zookeeper={"hosts": zk.hosts, "session_timeout": "1s",
                                         "state_file": state, "max_stale": f"{up_s + 3600}s"},
                              admin={"listen": f"127.0.0.1:{admin}"}),
                     listen=[port2, admin], name="rebooted")
        assert wait_until(lambda: "from the state file" in gw.log_text(), 5), gw.log_text()
        assert "past max_stale, not served" in gw.log_text()
        with pytest.raises(urllib.error.HTTPError) as ready:
            urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=5)
        assert ready.value.code == 503, gw.log_text()
        assert "past max_stale" in ready.value.read().decode()
        assert gw.stop() == 0
    finally:
        zk.start()


def test_state_file_is_only_ever_replaced_whole(zk, kz, zpath, backends, gateway, tmp_path):
    """A reader polling the file while pools change reads a complete file every time (the
    writer renames a finished temporary file over it), and the last one has the last pool."""
    backend = backends("a")
    state = str(tmp_path / "state.json")
    port = free_port()
    # Many instances, so that each write takes a while.
    for i in range(200):
        register(kz, zpath, f"10.1.{i // 250}.{i % 250 + 1}:{1000 + i}".encode())
    gw = gateway(ini(zk, zpath, port, state_file=state), listen=port)
    assert wait_until(lambda: os.path.exists(state), 5)
    reads, bad, stop = [0], [], threading.Event()

    def reader():
        while not stop.is_set():
            try:
                with open(state, "rb") as f:
                    data = f.read()
                doc = json.loads(data)
                assert doc["format"] in (1, 2) and doc["services"] is not None
                reads[0] += 1
            except (ValueError, AssertionError, KeyError) as e:
                bad.append(repr(e)[:200])

    t = threading.Thread(target=reader)
    t.start()
    try:
        nodes = [register(kz, zpath, f"127.0.0.1:{backend.port + 1 + i}".encode())
                 for i in range(20)]
        for node in nodes:
            kz.delete(node)
        last = register(kz, zpath, f"127.0.0.1:{backend.port}".encode())

        def has_last():
            try:
                return any(i.get("znode") == last for i in entry(state, zpath)["instances"])
            except (OSError, ValueError, KeyError):
                return False
        assert wait_until(has_last, 10), "the last change never reached the file"
    finally:
        stop.set()
        t.join()
    assert not bad, f"{len(bad)} partial or broken reads of {reads[0] + len(bad)}: {bad[:3]}"
    assert reads[0] > 0
    assert len(entry(state, zpath)["instances"]) == 201
    assert not temporaries(state), temporaries(state)
    assert gw.stop() == 0
    assert not temporaries(state), temporaries(state)


def test_clean_shutdown_writes_the_file_last(zk, kz, zpath, backends, gateway, tmp_path):
    """A change published just before SIGTERM is in the file after exit, and the file records
    the pools current until the shutdown (max_stale at the next start counts from then)."""
    a, b = backends("a", "b")
    state = str(tmp_path / "state.json")
    register(kz, zpath, f"127.0.0.1:{a.port}".encode())
    port = free_port()
    gw = gateway(ini(zk, zpath, port, state_file=state), listen=port)
    assert set(wait_pool(port, ["a"])) == {"a"}
    assert wait_until(lambda: os.path.exists(state), 5)
    written = entry(state, zpath)["fresh_ms"] / 1000
    # Past the time of that write, so that the shutdown's own is told apart.
    assert wait_until(lambda: time.time() > written + 1.0, 3)
    register(kz, zpath, f"127.0.0.1:{b.port}".encode())
    assert set(wait_pool(port, ["a", "b"])) == {"a", "b"}
    t_stop = time.time()
    assert gw.stop() == 0
    e = entry(state, zpath)
    assert sorted(i["port"] for i in e["instances"]) == sorted([a.port, b.port])
    assert e["fresh_ms"] / 1000 >= t_stop - 0.05, (e["fresh_ms"] / 1000, t_stop)
    assert not temporaries(state)
