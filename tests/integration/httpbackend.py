"""A real HTTP/1.1 backend for the HTTP gateway tests (Python's http.server, threaded).

Every response to a normal path is JSON describing what the backend received: its name, the
method, the path (with query), the headers in order (as a list of [name, value]) and the
body's length and SHA-256. Special paths make the responses the proxy must get right:
  /status/N         status N, with a Content-Length that 1xx/204/304 must not honour
  /nolength         a body without Content-Length or chunking, ended by closing
  /chunked          a chunked response (3 chunks)
  /trailers         a chunked response ending with trailer fields (TRAILERS below)
  /big/N            N bytes of a repeating pattern, Content-Length
  /close            answers, then closes the connection (Connection: close)
  /slow/MS          answers after MS milliseconds
`delay_ms` (0 by default) delays every response that long: a slow instance.
`connections` counts accepted TCP connections; `requests` counts requests; `seen` lists the
method, target and Host of each. With `tls` (an
ssl.SSLContext) the backend speaks HTTPS; `server_names` then lists the SNI of each handshake
(None when the client sent none)."""

import hashlib
import http.server
import json
import socket
import threading
import time

from zkharness import free_port


# The trailer fields /trailers ends with: two for the client, then ones a proxy must not
# forward as trailers (RFC 9110 §6.5.1: authentication, content processing; a field the
# gateway vouches for in heads).
TRAILERS = [("Grpc-Status", "0"), ("Grpc-Message", "all good"), ("Set-Cookie", "s=1"),
            ("Content-Type", "text/evil"), ("X-Forwarded-For", "6.6.6.6")]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        # The head and the body go out in two writes: without TCP_NODELAY the second waits
        # for the peer's delayed ACK (~40 ms per response on a kept-alive connection), as
        # no real server (nginx, Go, Netty) lets it.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.backend.lock:
            self.server.backend.connections += 1

    def _body(self):
        self.trailers = []  # [name, value] of a chunked request's trailer fields
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while True:
                        line = self.rfile.readline()
                        if line in (b"\r\n", b"\n", b""):
                            return body
                        name, _, value = line.decode("latin-1").partition(":")
                        self.trailers.append([name, value.strip()])
                body += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status, body, headers=(), length=True):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def handle_one(self):
        b = self.server.backend
        with b.lock:
            b.requests += 1
            b.seen.append((self.command, self.path, self.headers.get("Host")))
        body = self._body()
        path = self.path
        if b.delay_ms:
            time.sleep(b.delay_ms / 1000)
        if path.startswith("/slow/"):
            time.sleep(int(path.split("/")[2]) / 1000)
        if path.startswith("/status/"):
            code = int(path.split("/")[2])
            # A body announced that must not be read for 1xx/204/304.
            self.send_response_only(code)
            self.send_header("Content-Length", "5")
            self.end_headers()
            if 100 <= code < 200:  # then the final response
                self._send(200, b"final", [("X-After", "interim")])
            return
        if path.startswith("/code/"):  # a complete response with that status
            self._send(int(path.split("/")[2]), b"code\n")
            return
        if path == "/nolength":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"until close " * 1000)
            self.close_connection = True
            return
        if path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b"one,", b"two,", b"three"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
            return
        if path == "/trailers":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Trailer", "Grpc-Status, Grpc-Message")
            self.end_headers()
            self.wfile.write(b"5\r\nhello\r\n0\r\n")
            for k, v in TRAILERS:
                self.wfile.write(b"%s: %s\r\n" % (k.encode(), v.encode()))
            self.wfile.write(b"\r\n")
            return
        if path.startswith("/big/"):
            n = int(path.split("/")[2])
            pattern = bytes(range(256)) * 64
            self.send_response(200)
            self.send_header("Content-Length", str(n))
            self.end_headers()
            sent = 0
            while sent < n:
                chunk = pattern[: min(len(pattern), n - sent)]
                self.wfile.write(chunk)
                sent += len(chunk)
            return
        doc = {"name": b.name, "method": self.command, "path": path,
               "version": self.request_version,
               "headers": [[k, v] for k, v in self.headers.items()],
               "body_len": len(body), "body_sha256": hashlib.sha256(body).hexdigest(),
               "trailers": self.trailers}
        out = json.dumps(doc).encode()
        headers = [("Content-Type", "application/json"), ("X-Backend", b.name)]
        if path == "/close":
            headers.append(("Connection", "close"))
            self.close_connection = True
        headers.append(("Connection", "X-Hop, keep-alive") if path == "/hop" else ("X-Hop", "no"))
        if path == "/hop":
            headers.append(("X-Hop", "must go"))
            headers.append(("Keep-Alive", "timeout=5"))
        self._send(200, out, headers)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = handle_one


class _Server(http.server.ThreadingHTTPServer):
    # socketserver listens with a backlog of 5: a burst of connects (25 at once from two
    # workers, on a slow sanitizer build) overflowed it, and a dropped SYN is retried only
    # after a second, past the gateway's connect_timeout.
    request_queue_size = 128

    def handle_error(self, request, client_address):
        pass  # failed TLS handshakes are what some tests are about


class HttpBackend:
    def __init__(self, name, port=None, tls=None):
        self.name = name
        self.port = port or free_port()
        self.lock = threading.Lock()
        self.connections = 0
        self.requests = 0
        self.delay_ms = 0  # every response waits this long
        self.seen = []  # (method, target, Host) of every request, in order
        self.server_names = []
        self.server = _Server(("127.0.0.1", self.port), _Handler)
        self.server.daemon_threads = True
        self.server.backend = self
        if tls is not None:
            def on_sni(sock, name, ctx):
                with self.lock:
                    self.server_names.append(name)
            tls.sni_callback = on_sni
            # The handshake runs in the connection's thread, at its first read.
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True,
                                                 do_handshake_on_connect=False)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def raw_exchange(port, data, timeout=3.0, half_close=False):
    """Send raw bytes to 127.0.0.1:port and read until the server closes (or timeout)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        s.close()


# ---- a minimal WebSocket echo server (RFC 6455), for the tunnel test ------------------------

import base64  # noqa: E402
import struct  # noqa: E402

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC11B65"


def ws_accept(key):
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()


def ws_read_frame(sock):
    """One frame: (opcode, payload). Unmasks when masked."""
    def exactly(n):
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed in a frame")
            buf += chunk
        return buf
    b0, b1 = exactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", exactly(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", exactly(8))[0]
    mask = exactly(4) if b1 & 0x80 else None
    payload = exactly(n)
    if mask:
        payload = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
    return b0 & 0x0F, payload


def ws_frame(payload, opcode=1, mask=None):
    head = bytes([0x80 | opcode])
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head += bytes([mbit | n])
    elif n < 65536:
        head += bytes([mbit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mbit | 127]) + struct.pack("!Q", n)
    if mask:
        payload = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
        head += mask
    return head + payload


class WebSocketEcho:
    """Answers a WebSocket upgrade with 101 and echoes text frames with "echo: " in front."""

    def __init__(self):
        self.port = free_port()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(16)
        self.upgrades = 0
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
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = c.recv(4096)
                if not chunk:
                    return
                head += chunk
            lines = head.split(b"\r\n\r\n")[0].decode().split("\r\n")
            h = {l.split(":", 1)[0].strip().lower(): l.split(":", 1)[1].strip()
                 for l in lines[1:] if ":" in l}
            if h.get("upgrade", "").lower() != "websocket":
                c.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                return
            self.upgrades += 1
            c.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                       "Connection: Upgrade\r\nSec-WebSocket-Accept: "
                       f"{ws_accept(h['sec-websocket-key'])}\r\n\r\n").encode())
            while True:
                op, payload = ws_read_frame(c)
                if op == 8:
                    c.sendall(ws_frame(payload, opcode=8))
                    return
                c.sendall(ws_frame(b"echo: " + payload))
        except (OSError, ConnectionError):
            pass
        finally:
            c.close()

    def close(self):
        self.sock.close()


class OneWriteBackend:
    """Answers every GET with one sendall of head and body (as most servers do, unlike
    http.server, which writes the head and the body separately). Counts requests."""

    def __init__(self, body_len=8000):
        self.port = free_port()
        self.requests = 0
        self.body = b"x" * body_len
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(64)
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        buf = b""
        resp = (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(self.body)) + self.body
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = c.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                _, buf = buf.split(b"\r\n\r\n", 1)
                self.requests += 1
                c.sendall(resp)
        except OSError:
            pass
        finally:
            c.close()

    def close(self):
        self.closed = True
        self.sock.close()
