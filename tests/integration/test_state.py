"""Riding out ZooKeeper trouble with a state file and max_stale: the last known pools are
written to [zookeeper] state_file, a gateway started while ZooKeeper is down serves them, and
max_stale bounds how long last known pools serve without ZooKeeper."""

import json
import os
import time

from zkharness import free_port, ini_text, reach, register, sample, wait_pool, wait_until


def ini(zk, zpath, port, **zookeeper):
    return ini_text({"svc": {"zk_path": zpath, "listen": f"127.0.0.1:{port}"}},
                    zookeeper={"hosts": zk.hosts, "session_timeout": "1s", **zookeeper})


def read_state(path):
    with open(path) as f:
        return json.load(f)


def test_state_file_follows_the_pools(zk, kz, zpath, backends, gateway, tmp_path):
    a, b = backends("a", "b")
    state = str(tmp_path / "state.json")
    register(kz, zpath, f"http://127.0.0.1:{a.port}/base".encode())
    port = free_port()
    gateway(ini(zk, zpath, port, state_file=state), listen=port)
    assert set(wait_pool(port, ["a"])) == {"a"}

    def ports_in_file():
        try:
            entry = read_state(state)["services"][zpath]
        except (OSError, ValueError, KeyError):
            return None
        return sorted(i["port"] for i in entry["instances"])

    assert wait_until(lambda: ports_in_file() == [a.port], 3), ports_in_file()
    inst = read_state(state)["services"][zpath]["instances"][0]
    assert inst["format"] == "url" and inst["base_path"] == "/base"
    assert inst["znode"].startswith(zpath + "/")
    register(kz, zpath, f"127.0.0.1:{b.port}".encode())
    assert wait_until(lambda: ports_in_file() == sorted([a.port, b.port]), 3), ports_in_file()
    assert not os.path.exists(state + ".tmp"), "temporary file left behind"


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
    assert len(read_state(state)["services"][zpath]["instances"]) == 2

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
