"""Registry depth: changes of a child's data applied in place, instances taken out of and put
back into rotation by their data, weights, reads that stay O(1) per change with 1,000
instances under one path, and bursts of events coalesced into few pools."""

import json
import re
import time

from zkharness import free_port, ini_text, register, sample, wait_pool, wait_until

POOL_LINE = re.compile(r"service (\S+): pool v(\d+) has (\d+) instances?, (\d+) live.*"
                       r"\[(\d+) lists?, (\d+) data reads?\]")


def pools(gw):
    """Every pool publication in the gateway's log: (version, n, live, lists, reads)."""
    return [tuple(int(x) for x in m.groups()[1:]) for m in POOL_LINE.finditer(gw.log_text())]


def ini(zk, zpath, port, **zookeeper):
    return ini_text({"svc": {"zk_path": zpath, "listen": f"127.0.0.1:{port}"}},
                    zookeeper={"hosts": zk.hosts, "session_timeout": "4s", **zookeeper})


def curator(port, **extra):
    return json.dumps({"name": "svc", "id": f"id-{port}", "address": "127.0.0.1", "port": port,
                       "sslPort": None, "payload": None, "registrationTimeUTC": 1662110433938,
                       "serviceType": "DYNAMIC", **extra}).encode()


def test_changed_address_is_applied_in_place(zk, kz, zpath, backends, gateway):
    a, b = backends("a", "b")
    node = register(kz, zpath, f"127.0.0.1:{a.port}".encode())
    port = free_port()
    gateway(ini(zk, zpath, port), listen=port)
    assert set(wait_pool(port, ["a"])) == {"a"}
    kz.set(node, f"127.0.0.1:{b.port}".encode())  # same znode, new address
    seen = wait_pool(port, ["b"], timeout=10)
    assert set(seen) == {"b"}, f"data change of {node} not applied: {dict(seen)}"


def test_disabled_instance_leaves_rotation_and_comes_back(zk, kz, zpath, backends, gateway):
    a, b = backends("a", "b")
    register(kz, zpath, curator(a.port))
    node_b = register(kz, zpath, curator(b.port))
    port = free_port()
    gateway(ini(zk, zpath, port), listen=port)
    assert set(wait_pool(port, ["a", "b"])) == {"a", "b"}
    kz.set(node_b, curator(b.port, enabled=False))
    assert set(wait_pool(port, ["a"], timeout=10)) == {"a"}, "disabled instance still reached"
    assert set(sample(port, 30)) == {"a"}
    kz.set(node_b, curator(b.port, enabled=True))
    assert set(wait_pool(port, ["a", "b"], timeout=10)) == {"a", "b"}, "re-enabled not reached"


def test_connection_to_disabled_instance_finishes(zk, kz, zpath, backends, gateway):
    import socket
    a, b = backends("a", "b")
    node_a = register(kz, zpath, curator(a.port))
    port = free_port()
    gw = gateway(ini(zk, zpath, port), listen=port)
    assert set(wait_pool(port, ["a"])) == {"a"}
    register(kz, zpath, curator(b.port))
    assert set(wait_pool(port, ["a", "b"])) == {"a", "b"}
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        first = s.recv(64)
        # Whichever instance got it: take that one out of rotation; the connection lives on.
        node = node_a if first == b"a\n" else None
        if node is None:
            node = [p for p in (zpath + "/" + c for c in kz.get_children(zpath))
                    if json.loads(kz.get(p)[0])["port"] == b.port][0]
        published = len(pools(gw))
        kz.set(node, curator(a.port if first == b"a\n" else b.port, enabled=False))
        # Once the pool without it is out (one live instance), not after a guessed delay.
        assert wait_until(lambda: any(p[2] == 1 for p in pools(gw)[published:]), 10), \
            "the disabled instance never left the pool"
        s.sendall(b"still here")
        got = b""
        while len(got) < 10:
            chunk = s.recv(64)
            assert chunk, "established connection cut when its instance left rotation"
            got += chunk
        assert got == b"still here"


def test_child_recreated_in_one_transaction_is_read_again(zk, kz, zpath, backends, gateway):
    # Curator re-registering its id, Dubbo 3, Registrator: the child is deleted and created
    # again under the same name. In one transaction the child list never changes, so only the
    # data watch's deleted event tells that the data is new.
    a, b, c = backends("a", "b", "c")
    node = register(kz, zpath, curator(a.port), name="41d739e4-id")
    port = free_port()
    gw = gateway(ini(zk, zpath, port), listen=port)
    assert set(wait_pool(port, ["a"])) == {"a"}
    t = kz.transaction()
    t.delete(node)
    t.create(node, curator(b.port), ephemeral=True)
    assert all(r is True or r == node for r in t.commit()), "transaction failed"
    seen = wait_pool(port, ["b"], timeout=10)
    assert set(seen) == {"b"}, f"re-created child still routed to its old data: {dict(seen)}"
    # The re-created znode is watched: its later changes are seen too.
    kz.set(node, curator(c.port))
    seen = wait_pool(port, ["c"], timeout=10)
    assert set(seen) == {"c"}, f"change of the re-created child not seen: {dict(seen)}"
    assert "cannot" not in gw.log_text()


def test_child_recreated_beside_a_removal_keeps_its_data_until_read(zk, kz, zpath, backends,
                                                                   gateway):
    # One transaction re-creates a child and deletes another: the list that follows both
    # removes one (published at once, coalesce_window = 0) and reads the other again. Until
    # that read is back the re-created child serves with its last data, never with none.
    a, b, c = backends("a", "b", "c")
    node = register(kz, zpath, curator(a.port), name="41d739e4-id")
    other = register(kz, zpath, curator(c.port), name="other-id")
    port = free_port()
    gw = gateway(ini(zk, zpath, port, coalesce_window="0ms"), listen=port)
    assert set(wait_pool(port, ["a", "c"])) == {"a", "c"}
    t = kz.transaction()
    t.delete(node)
    t.create(node, curator(b.port), ephemeral=True)
    t.delete(other)
    t.commit()
    assert set(wait_pool(port, ["b"], timeout=10)) == {"b"}
    lines = [line for line in gw.log_text().splitlines() if " pool v" in line]
    ports = {str(x.port) for x in (a, b, c)}
    assert len(lines) >= 2, lines
    for line in lines:
        listed = re.search(r" live: (.*?) \[", line).group(1).split()
        assert all(x.split("(")[0].rsplit(":", 1)[-1] in ports for x in listed), line


def test_child_recreated_after_deletion_is_read_again(zk, kz, zpath, backends, gateway):
    # The same with two separate operations, one after the other: the gateway may list the
    # children between them or not; either way the new data is routed and then watched.
    a, b, c = backends("a", "b", "c")
    node = register(kz, zpath, curator(a.port), name="41d739e4-id")
    port = free_port()
    gateway(ini(zk, zpath, port), listen=port)
    assert set(wait_pool(port, ["a"])) == {"a"}
    kz.delete(node)
    kz.create(node, curator(b.port), ephemeral=True)
    assert set(wait_pool(port, ["b"], timeout=10)) == {"b"}
    kz.set(node, curator(c.port))
    assert set(wait_pool(port, ["c"], timeout=10)) == {"c"}


def test_read_lost_with_the_connection_is_read_again(zk, kz, zpath, backends, gateway):
    # The connection breaks while the read of a changed child is out: that read fails
    # (ZCONNECTIONLOSS) and its data watch was never set. After the reconnection (same
    # session) the child must be read again, not left with its old data.
    from zkcut import OP_GETDATA, ZkCutRelay
    a, b, c = backends("a", "b", "c")
    node = register(kz, zpath, curator(a.port), name="41d739e4-id")
    relay = ZkCutRelay(zk.port)
    try:
        port = free_port()
        conf = ini_text({"svc": {"zk_path": zpath, "listen": f"127.0.0.1:{port}"}},
                        zookeeper={"hosts": relay.hosts, "session_timeout": "10s"})
        gateway(conf, listen=port)
        assert set(wait_pool(port, ["a"])) == {"a"}
        relay.cut_at(OP_GETDATA)
        kz.set(node, curator(b.port))
        assert wait_until(lambda: relay.cuts == 1, 10), "the gateway never read the change"
        seen = wait_pool(port, ["b"], timeout=15)
        assert set(seen) == {"b"}, f"read lost with the connection not repeated: {dict(seen)}"
        kz.set(node, curator(c.port))
        seen = wait_pool(port, ["c"], timeout=10)
        assert set(seen) == {"c"}, f"change after the lost read not seen: {dict(seen)}"
    finally:
        relay.close()


def test_identical_data_rewritten_publishes_nothing(zk, kz, zpath, backends, gateway):
    # A registrar re-asserting its registration: set() with the same bytes bumps the data
    # version and fires the data watch; the child is read again, and nothing that serves
    # changed, so no pool is published.
    a, b = backends("a", "b")
    node_a = register(kz, zpath, curator(a.port))
    node_b = register(kz, zpath, curator(b.port))
    port = free_port()
    conf = ini_text({"svc": {"zk_path": zpath, "listen": f"127.0.0.1:{port}"}},
                    zookeeper={"hosts": zk.hosts, "session_timeout": "4s",
                               "coalesce_window": "0ms"},
                    proxy={"log_level": "debug"})
    gw = gateway(conf, listen=port)
    assert set(wait_pool(port, ["a", "b"])) == {"a", "b"}
    before = len(pools(gw))

    def reads_of_a():  # one debug line per read of a's data
        return gw.log_text().count(f"{node_a}: curator instance")

    for version in (1, 2, 3):
        n = reads_of_a()
        kz.set(node_a, curator(a.port))
        # Read before the next set: a set while the data watch is not re-armed fires none.
        assert wait_until(lambda: reads_of_a() > n, 10), f"rewrite {version} never read"
    assert kz.get(node_a)[1].version == 3
    # Then a real change: its pool holds the reads of the rewrites, which published nothing.
    kz.set(node_b, curator(b.port, enabled=False))
    assert wait_until(lambda: len(pools(gw)) > before, 10), "the real change not published"
    assert set(wait_pool(port, ["a"], timeout=10)) == {"a"}
    published = pools(gw)[before:]
    assert len(published) == 1, f"identical rewrites published pools: {published}"
    assert published[0][2] == 1 and published[0][4] == 4, published  # 1 live, 4 reads


def test_bad_weight_serves_with_default_weight_and_a_warning(zk, kz, zpath, backends, gateway):
    a, b = backends("a", "b")
    register(kz, zpath, b'{"host":"127.0.0.1","port":%d,"weight":NaN}' % a.port)
    register(kz, zpath, curator(b.port, payload={"metadata": {"weight": "1.5"}}))
    port = free_port()
    gw = gateway(ini(zk, zpath, port), listen=port)
    assert set(wait_pool(port, ["a", "b"])) == {"a", "b"}, gw.log_text()
    log = gw.log_text()
    assert "NaN" in log and "default weight 1 used" in log, log
    assert '"1.5"' in log, log


def test_weights_shape_the_share(zk, kz, zpath, backends, gateway):
    a, b = backends("a", "b")
    register(kz, zpath, f"tcp://127.0.0.1:{a.port}?weight=1".encode())
    register(kz, zpath, f"tcp://127.0.0.1:{b.port}?weight=4".encode())
    port = free_port()
    gateway(ini(zk, zpath, port), listen=port)
    assert set(wait_pool(port, ["a", "b"])) == {"a", "b"}
    seen = sample(port, 250)
    # Expected 50 : 200. Binomial sd for a is ~6.3: 20..85 is beyond 4.5 sd either way.
    assert 20 <= seen["a"] <= 85, f"weight 1 vs 4 gave {dict(seen)}"
    assert seen["a"] + seen["b"] == 250


def test_thousand_instances_one_change_costs_one_read(zk, kz, zpath, backends, gateway):
    live = backends("live")
    kz.ensure_path(zpath)
    t = kz.transaction()
    n = 0
    for i in range(1000):
        # Persistent, deleted at the end: their addresses are never connected to. On
        # 127.0.0.2, so that the live backend's port (free_port: 10000 and up) can never make
        # its address one of theirs: the pool keeps one entry per address, and that
        # collision, one run in twenty, was this test's flake (issue 12 point 17).
        t.create(f"{zpath}/i{i:04d}", f"127.0.0.2:{20000 + i}".encode())
        n += 1
        if n == 200:
            t.commit()
            t, n = kz.transaction(), 0
    if n:
        t.commit()
    try:
        # Deadlines, not delays: generous enough for a ThreadSanitizer build on a loaded
        # 2-core machine (5 s for the one change was not), bounded by the test's time limit.
        port = free_port()
        t0 = time.monotonic()
        gw = gateway(ini(zk, zpath, port), listen=port)
        assert wait_until(lambda: any(p[1] == 1000 for p in pools(gw)), 20), pools(gw)
        sync_s = time.monotonic() - t0
        first = [p for p in pools(gw) if p[1] == 1000][0]
        print(f"first sync of 1,000 instances: {sync_s:.2f} s, "
              f"{first[3]} list(s), {first[4]} data reads")
        assert first[4] == 1000, f"first sync read {first[4]} children, expected 1000"

        before = len(pools(gw))
        log_at = len(gw.log_text())
        node = register(kz, zpath, f"127.0.0.1:{live.port}".encode())
        assert wait_until(lambda: len(pools(gw)) > before, 15), (
            f"new instance {node} not published; ZooKeeper lists "
            f"{len(kz.get_children(zpath))} children; the gateway logged since: "
            f"{gw.log_text()[log_at:][:4000]!r}")
        change = pools(gw)[before]
        print(f"one added instance: {change[3]} list(s), {change[4]} data read(s)")
        assert change[1] == 1001
        assert change[4] == 1, f"adding one instance cost {change[4]} data reads"
        assert change[3] == 1, f"adding one instance cost {change[3]} lists"
    finally:
        for c in kz.get_children(zpath):
            kz.delete(f"{zpath}/{c}")


def test_burst_of_registrations_is_coalesced(zk, kz, zpath, backends, gateway):
    kz.ensure_path(zpath)
    port = free_port()
    # A window wide enough that a loaded machine (a slow ZooKeeper, a ThreadSanitizer
    # gateway) still sees the 60 creations inside one or two of them.
    gw = gateway(ini(zk, zpath, port, coalesce_window="1s"), listen=port)
    assert wait_until(lambda: len(pools(gw)) >= 1, 15)  # the empty pool of the first sync
    before = len(pools(gw))
    results = [kz.create_async(f"{zpath}/b{i:03d}", f"127.0.0.1:{21000 + i}".encode(),
                               ephemeral=True) for i in range(60)]
    for r in results:
        r.get(timeout=10)
    assert wait_until(lambda: pools(gw) and pools(gw)[-1][1] == 60, 15), pools(gw)
    published = len(pools(gw)) - before
    assert published <= 3, f"60 registrations in a burst made {published} pools"


# ---- every common registry format, through a real ZooKeeper ---------------------------------

import base64  # noqa: E402
import urllib.parse  # noqa: E402

import pytest  # noqa: E402


def serverset(port, status="ALIVE", extra_port=None):
    doc = {"serviceEndpoint": {"host": "127.0.0.1", "port": port},
           "additionalEndpoints": {"http": {"host": "127.0.0.1", "port": port}},
           "status": status, "shard": 0, "metadata": {"k": "v"}}
    if extra_port:
        doc["additionalEndpoints"]["admin"] = {"host": "127.0.0.1", "port": extra_port}
    return json.dumps(doc).encode()


def nerve(port, **extra):
    return json.dumps({"host": "127.0.0.1", "port": port, "name": "i-0abc123", "weight": 10,
                       "haproxy_server_options": "backup", "labels": {"az": "us-east-1a"},
                       **extra}).encode()


def spring_cloud(port, status="UP"):
    return json.dumps({
        "name": "cloud-provider-payment", "id": "41d739e4-2452-4137-bfb2-c0cf75d5e802",
        "address": "127.0.0.1", "port": port, "sslPort": None,
        "payload": {"@class": "org.springframework.cloud.zookeeper.discovery.ZookeeperInstance",
                    "id": "application-1", "name": "cloud-provider-payment",
                    "metadata": {"instance_status": status}},
        "registrationTimeUTC": 1662110433938, "serviceType": "DYNAMIC",
        "uriSpec": {"parts": [{"value": "scheme", "variable": True},
                              {"value": "://", "variable": False},
                              {"value": "address", "variable": True},
                              {"value": ":", "variable": False},
                              {"value": "port", "variable": True}]}}).encode()


def registrator(port):
    return json.dumps({"Name": "web", "IP": "127.0.0.1", "PublicPort": port, "PrivatePort": 80,
                       "ContainerID": "c0ffee", "Tags": ["prod"], "Attrs": {}}).encode()


def nerve_name(port):
    text = base64.urlsafe_b64encode(json.dumps({"host": "127.0.0.1", "port": port}).encode())
    text = text.decode()
    return f"base64_{len(text)}_{text}_0000000001"


def dubbo_name(port):
    url = (f"dubbo://127.0.0.1:{port}/com.example.DemoService?anyhost=true&application=demo"
           f"&methods=sayHello")
    return urllib.parse.quote(url, safe="")


# (data, child name) for a backend on port p
FORMATS = {
    "serverset": lambda p: (serverset(p), "member_0000000001"),
    "nerve_json": lambda p: (nerve(p), None),
    "nerve_base64_name": lambda p: (b"", nerve_name(p)),
    "registrator": lambda p: (registrator(p), f"127.0.0.1:{p}"),
    "dubbo_provider_name": lambda p: (b"", dubbo_name(p)),
    "spring_cloud_curator": lambda p: (spring_cloud(p), None),
}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_reads_registry_format(zk, kz, zpath, backends, gateway, fmt):
    b = backends("b")
    data, name = FORMATS[fmt](b.port)
    register(kz, zpath, data, name=name)
    port = free_port()
    gw = gateway(ini(zk, zpath, port), listen=port)
    seen = wait_pool(port, ["b"])
    assert set(seen) == {"b"}, f"{fmt}: instance not reached: {dict(seen)}\n{gw.log_text()}"
    if fmt in ("nerve_base64_name", "dubbo_provider_name"):
        assert pools(gw)[-1][4] == 0, "an instance named by its znode was read for its data"


def test_serverset_reads_member_nodes_and_alive_only(zk, kz, zpath, backends, gateway):
    a, b, c = backends("a", "b", "c")
    register(kz, zpath, serverset(a.port), name="member_0000000001")
    register(kz, zpath, serverset(b.port, status="STOPPING"), name="member_0000000002")
    register(kz, zpath, serverset(c.port), name="leader_0000000003")  # not a member
    port = free_port()
    gateway(ini(zk, zpath, port), listen=port)
    assert set(wait_pool(port, ["a"])) == {"a"}
    assert set(sample(port, 30)) == {"a"}


def test_serverset_endpoint_selects_additional_endpoint(zk, kz, zpath, backends, gateway):
    main, admin = backends("main", "admin")
    register(kz, zpath, serverset(main.port, extra_port=admin.port), name="member_0000000001")
    port = free_port()
    conf = ini_text({"svc": {"zk_path": zpath, "listen": f"127.0.0.1:{port}",
                             "endpoint": "admin"}},
                    zookeeper={"hosts": zk.hosts, "session_timeout": "4s"})
    gateway(conf, listen=port)
    assert set(wait_pool(port, ["admin"])) == {"admin"}


def test_spring_cloud_status_takes_instance_out(zk, kz, zpath, backends, gateway):
    a, b = backends("a", "b")
    register(kz, zpath, spring_cloud(a.port))
    node_b = register(kz, zpath, spring_cloud(b.port))
    port = free_port()
    gateway(ini(zk, zpath, port), listen=port)
    assert set(wait_pool(port, ["a", "b"])) == {"a", "b"}
    kz.set(node_b, spring_cloud(b.port, status="OUT_OF_SERVICE"))
    assert set(wait_pool(port, ["a"], timeout=10)) == {"a"}


def test_nerve_weights_and_down(zk, kz, zpath, backends, gateway):
    a, b, c = backends("a", "b", "c")
    register(kz, zpath, nerve(a.port, weight=1))
    register(kz, zpath, nerve(b.port, weight=4))
    register(kz, zpath, nerve(c.port, down=True))
    port = free_port()
    gateway(ini(zk, zpath, port), listen=port)
    assert set(wait_pool(port, ["a", "b"])) == {"a", "b"}
    seen = sample(port, 250)
    assert "c" not in seen, "a Nerve instance marked down was reached"
    assert 20 <= seen["a"] <= 85, f"Nerve weight 1 vs 4 gave {dict(seen)}"
