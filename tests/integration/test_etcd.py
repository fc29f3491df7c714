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

from etcdharness import EtcdCluster
from zkharness import Backend, free_port, ini_text, reach, register, sample, wait_pool, \
    wait_until


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


def test_lease_expiry_removes_instance(etcd, gateway, backends):
    """A key under a lease (the registration recipe: TTL plus keep-alive) goes when the lease
    expires without keep-alives, and the instance stops routing."""
    a, b = backends("a", "b")
    lease = etcd.lease_grant(2)
    etcd.put("/l/web/a", a.addr, lease=lease)
    etcd.put("/l/web/b", b.addr)
    port = free_port()
    gateway(etcd_ini(etcd.endpoints, {"web": {"etcd_prefix": "/l/web/",
                                              "listen": f"127.0.0.1:{port}"}}), listen=port)
    assert set(wait_pool(port, ["a", "b"])) == {"a", "b"}
    # etcd expires a 2 s lease within a few seconds (its minimum TTL is the election time).
    assert set(wait_pool(port, ["b"], timeout=15)) == {"b"}


def test_compaction_rereads(etcd, gateway, backends, tmp_path):
    """While the gateway's connection is cut, keys change and etcd compacts past the revision
    the gateway had: when the connection comes back, its watch is refused as compacted and the
    prefix is read again whole, so the changes made in the gap are all there."""
    from etcdharness import Relay
    a, b, c = backends("a", "b", "c")
    etcd.put("/c/web/a", a.addr)
    etcd.put("/c/web/b", b.addr)
    relay = Relay(etcd.members[0].client_port)
    port, admin = free_port(), free_port()
    gw = gateway(etcd_ini(relay.url, {"web": {"etcd_prefix": "/c/web/",
                                               "listen": f"127.0.0.1:{port}"}},
                          admin={"listen": f"127.0.0.1:{admin}"}), listen=port)
    try:
        assert set(wait_pool(port, ["a", "b"])) == {"a", "b"}
        relay.cut()
        assert gw.wait_log("etcd: lost the connection", timeout=5), gw.log_text()
        etcd.delete("/c/web/a")
        etcd.put("/c/web/c", c.addr)
        rev = etcd.put("/c/other", "x")
        etcd.compact(rev)
        # The last known pool serves meanwhile.
        assert set(sample(port, 8)) == {"a", "b"}
        relay.mend()
        assert set(wait_pool(port, ["b", "c"], timeout=10)) == {"b", "c"}, gw.log_text()
        assert "is compacted" in gw.log_text()
        metrics = admin_get(admin, "/metrics")[1]
        assert "zkgate_etcd_rereads_total 1" in metrics, metrics
        assert "zkgate_etcd_connected 1" in metrics
    finally:
        relay.close()


def test_failover_resumes_with_nothing_lost(etcd3, gateway, backends):
    """The member zkgate watches through is killed: it moves to the next endpoint and resumes
    from the last revision it applied, so keys changed while it moved are all applied."""
    a, b, c = backends("a", "b", "c")
    etcd3.put("/f/web/a", a.addr)
    port, admin = free_port(), free_port()
    gw = gateway(etcd_ini(etcd3.endpoints, {"web": {"etcd_prefix": "/f/web/",
                                                    "listen": f"127.0.0.1:{port}"}},
                          admin={"listen": f"127.0.0.1:{admin}"}), listen=port)
    assert set(wait_pool(port, ["a"])) == {"a"}
    used = json.loads(admin_get(admin, "/services")[1])["etcd"]["endpoint"]
    victim = next(m for m in etcd3.members if m.url == used)
    victim.kill()
    etcd3.put("/f/web/b", b.addr)
    etcd3.put("/f/web/c", c.addr)
    etcd3.delete("/f/web/a")
    assert set(wait_pool(port, ["b", "c"], timeout=10)) == {"b", "c"}, gw.log_text()
    st = json.loads(admin_get(admin, "/services")[1])
    assert st["etcd"]["endpoint"] != used
    assert st["etcd"]["state"] == "connected"
    metrics = admin_get(admin, "/metrics")[1]
    assert "zkgate_etcd_failovers_total 0" not in metrics
    assert "zkgate_etcd_rereads_total 0" in metrics  # resumed, not read again


def test_leader_killed_under_traffic(etcd3, gateway, backends):
    """A 3-member cluster loses its leader while clients connect through the gateway in a
    loop: no connection to a live instance fails, and a key put after the election routes."""
    a, b, c = backends("a", "b", "c")
    etcd3.put("/t/web/a", a.addr)
    etcd3.put("/t/web/b", b.addr)
    port = free_port()
    # The leader first: the gateway's stream is on the member that is killed.
    leader = wait_until(etcd3.leader, 5)
    assert leader
    endpoints = ",".join([leader.url] + [m.url for m in etcd3.members if m is not leader])
    gw = gateway(etcd_ini(endpoints, {"web": {"etcd_prefix": "/t/web/",
                                                    "listen": f"127.0.0.1:{port}"}}),
                 listen=port)
    assert set(wait_pool(port, ["a", "b"])) == {"a", "b"}
    stop = threading.Event()
    results = []

    def client_loop():
        while not stop.is_set():
            try:
                results.append(reach(port, timeout=2))
            except OSError as e:
                results.append(f"error: {e}")

    threads = [threading.Thread(target=client_loop) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        assert wait_until(lambda: len(results) > 20, 5)  # traffic flowing before the kill
        assert etcd3.leader() is leader
        leader.kill()
        assert wait_until(lambda: etcd3.leader() not in (None, leader), 15)
        etcd3.put("/t/web/c", c.addr)
        assert wait_until(lambda: "c" in results[-20:], 10), gw.log_text()
        assert "etcd: lost the connection" in gw.log_text()
    finally:
        stop.set()
        for t in threads:
            t.join()
    bad = [r for r in results if r not in ("a", "b", "c")]
    assert len(results) > 50
    assert not bad, f"{len(bad)} failed of {len(results)}: {bad[:5]}"
    print(f"{len(results)} connections through a leader change, none failed")


def test_auth(etcd, gateway, backends):
    """With etcd auth on, username and password get a token that every call carries; a wrong
    password is a clear error in the log and /ready says not ready."""
    a = backends("a")
    etcd.put("/a/web/a", a.addr)
    etcd.enable_auth("root", "s3cret")
    port, port2, admin = free_port(), free_port(), free_port()
    svc = {"etcd_prefix": "/a/web/"}
    gateway(etcd_ini(etcd.endpoints, {"web": {**svc, "listen": f"127.0.0.1:{port}"}},
                     etcd={"username": "root", "password": "s3cret"}), listen=port)
    assert set(wait_pool(port, ["a"])) == {"a"}
    bad = gateway(etcd_ini(etcd.endpoints, {"web": {**svc, "listen": f"127.0.0.1:{port2}"}},
                           etcd={"username": "root", "password": "wrong"},
                           admin={"listen": f"127.0.0.1:{admin}"}), listen=port2)
    assert bad.wait_log("authentication as 'root' refused", timeout=10), bad.log_text()
    assert "wrong" not in bad.log_text()  # the password is never logged
    code, body = admin_get(admin, "/ready")
    assert code == 503 and "etcd" in body and "authentication" in body, (code, body)
    assert reach(port2) is None


def test_permission_denied_prefix(etcd, gateway, backends):
    """A user that may read one prefix and not another: the refused prefix is an error in the
    log, tried again later, and does not hold up the other, which routes and follows
    changes."""
    a, b = backends("a", "b")
    etcd.put("/p/ok/a", a.addr)
    etcd.put("/p/no/b", b.addr)
    etcd.enable_auth("root", "s3cret")
    etcd.ctl("role", "add", "reader", user="root:s3cret")
    etcd.ctl("role", "grant-permission", "reader", "read", "/p/ok/", "--prefix=true",
             user="root:s3cret")
    etcd.ctl("user", "add", "gw:pw", user="root:s3cret")
    etcd.ctl("user", "grant-role", "gw", "reader", user="root:s3cret")
    pok, pno = free_port(), free_port()
    gw = gateway(etcd_ini(etcd.endpoints,
                          {"no": {"etcd_prefix": "/p/no/", "listen": f"127.0.0.1:{pno}"},
                           "ok": {"etcd_prefix": "/p/ok/", "listen": f"127.0.0.1:{pok}"}},
                          etcd={"username": "gw", "password": "pw"}), listen=[pok, pno])
    assert set(wait_pool(pok, ["a"])) == {"a"}, gw.log_text()
    assert gw.wait_log("reading /p/no/ refused", timeout=5), gw.log_text()
    assert "permission denied" in gw.log_text()
    assert reach(pno) is None
    etcd.put("/p/ok/b", b.addr)
    assert set(wait_pool(pok, ["a", "b"])) == {"a", "b"}, gw.log_text()


def test_mixed_zookeeper_and_etcd(etcd, zk, kz, zpath, gateway, backends):
    """One ZooKeeper service and one etcd service in one file both route; /services says
    where each pool came from."""
    a, b = backends("a", "b")
    register(kz, zpath, a.addr.encode())
    etcd.put("/m/web/b", b.addr)
    pz, pe, admin = free_port(), free_port(), free_port()
    gw = gateway(etcd_ini(etcd.endpoints,
                          {"zsvc": {"zk_path": zpath, "listen": f"127.0.0.1:{pz}"},
                           "esvc": {"etcd_prefix": "/m/web/", "listen": f"127.0.0.1:{pe}"}},
                          zookeeper={"hosts": zk.hosts},
                          admin={"listen": f"127.0.0.1:{admin}"}), listen=[pz, pe])
    assert set(wait_pool(pz, ["a"])) == {"a"}
    assert set(wait_pool(pe, ["b"])) == {"b"}
    assert wait_until(lambda: admin_get(admin, "/ready")[0] == 200, 5), gw.log_text()
    st = json.loads(admin_get(admin, "/services")[1])
    svcs = {s["name"]: s for s in st["services"]}
    assert svcs["zsvc"]["source"] == "zookeeper"
    assert svcs["esvc"]["source"] == "etcd"
    assert svcs["esvc"]["etcd_prefix"] == "/m/web/"
    inst = svcs["esvc"]["instances"][0]
    assert inst["key"] == "/m/web/b" and inst["revision"] > 0
    zinst = svcs["zsvc"]["instances"][0]
    assert zinst["znode"].startswith(zpath) and "data_version" in zinst
    metrics = admin_get(admin, "/metrics")[1]
    assert 'zkgate_service_source{service="esvc",source="etcd",path="/m/web/"} 1' in metrics
    assert "zkgate_etcd_connected 1" in metrics


def test_reload_adds_etcd_service(etcd, gateway, backends):
    """A reload that adds the first etcd service starts the etcd source; one that changes
    [etcd] afterwards is rejected (a restart is needed)."""
    a, b = backends("a", "b")
    etcd.put("/r/web/b", b.addr)
    p1, p2 = free_port(), free_port()
    first = ini_text({"static": {"instances": a.addr, "listen": f"127.0.0.1:{p1}"}})
    gw = gateway(first, listen=p1)
    with open(gw.ini_path, "w") as f:
        f.write(etcd_ini(etcd.endpoints,
                         {"static": {"instances": a.addr, "listen": f"127.0.0.1:{p1}"},
                          "web": {"etcd_prefix": "/r/web/", "listen": f"127.0.0.1:{p2}"}}))
    gw.proc.send_signal(signal.SIGHUP)
    gw.wait_listening(p2)
    assert set(wait_pool(p2, ["b"])) == {"b"}, gw.log_text()
    with open(gw.ini_path, "w") as f:
        f.write(etcd_ini(etcd.endpoints,
                         {"static": {"instances": a.addr, "listen": f"127.0.0.1:{p1}"},
                          "web": {"etcd_prefix": "/r/web/", "listen": f"127.0.0.1:{p2}"}},
                         etcd={"dial_timeout": "1s"}))
    gw.proc.send_signal(signal.SIGHUP)
    assert gw.wait_log("[etcd] changed: that needs a restart", timeout=5), gw.log_text()
    assert set(wait_pool(p2, ["b"])) == {"b"}
    # A second prefix joins the running stream (read, then the stream restarts with both),
    # and the first keeps following changes, also those made meanwhile.
    p3 = free_port()
    with open(gw.ini_path, "w") as f:
        f.write(etcd_ini(etcd.endpoints,
                         {"static": {"instances": a.addr, "listen": f"127.0.0.1:{p1}"},
                          "web": {"etcd_prefix": "/r/web/", "listen": f"127.0.0.1:{p2}"},
                          "api": {"etcd_prefix": "/r/api/", "listen": f"127.0.0.1:{p3}"}}))
    etcd.put("/r/api/a", a.addr)
    gw.proc.send_signal(signal.SIGHUP)
    etcd.put("/r/web/a", a.addr)
    gw.wait_listening(p3)
    assert set(wait_pool(p3, ["a"])) == {"a"}, gw.log_text()
    assert set(wait_pool(p2, ["a", "b"])) == {"a", "b"}, gw.log_text()
    etcd.delete("/r/web/b")
    etcd.put("/r/api/b", b.addr)
    assert set(wait_pool(p2, ["a"])) == {"a"}
    assert set(wait_pool(p3, ["a", "b"])) == {"a", "b"}


def test_state_file_cold_start(etcd, gateway, backends, tmp_path):
    """The state file remembers etcd pools; a gateway started while etcd is down serves them,
    and picks up etcd's word once it is back."""
    a, b = backends("a", "b")
    etcd.put("/sf/web/a", a.addr)
    state = str(tmp_path / "etcd-state.json")
    port = free_port()
    text = etcd_ini(etcd.endpoints, {"web": {"etcd_prefix": "/sf/web/",
                                             "listen": f"127.0.0.1:{port}"}},
                    etcd={"state_file": state})
    gw = gateway(text, listen=port)
    assert set(wait_pool(port, ["a"])) == {"a"}
    assert wait_until(lambda: os.path.exists(state) and "/sf/web/" in open(state).read(), 5)
    assert gw.stop() == 0
    etcd.members[0].stop()
    gw2 = gateway(text, listen=port, name="cold")
    assert set(wait_pool(port, ["a"])) == {"a"}, gw2.log_text()
    etcd.restart(etcd.members[0])
    etcd.wait_healthy()
    etcd.put("/sf/web/b", b.addr)
    assert set(wait_pool(port, ["a", "b"], timeout=10)) == {"a", "b"}, gw2.log_text()


def test_silent_member_is_left(etcd, gateway, backends):
    """The member in use goes silent without closing anything (a partition): the periodic
    quorum probe times out and the gateway moves to the next endpoint, where changes route."""
    from etcdharness import Relay
    a, b = backends("a", "b")
    etcd.put("/q/web/a", a.addr)
    relay = Relay(etcd.members[0].client_port)
    port = free_port()
    # Through the relay first, then straight to the same member.
    gw = gateway(etcd_ini(f"{relay.url},{etcd.members[0].url}",
                          {"web": {"etcd_prefix": "/q/web/", "listen": f"127.0.0.1:{port}"}}),
                 listen=port)
    try:
        assert set(wait_pool(port, ["a"])) == {"a"}
        relay.freeze()
        etcd.put("/q/web/b", b.addr)
        # Probe every 5 s, timing out after 2 x dial_timeout (1 s).
        assert set(wait_pool(port, ["a", "b"], timeout=15)) == {"a", "b"}, gw.log_text()
        assert "checking on " + relay.url in gw.log_text()
    finally:
        relay.close()


def test_max_stale(etcd, gateway, backends):
    """Past [etcd] max_stale without etcd, the last known pool stops serving and /ready says
    why; when etcd is back, the pool serves again."""
    from etcdharness import Relay
    a = backends("a")
    etcd.put("/ms/web/a", a.addr)
    relay = Relay(etcd.members[0].client_port)
    port, admin = free_port(), free_port()
    gw = gateway(etcd_ini(relay.url, {"web": {"etcd_prefix": "/ms/web/",
                                               "listen": f"127.0.0.1:{port}"}},
                          etcd={"max_stale": "1s"}, admin={"listen": f"127.0.0.1:{admin}"}),
                 listen=port)
    try:
        assert set(wait_pool(port, ["a"])) == {"a"}
        relay.cut()
        assert wait_until(lambda: reach(port) is None, 5), gw.log_text()
        assert "past max_stale" in gw.log_text()
        code, body = admin_get(admin, "/ready")
        assert code == 503 and "etcd" in body and "max_stale" in body, (code, body)
        relay.mend()
        assert set(wait_pool(port, ["a"], timeout=10)) == {"a"}, gw.log_text()
        assert wait_until(lambda: admin_get(admin, "/ready")[0] == 200, 5)
    finally:
        relay.close()


def test_tls_to_etcd(tmp_path, gateway, backends):
    """https:// endpoints: etcd's certificate is checked against [etcd] ca, and zkgate shows
    its own (cert, key) to an etcd that asks for client certificates. Without the client
    certificate etcd refuses the handshake: a clear error, no pool."""
    from test_upstream_tls import UpstreamPki
    (tmp_path / "pki").mkdir()
    pki = UpstreamPki(tmp_path / "pki")
    server = pki.leaf_san("etcd", "localhost", "DNS:localhost,IP:127.0.0.1")
    client = pki.leaf_san("zkgate", "zkgate", "DNS:zkgate")
    ca = pki.path(pki.ca + ".crt")
    cluster = EtcdCluster(tmp_path, 1, tls=(server[0], server[1], ca)).start()
    try:
        a = backends("a")
        cluster.put("/tls/web/a", a.addr)
        port, port2 = free_port(), free_port()
        svc = {"etcd_prefix": "/tls/web/"}
        gw = gateway(etcd_ini(cluster.endpoints, {"web": {**svc, "listen": f"127.0.0.1:{port}"}},
                              etcd={"ca": ca, "cert": client[0], "key": client[1]}),
                     listen=port)
        assert set(wait_pool(port, ["a"])) == {"a"}, gw.log_text()
        bad = gateway(etcd_ini(cluster.endpoints,
                               {"web": {**svc, "listen": f"127.0.0.1:{port2}"}},
                               etcd={"ca": ca}), listen=port2)
        assert bad.wait_log("TLS: the server ended the connection after the handshake",
                            timeout=5), bad.log_text()
        assert reach(port2) is None
    finally:
        cluster.close()


def test_discover_etcd_root(etcd, gateway, http_backends):
    """[discover:NAME] etcd_root: every NAME with keys under ROOT/NAME/ is an HTTP service
    routed by /NAME/, its instances the keys under ROOT/NAME/; services appear and vanish with
    their keys, and a key right under the root names none."""
    from test_discover import routed
    users, orders = http_backends("users", "orders")
    etcd.put("/d/users/i1", users.addr)
    etcd.put("/d/stray", "not a service")
    port = free_port()
    gw = gateway(etcd_ini(etcd.endpoints, {}) +
                 f"\n[discover:all]\netcd_root = /d\nlisten = 127.0.0.1:{port}\n"
                 "protocol = http\n", listen=port)
    assert wait_until(lambda: routed(port, "/users/a") == ("users", "/a"), 5), gw.log_text()
    assert routed(port, "/stray/") == (404, None)
    etcd.put("/d/orders/i1", orders.addr)
    assert wait_until(lambda: routed(port, "/orders/x") == ("orders", "/x"), 5), gw.log_text()
    etcd.delete("/d/users/i1")
    assert wait_until(lambda: routed(port, "/users/a")[0] == 404, 5), gw.log_text()
    assert routed(port, "/orders/x") == ("orders", "/x")


def test_bad_endpoints_are_skipped(etcd, gateway, backends):
    """Endpoints that answer something else than etcd (a server that is not HTTP, an HTTP
    server with a body that is not etcd's JSON) are errors in the log and the next endpoint is
    tried; nothing crashes, and the real etcd after them is used."""
    import http.server
    a = backends("a")
    etcd.put("/bad/web/a", a.addr)
    junk = Backend("not-http")  # answers "not-http\n" and echoes: no HTTP at all

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = b'{"header": {"revision": "x"}, "kvs": [{"key": 7}]} \xff{'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    liar = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=liar.serve_forever, daemon=True).start()
    port = free_port()
    try:
        endpoints = (f"http://127.0.0.1:{junk.port},http://127.0.0.1:{liar.server_port},"
                     f"{etcd.endpoints}")
        gw = gateway(etcd_ini(endpoints, {"web": {"etcd_prefix": "/bad/web/",
                                                  "listen": f"127.0.0.1:{port}"}}),
                     listen=port)
        assert set(wait_pool(port, ["a"], timeout=10)) == {"a"}, gw.log_text()
        log = gw.log_text()
        assert "a malformed HTTP answer" in log, log
        assert "a range answer that cannot be read" in log, log
    finally:
        liar.shutdown()
        junk.close()


def test_many_prefixes_one_watch(etcd, gateway, http_backends):
    """Sixty prefixes (services found under an etcd_root) on one stream: a change under the
    last of them is applied as one under the first is. (etcd's gateway may stop reading a
    request body once it answers, so zkgate sends one create request, a covering range.)"""
    from test_discover import routed
    users, orders = http_backends("users", "orders")
    for i in range(60):
        etcd.put(f"/many/svc{i:02d}/i", users.addr)
    port, admin = free_port(), free_port()
    gw = gateway(etcd_ini(etcd.endpoints, {}, admin={"listen": f"127.0.0.1:{admin}"}) +
                 f"\n[discover:all]\netcd_root = /many/\nlisten = 127.0.0.1:{port}\n"
                 "protocol = http\n", listen=port)
    assert wait_until(lambda: routed(port, "/svc59/") == ("users", "/"), 10), gw.log_text()
    assert wait_until(lambda: admin_get(admin, "/ready")[0] == 200, 5)
    for name in ("svc00", "svc31", "svc59"):
        etcd.put(f"/many/{name}/j", orders.addr)
        etcd.delete(f"/many/{name}/i")
        assert wait_until(lambda: routed(port, f"/{name}/") == ("orders", "/"), 5), \
            (name, gw.log_text())
    metrics = admin_get(admin, "/metrics")[1]
    assert "zkgate_etcd_watch_streams_total 1\n" in metrics, metrics
