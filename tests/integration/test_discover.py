"""Zero-conf routes ([discover:NAME]): every child of zk_root is an HTTP service routed by
/<child>/ (stripped) and, with a domain, by host <child>.<domain>; services appear and vanish
with their znodes, without restart; configured [service:] sections win. Real ZooKeeper, real
HTTP backends, the real binary."""

import http.client
import json
import threading
import time

import pytest

from zkharness import free_port, ini_text, register, wait_until


@pytest.fixture
def root(zpath, kz):
    """A discovery root of this test's own, created empty."""
    path = zpath.replace("/endpoints/", "/roots/")
    kz.ensure_path(path)
    return path


def get(port, path, host=None, timeout=5):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path, headers={"Host": host} if host else {})
        r = c.getresponse()
        body = r.read()
        return r.status, (json.loads(body) if r.getheader("Content-Type") ==
                          "application/json" else body)
    finally:
        c.close()


def routed(port, path, host=None):
    """(backend name, path it saw) or (status, None)."""
    status, doc = get(port, path, host)
    if status == 200 and isinstance(doc, dict):
        return doc["name"], doc["path"]
    return status, None


def discover_ini(zk, port, root, services=None, state_file=None, **kv):
    zkconf = {"hosts": zk.hosts, "session_timeout": "4s"}
    if state_file:
        zkconf["state_file"] = state_file
    return ini_text(services or {}, zookeeper=zkconf,
                    discover={"all": {"zk_root": root, "listen": f"127.0.0.1:{port}", **kv}})


def test_children_of_root_are_routed_by_stripped_prefix(zk, kz, root, http_backends, gateway):
    users, orders = http_backends("users", "orders")
    register(kz, f"{root}/users", users.addr.encode())
    register(kz, f"{root}/orders", orders.addr.encode())
    port = free_port()
    gw = gateway(discover_ini(zk, port, root), listen=port)
    assert wait_until(lambda: routed(port, "/users/a?b=1") == ("users", "/a?b=1"), 5), \
        routed(port, "/users/a?b=1")
    assert routed(port, "/orders/x/y") == ("orders", "/x/y")
    assert routed(port, "/users") == ("users", "/")
    assert routed(port, "/users/") == ("users", "/")
    # No host routes without a domain, and nothing for unknown prefixes.
    assert routed(port, "/", host="users.example.com") == (404, None)
    assert routed(port, "/billing/x") == (404, None)
    log = gw.log_text()
    assert "discover all: service users added" in log
    assert "discover all: service orders added" in log


def test_domain_routes_by_host_unstripped(zk, kz, root, http_backends, gateway):
    users, orders = http_backends("users", "orders")
    register(kz, f"{root}/users", users.addr.encode())
    register(kz, f"{root}/orders", orders.addr.encode())
    port = free_port()
    gateway(discover_ini(zk, port, root, domain="Example.COM"), listen=port)
    assert wait_until(lambda: routed(port, "/a/b", host="users.example.com") ==
                      ("users", "/a/b"), 5), routed(port, "/a/b", host="users.example.com")
    assert routed(port, "/users/a", host="ORDERS.example.com:8080") == ("orders", "/users/a")
    # The stripped prefix route works on any host as well.
    assert routed(port, "/users/a", host="www.example.com") == ("users", "/a")
    assert routed(port, "/", host="billing.example.com") == (404, None)


def test_services_appear_and_vanish_without_restart(zk, kz, root, http_backends, gateway):
    users, billing = http_backends("users", "billing")
    register(kz, f"{root}/users", users.addr.encode())
    port = free_port()
    gw = gateway(discover_ini(zk, port, root, domain="example.com"), listen=port)
    assert wait_until(lambda: routed(port, "/users/") == ("users", "/"), 5)
    assert routed(port, "/billing/x") == (404, None)

    node = register(kz, f"{root}/billing", billing.addr.encode())
    assert wait_until(lambda: routed(port, "/billing/x") == ("billing", "/x"), 5), \
        routed(port, "/billing/x")
    assert routed(port, "/", host="billing.example.com") == ("billing", "/")

    # The instance leaves: the service stays (no instance: 503), the route too.
    kz.delete(node)
    assert wait_until(lambda: routed(port, "/billing/x") == (503, None), 5)
    # The service's znode goes: the route goes.
    kz.delete(f"{root}/billing")
    assert wait_until(lambda: routed(port, "/billing/x") == (404, None), 5)
    assert routed(port, "/", host="billing.example.com") == (404, None)
    assert "service billing removed (discover all:" in gw.log_text()
    assert routed(port, "/users/") == ("users", "/")

    # And it can come back under the same name.
    register(kz, f"{root}/billing", billing.addr.encode())
    assert wait_until(lambda: routed(port, "/billing/y") == ("billing", "/y"), 5)


def test_configured_service_wins_over_discovered(zk, kz, root, zpath, http_backends, gateway):
    disc, conf, other = http_backends("discovered", "configured", "other")
    register(kz, f"{root}/users", disc.addr.encode())
    register(kz, f"{root}/shop", disc.addr.encode())
    register(kz, f"{root}/cart", disc.addr.encode())
    port = free_port()
    services = {
        # Same name as a child: the child is not discovered at all.
        "users": {"protocol": "http", "listen": f"127.0.0.1:{port}",
                  "instances": conf.addr, "path_prefix": "/accounts/"},
        # Same route as a discovered one: the configured route wins the tie.
        "shop-front": {"protocol": "http", "listen": f"127.0.0.1:{port}",
                       "instances": other.addr, "path_prefix": "/shop/"},
    }
    gw = gateway(discover_ini(zk, port, root, services=services), listen=port)
    assert wait_until(lambda: routed(port, "/cart/x") == ("discovered", "/x"), 5)
    assert routed(port, "/users/x") == (404, None)
    assert routed(port, "/accounts/x") == ("configured", "/accounts/x")
    assert routed(port, "/shop/x") == ("other", "/shop/x")
    assert "is served by configured service users" in gw.log_text()


def test_request_in_flight_finishes_when_service_vanishes(zk, kz, root, http_backends,
                                                          gateway):
    slow = http_backends("slow")
    node = register(kz, f"{root}/slow", slow.addr.encode())
    port = free_port()
    gw = gateway(discover_ini(zk, port, root), listen=port)
    assert wait_until(lambda: routed(port, "/slow/") == ("slow", "/"), 5)
    result = {}

    def call():
        result["r"] = routed(port, "/slow/slow/1500")

    t = threading.Thread(target=call)
    t.start()
    assert wait_until(lambda: slow.requests >= 2, 2)
    kz.delete(node)
    kz.delete(f"{root}/slow")
    assert wait_until(lambda: "service slow removed" in gw.log_text(), 5)
    t.join(10)
    assert result.get("r") == ("slow", "/slow/1500"), result


def test_root_created_after_start_and_children_skipped_when_unusable(zk, kz, zpath,
                                                                     http_backends, gateway):
    users = http_backends("users")
    root = zpath.replace("/endpoints/", "/late-roots/")
    port = free_port()
    gw = gateway(discover_ini(zk, port, root), listen=port)
    assert wait_until(lambda: "does not exist (yet)" in gw.log_text(), 5)
    assert routed(port, "/users/") == (404, None)
    register(kz, f"{root}/users", users.addr.encode())
    kz.ensure_path(f"{root}/bad name")
    assert wait_until(lambda: routed(port, "/users/a") == ("users", "/a"), 5)
    assert wait_until(lambda: "bad name is not a service name" in gw.log_text(), 5)


def test_discovered_services_start_from_state_file_with_zookeeper_down(
        zk, kz, root, http_backends, gateway, tmp_path):
    users, orders = http_backends("users", "orders")
    register(kz, f"{root}/users", users.addr.encode())
    register(kz, f"{root}/orders", orders.addr.encode())
    state = str(tmp_path / "state.json")
    port = free_port()
    first = gateway(discover_ini(zk, port, root, state_file=state), listen=port, name="first")
    assert wait_until(lambda: routed(port, "/orders/") == ("orders", "/"), 5)

    def saved():
        try:
            with open(state) as f:
                return sorted(e["zk_path"] for e in json.load(f)["services"])
        except (OSError, ValueError, KeyError):
            return None

    assert wait_until(lambda: saved() == sorted([f"{root}/orders", f"{root}/users"]), 5), \
        saved()
    assert first.stop() == 0

    zk.stop()
    try:
        port2 = free_port()
        second = gateway(discover_ini(zk, port2, root, state_file=state), listen=port2,
                         name="second")
        assert routed(port2, "/users/q") == ("users", "/q")
        assert routed(port2, "/orders/q") == ("orders", "/q")
        assert "2 service(s) from the state file" in second.log_text()
    finally:
        zk.start()


def test_removed_service_leaves_the_state_file(zk, kz, root, http_backends, gateway,
                                               tmp_path):
    users, orders = http_backends("users", "orders")
    register(kz, f"{root}/users", users.addr.encode())
    node = register(kz, f"{root}/orders", orders.addr.encode())
    state = str(tmp_path / "state.json")
    port = free_port()
    gateway(discover_ini(zk, port, root, state_file=state), listen=port)

    def saved():
        try:
            with open(state) as f:
                return sorted(e["zk_path"] for e in json.load(f)["services"])
        except (OSError, ValueError, KeyError):
            return None

    assert wait_until(lambda: saved() == sorted([f"{root}/orders", f"{root}/users"]), 5)
    kz.delete(node)
    kz.delete(f"{root}/orders")
    assert wait_until(lambda: saved() == [f"{root}/users"], 5), saved()
