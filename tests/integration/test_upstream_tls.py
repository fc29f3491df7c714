"""TLS to instances (upstream_tls): chosen by the registration (an https:// URL, a Curator
sslPort, a serverset endpoint named https) or forced on/off; certificates verified against
upstream_ca with the instance's address (or upstream_sni) checked, failures counted, logged and
retried elsewhere; upstream_verify = no; keep-alive reuse and session resumption of upstream
TLS connections; a TCP service over TLS; bad upstream_* keys in `zkgate -t`.

The certificates come from test_tls.py's Pki (made at test time with the openssl command):
instances are Python ssl servers with a certificate for 127.0.0.1 and localhost, or one for
a name only (backend.internal), signed by the test CA."""

import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import threading

import pytest

from test_tls import Pki, metric, openssl, start
from zkharness import TEST_WORKERS, free_port, register, wait_until, zkgate_bin


class UpstreamPki(Pki):
    def leaf_san(self, name, cn, san):
        key, csr, crt = (self.path(name + ext) for ext in (".key", ".csr", ".crt"))
        openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-keyout", key, "-out", csr, "-subj", f"/CN={cn}",
                "-addext", f"subjectAltName={san}")
        openssl("x509", "-req", "-in", csr, "-CA", self.path(self.ca + ".crt"),
                "-CAkey", self.path(self.ca + ".key"), "-set_serial",
                str(int.from_bytes(os.urandom(8), "big")), "-days", "1",
                "-copy_extensions", "copy", "-out", crt)
        return crt, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    p = UpstreamPki(tmp_path_factory.mktemp("upki"))
    p.local = p.leaf_san("local", "localhost", "DNS:localhost,IP:127.0.0.1")
    p.named = p.leaf_san("named", "backend.internal", "DNS:backend.internal")
    return p


def server_ctx(cert):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*cert)
    return ctx


@pytest.fixture
def tls_backends():
    """Factory: tls_backends(name, cert) -> an HTTPS HttpBackend with that certificate."""
    from httpbackend import HttpBackend
    made = []

    def make(name, cert):
        b = HttpBackend(name, tls=server_ctx(cert))
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


class TlsEcho:
    """A TLS echo server: sends b"<name>\\n" after the handshake, then echoes."""

    def __init__(self, name, cert):
        self.name = name
        self.ctx = server_ctx(cert)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.handshakes = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            with self.ctx.wrap_socket(c, server_side=True) as t:
                self.handshakes += 1
                t.sendall(self.name.encode() + b"\n")
                while data := t.recv(65536):
                    t.sendall(data)
        except (OSError, ssl.SSLError):
            pass

    def close(self):
        self.sock.close()


def http_get(port, path="/", host="svc"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", path, headers={"Host": host})
        r = c.getresponse()
        body = r.read()
        return r.status, (json.loads(body) if r.getheader("Content-Type") == "application/json"
                          else body)
    finally:
        c.close()


def http_service(zpath, port, **kw):
    return {"protocol": "http", "listen": f"127.0.0.1:{port}", "zk_path": zpath, **kw}


def wait_answer(port, name, timeout=10, path="/"):
    def ok():
        try:
            st, doc = http_get(port, path)
            return st == 200 and isinstance(doc, dict) and doc["name"] == name
        except OSError:
            return False
    assert wait_until(ok, timeout, interval=0.1), f"{name} never answered through {port}"


def curator(address, port=None, ssl_port=None, id_="1"):
    return json.dumps({"name": "svc", "id": id_, "address": address, "port": port,
                       "sslPort": ssl_port, "payload": None, "registrationTimeUTC": 1,
                       "serviceType": "DYNAMIC"}).encode()


# ---------------------------------------------------------------------------------------------


def test_https_url_verified_and_kept_alive(zk, kz, zpath, gateway, tls_backends, pki):
    web = tls_backends("tls-web", pki.local)
    register(kz, zpath, f"https://{web.addr}".encode())
    port = free_port()
    gw, admin = start(gateway, zk, {"web": http_service(
        zpath, port, upstream_ca=pki.path("ca.crt"))})
    wait_answer(port, "tls-web")
    # several requests, on new client connections each: one upstream TLS connection carries
    # them (one per worker: each keeps its own upstream connections)
    for i in range(5):
        st, doc = http_get(port, f"/n{i}")
        assert st == 200 and doc["path"] == f"/n{i}"
    assert web.connections <= TEST_WORKERS, "the upstream TLS connection was not reused"
    assert web.requests >= 6
    # IP address instance: no SNI sent (RFC 6066), the certificate's IP checked
    assert web.server_names == [None] * web.connections
    assert metric(admin, "zkgate_upstream_tls_handshakes_total",
                  'service="web"') == web.connections
    assert metric(admin, "zkgate_upstream_tls_failures_total", 'service="web"') == 0
    # a body both ways, larger than one TLS record
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("POST", "/post", body=b"x" * 200000, headers={"Host": "svc"})
    doc = json.loads(c.getresponse().read())
    assert doc["body_len"] == 200000
    c.request("GET", "/big/300000", headers={"Host": "svc"})
    assert len(c.getresponse().read()) == 300000
    c.close()


def test_session_resumption(zk, kz, zpath, gateway, tls_backends, pki):
    web = tls_backends("tls-web", pki.local)
    register(kz, zpath, f"https://{web.addr}".encode())
    port = free_port()
    gw, admin = start(gateway, zk, {"web": http_service(
        zpath, port, upstream_ca=pki.path("ca.crt"))})
    # /close ends each upstream connection, so that none is left idle: with two workers,
    # whether a later request found the idle one depended on which worker took it
    wait_answer(port, "tls-web", path="/close")
    h0 = metric(admin, "zkgate_upstream_tls_handshakes_total", 'service="web"')
    c0 = web.connections
    # every request after it needs a new handshake, which resumes an earlier session
    for _ in range(4):
        assert http_get(port, "/close")[0] == 200
    assert metric(admin, "zkgate_upstream_tls_handshakes_total", 'service="web"') == h0 + 4
    assert metric(admin, "zkgate_upstream_tls_resumed_total", 'service="web"') >= 2
    assert web.connections == c0 + 4


def test_curator_ssl_port_and_forced_modes(zk, kz, zpath, gateway, http_backends,
                                           tls_backends, pki):
    plain = http_backends("plain")
    secure = tls_backends("secure", pki.local)
    # one registration with both ports: auto prefers sslPort, off takes the plain port
    register(kz, zpath, curator("127.0.0.1", port=plain.port, ssl_port=secure.port))
    auto, off, on = free_port(), free_port(), free_port()
    other = zpath + "-plainreg"
    kz.ensure_path(other)
    register(kz, other, f"127.0.0.1:{secure.port}".encode())
    gw, admin = start(gateway, zk, {
        "auto": http_service(zpath, auto, upstream_ca=pki.path("ca.crt")),
        "off": http_service(zpath, off, upstream_tls="off"),
        # a plain host:port registration, TLS forced
        "on": http_service(other, on, upstream_tls="on", upstream_ca=pki.path("ca.crt")),
    })
    wait_answer(auto, "secure")
    wait_answer(off, "plain")
    wait_answer(on, "secure")
    for _ in range(3):
        assert http_get(auto)[1]["name"] == "secure"
        assert http_get(off)[1]["name"] == "plain"
    assert metric(admin, "zkgate_upstream_tls_handshakes_total", 'service="off"') == 0
    assert metric(admin, "zkgate_upstream_tls_handshakes_total", 'service="on"') >= 1
    assert plain.connections >= 1


def test_serverset_https_endpoint(zk, kz, zpath, gateway, http_backends, tls_backends, pki):
    plain = http_backends("plain")
    secure = tls_backends("secure", pki.local)
    member = {"serviceEndpoint": {"host": "127.0.0.1", "port": plain.port},
              "additionalEndpoints": {"https": {"host": "127.0.0.1", "port": secure.port}},
              "status": "ALIVE"}
    register(kz, zpath, json.dumps(member).encode(), name="member_0000000001")
    a, b = free_port(), free_port()
    gw, admin = start(gateway, zk, {
        "ep": http_service(zpath, a, endpoint="https", upstream_ca=pki.path("ca.crt")),
        "main": http_service(zpath, b)})
    wait_answer(a, "secure")
    wait_answer(b, "plain")
    assert metric(admin, "zkgate_upstream_tls_handshakes_total", 'service="ep"') >= 1


def test_wrong_ca_fails_and_retries_elsewhere(zk, kz, zpath, gateway, http_backends,
                                              tls_backends, pki):
    secure = tls_backends("secure", pki.local)
    node = register(kz, zpath, f"https://{secure.addr}".encode())
    port = free_port()
    gw, admin = start(gateway, zk, {"web": http_service(
        zpath, port, upstream_ca=pki.path("other-ca.crt"))})
    # the only instance fails verification: the request gets a 502, counted and logged
    assert wait_until(lambda: http_get(port)[0] == 502, 10, interval=0.1)
    assert metric(admin, "zkgate_upstream_tls_failures_total", 'service="web"') >= 1
    assert metric(admin, "zkgate_upstream_connect_failures_total", 'service="web"') >= 1
    assert metric(admin, "zkgate_upstream_tls_handshakes_total", 'service="web"') == 0
    assert gw.wait_log("certificate verify failed: unable to get local issuer certificate")
    assert secure.requests == 0
    # with a plain instance beside it, every request is answered there
    plain = http_backends("plain")
    register(kz, zpath, f"http://{plain.addr}".encode())
    wait_answer(port, "plain")
    for _ in range(8):
        st, doc = http_get(port)
        assert st == 200 and doc["name"] == "plain"
    assert secure.requests == 0
    kz.delete(node)


def test_verify_no_works_and_warns(zk, kz, zpath, gateway, tls_backends, pki):
    secure = tls_backends("secure", pki.named)  # neither our CA given nor the address in it
    register(kz, zpath, f"https://{secure.addr}".encode())
    port = free_port()
    gw, admin = start(gateway, zk, {"web": http_service(zpath, port, upstream_verify="no")})
    wait_answer(port, "secure")
    assert "service web: upstream_verify = no" in gw.log_text()
    # and again at reload
    before = gw.log_text().count("upstream_verify = no")
    gw.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: gw.log_text().count("upstream_verify = no") > before, 5)


def test_upstream_sni_checked(zk, kz, zpath, gateway, tls_backends, pki):
    secure = tls_backends("named", pki.named)  # for backend.internal only
    register(kz, zpath, f"https://{secure.addr}".encode())
    bad, good = free_port(), free_port()
    gw, admin = start(gateway, zk, {
        "bad": http_service(zpath, bad, upstream_ca=pki.path("ca.crt")),
        "good": http_service(zpath, good, upstream_ca=pki.path("ca.crt"),
                             upstream_sni="backend.internal")})
    wait_answer(good, "named")
    assert "backend.internal" in secure.server_names
    # the address 127.0.0.1 is not in the certificate: refused
    assert http_get(bad)[0] == 502
    assert gw.wait_log("certificate verify failed: IP address mismatch")
    assert metric(admin, "zkgate_upstream_tls_failures_total", 'service="bad"') >= 1
    assert metric(admin, "zkgate_upstream_tls_failures_total", 'service="good"') == 0


def test_tcp_service_over_tls(zk, kz, zpath, gateway, pki):
    echo = TlsEcho("tls-echo", pki.local)
    try:
        register(kz, zpath, curator("127.0.0.1", ssl_port=echo.port))
        port = free_port()
        gw, admin = start(gateway, zk, {"echo": {
            "protocol": "tcp", "listen": f"127.0.0.1:{port}", "zk_path": zpath,
            "upstream_ca": pki.path("ca.crt")}})

        def talk():
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                f = s.makefile("rb")
                if f.readline() != b"tls-echo\n":
                    return False
                s.sendall(b"hello over tls\n")
                return f.readline() == b"hello over tls\n"
        assert wait_until(lambda: talk(), 10, interval=0.1)
        assert echo.handshakes >= 1
        assert metric(admin, "zkgate_upstream_tls_handshakes_total", 'service="echo"') >= 1
    finally:
        echo.close()


def test_check_reports_bad_upstream_keys(tmp_path, pki):
    ini = tmp_path / "bad.ini"
    ini.write_text("\n".join([
        "[service:a]",
        "protocol = http",
        "listen = 127.0.0.1:1",
        "instances = https://127.0.0.1:2",
        f"upstream_ca = {tmp_path}/missing.crt",
        "upstream_tls = sometimes",
        "",
        "[service:b]",
        "protocol = tcp",
        "listen = 127.0.0.1:3",
        "instances = 127.0.0.1:4",
        "upstream_tls = off",
        "upstream_sni = x.example.com",
        ""]))
    r = subprocess.run([zkgate_bin(), "-t", "-c", str(ini)], capture_output=True, timeout=10)
    err = r.stderr.decode()
    assert r.returncode != 0
    assert "bad.ini:6: upstream_tls: expected auto, on or off, got 'sometimes'" in err, err
    assert "bad.ini:13: upstream_ca, upstream_verify, upstream_sni" in err, err
    ini.write_text("\n".join([
        "[service:a]",
        "protocol = http",
        "listen = 127.0.0.1:1",
        "instances = https://127.0.0.1:2",
        f"upstream_ca = {tmp_path}/missing.crt",
        ""]))
    r = subprocess.run([zkgate_bin(), "-t", "-c", str(ini)], capture_output=True, timeout=10)
    err = r.stderr.decode()
    assert r.returncode != 0
    assert f"bad.ini:5: upstream_ca {tmp_path}/missing.crt: No such file" in err, err
    ini.write_text("\n".join([
        "[service:a]",
        "protocol = http",
        "listen = 127.0.0.1:1",
        "instances = https://127.0.0.1:2",
        f"upstream_ca = {pki.path('ca.crt')}",
        ""]))
    r = subprocess.run([zkgate_bin(), "-t", "-c", str(ini)], capture_output=True, timeout=10)
    assert r.returncode == 0, r.stderr.decode()


def test_static_https_instance(gateway, tls_backends, pki):
    secure = tls_backends("secure", pki.local)
    port = free_port()
    from zkharness import ini_text
    ini = ini_text({"web": {"protocol": "http", "listen": f"127.0.0.1:{port}",
                            "instances": f"https://{secure.addr}",
                            "upstream_ca": pki.path("ca.crt")}})
    gateway(ini, listen=port)
    wait_answer(port, "secure")


def test_failed_plain_port_of_an_ssl_registration_is_skipped(zk, kz, zpath, gateway,
                                                             http_backends):
    # A Curator registration with sslPort and port, under upstream_tls = off, is reached on
    # its plain port: that is the address marked failed when it refuses, and the one passive
    # health must skip (it once looked the sslPort up, so the dead plain port was tried again
    # by every other request: a connect failure, or a connect_timeout, each time).
    live = http_backends("live")
    dead = free_port()  # nothing listens on the plain port
    dead_node = register(kz, zpath, curator("127.0.0.1", port=dead, ssl_port=free_port(),
                                            id_="dead"))
    register(kz, zpath, f"http://{live.addr}".encode())
    port = free_port()
    gw, admin = start(gateway, zk, {"off": http_service(
        zpath, port, upstream_tls="off", balance="round_robin")},
        proxy={"fail_timeout": "60s"})
    wait_answer(port, "live")
    for i in range(12):
        st, doc = http_get(port)
        assert st == 200 and doc["name"] == "live", f"request {i}: {st} {doc!r}"
    # Every worker may find the dead port once before the shared mark; never again after.
    failures = metric(admin, "zkgate_upstream_connect_failures_total", 'service="off"')
    assert 1 <= failures <= TEST_WORKERS, (
        f"{failures} connect failures to the plain port marked failed: passive health did "
        f"not skip it")
    # /services shows the registration (its sslPort) with the health of what is used.
    c = http.client.HTTPConnection("127.0.0.1", admin, timeout=5)
    c.request("GET", "/services")
    doc = json.loads(c.getresponse().read())
    c.close()
    svc = next(s for s in doc["services"] if s["name"] == "off")
    health = {i["znode"].rsplit("/", 1)[-1] == dead_node.rsplit("/", 1)[-1]: i["health"]
              for i in svc["instances"]}
    assert health == {True: "failed", False: "ok"}, svc["instances"]
