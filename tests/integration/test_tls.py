"""TLS termination: HTTP and TCP services with tls_cert and tls_key, certificates chosen by
SNI on a shared listen address, client certificates (required and optional) with the subject
passed upstream, certificates renewed by SIGHUP while a connection stays open, bad files on
reload, key file permissions, the handshake metrics, and `zkgate -t` on bad TLS keys.

A private CA, server and client certificates are made here with the openssl command (nothing
secret is committed). Clients: curl, Python's ssl and `openssl s_client`; instances: the real
HTTP backend (which answers with the headers it received) and the TCP echo backend, found in a
real ZooKeeper."""

import http.client
import json
import os
import re
import signal
import socket
import ssl
import struct
import subprocess

import pytest

from zkharness import free_port, ini_text, register, wait_until, zkgate_bin


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)


class Pki:
    """A CA for servers and one for clients, and leaf certificates they sign."""

    def __init__(self, d):
        self.d = d
        self.ca = self._ca("ca", "zkgate test server CA")
        self.client_ca = self._ca("client-ca", "zkgate test client CA")
        self.other_ca = self._ca("other-ca", "someone else's CA")

    def path(self, name):
        return str(self.d / name)

    def _ca(self, name, cn):
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-days", "1", "-keyout", self.path(name + ".key"),
                "-out", self.path(name + ".crt"), "-subj", f"/CN={cn}")
        return name

    def leaf(self, name, cn, ca=None, dns=True):
        """A key and a certificate for `cn` signed by `ca` (default: the server CA). Returns
        (cert path, key path); the key file is mode 0600."""
        ca = ca or self.ca
        key, csr, crt = (self.path(name + ext) for ext in (".key", ".csr", ".crt"))
        args = ["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-keyout", key, "-out", csr, "-subj", f"/CN={cn}"]
        if dns:
            args += ["-addext", f"subjectAltName=DNS:{cn}"]
        openssl(*args)
        openssl("x509", "-req", "-in", csr, "-CA", self.path(ca + ".crt"),
                "-CAkey", self.path(ca + ".key"), "-set_serial",
                str(int.from_bytes(os.urandom(8), "big")), "-days", "1",
                "-copy_extensions", "copy", "-out", crt)
        os.chmod(key, 0o600)
        return crt, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    p = Pki(tmp_path_factory.mktemp("pki"))
    p.a = p.leaf("a", "a.example.com")
    p.b = p.leaf("b", "x.b.example.com")
    p.alice = p.leaf("alice", "alice", ca=p.client_ca, dns=False)
    p.mallory = p.leaf("mallory", "mallory", ca=p.other_ca, dns=False)
    return p


def client_ctx(pki, cert=None, alpn=None):
    ctx = ssl.create_default_context(cafile=pki.path("ca.crt"))
    if cert:
        ctx.load_cert_chain(*cert)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def tls_conn(port, name, ctx, timeout=5.0):
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        return ctx.wrap_socket(raw, server_hostname=name)
    except BaseException:
        raw.close()
        raise


class TlsHttp(http.client.HTTPSConnection):
    """http.client over an existing TLS socket (to keep one connection across a reload)."""

    def __init__(self, tls):
        super().__init__("127.0.0.1", timeout=5)
        self.sock = tls

    def connect(self):
        raise AssertionError("the connection was closed")


def get(tls, path="/", headers=None, host="a.example.com"):
    c = TlsHttp(tls)
    c.request("GET", path, headers={"Host": host, **(headers or {})})
    r = c.getresponse()
    body = r.read()
    return r.status, (json.loads(body) if r.getheader("Content-Type") == "application/json"
                      else body)


def headers_of(doc):
    return {k.lower(): v for k, v in doc["headers"]}


def serial(tls):
    return tls.getpeercert()["serialNumber"]


def cn(tls):
    return dict(x[0] for x in tls.getpeercert()["subject"])["commonName"]


def metrics(admin):
    c = http.client.HTTPConnection("127.0.0.1", admin, timeout=3)
    c.request("GET", "/metrics")
    body = c.getresponse().read().decode()
    c.close()
    return body


def metric(admin, name, labels):
    m = re.search(re.escape(name) + r"\{" + labels + r"\} (\d+)", metrics(admin))
    return int(m.group(1)) if m else None


def start(gateway, zk, services, admin=True, proxy=None):
    admin_port = free_port() if admin else None
    ini = ini_text(services, zookeeper={"hosts": zk.hosts, "session_timeout": "4s"},
                   proxy={"header_timeout": "2s", "drain_timeout": "2s", **(proxy or {})},
                   admin={"listen": f"127.0.0.1:{admin_port}"} if admin else None)
    ports = {int(s["listen"].rsplit(":", 1)[1]) for s in services.values()}
    gw = gateway(ini, listen=sorted(ports) + ([admin_port] if admin else []))
    return gw, admin_port


def https_service(zpath, port, pki, cert=None, **kw):
    crt, key = cert or pki.a
    return {"protocol": "http", "listen": f"127.0.0.1:{port}", "zk_path": zpath,
            "tls_cert": crt, "tls_key": key, **kw}


def wait_https(port, pki, name="a.example.com", cert=None):
    def ok():
        try:
            with tls_conn(port, name, client_ctx(pki, cert)) as t:
                return get(t, host=name)[0] == 200
        except (OSError, ssl.SSLError, http.client.HTTPException):
            return False
    assert wait_until(ok, 10, interval=0.1), "no instance behind the TLS listener"


# ---------------------------------------------------------------------------------------------


def test_http_termination(zk, kz, zpath, gateway, http_backends, pki):
    web = http_backends("web")
    register(kz, zpath, f"http://{web.addr}".encode())
    port = free_port()
    gw, admin = start(gateway, zk, {"web": https_service(zpath, port, pki)})
    wait_https(port, pki)
    # curl, verifying the certificate against the CA: X-Forwarded-Proto says https, and a
    # client's own X-Client-Cert-Subject (no client certificates here) does not get through
    r = subprocess.run(["curl", "-sS", "--cacert", pki.path("ca.crt"), "--resolve",
                        f"a.example.com:{port}:127.0.0.1", "-H", "X-Forwarded-Proto: http",
                        "-H", "X-Client-Cert-Subject: CN=admin",
                        f"https://a.example.com:{port}/x?y=1", "-w", "\n%{http_version}"],
                       capture_output=True, timeout=10)
    assert r.returncode == 0, r.stderr
    body, version = r.stdout.decode().rsplit("\n", 1)
    doc = json.loads(body)
    h = headers_of(doc)
    assert version == "2" and doc["path"] == "/x?y=1"  # ALPN h2 ([proxy] http2 = on)
    assert h["x-forwarded-proto"] == "https"
    assert "x-client-cert-subject" not in h
    # the same over HTTP/1.1 when the client offers only that
    r = subprocess.run(["curl", "-sS", "--http1.1", "--cacert", pki.path("ca.crt"), "--resolve",
                        f"a.example.com:{port}:127.0.0.1", "-H", "X-Forwarded-Proto: http",
                        "-H", "X-Client-Cert-Subject: CN=admin",
                        f"https://a.example.com:{port}/x?y=1", "-w", "\n%{http_version}"],
                       capture_output=True, timeout=10)
    assert r.returncode == 0, r.stderr
    body, version = r.stdout.decode().rsplit("\n", 1)
    doc = json.loads(body)
    h = headers_of(doc)
    assert version == "1.1" and doc["path"] == "/x?y=1"
    assert h["x-forwarded-proto"] == "https"
    assert "x-client-cert-subject" not in h
    # ALPN: h2 first, then http/1.1, among what the client offers; nothing when it offers
    # neither
    with tls_conn(port, "a.example.com", client_ctx(pki, alpn=["http/1.1"])) as t:
        assert t.selected_alpn_protocol() == "http/1.1"
        assert t.version() in ("TLSv1.2", "TLSv1.3")
        assert get(t)[0] == 200
    with tls_conn(port, "a.example.com", client_ctx(pki, alpn=["http/1.1", "h2"])) as t:
        assert t.selected_alpn_protocol() == "h2"
    with tls_conn(port, "a.example.com", client_ctx(pki, alpn=["spdy/3"])) as t:
        assert t.selected_alpn_protocol() is None
    # keep-alive: several requests on one TLS connection, one of them with a body
    with tls_conn(port, "a.example.com", client_ctx(pki)) as t:
        c = TlsHttp(t)
        for i in range(3):
            c.request("POST", f"/n{i}", body=b"z" * 100000, headers={"Host": "a.example.com"})
            doc = json.loads(c.getresponse().read())
            assert doc["path"] == f"/n{i}" and doc["body_len"] == 100000
        c.request("GET", "/big/300000", headers={"Host": "a.example.com"})
        assert len(c.getresponse().read()) == 300000
    # TLS 1.1 is refused by the server (the client is allowed to offer it: SECLEVEL=0)
    for proto, ok in (("-tls1_1", False), ("-tls1", False), ("-tls1_2", True)):
        r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", proto,
                            "-cipher", "DEFAULT@SECLEVEL=0", "-servername", "a.example.com",
                            "-CAfile", pki.path("ca.crt"), "-verify_return_error"],
                           input=b"", capture_output=True, timeout=10)
        out = (r.stdout + r.stderr).decode(errors="replace")
        if ok:
            assert "Verify return code: 0 (ok)" in out and "TLSv1.2" in out, out
        else:
            assert "alert protocol version" in out, out
    assert "handshake failed: unsupported protocol" in gw.log_text()
    # a plain HTTP request to the TLS port is a failed handshake, counted and logged
    before = metric(admin, "zkgate_tls_handshake_failures_total", f'listener="127.0.0.1:{port}"')
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n")
        try:
            s.recv(100)
        except ConnectionResetError:
            pass
    assert wait_until(lambda: metric(admin, "zkgate_tls_handshake_failures_total",
                                     f'listener="127.0.0.1:{port}"') == before + 1, 3)
    assert re.search(r"handshake failed: (http request|wrong version number)", gw.log_text())
    # a port check (connect, close) is not a failed handshake
    socket.create_connection(("127.0.0.1", port), timeout=3).close()
    with tls_conn(port, "a.example.com", client_ctx(pki)) as t:
        assert get(t)[0] == 200
    assert metric(admin, "zkgate_tls_handshake_failures_total",
                  f'listener="127.0.0.1:{port}"') == before + 1
    assert metric(admin, "zkgate_tls_handshakes_total",
                  f'listener="127.0.0.1:{port}",resumed="no"') >= 5


def test_session_resumption(zk, kz, zpath, gateway, http_backends, pki):
    web = http_backends("web")
    register(kz, zpath, f"http://{web.addr}".encode())
    port = free_port()
    gw, admin = start(gateway, zk, {"web": https_service(zpath, port, pki)})
    wait_https(port, pki)
    for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
        ctx = client_ctx(pki)
        ctx.maximum_version = version
        with tls_conn(port, "a.example.com", ctx) as t:
            assert get(t)[0] == 200  # TLS 1.3 tickets come after the handshake
            session = t.session
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        with ctx.wrap_socket(raw, server_hostname="a.example.com", session=session) as t:
            assert t.session_reused, version
            assert get(t)[0] == 200
    assert metric(admin, "zkgate_tls_handshakes_total",
                  f'listener="127.0.0.1:{port}",resumed="yes"') == 2


def test_tcp_termination(zk, kz, zpath, gateway, backends, pki):
    echo = backends("echo")
    register(kz, zpath, echo.addr.encode())
    port = free_port()
    crt, key = pki.a
    gw, admin = start(gateway, zk, {"echo": {"protocol": "tcp", "listen": f"127.0.0.1:{port}",
                                             "zk_path": zpath, "tls_cert": crt,
                                             "tls_key": key}})

    def line(t):
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = t.recv(4096)
            if not chunk:
                break
            buf += chunk
        return buf

    assert wait_until(lambda: echo.accepted > 0 or _try_tcp(port, pki), 10, interval=0.1)
    with tls_conn(port, "a.example.com", client_ctx(pki)) as t:
        assert cn(t) == "a.example.com"
        assert t.selected_alpn_protocol() is None  # no ALPN on a TCP listener
        assert line(t) == b"echo\n"
        big = os.urandom(200000)
        t.sendall(big)
        got = b""
        while len(got) < len(big):
            chunk = t.recv(65536)
            assert chunk, "closed early"
            got += chunk
        assert got == big
        t.sendall(b"last\n")
        assert line(t) == b"last\n"
        # our close_notify is a half-close: the instance sees EOF and answers "bye", which
        # comes back before zkgate's close_notify (Python's unwrap says so its own way)
        with pytest.raises(ssl.SSLError, match="APPLICATION_DATA_AFTER_CLOSE_NOTIFY"):
            t.unwrap()
    # plain bytes to a TLS TCP port reach no instance
    accepted = echo.accepted
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        s.sendall(b"hello\n")
        try:
            assert s.recv(100) == b""
        except ConnectionResetError:
            pass
    assert echo.accepted == accepted
    assert metric(admin, "zkgate_tls_handshake_failures_total",
                  f'listener="127.0.0.1:{port}"') >= 1
    # TLS terminated here: relayed through user space, never spliced
    assert metric(admin, "zkgate_tcp_spliced_bytes_total", 'service="echo"') == 0


def test_tcp_client_reset_is_not_an_end_of_stream(zk, kz, zpath, gateway, backends, pki,
                                                  tmp_path):
    """A TLS client whose connection is reset (no close_notify, no FIN) ends the session as a
    reset; it is not relayed to the instance as a half-close."""
    echo = backends("echo")
    register(kz, zpath, echo.addr.encode())
    port = free_port()
    log = tmp_path / "access.log"
    crt, key = pki.a
    start(gateway, zk, {"echo": {"protocol": "tcp", "listen": f"127.0.0.1:{port}",
                                 "zk_path": zpath, "tls_cert": crt, "tls_key": key}},
          admin=False, proxy={"access_log": str(log)})
    assert wait_until(lambda: _try_tcp(port, pki), 10, interval=0.1)
    t = tls_conn(port, "a.example.com", client_ctx(pki))
    buf = b""
    while not buf.endswith(b"\n"):
        buf += t.recv(100)
    assert buf == b"echo\n"
    t.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    t.close()  # a reset: no close_notify, no FIN
    assert wait_until(lambda: log.exists() and "client reset" in log.read_text(), 5), \
        log.read_text() if log.exists() else "no access log"


def _try_tcp(port, pki):
    try:
        with tls_conn(port, "a.example.com", client_ctx(pki)) as t:
            return t.recv(100) == b"echo\n"
    except (OSError, ssl.SSLError):
        return False


def test_tcp_handshake_timeout(zk, kz, zpath, gateway, backends, pki):
    echo = backends("echo")
    register(kz, zpath, echo.addr.encode())
    port = free_port()
    crt, key = pki.a
    gw, admin = start(gateway, zk, {"echo": {"protocol": "tcp", "listen": f"127.0.0.1:{port}",
                                             "zk_path": zpath, "tls_cert": crt,
                                             "tls_key": key}})
    with socket.create_connection(("127.0.0.1", port), timeout=6) as s:
        s.sendall(b"\x16\x03\x01")  # a record begun, never finished
        assert s.recv(10) == b""  # closed by header_timeout (2 s), not by us
    assert "handshake failed: timeout" in gw.log_text()
    assert echo.accepted == 0


def test_sni_chooses_the_certificate(zk, kz, zpath, gateway, http_backends, pki):
    a, b = http_backends("a", "b")
    register(kz, zpath + "/a", f"http://{a.addr}".encode())
    register(kz, zpath + "/b", f"http://{b.addr}".encode())
    port = free_port()
    gw, _ = start(gateway, zk, {
        "a": https_service(zpath + "/a", port, pki, cert=pki.a, host="a.example.com"),
        "b": https_service(zpath + "/b", port, pki, cert=pki.b, host="*.b.example.com"),
    })
    wait_https(port, pki)
    wait_https(port, pki, name="x.b.example.com")
    with tls_conn(port, "a.example.com", client_ctx(pki)) as t:
        assert cn(t) == "a.example.com"
        assert get(t, host="a.example.com")[1]["name"] == "a"
    with tls_conn(port, "x.b.example.com", client_ctx(pki)) as t:
        assert cn(t) == "x.b.example.com"
        assert get(t, host="x.b.example.com")[1]["name"] == "b"
    # unknown names, and no name at all, get the first service's certificate
    ctx = client_ctx(pki)
    ctx.check_hostname = False
    for name in ("unknown.example.org", "b.example.com", None):
        with tls_conn(port, name, ctx) as t:
            assert cn(t) == "a.example.com", name
    # openssl s_client sees the same
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}",
                        "-servername", "y.b.example.com", "-CAfile", pki.path("ca.crt")],
                       input=b"", capture_output=True, timeout=10)
    assert re.search(r"subject=CN ?= ?x\.b\.example\.com", r.stdout.decode()), r.stdout


def test_client_certificates(zk, kz, zpath, gateway, http_backends, pki):
    web = http_backends("web")
    register(kz, zpath, f"http://{web.addr}".encode())
    req_port, opt_port = free_port(), free_port()
    gw, admin = start(gateway, zk, {
        "req": https_service(zpath, req_port, pki, tls_client_ca=pki.path("client-ca.crt")),
        "opt": https_service(zpath, opt_port, pki, tls_client_ca=pki.path("client-ca.crt"),
                             tls_verify_client="optional"),
    })
    wait_https(req_port, pki, cert=pki.alice)
    label = f'listener="127.0.0.1:{req_port}"'
    before = metric(admin, "zkgate_tls_handshake_failures_total", label)
    # required: no certificate, or one from another CA, and the handshake fails (TLS 1.3
    # clients learn it at their first read)
    for cert in (None, pki.mallory):
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
            with tls_conn(req_port, "a.example.com", client_ctx(pki, cert)) as t:
                get(t)
    assert wait_until(lambda: metric(admin, "zkgate_tls_handshake_failures_total",
                                     label) == before + 2, 3)
    log = gw.log_text()
    assert re.search(r"handshake failed: .*(peer did not return a certificate|"
                     r"no certificate)", log), log
    assert "client certificate: unable to get local issuer certificate" in log
    # a good certificate: its subject reaches the instance, in place of the client's own
    with tls_conn(req_port, "a.example.com", client_ctx(pki, pki.alice)) as t:
        status, doc = get(t, headers={"X-Client-Cert-Subject": "CN=root"})
        assert status == 200
        assert headers_of(doc)["x-client-cert-subject"] == "CN=alice"
        assert [k for k, _ in doc["headers"]].count("X-Client-Cert-Subject") == 1
    # optional: without a certificate the request passes, without the header (a forged one
    # is removed); with one, the header; one from another CA fails the handshake
    with tls_conn(opt_port, "a.example.com", client_ctx(pki)) as t:
        status, doc = get(t, headers={"X-Client-Cert-Subject": "CN=root"})
        assert status == 200 and "x-client-cert-subject" not in headers_of(doc)
    with tls_conn(opt_port, "a.example.com", client_ctx(pki, pki.alice)) as t:
        assert headers_of(get(t)[1])["x-client-cert-subject"] == "CN=alice"
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
        with tls_conn(opt_port, "a.example.com", client_ctx(pki, pki.mallory)) as t:
            get(t)
    # curl with a client certificate
    r = subprocess.run(["curl", "-sS", "--cacert", pki.path("ca.crt"), "--cert", pki.alice[0],
                        "--key", pki.alice[1], "--resolve",
                        f"a.example.com:{req_port}:127.0.0.1",
                        f"https://a.example.com:{req_port}/"],
                       capture_output=True, timeout=10)
    assert r.returncode == 0, r.stderr
    assert headers_of(json.loads(r.stdout))["x-client-cert-subject"] == "CN=alice"


def test_client_certificate_per_host(zk, kz, zpath, gateway, http_backends, pki):
    """On one address, service a requires client certificates and b does not: a connection
    made for b's name cannot carry requests for a (421), and a's subject never reaches b."""
    a, b = http_backends("a", "b")
    register(kz, zpath + "/a", f"http://{a.addr}".encode())
    register(kz, zpath + "/b", f"http://{b.addr}".encode())
    port = free_port()
    gw, _ = start(gateway, zk, {
        "a": https_service(zpath + "/a", port, pki, cert=pki.a, host="a.example.com",
                           tls_client_ca=pki.path("client-ca.crt")),
        "b": https_service(zpath + "/b", port, pki, cert=pki.b, host="*.b.example.com"),
    })
    wait_https(port, pki, name="x.b.example.com")
    with tls_conn(port, "x.b.example.com", client_ctx(pki)) as t:
        assert get(t, host="x.b.example.com")[1]["name"] == "b"
        status, body = get(t, host="a.example.com")
        assert status == 421, body
    with tls_conn(port, "a.example.com", client_ctx(pki, pki.alice)) as t:
        status, doc = get(t, host="a.example.com")
        assert doc["name"] == "a" and headers_of(doc)["x-client-cert-subject"] == "CN=alice"
        status, doc = get(t, host="x.b.example.com")
        assert doc["name"] == "b" and "x-client-cert-subject" not in headers_of(doc)


@pytest.mark.parametrize("version", ["TLSv1_3", "TLSv1_2"])
def test_session_of_one_site_does_not_resume_on_another(zk, kz, zpath, gateway, http_backends,
                                                        pki, version):
    """Site a (the default certificate) accepts client certificates of other-ca; site b
    requires one of client-ca. A session made at a with mallory's other-ca certificate, offered
    with b's name, must not carry mallory into b: no resumption there, a full handshake that
    asks b's question. Sessions still resume on the site they were made for."""
    a, b = http_backends("a", "b")
    register(kz, zpath + "/a", f"http://{a.addr}".encode())
    register(kz, zpath + "/b", f"http://{b.addr}".encode())
    port = free_port()
    gw, _ = start(gateway, zk, {
        "a": https_service(zpath + "/a", port, pki, cert=pki.a, host="a.example.com",
                           tls_client_ca=pki.path("other-ca.crt"),
                           tls_verify_client="optional"),
        "b": https_service(zpath + "/b", port, pki, cert=pki.b, host="*.b.example.com",
                           tls_client_ca=pki.path("client-ca.crt")),
    })
    wait_https(port, pki)
    ctx = client_ctx(pki, pki.mallory)
    ctx.check_hostname = False
    ctx.maximum_version = getattr(ssl.TLSVersion, version)
    with tls_conn(port, "a.example.com", ctx) as t:
        status, doc = get(t, host="a.example.com")  # TLS 1.3 tickets come after it
        assert status == 200 and headers_of(doc)["x-client-cert-subject"] == "CN=mallory"
        session = t.session
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        with ctx.wrap_socket(raw, server_hostname="x.b.example.com", session=session) as t:
            reused = t.session_reused
            status, doc = get(t, host="x.b.example.com")
    except (ssl.SSLError, ConnectionError, http.client.HTTPException):
        reused, status, doc = False, None, None  # b's own handshake refused mallory
    assert not reused, "a session made for a resumed under b's name"
    assert not (status == 200 and doc["name"] == "b"), doc
    # The session still resumes where it was made.
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    with ctx.wrap_socket(raw, server_hostname="a.example.com", session=session) as t:
        assert t.session_reused
        assert get(t, host="a.example.com")[0] == 200


def test_subject_header_removed_on_plain_listener(zk, kz, zpath, gateway, http_backends):
    web = http_backends("web")
    register(kz, zpath, f"http://{web.addr}".encode())
    port = free_port()
    gw, _ = start(gateway, zk, {"web": {"protocol": "http", "listen": f"127.0.0.1:{port}",
                                        "zk_path": zpath}}, admin=False)

    def ok():
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
        c.request("GET", "/", headers={"X-Client-Cert-Subject": "CN=admin",
                                       "x-client-cert-subject": "CN=root",
                                       "X_Client_Cert_Subject": "CN=cgi",
                                       "X-Forwarded-Proto": "https",
                                       "X_Forwarded_Proto": "https"})
        r = c.getresponse()
        body = r.read()
        c.close()
        return r.status == 200 and json.loads(body)
    doc = wait_until(ok, 10, interval=0.1)
    assert doc, "no instance"
    h = headers_of(doc)
    assert "x-client-cert-subject" not in h and "x_client_cert_subject" not in h
    assert "x_forwarded_proto" not in h
    assert h["x-forwarded-proto"] == "http"


def test_reload_renews_certificates(zk, kz, zpath, gateway, http_backends, pki, tmp_path):
    web = http_backends("web")
    register(kz, zpath, f"http://{web.addr}".encode())
    crt, key = str(tmp_path / "live.crt"), str(tmp_path / "live.key")
    first = pki.leaf("first", "a.example.com")
    for src, dst in zip(first, (crt, key)):
        with open(src, "rb") as f, open(dst, "wb") as g:
            g.write(f.read())
    os.chmod(key, 0o600)
    port = free_port()
    gw, admin = start(gateway, zk, {"web": https_service(zpath, port, pki, cert=(crt, key))})
    wait_https(port, pki)
    kept = tls_conn(port, "a.example.com", client_ctx(pki))
    old_serial = serial(kept)
    assert get(kept)[0] == 200
    # renewed: same name, new key and serial; SIGHUP; the open connection goes on with the
    # old certificate, new handshakes get the new one
    renewed = pki.leaf("renewed", "a.example.com")
    for src, dst in zip(renewed, (crt, key)):
        with open(src, "rb") as f, open(dst, "wb") as g:
            g.write(f.read())
    gw.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: gw.log_text().count("reloaded:") == 1, 5), gw.log_text()
    assert get(kept)[0] == 200 and get(kept, "/again")[1]["path"] == "/again"
    assert serial(kept) == old_serial
    with tls_conn(port, "a.example.com", client_ctx(pki)) as t:
        new_serial = serial(t)
        assert new_serial != old_serial
        assert get(t)[0] == 200
    # a bad certificate file: the reload is rejected, the renewed certificate stays
    with open(crt, "w") as f:
        f.write("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    gw.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: "reload rejected" in gw.log_text(), 5), gw.log_text()
    assert re.search(r"tls_cert .*live\.crt: not a usable PEM certificate", gw.log_text())
    assert metric(admin, "zkgate_config_reloads_total", 'result="failed"') == 1
    with tls_conn(port, "a.example.com", client_ctx(pki)) as t:
        assert serial(t) == new_serial and get(t)[0] == 200
    assert get(kept, "/still")[0] == 200
    kept.close()
    # a key that does not match the certificate: rejected as well
    for src, dst in zip((renewed[0], first[1]), (crt, key)):
        with open(src, "rb") as f, open(dst, "wb") as g:
            g.write(f.read())
    gw.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: gw.log_text().count("reload rejected") == 2, 5), gw.log_text()
    assert "does not match the certificate" in gw.log_text()
    with tls_conn(port, "a.example.com", client_ctx(pki)) as t:
        assert serial(t) == new_serial


def test_key_readable_by_others_warns(zk, kz, zpath, gateway, http_backends, pki, tmp_path):
    crt, key = pki.leaf("loose", "a.example.com")
    os.chmod(key, 0o644)
    port = free_port()
    gw, _ = start(gateway, zk, {"web": https_service(zpath, port, pki, cert=(crt, key))},
                  admin=False)
    assert gw.wait_log("is readable by others (mode 0644)"), gw.log_text()
    assert "loose.key" in gw.log_text()
    os.chmod(key, 0o640)  # group-readable (Debian's ssl-cert convention) is fine
    gw.proc.send_signal(signal.SIGHUP)
    assert gw.wait_log("reloaded:")
    assert gw.log_text().count("is readable by others") == 1


def test_check_reports_tls_errors(pki, tmp_path):
    other_crt, other_key = pki.b
    lines = [
        "[service:ok]", "protocol = http", "listen = 127.0.0.1:1", "instances = 127.0.0.1:2",
        f"tls_cert = {pki.a[0]}", f"tls_key = {pki.a[1]}",                         # 5, 6
        "[service:mismatch]", "protocol = tcp", "listen = 127.0.0.1:3",
        "instances = 127.0.0.1:2", f"tls_cert = {pki.a[0]}", f"tls_key = {other_key}",  # 12
        "[service:missing]", "protocol = tcp", "listen = 127.0.0.1:4",
        "instances = 127.0.0.1:2", f"tls_cert = {tmp_path}/nope.crt",                 # 17
        f"tls_key = {pki.a[1]}",
        "[service:verify]", "protocol = tcp", "listen = 127.0.0.1:5",
        "instances = 127.0.0.1:2", f"tls_cert = {pki.a[0]}", f"tls_key = {pki.a[1]}",
        "tls_verify_client = required",                                               # 25
        "[service:ciphers]", "protocol = tcp", "listen = 127.0.0.1:6",
        "instances = 127.0.0.1:2", f"tls_cert = {pki.a[0]}", f"tls_key = {pki.a[1]}",
        "tls_ciphers = NOT-A-CIPHER",                                                 # 32
        "[service:plain]", "protocol = http", "listen = 127.0.0.1:1",                 # 35
        "instances = 127.0.0.1:2", "host = plain.example.com",
        "[service:half]", "protocol = tcp", "listen = 127.0.0.1:7",
        "instances = 127.0.0.1:2", f"tls_key = {pki.a[1]}",                           # 41
    ]
    ini = tmp_path / "bad.ini"
    ini.write_text("\n".join(lines) + "\n")
    r = subprocess.run([zkgate_bin(), "-t", "-c", str(ini)], capture_output=True, timeout=10)
    err = r.stderr.decode()
    assert r.returncode == 1, err
    def at(text, start=0):
        return lines.index(text, start) + 1

    want = [
        (at(f"tls_key = {other_key}"), "does not match the certificate"),
        (at(f"tls_cert = {tmp_path}/nope.crt"), "No such file or directory"),
        (at("tls_verify_client = required"), "tls_verify_client needs tls_client_ca"),
        (at("tls_ciphers = NOT-A-CIPHER"), "tls_ciphers: no usable cipher in 'NOT-A-CIPHER'"),
        (at("listen = 127.0.0.1:1", 5), "HTTP services sharing a listen address must all"),
        (at(f"tls_key = {pki.a[1]}", at("[service:half]")), "tls_cert is missing"),
    ]
    for line, text in want:
        assert re.search(rf"{re.escape(str(ini))}:{line}: .*{re.escape(text)}", err), \
            (line, text, err)
    assert f"{ini}:5:" not in err and f"{ini}:6:" not in err  # [service:ok] is fine
    # the same file without the bad sections is fine
    ini.write_text("\n".join(lines[:6]) + "\n")
    r = subprocess.run([zkgate_bin(), "-t", "-c", str(ini)], capture_output=True, timeout=10)
    assert r.returncode == 0, r.stderr
