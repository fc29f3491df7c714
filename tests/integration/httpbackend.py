"""A real HTTP/1.1 backend for the HTTP gateway tests (Python's http.server, threaded).

Every response to a normal path is JSON describing what the backend received: its name, the
method, the path (with query), the headers in order (as a list of [name, value]) and the
body's length and SHA-256. Special paths make the responses the proxy must get right:
  /status/N         status N, with a Content-Length that 1xx/204/304 must not honour
  /nolength         a body without Content-Length or chunking, ended by closing
  /chunked          a chunked response (3 chunks)
  /big/N            N bytes of a repeating pattern, Content-Length
  /close            answers, then closes the connection (Connection: close)
  /slow/MS          answers after MS milliseconds
`connections` counts accepted TCP connections; `requests` counts requests."""

import hashlib
import http.server
import json
import socket
import threading
import time

from zkharness import free_port


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        with self.server.backend.lock:
            self.server.backend.connections += 1

    def _body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return body
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
        body = self._body()
        path = self.path
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
               "body_len": len(body), "body_sha256": hashlib.sha256(body).hexdigest()}
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


class HttpBackend:
    def __init__(self, name, port=None):
        self.name = name
        self.port = port or free_port()
        self.lock = threading.Lock()
        self.connections = 0
        self.requests = 0
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), _Handler)
        self.server.daemon_threads = True
        self.server.backend = self
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
