"""tls-passthrough: services sharing one listen address chosen by the server name of the
ClientHello, which zkgate reads without terminating TLS. Real TLS on both sides: certificates
made here with the openssl command, Python ssl backends with one certificate each, Python ssl
and `openssl s_client` as clients. The certificate a client sees, and the server name the
backend saw, prove which backend answered and that the bytes went through untouched."""

import http.client
import re
import signal
import socket
import ssl
import subprocess
import threading
import time

import pytest

from zkharness import free_port, ini_text, register, wait_until

NAMES = {"a": "a.example.com", "b": "*.b.example.com", "d": "default.example.com"}


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """One self-signed certificate per backend, made now (nothing secret is committed)."""
    d = tmp_path_factory.mktemp("certs")
    out = {}
    for name, host in NAMES.items():
        key, crt = d / f"{name}.key", d / f"{name}.crt"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
                        "-keyout", str(key), "-out", str(crt), "-subj", f"/CN={host}",
                        "-addext", f"subjectAltName=DNS:{host}"],
                       check=True, capture_output=True, timeout=30)
        out[name] = (str(crt), str(key))
    return out


class TlsBackend:
    """A TLS server with its own certificate: after the handshake it sends
    "<name> <server name it saw>\\n", then echoes until the client closes."""

    def __init__(self, name, crt, key):
        self.name = name
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(crt, key)
        self.ctx.sni_callback = self._on_sni
        self._seen = threading.local()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept_loop, daemon=True).start()

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    def _on_sni(self, sslobj, server_name, ctx):
        sslobj.seen_name = server_name

    def _accept_loop(self):
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        conn.settimeout(10)
        try:
            with self.ctx.wrap_socket(conn, server_side=True) as tls:
                seen = getattr(tls, "seen_name", None) or "-"
                tls.sendall(f"{self.name} {seen}\n".encode())
                while True:
                    data = tls.recv(65536)
                    if not data:
                        return
                    tls.sendall(data)
        except (OSError, ssl.SSLError):
            pass

    def close(self):
        self.closed = True
        self.sock.close()


@pytest.fixture
def tls_backends(certs):
    made = {name: TlsBackend(name, *certs[name]) for name in NAMES}
    yield made
    for b in made.values():
        b.close()


def client_ctx(certs):
    ctx = ssl.create_default_context()
    for crt, _ in certs.values():
        ctx.load_verify_locations(crt)
    return ctx


def tls_line(port, name, certs, timeout=3.0, check=True):
    """TLS through the gateway with SNI `name` (None: no SNI, no host check): returns the
    backend's first line and the certificate's CN."""
    ctx = client_ctx(certs)
    if name is None or not check:
        ctx.check_hostname = False
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        with ctx.wrap_socket(raw, server_hostname=name) as tls:
            cn = dict(x[0] for x in tls.getpeercert()["subject"])["commonName"]
            line = b""
            while not line.endswith(b"\n"):
                chunk = tls.recv(1024)
                if not chunk:
                    break
                line += chunk
            return line.decode().strip(), cn


def closed_at_once(port, payload, timeout=2.0):
    """Send `payload` raw; True when the gateway closes without a byte within `timeout`."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(payload)
        try:
            return s.recv(1024) == b""
        except ConnectionResetError:
            return True


def sni_ini(zk, zpath, port, with_default=False, admin=None, a_sni="a.example.com"):
    services = {
        "a": {"protocol": "tls-passthrough", "listen": f"127.0.0.1:{port}", "sni": a_sni,
              "zk_path": zpath + "/a"},
        "b": {"protocol": "tls-passthrough", "listen": f"127.0.0.1:{port}",
              "sni": "*.b.example.com", "zk_path": zpath + "/b"},
    }
    if with_default:
        services["d"] = {"protocol": "tls-passthrough", "listen": f"127.0.0.1:{port}",
                         "zk_path": zpath + "/d"}
    return ini_text(services, zookeeper={"hosts": zk.hosts, "session_timeout": "4s"},
                    proxy={"header_timeout": "2s", "drain_timeout": "2s"},
                    admin={"listen": f"127.0.0.1:{admin}"} if admin else None)


def start(zk, kz, zpath, gateway, tls_backends, certs, **kw):
    for name, b in tls_backends.items():
        register(kz, f"{zpath}/{name}", b.addr.encode())
    port = free_port()
    admin = free_port()
    gw = gateway(sni_ini(zk, zpath, port, admin=admin, **kw), listen=[port, admin])

    def ready():
        try:
            return tls_line(port, "a.example.com", certs)[0].startswith("a ") and \
                tls_line(port, "x.b.example.com", certs)[0].startswith("b ")
        except (OSError, ssl.SSLError):
            return False
    assert wait_until(ready, 10, interval=0.1), "pools not delivered"
    return gw, port, admin


def metrics(admin):
    c = http.client.HTTPConnection("127.0.0.1", admin, timeout=3)
    c.request("GET", "/metrics")
    body = c.getresponse().read().decode()
    c.close()
    return body


def test_each_server_name_reaches_its_service(zk, kz, zpath, gateway, tls_backends, certs):
    gw, port, admin = start(zk, kz, zpath, gateway, tls_backends, certs)
    assert tls_line(port, "a.example.com", certs) == ("a a.example.com", "a.example.com")
    assert tls_line(port, "x.b.example.com", certs) == ("b x.b.example.com", "*.b.example.com")
    # deeper than the certificate's wildcard, which is zkgate's wildcard too
    assert tls_line(port, "deep.x.b.example.com", certs, check=False) == \
        ("b deep.x.b.example.com", "*.b.example.com")
    # openssl s_client as the client: the certificate it prints is the backend's
    for name, want in (("a.example.com", "a.example.com"),
                       ("q.b.example.com", "*.b.example.com")):
        r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}",
                            "-servername", name, "-verify_return_error",
                            "-CAfile", certs["a" if want.startswith("a") else "b"][0]],
                           input=b"", capture_output=True, timeout=10)
        out = r.stdout.decode(errors="replace")
        assert re.search(rf"subject=CN ?= ?{re.escape(want)}", out), out
        assert "Verify return code: 0 (ok)" in out, out
    # zkgate does not decrypt passthrough: what follows the ClientHello is spliced
    spliced = dict(re.findall(r'zkgate_tcp_spliced_bytes_total\{service="(\w)"\} (\d+)',
                              metrics(admin)))
    assert int(spliced["a"]) > 0 and int(spliced["b"]) > 0, \
        f"tls-passthrough bytes not spliced: {spliced}"


def test_unknown_name_and_plain_bytes_are_closed(zk, kz, zpath, gateway, tls_backends,
                                                   certs):
    gw, port, admin = start(zk, kz, zpath, gateway, tls_backends, certs)
    for name in ("c.example.com", "b.example.com", None):  # the apex is not under *.b
        t0 = time.monotonic()
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            tls_line(port, name, certs)
        assert time.monotonic() - t0 < 1.5
    t0 = time.monotonic()
    assert closed_at_once(port, b"GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n")
    assert closed_at_once(port, b"\x80\x2e\x01\x03\x01\x00\x15")  # SSLv2-style hello
    assert time.monotonic() - t0 < 1.5
    text = metrics(admin)
    m = {r: int(v) for r, v in re.findall(
        r'zkgate_tls_rejected_total\{listener="[^"]+",reason="(\w+)"\} (\d+)', text)}
    assert m.get("unknown_sni") == 3 and m.get("not_tls") == 2, text
    log = gw.log_text()
    assert "no service for server name: c.example.com" in log
    assert "not a TLS ClientHello" in log
    # a service's counters hold the sessions it got
    assert re.search(r'zkgate_connections_accepted_total\{service="a"\} [1-9]', text), text


def test_default_service_takes_the_rest(zk, kz, zpath, gateway, tls_backends, certs):
    gw, port, _ = start(zk, kz, zpath, gateway, tls_backends, certs, with_default=True)
    assert tls_line(port, None, certs)[0] == "d -"
    line, cn = tls_line(port, "default.example.com", certs)
    assert line == "d default.example.com" and cn == "default.example.com"
    assert tls_line(port, "a.example.com", certs)[0] == "a a.example.com"
    # not TLS is closed even with a default
    assert closed_at_once(port, b"GET / HTTP/1.0\r\n\r\n")


def test_client_hello_in_one_byte_pieces(zk, kz, zpath, gateway, tls_backends, certs):
    gw, port, _ = start(zk, kz, zpath, gateway, tls_backends, certs)
    ctx = client_ctx(certs)
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="slow.b.example.com")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    hello = out.read()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(hello)):
            s.sendall(hello[i:i + 1])
            time.sleep(0.002)

        def pump(step):
            while True:
                try:
                    return step()
                except ssl.SSLWantReadError:
                    if out.pending:
                        s.sendall(out.read())
                    data = s.recv(65536)
                    assert data, "closed by the gateway"
                    inc.write(data)
        pump(obj.do_handshake)
        if out.pending:
            s.sendall(out.read())
        line = pump(lambda: obj.read(1024))
    assert line == b"b slow.b.example.com\n"
    assert dict(x[0] for x in obj.getpeercert()["subject"])["commonName"] == "*.b.example.com"


def test_slow_hello_times_out(zk, kz, zpath, gateway, tls_backends, certs):
    gw, port, admin = start(zk, kz, zpath, gateway, tls_backends, certs)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"\x16\x03\x01")  # a record header begun, never finished
        t0 = time.monotonic()
        assert s.recv(10) == b""
        assert 1.5 < time.monotonic() - t0 < 4  # header_timeout = 2s
    assert re.search(r'reason="timeout"\} 1', metrics(admin))


def test_reload_keeps_the_listener_and_open_sessions(zk, kz, zpath, gateway, tls_backends,
                                                      certs):
    gw, port, _ = start(zk, kz, zpath, gateway, tls_backends, certs)
    ctx = client_ctx(certs)
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    tls = ctx.wrap_socket(raw, server_hostname="a.example.com")
    assert tls.recv(1024) == b"a a.example.com\n"
    # service a now answers c.example.com (its certificate does not say so: check the line)
    with open(gw.ini_path, "w") as f:
        f.write(sni_ini(zk, zpath, port, a_sni="c.example.com"))
    gw.proc.send_signal(signal.SIGHUP)
    assert gw.wait_log("reloaded:"), gw.log_text()
    tls.sendall(b"still here\n")
    assert tls.recv(1024) == b"still here\n", "the open session did not survive the reload"
    tls.close()
    nctx = client_ctx(certs)
    nctx.check_hostname = False
    with socket.create_connection(("127.0.0.1", port), timeout=3) as r2:
        with nctx.wrap_socket(r2, server_hostname="c.example.com") as t2:
            assert t2.recv(1024) == b"a c.example.com\n"
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        tls_line(port, "a.example.com", certs)
    assert tls_line(port, "x.b.example.com", certs)[0] == "b x.b.example.com"
    # and a reload that changes nothing keeps it all
    gw.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: gw.log_text().count("reloaded:") == 2, 5)
    assert tls_line(port, "y.b.example.com", certs)[0] == "b y.b.example.com"
    assert "cannot listen" not in gw.log_text()


def test_drain_lets_open_sessions_finish(zk, kz, zpath, gateway, tls_backends, certs):
    gw, port, _ = start(zk, kz, zpath, gateway, tls_backends, certs)
    ctx = client_ctx(certs)
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    tls = ctx.wrap_socket(raw, server_hostname="a.example.com")
    assert tls.recv(1024) == b"a a.example.com\n"
    gw.proc.send_signal(signal.SIGTERM)
    assert gw.wait_log("draining"), gw.log_text()
    with pytest.raises(OSError):  # the listener is closed
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    tls.sendall(b"during drain\n")
    assert tls.recv(1024) == b"during drain\n"
    tls.close()
    assert gw.proc.wait(timeout=5) == 0
    gw.stop()
