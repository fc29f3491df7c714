"""GET /events on the admin listener (issue 16): a Server-Sent Events stream of instances
added, removed and changed, passive health marks, reloads and the registry's session, with
?since=ID / Last-Event-ID resumption from a bounded history and slow readers dropped. Real
ZooKeeper, real backends, the real binary, the stream read over a raw socket."""

import json
import signal
import socket
import time

from zkharness import free_port, ini_text, register, wait_until


class Sse:
    """A raw-socket reader of an SSE stream: the response head, then events as dicts (the
    JSON of their data line, with "_id" from their id line) and comments."""

    def __init__(self, port, path="/events?since=0", headers=(), rcvbuf=None):
        self.s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.s.settimeout(5)
        self.s.connect(("127.0.0.1", port))
        extra = "".join(f"{h}\r\n" for h in headers)
        self.s.sendall(f"GET {path} HTTP/1.1\r\nHost: a\r\n{extra}\r\n".encode())
        self.buf = b""
        self.events, self.comments = [], []
        self.closed = False
        self.head = None

    def pump(self, timeout=0.05):
        self.s.settimeout(timeout)
        try:
            chunk = self.s.recv(65536)
            if not chunk:
                self.closed = True
            self.buf += chunk
        except socket.timeout:
            pass
        except ConnectionResetError:
            self.closed = True
        if self.head is None and b"\r\n\r\n" in self.buf:
            self.head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        while self.head is not None and b"\n\n" in self.buf:
            block, self.buf = self.buf.split(b"\n\n", 1)
            ev, data = {}, None
            for line in block.decode().split("\n"):
                if line.startswith(":"):
                    self.comments.append(line)
                elif line.startswith("id: "):
                    ev["_id"] = int(line[4:])
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
            if data is not None:
                data.update(ev)
                self.events.append(data)

    def wait(self, pred, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [e for e in self.events if pred(e)]
            if found:
                return found[0]
            if self.closed:
                break
            self.pump()
        return None

    def close(self):
        self.s.close()


def events_ini(zk, zpath, port, admin, session_timeout="4s", **proxy):
    return ini_text({"web": {"protocol": "http", "listen": f"127.0.0.1:{port}",
                             "zk_path": zpath}},
                    zookeeper={"hosts": zk.hosts, "session_timeout": session_timeout},
                    proxy=proxy, admin={"listen": f"127.0.0.1:{admin}"})


def test_instance_events_in_order_and_resume(zk, kz, zpath, http_backends, gateway):
    a, b = http_backends("a", "b")
    port, admin = free_port(), free_port()
    kz.ensure_path(zpath)
    gw = gateway(events_ini(zk, zpath, port, admin), listen=[port, admin])
    r = Sse(admin)
    assert r.wait(lambda e: e["type"] == "service_synchronised" and e["service"] == "web")
    assert b"text/event-stream" in r.head and r.head.startswith(b"HTTP/1.1 200")
    assert r.wait(lambda e: e["type"] == "registry_connected")

    pa = register(kz, zpath, f"http://{a.addr}".encode())
    added = r.wait(lambda e: e["type"] == "instance_added")
    assert added and added["service"] == "web" and added["address"] == a.addr
    assert added["key"] == pa and added["format"] == "url" and added["version"] == 0
    pb = register(kz, zpath, f"http://{b.addr}".encode())
    assert r.wait(lambda e: e["type"] == "instance_added" and e["key"] == pb)
    kz.set(pa, f"http://{a.addr}/base".encode())
    changed = r.wait(lambda e: e["type"] == "instance_changed")
    assert changed and changed["key"] == pa and changed["version"] == 1
    assert changed["before"]["version"] == 0
    kz.delete(pb)
    removed = r.wait(lambda e: e["type"] == "instance_removed")
    assert removed and removed["key"] == pb and removed["address"] == b.addr

    kinds = [e["type"] for e in r.events if e["type"].startswith("instance_")]
    assert kinds == ["instance_added", "instance_added", "instance_changed",
                     "instance_removed"], r.events
    ids = [e["_id"] for e in r.events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(e["id"] == e["_id"] for e in r.events)

    # Resume: since=ID gives what came after ID, and so does Last-Event-ID (which wins).
    mark = added["_id"]
    r2 = Sse(admin, f"/events?since={mark}")
    assert r2.wait(lambda e: e["type"] == "instance_removed")
    assert [e["_id"] for e in r2.events][0] == mark + 1
    assert [e["_id"] for e in r2.events] == [e["_id"] for e in r.events if e["_id"] > mark]
    r3 = Sse(admin, "/events?since=0", headers=[f"Last-Event-ID: {changed['_id']}"])
    assert r3.wait(lambda e: e["type"] == "instance_removed")
    assert r3.events[0]["_id"] == changed["_id"] + 1
    # Without since: only what comes next.
    r4 = Sse(admin, "/events")
    r4.pump(0.3)
    assert r4.events == [] and r4.head.startswith(b"HTTP/1.1 200")

    # A reload applied, and one rejected, with the error.
    with open(gw.ini_path, "a") as f:
        f.write("\n[service:extra]\nlisten = 127.0.0.1:%d\ninstances = %s\n"
                % (free_port(), a.addr))
    gw.proc.send_signal(signal.SIGHUP)
    ok = r4.wait(lambda e: e["type"] == "reload_applied")
    assert ok and "1 service(s) added" in ok["summary"]
    with open(gw.ini_path, "a") as f:
        f.write("\nbogus = 1\n")
    gw.proc.send_signal(signal.SIGHUP)
    bad = r4.wait(lambda e: e["type"] == "reload_rejected")
    assert bad and "unknown key 'bogus'" in bad["error"], bad
    for x in (r, r2, r3, r4):
        x.close()
    assert b"since: expected" in _get(admin, "/events?since=abc")


def _get(port, path):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
    out = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    s.close()
    return out


def test_health_marks_and_session_events(zk, kz, zpath, http_backends, gateway):
    a = http_backends("a")
    dead = free_port()  # nothing listens: connecting fails, the instance is marked failed
    port, admin = free_port(), free_port()
    kz.ensure_path(zpath)
    register(kz, zpath, f"http://127.0.0.1:{dead}".encode())
    register(kz, zpath, f"http://{a.addr}".encode())
    gateway(events_ini(zk, zpath, port, admin, fail_timeout="1s"), listen=[port, admin])
    r = Sse(admin)
    assert r.wait(lambda e: e["type"] == "service_synchronised" and e["instances"] == 2)
    import http.client
    # Random balance: requests until one has gone to the dead instance first (and was
    # retried on the other); it is then marked failed.
    for _ in range(100):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", "/")
        assert c.getresponse().read()
        c.close()
        if r.wait(lambda e: e["type"] == "instance_failed", timeout=0.05):
            break
    failed = r.wait(lambda e: e["type"] == "instance_failed")
    assert failed and failed["address"] == f"127.0.0.1:{dead}", r.events
    back = r.wait(lambda e: e["type"] == "instance_back", timeout=5)
    assert back and back["address"] == failed["address"] and back["_id"] > failed["_id"]

    # The registry's session: ZooKeeper stops, then comes back.
    zk.stop()
    assert r.wait(lambda e: e["type"] == "registry_disconnected", timeout=10)
    stale = r.wait(lambda e: e["type"] == "services_stale")
    assert stale and stale["services"] == ["web"] and stale["reason"] == "registry disconnected"
    zk.start()
    n = len(r.events)
    assert r.wait(lambda e: e["type"] == "registry_connected" and e["_id"] > r.events[n - 1]["_id"],
                  timeout=20)
    assert r.wait(lambda e: e["type"] == "services_synchronised")
    r.close()


def test_reader_that_never_reads_is_dropped(zk, kz, zpath, http_backends, gateway):
    a = http_backends("a")
    port, admin = free_port(), free_port()
    kz.ensure_path(zpath)
    gw = gateway(events_ini(zk, zpath, port, admin), listen=[port, admin])
    good = Sse(admin, "/events")
    stuck = Sse(admin, "/events", rcvbuf=4096)  # asks, then never reads again
    good.pump(0.2)
    assert good.head is not None
    # Lots of events: 150 instances (distinct addresses, long znode names: each event is
    # about 500 bytes) registered and removed, round after round, until the stuck reader has
    # more than the 256 KiB a reader may leave untaken.
    t0 = time.monotonic()
    for round_ in range(12):
        paths = [register(kz, zpath, f"http://127.0.0.1:{20000 + i}".encode(),
                          name=f"inst-{round_}-{i}-" + "x" * 200)
                 for i in range(150)]
        for _ in range(40):
            good.pump(0.02)
        for p in paths:
            kz.delete(p)
        for _ in range(40):
            good.pump(0.02)
        if "dropped" in gw.log_text():
            break
    assert wait_until(lambda: "/events reader dropped: slower than the feed" in gw.log_text(),
                      10), gw.log_text()[-3000:]
    # The stuck reader's connection is closed: reading it now ends (after what was queued).
    stuck.s.settimeout(5)
    total = 0
    while True:
        try:
            chunk = stuck.s.recv(1 << 20)
        except (ConnectionResetError, socket.timeout):
            break
        if not chunk:
            break
        total += len(chunk)
    assert total < 1_000_000
    # The reader that reads got every event, in order, and the gateway answers as before.
    good.wait(lambda e: False, timeout=1)  # take what is still on its way
    ids = [e["_id"] for e in good.events]
    assert ids == list(range(ids[0], ids[0] + len(ids))), "a gap for the good reader"
    assert sum(1 for e in good.events if e["type"] == "instance_added") >= 150
    s = socket.create_connection(("127.0.0.1", admin), timeout=5)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
    assert s.recv(100).startswith(b"HTTP/1.1 200")
    s.close()
    assert time.monotonic() - t0 < 60
    # A reader asking for the whole history (more than the 256 KiB bound, less than the
    # history's own 1 MiB) gets it, and is not dropped for it.
    drops = gw.log_text().count("/events reader dropped")
    last_id = good.events[-1]["_id"]
    fresh = Sse(admin, "/events?since=0")
    assert fresh.wait(lambda e: e["_id"] == last_id, timeout=10), (len(fresh.events),
                                                                   fresh.closed)
    assert sum(len(json.dumps(e)) for e in fresh.events) > 256 * 1024
    assert not fresh.closed and gw.log_text().count("/events reader dropped") == drops
    fresh.close()
    # Heartbeats: a bare comment every 5 s keeps the idle stream open.
    deadline = time.monotonic() + 7
    while ":" not in good.comments and time.monotonic() < deadline and not good.closed:
        good.pump(0.1)
    assert ":" in good.comments, good.comments
    good.close()
    stuck.close()


def test_session_expiry_event(zk, kz, zpath, http_backends, gateway):
    a = http_backends("a")
    port, admin = free_port(), free_port()
    kz.ensure_path(zpath)
    register(kz, zpath, f"http://{a.addr}".encode())
    before = zk.sessions()
    gw = gateway(events_ini(zk, zpath, port, admin, session_timeout="1s"), listen=[port, admin])
    r = Sse(admin)
    assert r.wait(lambda e: e["type"] == "registry_connected")
    ours = zk.sessions() - before
    assert ours
    gw.pause()  # no heartbeats: the server expires zkgate's session
    try:
        assert wait_until(lambda: not (ours & zk.sessions()), 10, interval=0.1)
    finally:
        gw.resume()
    expired = r.wait(lambda e: e["type"] == "registry_expired", timeout=10)
    assert expired and expired["expiries"] >= 1, r.events
    assert r.wait(lambda e: e["type"] == "registry_connected" and e["_id"] > expired["_id"],
                  timeout=10)
    # Stale only if a look saw the session disconnected; then synchronised again after it.
    stale = [e for e in r.events if e["type"] == "services_stale"]
    if stale:
        assert r.wait(lambda e: e["type"] == "services_synchronised" and
                      e["_id"] > stale[-1]["_id"])
    r.close()


def test_etcd_events(tmp_path, zk, http_backends, gateway):
    """The same feed for a service read from etcd: instances by key and revision, and the
    registry named in the session events."""
    from etcdharness import EtcdCluster
    a = http_backends("a")
    port, admin = free_port(), free_port()
    etcd = EtcdCluster(tmp_path, 1).start()
    try:
        ini = ini_text({"web": {"protocol": "http", "listen": f"127.0.0.1:{port}",
                                "etcd_prefix": "/services/web/"}},
                       admin={"listen": f"127.0.0.1:{admin}"})
        ini = f"[etcd]\nendpoints = {etcd.endpoints}\ndial_timeout = 500ms\n\n" + ini
        gateway(ini, listen=[port, admin])
        r = Sse(admin)
        con = r.wait(lambda e: e["type"] == "registry_connected")
        assert con and con["registry"] == "etcd", r.events
        etcd.put("/services/web/a", a.addr)
        added = r.wait(lambda e: e["type"] == "instance_added")
        assert added and added["key"] == "/services/web/a" and added["address"] == a.addr
        assert added["version"] > 0  # the key's mod_revision
        etcd.delete("/services/web/a")
        removed = r.wait(lambda e: e["type"] == "instance_removed")
        assert removed and removed["key"] == "/services/web/a"
        r.close()
    finally:
        etcd.close()
