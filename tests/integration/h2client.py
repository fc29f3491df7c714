"""The HTTP/2 test clients shared by test_http2.py, test_grpc.py and test_h2_conformance.py:
H2Client (python3-h2, one connection driven by hand), Raw (hand-made frames, for what a
well-behaved library will not send), and the gateway's memory while a client reads slowly."""

import os
import socket
import struct
import time

import h2.config
import h2.connection
import h2.events

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def sanitized():
    with open(os.environ["ZKGATE_BIN"], "rb") as f:
        data = f.read()
    return b"__asan_init" in data or b"__tsan_init" in data


# ---- a python3-h2 client --------------------------------------------------------------------


class H2Client:
    """One connection, driven by hand: requests, body pieces, window updates; what comes back
    collected per stream."""

    def __init__(self, port, settings=None, window=None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.c = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.c.initiate_connection()
        if settings:
            self.c.update_settings(settings)
        self.auto_ack = window is None
        self.streams = {}
        self.goaway = None
        self.eof = False
        self.flush()

    def flush(self):
        data = self.c.data_to_send()
        if data:
            self.sock.sendall(data)

    def stream(self, sid):
        return self.streams.setdefault(sid, {"headers": None, "data": bytearray(),
                                             "trailers": None, "ended": False, "reset": None})

    def request(self, path, method="GET", headers=(), end=True):
        sid = self.c.get_next_available_stream_id()
        self.c.send_headers(sid, [(":method", method), (":path", path), (":scheme", "http"),
                                  (":authority", "x"), *headers], end_stream=end)
        self.flush()
        self.stream(sid)
        return sid

    def send_body(self, sid, body, end=True, trailers=None, deadline=30):
        view = memoryview(body)
        limit = time.monotonic() + deadline
        while view:
            n = min(self.c.local_flow_control_window(sid), self.c.max_outbound_frame_size,
                    len(view))
            if n == 0:
                assert time.monotonic() < limit, "the gateway opened no window"
                self.pump(0.5)
                continue
            self.c.send_data(sid, view[:n].tobytes())
            view = view[n:]
            self.flush()
        if trailers:
            self.c.send_headers(sid, trailers, end_stream=True)
        elif end:
            self.c.end_stream(sid)
        self.flush()

    def pump(self, timeout):
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 20)
        except socket.timeout:
            return
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return
        for ev in self.c.receive_data(data):
            if isinstance(ev, h2.events.InformationalResponseReceived):
                self.stream(ev.stream_id).setdefault("interim", []).append(dict(ev.headers))
            elif isinstance(ev, h2.events.ResponseReceived):
                self.stream(ev.stream_id)["headers"] = dict(ev.headers)
            elif isinstance(ev, h2.events.DataReceived):
                self.stream(ev.stream_id)["data"] += ev.data
                if self.auto_ack and ev.flow_controlled_length:
                    self.c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.TrailersReceived):
                self.stream(ev.stream_id)["trailers"] = dict(ev.headers)
            elif isinstance(ev, h2.events.StreamEnded):
                self.stream(ev.stream_id)["ended"] = True
            elif isinstance(ev, h2.events.StreamReset):
                self.stream(ev.stream_id)["reset"] = ev.error_code
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.goaway = ev
        try:
            self.flush()
        except OSError:
            self.eof = True

    def wait(self, pred, timeout=20):
        limit = time.monotonic() + timeout
        while not pred():
            assert time.monotonic() < limit, "timed out waiting on the gateway"
            assert not self.eof, "the gateway closed the connection"
            self.pump(0.2)

    def close(self):
        self.sock.close()


# ---- hand-made frames, for what a well-behaved library will not send ------------------------


def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(
        ">I", sid) + payload


def req_block(enc, path="/x", extra=()):
    return enc.encode([(":method", "GET"), (":path", path), (":scheme", "http"),
                       (":authority", "x"), *extra])


class Raw:
    def __init__(self, port, settings=b""):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.sendall(PREFACE + frame(4, 0, 0, settings))
        self.buf = b""
        self.frames = []
        self.eof = False

    def send(self, data):
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def read_until(self, pred, timeout=10):
        """Frames until pred(frame) holds for one (returned) or the gateway closes (None)."""
        limit = time.monotonic() + timeout
        while True:
            while len(self.buf) >= 9:
                n = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) < 9 + n:
                    break
                f = (self.buf[3], self.buf[4], int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF,
                     self.buf[9:9 + n])
                self.buf = self.buf[9 + n:]
                self.frames.append(f)
                if pred(f):
                    return f
            if self.eof:
                return None
            assert time.monotonic() < limit, "no such frame from the gateway"
            self.sock.settimeout(max(0.05, limit - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except (ConnectionResetError, socket.timeout):
                data = b""
            if not data:
                self.eof = True
            self.buf += data

    def goaway(self, timeout=10):
        f = self.read_until(lambda f: f[0] == 7, timeout)
        return None if f is None else int.from_bytes(f[3][4:8], "big")

    def close(self):
        self.sock.close()


def held_peak(c, pid, seconds, peak):
    """The client reads nothing for `seconds`: the highest RSS of `pid` meanwhile."""
    limit = time.monotonic() + seconds
    while time.monotonic() < limit:
        peak = max(peak, rss_kb(pid))
        c.pump(0.1)
    return peak


def read_opening_window(c, sid, pid, deadline, peak):
    """The stream read to its end, its window (and the connection's) opened as the data comes:
    (bytes read, the highest RSS of `pid` meanwhile)."""
    got = 0
    limit = time.monotonic() + deadline
    c.c.increment_flow_control_window(8 << 20, sid)
    c.c.increment_flow_control_window(8 << 20)
    c.flush()
    while not c.streams[sid]["ended"]:
        assert time.monotonic() < limit
        c.pump(0.5)
        data = c.streams[sid]["data"]
        if data:
            got += len(data)
            if not c.streams[sid]["ended"]:
                c.c.increment_flow_control_window(len(data), sid)
            c.c.increment_flow_control_window(len(data))
            c.flush()
            del data[:]
        peak = max(peak, rss_kb(pid))
    return got, peak
