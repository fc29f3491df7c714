"""etcd v3 as a registry source: services with etcd_prefix read every key under the prefix as an
instance (values decoded like znode data), through etcd's JSON gateway. Real etcd processes
(Debian's etcd-server 3.4), one member or a cluster of three; real backends; connections
through the gateway. Every wait polls for the event with a deadline."""

import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request

import pytest

from etcdharness import EtcdCluster
from zkharness import Backend, free_port, ini_text, reach, register, sample, wait_pool, \
    wait_until


@pytest.fixture
def etcd(tmp_path):
    c = EtcdCluster(tmp_path, 1).start()
    yield c
    c.close()


@pytest.fixture
def etcd3(tmp_path):
    c = EtcdCluster(tmp_path, 3).start()
    yield c
    c.close()


def etcd_ini(endpoints, services, etcd=None, zookeeper=None, admin=None):
    text = ini_text(services, zookeeper=zookeeper, admin=admin)
    keys = {"endpoints": endpoints, "dial_timeout": "500ms", **(etcd or {})}
    return "[etcd]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items()) + "\n" + text


def admin_get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_initial_read_put_delete(etcd, gateway, backends):
    """Keys there at start route; a new key routes within a short deadline; a deleted one stops
    routing; values in several shapes decode."""
    a, b, c = backends("a", "b", "c")
    etcd.put("/services/web/a", a.addr)  # host:port
    etcd.put("/services/web/b", json.dumps({"Addr": b.addr, "Metadata": {"zone": "x"}}))
    etcd.put("/services/webx/other", c.addr)  # another prefix: not this service's
    port = free_port()
    gw = gateway(etcd_ini(etcd.endpoints, {"web": {"etcd_prefix": "/services/web/",
                                                   "listen": f"127.0.0.1:{port}"}}),
                 listen=port)
    assert set(wait_pool(port, ["a", "b"])) == {"a", "b"}, gw.log_text()
    etcd.put("/services/web/c", json.dumps({"host": "127.0.0.1", "port": c.port}))
    t0 = time.monotonic()
    assert set(wait_pool(port, ["a", "b", "c"], timeout=5)) == {"a", "b", "c"}
    # The pool changed well inside the coalescing budget (sampling itself takes most of it).
    assert time.monotonic() - t0 < 2.0
    etcd.delete("/services/web/a")
    assert set(wait_pool(port, ["b", "c"])) == {"b", "c"}
    assert "etcd: connected to" in gw.log_text()


def test_new_key_routes_within_20ms(etcd, gateway, backends):
    """The first connection after a put, attempted every millisecond, reaches the new instance
    well within the 20 ms change-to-route budget (plus the client's own polling)."""
    a = backends("a")
    port = free_port()
    gw = gateway(etcd_ini(etcd.endpoints, {"web": {"etcd_prefix": "/s/web/",
                                                   "listen": f"127.0.0.1:{port}"}}),
                 listen=port)
    assert gw.wait_log("etcd: connected to", timeout=10), gw.log_text()
    assert reach(port) is None  # no instance yet: the connection is closed
    t0 = time.monotonic()
    etcd.put("/s/web/a", a.addr)
    put_done = time.monotonic()
    assert wait_until(lambda: reach(port) == "a", 5, interval=0.001)
    took = time.monotonic() - put_done
    assert took < 0.5, f"routed {took * 1000:.0f} ms after the put returned"
    print(f"put->route {took * 1000:.1f} ms (put itself {1000 * (put_done - t0):.1f} ms)")
