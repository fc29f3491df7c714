"""Operator conveniences (issue 16): ${VAR} substitution in the INI file read from the
environment of the real process, the process log as JSON lines (log_format = json), and the
admin listener's authentication ([admin] auth). Real ZooKeeper, real backends, the real
binary, clients over real sockets."""

import base64
import http.client
import json
import socket

from zkharness import free_port, ini_text, wait_until


def request(port, path, headers=None, method="GET", timeout=5):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, headers=headers or {})
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        c.close()


def test_environment_substitution_and_json_process_log(zk, http_backends, gateway,
                                                       monkeypatch):
    web = http_backends("web")
    port, admin = free_port(), free_port()
    monkeypatch.setenv("ZG_IT_ZK", zk.hosts)
    monkeypatch.setenv("ZG_IT_PORT", str(port))
    monkeypatch.delenv("ZG_IT_UNSET", raising=False)
    ini = ini_text({"web": {"protocol": "http", "listen": "127.0.0.1:${ZG_IT_PORT}",
                            "instances": web.addr}},
                   zookeeper={"hosts": "${ZG_IT_ZK}"},
                   proxy={"log_format": "${ZG_IT_UNSET:-json}"},
                   admin={"listen": f"127.0.0.1:{admin}"})
    gw = gateway(ini, listen=[port, admin])
    assert request(port, "/x")[0] == 200

    def lines():
        return [l for l in gw.log_text().splitlines() if l.strip()]

    # Every line of the process log is one JSON object with the four fields, among them
    # the admin listener's start.
    assert wait_until(lambda: any("listening on" in l for l in lines()), 5), gw.log_text()
    objs = [json.loads(l) for l in lines()]
    for o in objs:
        assert set(o) == {"time", "level", "module", "msg"}, o
        assert o["level"] in ("error", "warn", "info", "debug")
        assert o["time"].endswith("Z")
    assert any(o["module"] == "admin" and f"127.0.0.1:{admin}" in o["msg"] for o in objs)


def test_unset_variable_is_a_file_line_error(gateway, tmp_path, monkeypatch):
    from zkharness import Gateway
    monkeypatch.delenv("ZG_IT_UNSET", raising=False)
    ini = ini_text({"s": {"listen": "127.0.0.1:${ZG_IT_UNSET}", "instances": "127.0.0.1:1"}})
    g = Gateway(tmp_path, ini, name="unset")
    g.proc.wait(10)
    g.returncode = g.proc.returncode
    assert g.returncode == 1
    line = ini.splitlines().index("listen = 127.0.0.1:${ZG_IT_UNSET}") + 1
    assert f"unset.ini:{line}: environment variable ZG_IT_UNSET is not set" in g.log_text()


def auth_ini(zk, port, admin, web, **admin_kv):
    return ini_text({"web": {"protocol": "http", "listen": f"127.0.0.1:{port}",
                             "instances": web.addr}},
                    admin={"listen": f"127.0.0.1:{admin}", **admin_kv})


def test_admin_bearer_auth(zk, http_backends, gateway, tmp_path):
    web = http_backends("web")
    port, admin = free_port(), free_port()
    gw = gateway(auth_ini(zk, port, admin, web, auth="bearer:s3cret-Token"),
                 listen=[port, admin])
    # Health checkers need no credentials.
    assert request(admin, "/healthz")[0] == 200
    assert request(admin, "/ready")[0] == 200
    for path in ("/metrics", "/services", "/nope"):
        status, headers, body = request(admin, path)
        assert status == 401, (path, body)
        assert headers["WWW-Authenticate"] == 'Bearer realm="zkgate"'
        assert b"s3cret" not in body
    good = {"Authorization": "Bearer s3cret-Token"}
    assert request(admin, "/services", good)[0] == 200
    assert request(admin, "/metrics", {"Authorization": "bearer  s3cret-Token "})[0] == 200
    for bad in ("Bearer s3cret-Toke", "Bearer s3cret-Token2", "Basic s3cret-Token",
                "Bearer", "s3cret-Token", "Bearer " + "x" * 2000):
        assert request(admin, "/services", {"Authorization": bad})[0] == 401, bad
    # Two Authorization headers: refused, whichever is right.
    s = socket.create_connection(("127.0.0.1", admin), timeout=3)
    s.sendall(b"GET /services HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer s3cret-Token\r\n"
              b"Authorization: Bearer s3cret-Token\r\n\r\n")
    assert s.recv(100).startswith(b"HTTP/1.1 401")
    s.close()
    # The token as a query parameter (RFC 6750 §2.3): what a browser's EventSource can send.
    assert request(admin, "/services?access_token=s3cret-Token")[0] == 200
    assert request(admin, "/services?x=1&access_token=s3cret%2DToken")[0] == 200
    assert request(admin, "/services?access_token=wrong")[0] == 401
    # Reload takes a new token: the old one stops working.
    with open(gw.ini_path, "w") as f:
        f.write(auth_ini(zk, port, admin, web, auth="bearer:next"))
    import signal
    gw.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: request(admin, "/services", good)[0] == 401, 5)
    assert request(admin, "/services", {"Authorization": "Bearer next"})[0] == 200
    assert "s3cret" not in gw.log_text() and "next" not in gw.log_text().replace("\n", " ")


def test_admin_basic_auth_from_file(zk, http_backends, gateway, tmp_path):
    web = http_backends("web")
    port, admin = free_port(), free_port()
    secret = tmp_path / "admin.secret"
    secret.write_text("basic:ops:pa:ss\n")
    gateway(auth_ini(zk, port, admin, web, auth_file=str(secret)), listen=[port, admin])
    status, headers, _ = request(admin, "/metrics")
    assert status == 401
    assert headers["WWW-Authenticate"] == 'Basic realm="zkgate", charset="UTF-8"'

    def basic(user_pw):
        return {"Authorization": "Basic " + base64.b64encode(user_pw.encode()).decode()}

    assert request(admin, "/metrics", basic("ops:pa:ss"))[0] == 200
    assert request(admin, "/metrics", basic("ops:pa:sS"))[0] == 401
    assert request(admin, "/metrics", basic("ops:pa:ss "))[0] == 401
    assert request(admin, "/metrics", basic("Ops:pa:ss"))[0] == 401
    # No query-parameter form for basic credentials.
    assert request(admin, "/metrics?access_token=ops:pa:ss")[0] == 401
    assert request(admin, "/healthz")[0] == 200
