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
