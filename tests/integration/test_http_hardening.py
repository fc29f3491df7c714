"""HTTP hardening from the outside review (issue 12): request smuggling through a
Content-Length that no signed size holds, a body followed by a pipelined request in one
read, header_timeout while the gateway itself holds a request back, retries after a
response began, transfer codings. Real zkgate, real backends (http.server, and raw
socket servers where exact bytes matter), raw client sockets."""

import socket
import subprocess
import threading
import time

from httpbackend import raw_exchange
from test_http import _read_responses, _small_rcvbuf_socket, doc, http_ini, one_write_backend  # noqa: F401
from zkharness import TEST_WORKERS, free_port, wait_until


def read_response(s, deadline_s=10):
    """Reads one Content-Length or chunked response from s; returns (head, body, rest of
    the bytes read). Fails on EOF before the response is complete."""
    buf = getattr(s, "_pending", b"")
    end = time.monotonic() + deadline_s

    def more():
        nonlocal buf
        assert time.monotonic() < end, f"no complete response in {deadline_s} s: {buf[:300]!r}"
        chunk = s.recv(65536)
        assert chunk, f"EOF before a complete response: {buf[:300]!r}"
        buf += chunk

    while b"\r\n\r\n" not in buf:
        more()
    head, buf = buf.split(b"\r\n\r\n", 1)
    fields = {}
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        fields.setdefault(k.strip().lower(), v.strip())
    if b"content-length" in fields:
        n = int(fields[b"content-length"])
        while len(buf) < n:
            more()
        body, buf = buf[:n], buf[n:]
    else:
        assert b"chunked" in fields.get(b"transfer-encoding", b""), head
        body = b""
        while True:
            while b"\r\n" not in buf:
                more()
            line, buf = buf.split(b"\r\n", 1)
            size = int(line.split(b";")[0], 16)
            while len(buf) < size + 2:
                more()
            body += buf[:size]
            buf = buf[size + 2:]
            if size == 0:
                break
    return head, body, buf


def responses(s, n, deadline_s=10):
    out = []
    pending = b""
    for _ in range(n):
        s._pending = pending
        head, body, pending = read_response(s, deadline_s)
        out.append((head, body))
    return out


class _Sock(socket.socket):
    """A socket that can carry bytes read past one response (read_response's rest)."""
    _pending = b""


def connect(port):
    s = _Sock(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    return s


class RawBackend:
    """A backend of exact bytes: serve(conn, index) runs in a thread per connection, index
    counting connections from 0. `requests` lists the request lines received by read_head."""

    def __init__(self, serve):
        self.serve = serve
        self.requests = []
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns = 0
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                i = self.conns
                self.conns += 1
            threading.Thread(target=self._run, args=(c, i), daemon=True).start()

    def _run(self, c, i):
        try:
            self.serve(self, c, i)
        except OSError:
            pass
        finally:
            c.close()

    def read_head(self, c, buf=b""):
        """Reads one request head (and a Content-Length body); returns the bytes after it,
        or None at EOF."""
        while b"\r\n\r\n" not in buf:
            chunk = c.recv(65536)
            if not chunk:
                return None
            buf += chunk
        head, rest = buf.split(b"\r\n\r\n", 1)
        n = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                n = int(v)
        while len(rest) < n:
            rest += c.recv(65536)
        with self.lock:
            self.requests.append(head.split(b"\r\n")[0].decode())
        return rest[n:]

    def close(self):
        self.sock.close()


# ---- point 1: Content-Length of 2^63 or more ----------------------------------------------

SMUGGLE = (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551615\r\n\r\n"
           b"GET /admin HTTP/1.1\r\nHost: internal\r\nContent-Length: 0\r\n\r\n")


def test_content_length_too_large_for_a_signed_size_is_400_and_never_forwarded(
        http_backends, gateway):
    b = http_backends("b")
    port = free_port()
    gateway(http_ini(port, {"s": {"instances": b.addr}}), listen=port)
    for length in (b"18446744073709551615", b"9223372036854775808"):
        payload = SMUGGLE.replace(b"18446744073709551615", length)
        out = raw_exchange(port, payload)
        assert out.startswith(b"HTTP/1.1 400 "), out[:200]
        assert b"Content-Length too large" in out
        assert out.count(b"HTTP/1.1 ") == 1, out  # closed: the body is never parsed
    # A request after them, on its own connection, is the only one the instance sees.
    out = raw_exchange(port, b"GET /after HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 ")
    assert [m_p for m_p in b.seen] == [("GET", "/after", "a")], b.seen


def test_max_request_body_refuses_larger_bodies_with_413(http_backends, gateway):
    b = http_backends("b")
    port = free_port()
    gateway(http_ini(port, {"s": {"instances": b.addr}}, proxy={"max_request_body": "1k"}),
            listen=port)
    # Announced too large: refused before an instance is contacted.
    out = raw_exchange(port, b"POST /cl HTTP/1.1\r\nHost: a\r\nContent-Length: 1025\r\n\r\n"
                             + b"x" * 1025)
    assert out.startswith(b"HTTP/1.1 413 "), out[:200]
    # Chunked, found too large as it comes.
    chunked = b"".join(b"100\r\n" + b"y" * 256 + b"\r\n" for _ in range(5)) + b"0\r\n\r\n"
    out = raw_exchange(port, b"POST /te HTTP/1.1\r\nHost: a\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n" + chunked)
    assert out.startswith(b"HTTP/1.1 413 "), out[:200]
    # At the limit: passed on whole.
    s = connect(port)
    s.sendall(b"POST /ok HTTP/1.1\r\nHost: a\r\nContent-Length: 1024\r\n\r\n" + b"z" * 1024)
    head, body, _ = read_response(s)
    s.close()
    assert head.startswith(b"HTTP/1.1 200 "), head
    assert doc(body)["body_len"] == 1024
    assert [p for _, p, _ in b.seen if p != "/ok"] in ([], ["/te"]), b.seen


# ---- point 2: a body, then a pipelined request, in one read -------------------------------

PIPELINED = (b"POST /p1 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
             b"GET /p2 HTTP/1.1\r\nHost: a\r\n\r\n")


def test_body_then_pipelined_request_in_one_write_fresh_and_reused_upstream(http_backends,
                                                                            gateway):
    b = http_backends("b")
    port = free_port()
    # Before the fix the body waited unsent until response_timeout: 504.
    gateway(http_ini(port, {"s": {"instances": b.addr, "response_timeout": "3s"}}),
            listen=port)
    for round_ in ("fresh", "reused", "reused again"):
        s = connect(port)
        s.sendall(PIPELINED)
        got = responses(s, 2)
        s.close()
        for head, _ in got:
            assert head.startswith(b"HTTP/1.1 200 "), (round_, head)
        d1, d2 = doc(got[0][1]), doc(got[1][1])
        assert (d1["path"], d1["body_len"], d2["path"]) == ("/p1", 3, "/p2"), (round_, d1, d2)
    # One upstream connection per worker carried them all (each worker keeps its own idle
    # connections, and the kernel spreads clients over workers): the instance was never
    # given up on.
    assert b.connections <= TEST_WORKERS, b.connections


# ---- point 3: header_timeout while the gateway holds a request back -----------------------

def test_header_timeout_does_not_run_while_pipelined_requests_wait_for_the_reader(
        one_write_backend, gateway):
    b = one_write_backend(16000)
    port = free_port()
    gateway(http_ini(port, {"s": {"instances": b.addr}}, proxy={"header_timeout": "1s"}),
            listen=port)
    n = 2000  # 32 MB of responses: the gateway must hold requests back for the reader
    s = _small_rcvbuf_socket(port)
    s.sendall(b"".join(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" for _ in range(n)))
    # The reader stalls for longer than header_timeout; requests already received wait.
    time.sleep(2.5)
    bodies, eof = _read_responses(s, n, deadline_s=60)
    s.close()
    statuses = {h.split(b"\r\n")[0] for h, _ in bodies}
    assert len(bodies) == n and statuses == {b"HTTP/1.1 200 OK"}, (
        f"{len(bodies)} of {n} responses, statuses {statuses}, EOF={eof}")


# ---- point 5: no retry once a response began ----------------------------------------------

def test_request_is_not_retried_after_a_response_byte_arrived(gateway):
    def serve(be, c, i):
        rest = be.read_head(c)
        body = b"first"
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n" + body)
        if be.read_head(c, rest) is None:
            return
        # The second request on this connection gets a broken answer, then the close.
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: zz\r\n\r\n")
        c.shutdown(socket.SHUT_WR)

    be = RawBackend(serve)
    port = free_port()
    gateway(http_ini(port, {"s": {"instances": be.addr}}), listen=port)
    try:
        s = connect(port)
        s.sendall(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n")
        head, body, _ = read_response(s)
        assert head.startswith(b"HTTP/1.1 200 ") and body == b"first"
        s.sendall(b"GET /second HTTP/1.1\r\nHost: a\r\n\r\n")  # on the reused connection
        head, _, _ = read_response(s)
        s.close()
        assert head.startswith(b"HTTP/1.1 502 "), head
        assert be.requests.count("GET /second HTTP/1.1") == 1, be.requests
    finally:
        be.close()


def test_request_is_retried_when_a_reused_connection_closes_without_answering(gateway):
    # The retry itself stays: an idle connection the instance closed as the request went.
    def serve(be, c, i):
        rest = be.read_head(c)
        if rest is None:
            return
        if i == 0:
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
            if be.read_head(c, rest) is not None:
                c.shutdown(socket.SHUT_WR)  # request read, nothing answered
            return
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nretr")

    be = RawBackend(serve)
    port = free_port()
    gateway(http_ini(port, {"s": {"instances": be.addr}}), listen=port)
    try:
        s = connect(port)
        s.sendall(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n")
        assert read_response(s)[1] == b"first"
        s.sendall(b"GET /second HTTP/1.1\r\nHost: a\r\n\r\n")
        head, body, _ = read_response(s)
        s.close()
        assert head.startswith(b"HTTP/1.1 200 ") and body == b"retr", (head, body)
        assert be.requests.count("GET /second HTTP/1.1") == 2, be.requests
    finally:
        be.close()


# ---- point 6: transfer codings ------------------------------------------------------------

def test_request_transfer_coding_other_than_chunked_is_501(http_backends, gateway):
    b = http_backends("b")
    port = free_port()
    gateway(http_ini(port, {"s": {"instances": b.addr}}), listen=port)
    out = raw_exchange(port, b"POST /z HTTP/1.1\r\nHost: a\r\n"
                             b"Transfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 501 "), out[:200]
    out = raw_exchange(port, b"GET /after HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 ")
    assert [p for _, p, _ in b.seen] == ["/after"], b.seen


def test_response_transfer_codings_are_passed_on(gateway):
    payload = bytes(range(256)) * 8  # stands for gzip bytes: the gateway must not care

    def serve(be, c, i):
        rest = b""
        while (rest := be.read_head(c, rest)) is not None:
            c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                      + b"%x\r\n" % len(payload) + payload + b"\r\n0\r\n\r\n")

    be = RawBackend(serve)
    port = free_port()
    gateway(http_ini(port, {"s": {"instances": be.addr}}), listen=port)
    try:
        s = connect(port)
        s.sendall(b"GET /g HTTP/1.1\r\nHost: a\r\n\r\n")
        head, body, _ = read_response(s)
        assert head.startswith(b"HTTP/1.1 200 "), head
        te = [line for line in head.split(b"\r\n") if line.lower().startswith(b"transfer-encoding")]
        assert te == [b"Transfer-Encoding: gzip, chunked"], head
        assert body == payload
        # An HTTP/1.0 client cannot be told of the coding: 502, not a mislabelled body.
        s.sendall(b"GET /g HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        head, _, _ = read_response(s)
        s.close()
        assert head.startswith(b"HTTP/1.1 502 "), head
    finally:
        be.close()


# ---- point 2: no client input ejects an instance ------------------------------------------

def test_instance_closing_on_a_client_body_that_never_comes_is_not_ejected(gateway):
    # Instances with a body read timeout (as most servers have) that close without an
    # answer: the client's slowness, not the instance's failure. Bodiless requests get 200.
    def serve(be, c, i):
        buf = b""
        c.settimeout(0.3)
        while True:
            while b"\r\n\r\n" not in buf:
                chunk = c.recv(65536)
                if not chunk:
                    return
                buf += chunk
            head, buf = buf.split(b"\r\n\r\n", 1)
            with be.lock:
                be.requests.append(head.split(b"\r\n")[0].decode())
            if b"content-length" in head.lower():
                try:
                    while c.recv(65536):  # the body never ends: the read times out
                        pass
                except socket.timeout:
                    pass
                return  # closed without an answer
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    a, b = RawBackend(serve), RawBackend(serve)
    port, admin = free_port(), free_port()
    ini = http_ini(port, {"s": {"instances": f"{a.addr}, {b.addr}", "balance": "round_robin"}},
                   proxy={"fail_timeout": "60s"})
    gateway(ini + f"\n[admin]\nlisten = 127.0.0.1:{admin}\n", listen=[port, admin])
    try:
        s = connect(port)
        s.sendall(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nabc")
        head, _, _ = read_response(s)
        s.close()
        assert head.startswith(b"HTTP/1.1 502 "), head
        assert a.requests + b.requests == ["POST /upload HTTP/1.1"]
        # It was not ejected: both instances still take requests (an ejected one is skipped
        # while another is live).
        for _ in range(6):
            out = raw_exchange(port, b"GET /after HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            assert out.startswith(b"HTTP/1.1 200 "), out[:200]
        assert a.requests.count("GET /after HTTP/1.1") == 3, (a.requests, b.requests)
        assert b.requests.count("GET /after HTTP/1.1") == 3, (a.requests, b.requests)
        assert _metric(admin, 'zkgate_health_ejections_total{service="s"}') == b"0"
    finally:
        a.close()
        b.close()


def _metric(admin, key):
    c = socket.create_connection(("127.0.0.1", admin), timeout=5)
    c.sendall(b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n")
    text = b""
    while (chunk := c.recv(65536)):
        text += chunk
    c.close()
    for line in text.split(b"\n"):
        if line.startswith(key.encode() + b" "):
            return line.split(b" ")[1]
    raise AssertionError(f"no {key} in {text[-2000:]!r}")


def test_response_coding_an_http10_client_cannot_take_does_not_eject_the_instance(gateway):
    # The 502 is the client's HTTP version, not the instance failing.
    def serve(be, c, i):
        rest = b""
        while (rest := be.read_head(c, rest)) is not None:
            if be.requests[-1].endswith("HTTP/1.1") and "/gzip" in be.requests[-1]:
                c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                          b"3\r\nxyz\r\n0\r\n\r\n")
            else:
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    a, b = RawBackend(serve), RawBackend(serve)
    port, admin = free_port(), free_port()
    ini = http_ini(port, {"s": {"instances": f"{a.addr}, {b.addr}", "balance": "round_robin"}},
                   proxy={"fail_timeout": "60s"})
    gateway(ini + f"\n[admin]\nlisten = 127.0.0.1:{admin}\n", listen=[port, admin])
    try:
        out = raw_exchange(port, b"GET /gzip HTTP/1.0\r\n\r\n")  # a fresh connection
        assert out.startswith(b"HTTP/1.1 502 "), out[:200]
        assert len(a.requests + b.requests) == 1
        for _ in range(6):
            out = raw_exchange(port, b"GET /after HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            assert out.startswith(b"HTTP/1.1 200 "), out[:200]
        assert a.requests.count("GET /after HTTP/1.1") == 3, (a.requests, b.requests)
        assert b.requests.count("GET /after HTTP/1.1") == 3, (a.requests, b.requests)
        assert _metric(admin, 'zkgate_health_ejections_total{service="s"}') == b"0"
    finally:
        a.close()
        b.close()


def test_response_status_of_fewer_than_three_digits_is_502_for_http1_and_h2_clients(gateway):
    # Found by fuzz_response_head: llhttp reads "HTTP/1.1 10 x" with status 10, which is
    # neither interim nor final. It must not reach a client, over HTTP/1.1 or as an HTTP/2
    # ":status: 10"; the next answer of the same instance is passed on.
    def serve(be, c, i):
        rest = b""
        while (rest := be.read_head(c, rest)) is not None:
            if "/bad" in be.requests[-1]:
                c.sendall(b"HTTP/1.1 10 Odd\r\nContent-Length: 2\r\n\r\nok")
                return
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    be = RawBackend(serve)
    port = free_port()
    gateway(http_ini(port, {"s": {"instances": be.addr}}), listen=port)
    try:
        out = raw_exchange(port, b"GET /bad HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 502 "), out[:200]
        r = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-o", "/dev/null", "-w",
                            "%{http_code} %{http_version}", f"http://127.0.0.1:{port}/bad"],
                           capture_output=True, timeout=30)
        assert (r.returncode, r.stdout) == (0, b"502 2"), (r.returncode, r.stdout, r.stderr)
        out = raw_exchange(port, b"GET /good HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 200 ") and out.endswith(b"\r\n\r\nok"), out[:200]
    finally:
        be.close()
