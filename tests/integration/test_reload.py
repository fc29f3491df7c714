"""Hitless reload (SIGHUP): services, routes, listeners and timeouts added, removed or changed
take effect for new connections while established ones go on; a configuration with errors is
rejected as a whole and the running one stays. Real ZooKeeper, real backends, the real
binary."""

import http.client
import os
import signal
import socket
import threading
import time

import pytest

from zkharness import free_port, ini_text, reach, register, wait_until


def request(port, path, host=None, timeout=5):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path, headers={"Host": host} if host else {})
        r = c.getresponse()
        return r.status, r.getheader("X-Backend"), r.read()
    finally:
        c.close()


def metric(admin, key):
    _, _, body = request(admin, "/metrics")
    for line in body.decode().splitlines():
        if line.startswith(key + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def reload(gw, ini, expect="reloaded:"):
    before = gw.log_text().count(expect)
    with open(gw.ini_path, "w") as f:
        f.write(ini)
    gw.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: gw.log_text().count(expect) > before, 5), gw.log_text()[-2000:]


def test_reload_adds_and_removes_services_while_a_download_goes_on(zk, kz, zpath, http_backends,
                                                                   backends, gateway):
    a, c = http_backends("a", "c")
    echo = backends("echo")
    port, tport, tport2, admin = free_port(), free_port(), free_port(), free_port()
    zkconf = {"hosts": zk.hosts, "session_timeout": "4s"}
    first = ini_text({
        "a": {"protocol": "http", "listen": f"127.0.0.1:{port}", "instances": a.addr,
              "path_prefix": "/a/", "strip_prefix": "yes"},
        "echo": {"listen": f"127.0.0.1:{tport}", "instances": echo.addr},
    }, zookeeper=zkconf, admin={"listen": f"127.0.0.1:{admin}"})
    gw = gateway(first, listen=[port, tport, admin])
    assert request(port, "/a/x")[:2] == (200, "a")

    # A long download through service a, read slowly.
    size = 64 * 1024 * 1024
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"GET /a/big/%d HTTP/1.1\r\nHost: x\r\n\r\n" % size)
    got = s.recv(65536)
    assert got.startswith(b"HTTP/1.1 200")
    # And an established TCP connection.
    t = socket.create_connection(("127.0.0.1", tport), timeout=5)
    assert t.recv(100) == b"echo\n"

    second = ini_text({
        "c": {"protocol": "http", "listen": f"127.0.0.1:{port}", "instances": c.addr,
              "path_prefix": "/c/"},
        "echo2": {"listen": f"127.0.0.1:{tport2}", "instances": echo.addr},
    }, zookeeper=zkconf, admin={"listen": f"127.0.0.1:{admin}"})
    reload(gw, second)
    log = gw.log_text()
    assert "reloaded: 2 service(s) added, 0 changed, 2 removed, 0 kept" in log
    # New connections see the new configuration.
    assert request(port, "/c/x")[:2] == (200, "c")
    assert request(port, "/a/x")[0] == 404
    assert reach(tport2) == "echo"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", tport), timeout=1)
    # Established ones go on: the TCP relay still echoes, the download completes.
    t.sendall(b"ping\n")
    assert t.recv(100) == b"ping\n"
    t.close()
    head, _, body = got.partition(b"\r\n\r\n")
    total = len(body)
    while total < size:
        chunk = s.recv(1 << 20)
        assert chunk, f"download cut at {total} of {size} bytes"
        total += len(chunk)
    assert total == size
    s.close()
    assert metric(admin, 'zkgate_config_reloads_total{result="ok"}') == 1


def test_changed_service_keeps_its_pool_and_listener(zk, kz, zpath, http_backends, backends,
                                                     gateway):
    web = http_backends("web")
    echo = backends("echo")
    register(kz, zpath, web.addr.encode())
    register(kz, zpath + "-tcp", echo.addr.encode())
    port, tport = free_port(), free_port()
    zkconf = {"hosts": zk.hosts, "session_timeout": "4s"}

    def conf(prefix, connect_timeout):
        return ini_text({
            "web": {"protocol": "http", "listen": f"127.0.0.1:{port}", "zk_path": zpath,
                    "path_prefix": prefix, "strip_prefix": "yes"},
            "echo": {"listen": f"127.0.0.1:{tport}", "zk_path": zpath + "-tcp",
                     "connect_timeout": connect_timeout},
        }, zookeeper=zkconf)

    gw = gateway(conf("/v1/", "2s"), listen=[port, tport])
    assert wait_until(lambda: request(port, "/v1/x")[:2] == (200, "web"), 5)
    assert wait_until(lambda: reach(tport) == "echo", 5)

    # Clients hammer the TCP port during the reload: none is refused.
    errors, stop = [], threading.Event()

    def hammer():
        while not stop.is_set():
            try:
                if reach(tport) != "echo":
                    errors.append("wrong answer")
            except OSError as e:
                errors.append(repr(e))

    th = threading.Thread(target=hammer)
    th.start()
    try:
        reload(gw, conf("/v2/", "1s"))
        # The changed HTTP service answers at once: its pool came along (no 503 gap).
        assert request(port, "/v2/x")[:2] == (200, "web")
        assert request(port, "/v1/x")[0] == 404
        time.sleep(0.3)
    finally:
        stop.set()
        th.join(5)
    assert errors == []
    assert "reloaded: 0 service(s) added, 2 changed, 0 removed, 0 kept" in gw.log_text()
    # The carried-over watch still follows the registry.
    web2 = http_backends("web2")
    register(kz, zpath, web2.addr.encode())
    assert wait_until(lambda: {request(port, "/v2/x")[1] for _ in range(12)} ==
                      {"web", "web2"}, 5)


def test_bad_reload_is_rejected_and_the_running_configuration_stays(zk, kz, zpath,
                                                                    http_backends, gateway):
    web = http_backends("web")
    port, admin = free_port(), free_port()
    zkconf = {"hosts": zk.hosts, "session_timeout": "4s"}
    good = ini_text({"web": {"protocol": "http", "listen": f"127.0.0.1:{port}",
                             "instances": web.addr},
                     "zkweb": {"protocol": "http", "listen": f"127.0.0.1:{port}",
                               "zk_path": zpath, "path_prefix": "/zk/"}},
                    zookeeper=zkconf, admin={"listen": f"127.0.0.1:{admin}"})
    gw = gateway(good, listen=[port, admin])
    bad = good + "\n[service:broken]\nlisten = 127.0.0.1:nope\nbogus = 1\n"
    reload(gw, bad, expect="reload rejected")
    log = gw.log_text()
    lines = bad.splitlines()
    assert f"{gw.ini_path}:{lines.index('listen = 127.0.0.1:nope') + 1}: listen" in log
    assert f"{gw.ini_path}:{lines.index('bogus = 1') + 1}: unknown key 'bogus'" in log
    assert request(port, "/x")[:2] == (200, "web")
    assert metric(admin, 'zkgate_config_reloads_total{result="failed"}') == 1

    # A change that needs a restart is refused too.
    other = good.replace("session_timeout = 4s", "session_timeout = 5s")
    reload(gw, other, expect="needs a restart")
    assert request(port, "/x")[:2] == (200, "web")
    # An address that cannot be bound rejects the whole reload.
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    taken = blocker.getsockname()[1]
    extra = ini_text({"web": {"protocol": "http", "listen": f"127.0.0.1:{port}",
                              "instances": web.addr},
                      "zkweb": {"protocol": "http", "listen": f"127.0.0.1:{port}",
                                "zk_path": zpath, "path_prefix": "/zk/"},
                      "new": {"listen": f"127.0.0.1:{taken}", "instances": web.addr}},
                     zookeeper=zkconf, admin={"listen": f"127.0.0.1:{admin}"})
    reload(gw, extra, expect="cannot listen on")
    blocker.close()
    assert metric(admin, 'zkgate_config_reloads_total{result="failed"}') == 3
    assert metric(admin, 'zkgate_config_reloads_total{result="ok"}') == 0
    # And a good one afterwards works.
    reload(gw, good.replace("[service:web]", "[service:web]\nresponse_timeout = 5s"))
    assert "0 added, 1 changed, 0 removed, 1 kept" in gw.log_text().replace("service(s) ", "")


def test_reload_adds_discovery_and_new_http_listener(zk, kz, zpath, http_backends, gateway):
    users = http_backends("users")
    root = zpath.replace("/endpoints/", "/reload-roots/")
    register(kz, f"{root}/users", users.addr.encode())
    port, port2 = free_port(), free_port()
    zkconf = {"hosts": zk.hosts, "session_timeout": "4s"}
    gw = gateway(ini_text({"web": {"protocol": "http", "listen": f"127.0.0.1:{port}",
                                   "instances": users.addr}}, zookeeper=zkconf), listen=[port])
    reload(gw, ini_text({"web": {"protocol": "http", "listen": f"127.0.0.1:{port}",
                                 "instances": users.addr}}, zookeeper=zkconf,
                        discover={"all": {"zk_root": root, "listen": f"127.0.0.1:{port2}"}}))
    assert wait_until(lambda: request(port2, "/users/q")[:2] == (200, "users"), 5)
    # Discovery removed again: its routes and listener go.
    reload(gw, ini_text({"web": {"protocol": "http", "listen": f"127.0.0.1:{port}",
                                 "instances": users.addr}}, zookeeper=zkconf))
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port2), timeout=1)
    assert request(port, "/")[0] == 200


def read_all(sock):
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def test_drain_after_reload_waits_for_connections_of_removed_listeners_and_services(
        zk, http_backends, backends, gateway):
    web = http_backends("web")
    echo = backends("echo")
    port, port2, tport = free_port(), free_port(), free_port()
    first = ini_text({
        "web": {"protocol": "http", "listen": f"127.0.0.1:{port}", "instances": web.addr},
        "echo": {"listen": f"127.0.0.1:{tport}", "instances": echo.addr},
    }, proxy={"drain_timeout": "10s"})
    gw = gateway(first, listen=[port])
    slow = socket.create_connection(("127.0.0.1", port), timeout=5)
    slow.sendall(b"GET /slow/1500 HTTP/1.1\r\nHost: x\r\n\r\n")
    t = socket.create_connection(("127.0.0.1", tport), timeout=5)
    assert t.recv(100) == b"echo\n"
    assert wait_until(lambda: web.requests >= 1, 3)
    # Both the HTTP listener and the TCP service go; what they carry is all that is open.
    reload(gw, ini_text({"web2": {"protocol": "http", "listen": f"127.0.0.1:{port2}",
                                  "instances": web.addr}}, proxy={"drain_timeout": "10s"}))
    gw.proc.send_signal(signal.SIGTERM)
    assert gw.wait_log("draining")
    assert "2 open one(s) may finish" in gw.log_text(), gw.log_text()[-1500:]
    # The TCP connection of the removed service still works during the drain...
    t.sendall(b"ping\n")
    assert t.recv(100) == b"ping\n"
    # ...and the slow request on the removed listener finishes.
    data = read_all(slow)
    assert data.startswith(b"HTTP/1.1 200"), data[:200]
    assert b"\r\nConnection: close\r\n" in data
    assert gw.proc.poll() is None, "zkgate stopped with a TCP connection still open"
    t.close()
    assert gw.proc.wait(10) == 0
    gw.returncode = 0
    assert "drained: stopping" in gw.log_text()


def test_keep_alive_connections_of_a_removed_listener_take_no_new_request(http_backends,
                                                                         gateway):
    web = http_backends("web")
    port, port2 = free_port(), free_port()
    gw = gateway(ini_text({"web": {"protocol": "http", "listen": f"127.0.0.1:{port}",
                                   "instances": web.addr}}), listen=[port])
    idle = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    idle.request("GET", "/x")
    r = idle.getresponse()
    assert r.status == 200 and r.read()
    busy = socket.create_connection(("127.0.0.1", port), timeout=5)
    busy.sendall(b"GET /slow/1000 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert wait_until(lambda: web.requests >= 2, 3)
    reload(gw, ini_text({"web": {"protocol": "http", "listen": f"127.0.0.1:{port2}",
                                 "instances": web.addr}}))
    # The idle one is closed at once; the busy one gets its answer, told the connection closes.
    idle.sock.settimeout(2)
    assert idle.sock.recv(100) == b""
    data = read_all(busy)
    assert data.startswith(b"HTTP/1.1 200") and b"\r\nConnection: close\r\n" in data, data[:300]
    assert request(port2, "/y")[:2] == (200, "web")


def test_zookeeper_change_is_refused_also_after_a_reload_without_zookeeper(zk, kz, zpath,
                                                                          http_backends,
                                                                          gateway):
    web = http_backends("web")
    register(kz, zpath, web.addr.encode())
    port = free_port()
    zkconf = {"hosts": zk.hosts, "session_timeout": "4s"}
    with_zk = ini_text({"web": {"protocol": "http", "listen": f"127.0.0.1:{port}",
                                "zk_path": zpath}}, zookeeper=zkconf)
    gw = gateway(with_zk, listen=[port])
    assert wait_until(lambda: request(port, "/x")[:2] == (200, "web"), 5)
    reload(gw, ini_text({"web": {"protocol": "http", "listen": f"127.0.0.1:{port}",
                                 "instances": web.addr}}))
    # The registry still runs with 4s: a file asking for 5s needs a restart.
    reload(gw, with_zk.replace("session_timeout = 4s", "session_timeout = 5s"),
           expect="needs a restart")
    # The same settings as the running registry are fine.
    reload(gw, with_zk)
    assert wait_until(lambda: request(port, "/x")[:2] == (200, "web"), 5)


def test_rejected_reload_that_would_start_the_registry_starts_none(zk, kz, zpath,
                                                                   http_backends, gateway):
    """The first section that needs ZooKeeper makes the registry while the reload is prepared;
    a reload rejected after that (an address that cannot be bound) leaves no registry behind,
    and the next good one starts it."""
    web, zkweb = http_backends("web", "zkweb")
    register(kz, zpath, zkweb.addr.encode())
    port, admin = free_port(), free_port()
    zkconf = {"hosts": zk.hosts, "session_timeout": "4s"}
    static = {"web": {"protocol": "http", "listen": f"127.0.0.1:{port}", "instances": web.addr}}
    gw = gateway(ini_text(static, admin={"listen": f"127.0.0.1:{admin}"}), listen=[port, admin])
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    taken = blocker.getsockname()[1]
    with_zk = dict(static, zkweb={"protocol": "http", "listen": f"127.0.0.1:{port}",
                                  "zk_path": zpath, "path_prefix": "/zk/"})
    try:
        reload(gw, ini_text(dict(with_zk, new={"listen": f"127.0.0.1:{taken}",
                                               "instances": web.addr}),
                            zookeeper=zkconf, admin={"listen": f"127.0.0.1:{admin}"}),
               expect="reload rejected")
    finally:
        blocker.close()
    assert metric(admin, 'zkgate_config_reloads_total{result="failed"}') == 1
    assert metric(admin, 'zkgate_zookeeper_session_state{state="connected"}') is None
    assert request(port, "/zk/x")[:2] == (200, "web")
    reload(gw, ini_text(with_zk, zookeeper=zkconf, admin={"listen": f"127.0.0.1:{admin}"}))
    assert wait_until(lambda: request(port, "/zk/x")[:2] == (200, "zkweb"), 5)
    assert metric(admin, 'zkgate_zookeeper_session_state{state="connected"}') == 1


def test_renamed_service_on_the_same_zk_path_serves_at_once(zk, kz, zpath, http_backends,
                                                           gateway):
    web = http_backends("web")
    register(kz, zpath, web.addr.encode())
    port = free_port()
    # A long coalescing window: a pool read anew would leave a gap of at least 300 ms.
    zkconf = {"hosts": zk.hosts, "session_timeout": "4s", "coalesce_window": "300ms"}

    def conf(name):
        return ini_text({name: {"protocol": "http", "listen": f"127.0.0.1:{port}",
                                "zk_path": zpath}}, zookeeper=zkconf)
    gw = gateway(conf("web"), listen=[port])
    assert wait_until(lambda: request(port, "/x")[:2] == (200, "web"), 5)
    reload(gw, conf("site"))
    assert request(port, "/x")[:2] == (200, "web")
    # And its own watch follows the registry.
    web2 = http_backends("web2")
    register(kz, zpath, web2.addr.encode())
    assert wait_until(lambda: {request(port, "/x")[1] for _ in range(12)} == {"web", "web2"}, 5)


def test_discovered_service_comes_back_when_the_configured_one_claiming_it_goes(
        zk, kz, zpath, http_backends, gateway):
    users, static = http_backends("users", "static")
    root = zpath.replace("/endpoints/", "/claim-roots/")
    register(kz, f"{root}/users", users.addr.encode())
    port, port2 = free_port(), free_port()
    zkconf = {"hosts": zk.hosts, "session_timeout": "4s"}
    disc = {"all": {"zk_root": root, "listen": f"127.0.0.1:{port2}"}}
    claimed = ini_text({"users": {"protocol": "http", "listen": f"127.0.0.1:{port}",
                                  "instances": static.addr}}, zookeeper=zkconf, discover=disc)
    gw = gateway(claimed, listen=[port, port2])
    assert wait_until(lambda: "is served by configured service users" in gw.log_text(), 5)
    assert request(port2, "/users/q")[0] == 404
    reload(gw, ini_text({"other": {"protocol": "http", "listen": f"127.0.0.1:{port}",
                                   "instances": static.addr}}, zookeeper=zkconf, discover=disc))
    assert wait_until(lambda: request(port2, "/users/q")[:2] == (200, "users"), 5)


def test_reload_rejected_when_the_admin_listener_or_access_log_cannot_move(tmp_path,
                                                                           http_backends,
                                                                           gateway):
    web = http_backends("web")
    port, admin = free_port(), free_port()
    log = tmp_path / "access.log"
    svc = {"web": {"protocol": "http", "listen": f"127.0.0.1:{port}", "instances": web.addr}}
    good = ini_text(svc, admin={"listen": f"127.0.0.1:{admin}"},
                    proxy={"access_log": str(log)})
    gw = gateway(good, listen=[port, admin])
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    taken = blocker.getsockname()[1]
    try:
        reload(gw, ini_text(svc, admin={"listen": f"127.0.0.1:{taken}"},
                            proxy={"access_log": str(log)}), expect="reload rejected")
    finally:
        blocker.close()
    assert "the admin listener cannot move" in gw.log_text()
    # The old admin listener still answers, and counts the failure.
    assert metric(admin, 'zkgate_config_reloads_total{result="failed"}') == 1
    # An access log that cannot be opened: rejected, and the old file keeps its lines.
    reload(gw, ini_text(svc, admin={"listen": f"127.0.0.1:{admin}"},
                        proxy={"access_log": str(tmp_path / "no" / "such" / "dir.log")}),
           expect="access log")
    assert "reload rejected: the access log" in gw.log_text()
    assert request(port, "/after")[0] == 200
    assert wait_until(lambda: log.exists() and "/after" in log.read_text(), 5)
    assert metric(admin, 'zkgate_config_reloads_total{result="failed"}') == 2
    assert metric(admin, 'zkgate_config_reloads_total{result="ok"}') == 0
