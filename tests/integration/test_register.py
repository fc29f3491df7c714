"""zkgate-register: the built binary ($ZKGATE_REGISTER_BIN) against a real ZooKeeper, real
backends and a real zkgate routing to what it registers. Every format registers a znode the
gateway routes to; health checks remove and re-add it after `fall` and `rise`; SIGTERM and SIGINT
remove it at once; a new session (expiry, a wiped server) registers it again; a ZooKeeper that is
down at start is waited for; a bad command line exits 2 with a message.

This module stops, restarts and wipes its ZooKeeper server: CTest runs it serially."""

import http.server
import json
import os
import re
import signal
import subprocess
import threading
import time

import pytest

from dnsfake import NAME, dns, namespaced  # noqa: F401 (dns: a fixture)
from zkharness import (Backend, Blackhole, LoggedProcess, ZkServer, executable_from, free_port,
                       ini_text, reach, stop_leftovers, wait_pool, wait_until)


def register_bin():
    return executable_from("ZKGATE_REGISTER_BIN", "zkgate-register")


class Registrar(LoggedProcess):
    """zkgate-register under test, its stderr in a log file."""

    def __init__(self, tmpdir, args, name, prefix=(), env=None):
        super().__init__([*prefix, register_bin(), *args],
                         os.path.join(str(tmpdir), f"{name}.log"), env=env)


@pytest.fixture
def registrars(request, tmp_path):
    """Factory: registrars(argv, prefix=(), env=None) -> a running zkgate-register with these
    arguments (run under the command `prefix`, if any; `env` added to its environment). At
    teardown each one still running gets SIGTERM and must exit 0."""
    made = []
    request.node._zkgate_registrars = made

    def make(argv, prefix=(), env=None):
        reg = Registrar(tmp_path, argv, f"reg{len(made)}", prefix, env)
        made.append(reg)
        return reg

    yield make
    problems = stop_leftovers(made, "zkgate-register")
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def registrar(registrars, zk):
    """Factory: registrar(zk_path, address, *more_args, hosts=zk.hosts, prefix=()) -> a running
    zkgate-register (registrars)."""
    def make(zk_path, address, *args, hosts=None, prefix=()):
        return registrars(["--zk", hosts or zk.hosts, "--path", zk_path, "--address", address,
                           *args], prefix)

    return make


def children(kz, path):
    return sorted(kz.get_children(path)) if kz.exists(path) else []


def wait_one_child(kz, path, timeout=5.0, other_than=None):
    """The full path of the one child of `path` (other than `other_than`), once there is one."""
    def one():
        names = [c for c in children(kz, path) if f"{path}/{c}" != other_than]
        return names[0] if len(names) == 1 else None
    name = wait_until(one, timeout)
    assert name, f"no single child under {path} within {timeout} s: {children(kz, path)}"
    return f"{path}/{name}"


def gateway_ini(zk, zpath, port):
    return ini_text({"svc": {"zk_path": zpath, "listen": f"127.0.0.1:{port}"}},
                    zookeeper={"hosts": zk.hosts, "session_timeout": "4s"})


UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def check_shape(fmt, zpath, node, data, host, port, tls=False):
    """The child's name and data are what the format's own writer makes."""
    name = node.rsplit("/", 1)[1]
    service = zpath.rsplit("/", 1)[1]
    scheme = "https" if tls else "http"
    bracketed = f"[{host}]" if ":" in host else host
    if fmt == "url":
        assert re.fullmatch(re.escape(service) + r"\d{10}", name), name
        assert data == f"{scheme}://{bracketed}:{port}".encode()
    elif fmt == "hostport":
        assert re.fullmatch(re.escape(service) + r"\d{10}", name), name
        assert data == f"{bracketed}:{port}".encode()
    elif fmt == "serverset":
        assert re.fullmatch(r"member_\d{10}", name), name
        doc = json.loads(data)
        assert doc["serviceEndpoint"] == {"host": host, "port": port}
        assert doc["status"] == "ALIVE"
        assert doc["additionalEndpoints"] == ({"https": {"host": host, "port": port}}
                                              if tls else {})
    elif fmt == "curator":
        assert UUID.match(name), name
        doc = json.loads(data)
        assert doc["name"] == service and doc["id"] == name
        assert doc["address"] == host
        assert (doc["port"], doc["sslPort"]) == ((None, port) if tls else (port, None))
        assert doc["serviceType"] == "DYNAMIC"
        assert abs(doc["registrationTimeUTC"] / 1000 - time.time()) < 60
    else:
        raise AssertionError(fmt)


FORMATS = ["url", "curator", "serverset", "hostport"]


# ---------------------------------------------------------------------------------------------
# formats, through a real gateway


@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_format_registers_what_the_gateway_routes_to(zk, kz, zpath, backends, gateway,
                                                     registrar, fmt, ipv6):
    a = backends("a", ipv6=ipv6)
    reg = registrar(zpath, a.addr, "--format", fmt)
    node = wait_one_child(kz, zpath)
    data, stat = kz.get(node)
    check_shape(fmt, zpath, node, data, a.host, a.port)
    assert stat.ephemeralOwner != 0, f"{node} is not ephemeral"
    assert kz.exists(zpath).ephemeralOwner == 0, "the parent path must be persistent"
    assert reg.wait_log(f"registered {node} ({fmt}, {a.addr})"), reg.log_text()

    port = free_port()
    gateway(gateway_ini(zk, zpath, port), listen=port)
    seen = wait_pool(port, ["a"])
    assert set(seen) == {"a"}, f"{fmt}: the gateway does not route to {data!r}: {dict(seen)}"


@pytest.mark.parametrize("fmt", FORMATS)
def test_scheme_https_is_written_the_format_s_way(kz, zpath, registrar, fmt):
    port = free_port()
    registrar(zpath, f"10.1.2.3:{port}", "--format", fmt, "--scheme", "https")
    node = wait_one_child(kz, zpath)
    check_shape(fmt, zpath, node, kz.get(node)[0], "10.1.2.3", port, tls=fmt != "hostport")


def test_without_check_registers_at_once_even_when_nothing_answers(kz, zpath, registrar):
    port = free_port()  # nothing listens there
    reg = registrar(zpath, f"127.0.0.1:{port}")
    node = wait_one_child(kz, zpath)
    assert kz.get(node)[0] == f"http://127.0.0.1:{port}".encode()
    assert not re.search(r"(tcp|http) check", reg.log_text()), reg.log_text()


# ---------------------------------------------------------------------------------------------
# health checks


def log_lines(reg, pattern):
    return [line for line in reg.log_text().splitlines() if re.search(pattern, line)]


def test_tcp_check_removes_after_fall_and_registers_again_after_rise(zk, kz, zpath, backends,
                                                                     gateway, registrar):
    a = backends("a")
    reg = registrar(zpath, a.addr, "--check", "tcp", "--interval", "100ms", "--rise", "2",
                    "--fall", "3")
    node = wait_one_child(kz, zpath)
    port = free_port()
    gateway(gateway_ini(zk, zpath, port), listen=port)
    assert set(wait_pool(port, ["a"])) == {"a"}
    first = log_lines(reg, r"check passed|healthy \(|registered /")
    assert re.search(r"check passed \(connected\): 1 of 2 before registering", first[0]), first
    assert re.search(r"healthy \(tcp check: connected; 2 passed in a row\)", first[1]), first

    a.close()  # connections refused from now on
    assert wait_until(lambda: not children(kz, zpath), 5), \
        f"{node} still registered 5 s after its backend stopped: {children(kz, zpath)}"
    assert reach(port) is None, "the gateway still routes to the stopped backend"
    down = log_lines(reg, r"check failed|unhealthy \(|removed /")
    assert re.search(r"check failed \(connect: connection refused\): 1 of 3", down[0]), down
    assert re.search(r"check failed \(connect: connection refused\): 2 of 3", down[1]), down
    assert re.search(r"unhealthy \(tcp check: connect: connection refused; 3 failed in a row\): "
                     r"removing " + re.escape(node), down[2]), down
    assert down[3].endswith(f"removed {node}"), down

    b = Backend("b", port=a.port)  # the instance comes back
    try:
        again = wait_one_child(kz, zpath, timeout=5)
        assert again != node, "a sequential znode comes back under a new name"
        assert set(wait_pool(port, ["b"])) == {"b"}
        assert len(log_lines(reg, r"2 passed in a row\): registering")) == 2
    finally:
        b.close()


class HealthServer:
    """HTTP/1.1 server answering every GET with `status` (settable), recording request lines
    and Host headers."""

    def __init__(self):
        self.status = 200
        self.requests = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                owner.requests.append((self.requestline, self.headers.get("Host")))
                body = b"ok\n"
                self.send_response(owner.status)
                if 300 <= owner.status < 400:
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.port = free_port()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_http_check_follows_the_status(kz, zpath, registrar):
    hs = HealthServer()
    try:
        reg = registrar(zpath, hs.addr, "--format", "curator", "--check", "http:/health?deep=1",
                        "--interval", "100ms", "--rise", "1", "--fall", "2")
        node = wait_one_child(kz, zpath)
        assert hs.requests[0] == ("GET /health?deep=1 HTTP/1.1", hs.addr), hs.requests[0]
        assert reg.wait_log("healthy (http check: HTTP 200; 1 passed in a row)")

        hs.status = 503
        assert wait_until(lambda: not children(kz, zpath), 5), "still registered after 503s"
        assert reg.wait_log(f"unhealthy (http check: HTTP 503; 2 failed in a row): removing "
                            f"{node}")

        hs.status = 302  # 3xx is healthy, as in HAProxy's httpchk
        assert wait_one_child(kz, zpath) == node, "a Curator znode comes back under its id"
        assert reg.wait_log("healthy (http check: HTTP 302; 1 passed in a row)")

        hs.status = 404
        assert wait_until(lambda: not children(kz, zpath), 5), "still registered after 404s"
    finally:
        hs.close()


def test_check_without_answer_fails_at_the_interval(kz, zpath, registrar):
    hole = Blackhole()  # connects neither complete nor fail
    try:
        assert hole.connect_hangs(), "test setup: the blackhole accepted a connection"
        reg = registrar(zpath, hole.addr, "--check", "tcp", "--interval", "200ms", "--rise", "1")
        assert reg.wait_log("tcp check failed (no answer within 200 ms): not registered"), \
            reg.log_text()
        assert children(kz, zpath) == [], "registered although no check ever passed"
    finally:
        hole.close()


def test_http_check_needs_an_http_answer(kz, zpath, backends, registrar):
    a = backends("a")  # says "a\n": not an HTTP status line
    reg = registrar(zpath, a.addr, "--check", "http:/", "--interval", "100ms", "--rise", "1")
    assert reg.wait_log("http check failed (not an HTTP/1 status line): not registered"), \
        reg.log_text()
    assert children(kz, zpath) == []


# ---------------------------------------------------------------------------------------------
# signals


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_removes_the_znode_at_once(zk, kz, zpath, registrar, backends, sig):
    a = backends("a")
    before = zk.sessions()
    reg = registrar(zpath, a.addr, "--format", "serverset")
    node = wait_one_child(kz, zpath)
    ours = zk.sessions() - before
    assert len(ours) == 1, f"expected one new session, got {ours}"
    assert reg.stop(sig) == 0, reg.log_text()
    # Right after exit, no waiting: closing the session removed the znode.
    assert kz.exists(node) is None, f"{node} outlived zkgate-register"
    assert not (ours & zk.sessions()), "the session was left to expire"
    assert f"closed: {node} removed" in reg.log_text()


def test_sigterm_while_the_check_s_name_lookup_hangs_stops_promptly(tmp_path, zk, kz, zpath,
                                                                     registrar, backends, dns):
    """--address by host name: each check looks the name up. Registered while the name server
    answers; then it answers no more, and SIGTERM during the check's hanging lookup (6 s in
    resolv.conf) must neither wait for it nor leave the znode behind."""
    a = backends("a")
    reg = registrar(zpath, f"{NAME}:{a.port}", "--check", "tcp", "--interval", "300ms",
                    "--rise", "1", "--fall", "100", prefix=namespaced(tmp_path, dns, 6))
    node = wait_one_child(kz, zpath, timeout=10)
    assert dns.queries > 0, "the check never asked the name server"
    dns.mode = "drop"
    asked = dns.queries
    assert wait_until(lambda: dns.queries > asked, 5), "no check looked the name up again"
    before = zk.sessions()
    t0 = time.monotonic()
    code = reg.stop(timeout=30)
    took = time.monotonic() - t0
    assert code == 0, reg.log_text()
    assert took < 3, f"SIGTERM took {took:.1f} s while a lookup was out:\n{reg.log_text()}"
    # Right after exit, no waiting: closing the session removed the znode.
    assert kz.exists(node) is None, f"{node} outlived zkgate-register:\n{reg.log_text()}"
    assert len(before - zk.sessions()) == 1, "the session was left to expire"
    assert f"closed: {node} removed" in reg.log_text()


# ---------------------------------------------------------------------------------------------
# ZooKeeper trouble


@pytest.mark.parametrize("fmt", ["url", "curator"])
def test_registers_again_after_session_expiry(zk, kz, zpath, backends, registrar, fmt):
    a = backends("a")
    reg = registrar(zpath, a.addr, "--format", fmt, "--session-timeout", "1s")
    node = wait_one_child(kz, zpath)
    owner = kz.exists(node).ephemeralOwner

    reg.pause()  # no heartbeats: the server expires the session and its znode
    gone = wait_until(lambda: kz.exists(node) is None, 6, interval=0.1)
    reg.resume()
    assert gone, "test setup: the session did not expire while zkgate-register was stopped"

    def registered_again():
        for name in children(kz, zpath):
            stat = kz.exists(f"{zpath}/{name}")
            if stat and stat.ephemeralOwner not in (0, owner):
                return f"{zpath}/{name}"
        return None
    again = wait_until(registered_again, 10)
    assert again, f"not registered again in a new session within 10 s: {children(kz, zpath)}"
    if fmt == "curator":
        assert again == node, "the Curator id must survive a new session"
    assert reg.wait_log("opening a new session"), reg.log_text()
    assert reg.wait_log(f"registered {again}")
    assert len(children(kz, zpath)) == 1


def test_keeps_its_znode_across_a_zookeeper_restart(zk, kz, kazoo, zpath, backends, registrar):
    a = backends("a")
    reg = registrar(zpath, a.addr, "--session-timeout", "4s")
    node = wait_one_child(kz, zpath)
    zk.restart()  # with its data: the session survives if the client is back in time
    fresh = kazoo()
    assert reg.wait_log("reconnected to ZooKeeper", 10), reg.log_text()
    assert fresh.exists(node) is not None, f"{node} lost across a ZooKeeper restart"
    assert children(fresh, zpath) == [node.rsplit("/", 1)[1]]
    assert reg.running


def test_registers_again_on_a_wiped_zookeeper(zk, kazoo, zpath, backends, registrar):
    a = backends("a")
    reg = registrar(zpath, a.addr, "--format", "hostport", "--session-timeout", "1s")
    node = wait_one_child(kazoo(), zpath)
    zk.restart(wipe=True)  # every session and znode forgotten, the parent path too
    fresh = kazoo()
    again = wait_one_child(fresh, zpath, timeout=15)
    assert fresh.get(again)[0] == a.addr.encode()
    assert fresh.exists(zpath).ephemeralOwner == 0
    assert reg.running
    assert reg.wait_log("opening a new session"), reg.log_text()
    assert node  # the old name may come back: sequences restart on a wiped server


def test_waits_for_a_zookeeper_that_is_down_at_start(tmp_path, zpath, backends, registrar):
    late = ZkServer(tmp_path / "late")  # not started yet
    a = backends("a")
    reg = registrar(zpath, a.addr, hosts=late.hosts)
    try:
        assert reg.wait_log(f"ZooKeeper at {late.hosts} unreachable", 5), reg.log_text()
        assert reg.running
        late.start()
        from kazoo.client import KazooClient
        kz = KazooClient(hosts=late.hosts)
        kz.start(timeout=15)
        try:
            node = wait_one_child(kz, zpath, timeout=10)
            assert kz.get(node)[0] == f"http://{a.addr}".encode()
            assert reg.stop() == 0
            assert kz.exists(node) is None
        finally:
            kz.stop()
            kz.close()
    finally:
        reg.stop()
        late.stop()


# ---------------------------------------------------------------------------------------------
# repair, credentials and ACLs


def ours_again(kz, zpath, owner, other_than=None):
    """The child of `zpath` owned by session `owner` (other than `other_than`), or None."""
    for name in children(kz, zpath):
        path = f"{zpath}/{name}"
        stat = kz.exists(path)
        if path != other_than and stat and stat.ephemeralOwner == owner:
            return path
    return None


@pytest.mark.parametrize("fmt", ["url", "curator"])
def test_repairs_its_znode_when_someone_deletes_it(kz, zpath, backends, registrar, fmt):
    a = backends("a")
    reg = registrar(zpath, a.addr, "--format", fmt)
    node = wait_one_child(kz, zpath)
    data, stat = kz.get(node)
    assert reg.wait_log(f"registered {node}"), reg.log_text()
    for round_ in range(2):  # the watch is set again after each repair
        kz.delete(node)
        again = wait_until(lambda: ours_again(kz, zpath, stat.ephemeralOwner), 5, interval=0.05)
        assert again, f"round {round_}: {node} deleted and not created again within 5 s"
        assert kz.get(again)[0] == data, "created again with other data"
        if fmt == "curator":
            assert again == node, "the Curator id is kept"
        assert reg.wait_log(f"{node} was deleted by another session: creating it again"), \
            reg.log_text()
        assert len(children(kz, zpath)) == 1, children(kz, zpath)
        node = again
    assert reg.running


def test_unhealthy_instance_is_not_repaired(kz, zpath, backends, registrar):
    """Its own delete after `fall` failures is no "deleted by another session"."""
    a = backends("a")
    reg = registrar(zpath, a.addr, "--check", "tcp", "--interval", "200ms", "--rise", "1",
                    "--fall", "1")
    node = wait_one_child(kz, zpath)
    a.close()
    assert wait_until(lambda: kz.exists(node) is None, 5), "not removed when unhealthy"
    assert reg.wait_log(f"removed {node}"), reg.log_text()
    assert "deleted by another session" not in reg.log_text()
    assert children(kz, zpath) == []


AUTH_USER, AUTH_PASSWORD = "registrar", "Reg-S3cret:pw"


def test_auth_protects_what_it_creates_and_the_world_reads_it(zk, kz, kazoo, request, backends,
                                                              registrar, gateway):
    from kazoo.exceptions import NoAuthError
    from kazoo.security import ACL, Id, Permissions, make_digest_acl_credential

    # A root of its own: the parents it makes get the ACL too.
    root = "/" + re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    zpath = f"{root}/endpoints/web"
    a = backends("a")
    reg = registrar(zpath, a.addr, "--auth", f"digest:{AUTH_USER}:{AUTH_PASSWORD}")
    node = wait_one_child(kz, zpath)  # listed without credentials
    assert kz.get(node)[0] == f"http://{a.addr}".encode()  # read without credentials

    # The user itself, authenticated (ZooKeeper shows digest hashes in an ACL only to a
    # session with ADMIN on the node; others see "x").
    owner = kazoo()
    owner.add_auth("digest", f"{AUTH_USER}:{AUTH_PASSWORD}")

    # Exactly: the authenticated user all, the world read, on the znode and each parent made.
    expected = [ACL(Permissions.ALL, Id("digest", make_digest_acl_credential(AUTH_USER,
                                                                             AUTH_PASSWORD))),
                ACL(Permissions.READ, Id("world", "anyone"))]
    for path in (root, f"{root}/endpoints", zpath, node):
        acls, _ = owner.get_acls(path)
        assert sorted(acls, key=repr) == sorted(expected, key=repr), (path, acls)

    # Without credentials: no delete, no set, no extra child.
    with pytest.raises(NoAuthError):
        kz.delete(node)
    with pytest.raises(NoAuthError):
        kz.set(node, b"tcp://10.9.9.9:1")
    with pytest.raises(NoAuthError):
        kz.create(f"{zpath}/intruder", b"tcp://10.9.9.9:1")
    assert kz.get(node)[0] == f"http://{a.addr}".encode()

    # The password is gone from the process's command line.
    with open(f"/proc/{reg.pid}/cmdline", "rb") as f:
        assert AUTH_PASSWORD.encode() not in f.read()
    assert AUTH_PASSWORD not in reg.log_text()
    assert f"as digest user '{AUTH_USER}'" in reg.log_text()

    # A gateway without credentials routes to it.
    port = free_port()
    gateway(gateway_ini(zk, zpath, port), listen=port)
    assert set(wait_pool(port, ["a"])) == {"a"}

    # The user itself may delete it; it comes back, with the same ACL.
    session = kz.exists(node).ephemeralOwner
    owner.delete(node)
    again = wait_until(lambda: ours_again(kz, zpath, session), 5, interval=0.05)
    assert again, "deleted by the user and not created again"
    acls, _ = owner.get_acls(again)
    assert sorted(acls, key=repr) == sorted(expected, key=repr), acls
    assert reg.running


# ---------------------------------------------------------------------------------------------
# command line


def run(*args):
    return subprocess.run([register_bin(), *args], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=10)


REQUIRED = ["--zk", "127.0.0.1:2181", "--path", "/svc/web", "--address", "127.0.0.1:8080"]


@pytest.mark.parametrize("args, message", [
    ([], "missing --zk HOSTS"),
    (["--zk", "127.0.0.1:2181"], "missing --path ZK_PATH"),
    (["--zk", "127.0.0.1:2181", "--path", "/a"], "missing --address HOST:PORT"),
    (REQUIRED + ["--format", "nerve"], "--format 'nerve': expected url, curator, serverset"),
    (REQUIRED + ["--scheme", "ftp"], "--scheme 'ftp': expected http or https"),
    (REQUIRED + ["--check", "icmp"], "--check 'icmp': expected tcp or http:/PATH"),
    (REQUIRED + ["--check", "http:health"], "--check 'http:health'"),
    (REQUIRED + ["--check", "tcp", "--interval", "5"], "--interval '5': expected a duration"),
    (REQUIRED + ["--check", "tcp", "--interval", "10ms"], "--interval '10ms'"),
    (REQUIRED + ["--check", "tcp", "--rise", "0"], "--rise '0': expected a count from 1 to"),
    (REQUIRED + ["--check", "tcp", "--fall", "x"], "--fall 'x': expected a count"),
    (REQUIRED + ["--rise", "3"], "--interval, --rise and --fall tune a health check"),
    (REQUIRED + ["--scheme", "https", "--check", "http:/health"], "use --check tcp"),
    (REQUIRED + ["--session-timeout", "soon"], "--session-timeout 'soon'"),
    (REQUIRED + ["--log-level", "loud"], "--log-level 'loud'"),
    (REQUIRED + ["--bogus"], "unknown option '--bogus'"),
    (REQUIRED + ["extra"], "unexpected argument 'extra'"),
    (REQUIRED + ["--format"], "--format needs a value"),
    (REQUIRED + ["--auth", "basic:u:hunter2"], "--auth: expected digest:USER:PASSWORD"),
    (REQUIRED + ["--auth", "digest::hunter2"], "--auth: the user is missing"),
    (REQUIRED + ["--auth", "digest:u:"], "--auth: the password is empty"),
    (REQUIRED + ["--auth", "digest:u"], "--auth: the user is missing"),
    (REQUIRED + ["--auth", "digest:u\x01:hunter2"], "--auth: control characters"),
    (["--zk", "zk1", "--path", "/a", "--address", "127.0.0.1:1"], "--zk 'zk1': expected host:port"),
    (["--zk", "127.0.0.1:2181/a//b", "--path", "/a", "--address", "127.0.0.1:1"],
     "--zk '127.0.0.1:2181/a//b': the chroot is not a valid ZooKeeper path"),
    (["--zk", "127.0.0.1:2181,", "--path", "/a", "--address", "127.0.0.1:1"], "--zk"),
    (["--zk", "127.0.0.1:2181", "--path", "a/b", "--address", "127.0.0.1:1"],
     "--path 'a/b': a ZooKeeper path must start with '/'"),
    (["--zk", "127.0.0.1:2181", "--path", "/a/", "--address", "127.0.0.1:1"], "--path '/a/'"),
    (["--zk", "127.0.0.1:2181", "--path", "/", "--address", "127.0.0.1:1"], "--path '/'"),
    (["--zk", "127.0.0.1:2181", "--path", "/a", "--address", "127.0.0.1"],
     "--address '127.0.0.1': expected HOST:PORT"),
    (["--zk", "127.0.0.1:2181", "--path", "/a", "--address", "::1:80"], "--address '::1:80'"),
    (["--zk", "127.0.0.1:2181", "--path", "/a", "--address", "h:70000"], "--address 'h:70000'"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_command_line_exits_2_with_a_message(args, message):
    res = run(*args)
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert message in res.stderr, res.stderr
    assert "see zkgate-register --help" in res.stderr
    assert "hunter2" not in res.stderr, "a password is echoed"
    assert res.stdout == ""


def test_help_lists_every_option_and_version_prints():
    res = run("--help")
    assert res.returncode == 0 and res.stderr == ""
    for option in ("--zk HOSTS", "--path ZK_PATH", "--address HOST:PORT", "--format", "url",
                   "curator", "serverset", "hostport", "--scheme", "--check", "tcp",
                   "http:/PATH", "--interval", "--rise", "--fall", "--session-timeout",
                   "--log-level", "--auth digest:USER:PASS", "--help", "--version"):
        assert option in res.stdout, f"--help does not mention {option}"
    for flag in ("-V", "--version"):
        res = run(flag)
        assert res.returncode == 0
        assert res.stdout.startswith("zkgate-register "), res.stdout
        assert "zookeeper 3." in res.stdout


def test_credentials_refused_by_server_retry_at_a_bounded_rate(tmp_path, zpath, backends,
                                                              registrar):
    """A server without the digest scheme refuses the credentials themselves (the handle is
    dead: ZOO_AUTH_FAILED_STATE). A new session is tried again, once per session timeout, not in
    a tight loop (each one costs the server a session until it times out), and the error is
    logged once."""
    server = ZkServer(tmp_path / "nodigest",
                      jvm_args=["-Dzookeeper.DigestAuthenticationProvider.enabled=false"])
    server.start()
    try:
        a = backends("a")
        reg = registrar(zpath, a.addr, "--auth", f"digest:{AUTH_USER}:{AUTH_PASSWORD}",
                        "--session-timeout", "1s", hosts=server.hosts)
        opened = r"ZooKeeper session 0x[0-9a-f]+ opened"
        assert reg.wait_log("ZooKeeper authentication failed", 10), reg.log_text()
        # Retried: a second session comes within a few session timeouts.
        assert wait_until(lambda: len(log_lines(reg, opened)) >= 2, 5), reg.log_text()
        t0 = time.monotonic()
        first = len(log_lines(reg, opened))
        time.sleep(3.0)  # measuring a rate: the window is the measurement
        tries = len(log_lines(reg, opened)) - first
        took = time.monotonic() - t0
        assert tries <= took / 1.0 + 1, (
            f"{tries} new sessions in {took:.1f} s after refused credentials "
            f"(session timeout 1 s):\n{reg.log_text()[-3000:]}")
        assert len(log_lines(reg, "error register: ZooKeeper authentication failed")) == 1, \
            reg.log_text()[-3000:]
        assert reg.running
    finally:
        server.stop()
