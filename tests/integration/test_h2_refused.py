"""HTTP/2 instances that refuse a stream (RFC 9113 8.7): RST_STREAM(REFUSED_STREAM), or a GOAWAY
whose last stream id is below the request's. The instance never processed the request, so
zkgate sends it again to another instance whatever its method and body (a gRPC call always has
a body), within the tries a request gets (the first instance and up to two others). Real
instances: a python3-h2 server that refuses every stream, next to a real gRPC server
(python3-grpcio). Also: large bodies both ways to a python3-h2 echo instance (the client's
body paused past the 256 KiB queued, and resumed), one at a time and eight at once on one
connection to it."""

import hashlib
import os
import socket
import subprocess
import threading
import time
import urllib.request

import grpc
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import pytest

from h2client import H2Client
from test_grpc import SVC, GrpcServer, call, grpc_frame
from zkharness import ConnServer, free_port, ini_text, wait_until


class Refuser(ConnServer):
    """An h2c server (prior knowledge) that refuses each request it is sent: `how` "reset"
    answers RST_STREAM(REFUSED_STREAM), "goaway" a GOAWAY with last stream id 0. Counts the
    requests it saw."""

    def __init__(self, how):
        self.how = how
        self.seen = 0
        self.lock = threading.Lock()
        super().__init__()

    def serve(self, conn, _n):
        c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        c.initiate_connection()
        got = {}
        if self.how == "late":  # "late": takes 300 kB of the body, then refuses
            c.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
            c.increment_flow_control_window(1 << 20)
        try:
            conn.sendall(c.data_to_send())
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                for ev in c.receive_data(data):
                    if isinstance(ev, h2.events.DataReceived) and self.how == "late":
                        got[ev.stream_id] = got.get(ev.stream_id, 0) + len(ev.data)
                        c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                        if got[ev.stream_id] >= 300000:
                            c.reset_stream(ev.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
                            got[ev.stream_id] = -1 << 40
                    if isinstance(ev, h2.events.RequestReceived):
                        with self.lock:
                            self.seen += 1
                        if self.how == "late":
                            continue
                        if self.how == "reset":
                            c.reset_stream(ev.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
                        else:
                            c.close_connection(last_stream_id=0)
                out = c.data_to_send()
                if out:
                    conn.sendall(out)
        except (OSError, h2.exceptions.ProtocolError):
            return
        finally:
            conn.close()


def dechunk(raw):
    """A chunked body's bytes (its trailers left out)."""
    out = bytearray()
    while True:
        line, _, raw = raw.partition(b"\r\n")
        n = int(line.split(b";")[0], 16)
        if n == 0:
            return bytes(out)
        out += raw[:n]
        raw = raw[n + 2:]


@pytest.fixture
def servers():
    made = []

    def make(kind):
        s = GrpcServer() if kind == "grpc" else Refuser(kind)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


def gateway_for(gateway, addrs, **svc):
    port = free_port()
    gw = gateway(ini_text({"g": {"protocol": "http", "listen": f"127.0.0.1:{port}",
                                 "instances": ", ".join(f"grpc://{a}" for a in addrs),
                                 "balance": "round_robin", **svc}},
                          proxy={"access_log": "stderr"}), listen=port)
    return port, gw


@pytest.mark.parametrize("how", ["reset", "goaway"])
def test_refused_grpc_calls_go_to_another_instance(gateway, servers, how):
    """gRPC calls (POST with a body) refused by one instance are answered by the other: every
    call succeeds, and the refusing instance did see some of them."""
    bad, good = servers(how), servers("grpc")
    port, _ = gateway_for(gateway, [bad.addr, good.addr])
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        for i in range(8):
            assert call(ch, "Unary")(b"%d" % i, timeout=10) == b"echo:%d:" % i
        # a client stream: several messages in the body, all of them sent again
        assert call(ch, "ClientStream", "su")(iter([b"a", b"b", b"c"]), timeout=10) == b"3:a|b|c"
    assert bad.seen >= 2, bad.seen


def test_refused_http1_post_with_body_is_sent_again(gateway, servers):
    """An HTTP/1.1 POST with a 100 kB body, refused by the h2 instance it went to, reaches the
    other one whole."""
    bad, good = servers("reset"), servers("grpc")
    port, _ = gateway_for(gateway, [bad.addr, good.addr])
    msg = b"m" * 100000
    args = ["curl", "-sS", "--http1.1", "-D", "-", "--raw", "--data-binary", "@-",
            "-H", "Content-Type: application/grpc", "-H", "TE: trailers",
            f"http://127.0.0.1:{port}{SVC}Unary"]
    for _ in range(4):
        r = subprocess.run(args, input=grpc_frame(msg), capture_output=True, timeout=20)
        assert r.returncode == 0, r.stderr
        head, _, rest = r.stdout.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        assert b"grpc-status: 0" in rest.lower(), rest[-200:]
        assert dechunk(rest).startswith(grpc_frame(b"echo:" + msg + b":"))
    assert bad.seen >= 2, bad.seen


def test_only_refusing_instances_is_unavailable_after_the_tries(gateway, servers):
    """When every instance refuses, the call fails (UNAVAILABLE) once each was tried, no more:
    three instances, three refusals."""
    bads = [servers("reset") for _ in range(4)]
    port, _ = gateway_for(gateway, [b.addr for b in bads])
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        with pytest.raises(grpc.RpcError) as e:
            call(ch, "Unary")(b"x", timeout=10)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert wait_until(lambda: sum(b.seen for b in bads) == 3, 5, 0.05)
    assert sum(b.seen for b in bads) == 3


def test_refused_after_more_body_than_is_held_is_not_sent_again(gateway, servers):
    """An instance that took 300 kB of a body (more than the 256 KiB held) before refusing:
    the body cannot be sent again, so the call fails (UNAVAILABLE) instead of reaching the
    other instance."""
    bad, good = servers("late"), servers("grpc")
    port, _ = gateway_for(gateway, [bad.addr, good.addr])
    msg = b"m" * 400000
    outcomes = []
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        while bad.seen == 0:  # round robin: the refusing instance within two calls
            assert len(outcomes) < 2, outcomes
            try:
                outcomes.append(call(ch, "Unary")(msg, timeout=10) == b"echo:" + msg + b":")
            except grpc.RpcError as e:
                outcomes.append(e.code())
    assert outcomes[-1] == grpc.StatusCode.UNAVAILABLE, outcomes
    assert outcomes[:-1] in ([], [True]), outcomes


class LateSettings(ConnServer):
    """An h2c server (prior knowledge) allowing `max_streams` streams per connection that sends
    nothing, its SETTINGS included, until `go` is set; then answers every request 200 "ok".
    `carried()`: the requests each connection carried, in accept order."""

    def __init__(self, max_streams):
        self.max_streams = max_streams
        self.go = threading.Event()
        self.per_conn = {}  # connection index: requests
        self.lock = threading.Lock()
        super().__init__()

    def requests(self):
        with self.lock:
            return sum(self.per_conn.values())

    def carried(self):
        with self.lock:
            return [self.per_conn.get(k, 0) for k in range(self.conns)]

    def serve(self, conn, k):
        c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        c.local_settings = h2.settings.Settings(
            client=False,
            initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.max_streams})
        c.initiate_connection()
        pending = []
        conn.settimeout(0.05)  # a poll of `go` between reads, not a wait for an event
        try:
            while True:
                try:
                    data = conn.recv(65536)
                    if not data:
                        return
                except socket.timeout:
                    data = b""
                for ev in c.receive_data(data) if data else []:
                    if isinstance(ev, h2.events.RequestReceived):
                        with self.lock:
                            self.per_conn[k] = self.per_conn.get(k, 0) + 1
                        pending.append(ev.stream_id)
                if self.go.is_set():
                    for sid in pending:
                        c.send_headers(sid, [(":status", "200"), ("content-length", "2")])
                        c.send_data(sid, b"ok", end_stream=True)
                    pending = []
                    out = c.data_to_send()
                    if out:
                        conn.sendall(out)
        except (OSError, h2.exceptions.ProtocolError):
            return
        finally:
            conn.close()


def test_streams_wait_for_the_instances_settings_before_sharing_a_connection(gateway):
    """Until an h2 instance's SETTINGS arrive, a connection to it carries one stream: three
    requests sent meanwhile go over three connections (this instance allows one stream per
    connection: piled onto one, they would wait there for each other's end instead of going
    to another connection); all three are answered once the instance speaks."""
    srv = LateSettings(max_streams=1)
    try:
        port = free_port()
        gateway(ini_text({"g": {"protocol": "http", "listen": f"127.0.0.1:{port}",
                                "instances": f"h2c://{srv.addr}"}}), listen=port)
        results = []

        def one(i):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/r{i}", timeout=30) as r:
                    results.append((r.status, r.read()))
            except Exception as e:  # noqa: BLE001 - reported below
                results.append(repr(e))

        ts = [threading.Thread(target=one, args=(i,)) for i in range(3)]
        for t in ts:
            t.start()
        assert wait_until(lambda: srv.requests() == 3, 20), srv.carried()
        srv.go.set()
        for t in ts:
            t.join(30)
        assert results == [(200, b"ok")] * 3, results
        assert srv.carried() == [1, 1, 1], \
            f"requests per instance connection {srv.carried()}: sent before its SETTINGS came"
    finally:
        srv.stop()


class H2Echo(ConnServer):
    """An h2c server (prior knowledge) that answers each request 200 with the request body
    echoed and its SHA-256 in x-sha256. `slow` reads the connection in 16 kB steps with a
    pause after each (a slow instance: zkgate's queue for it fills and drains); windows stay
    at the 64 KiB default, so the body flows as the instance takes it. `peak`: the most
    request bodies one connection had arriving at once, `conns` the connections it took."""

    def __init__(self, slow=False):
        self.slow = slow
        self.peak = 0
        super().__init__()

    @staticmethod
    def pump(c, out):
        """Sends what the peer's windows let through of each answer still being sent."""
        for sid in list(out):
            while out[sid]:
                n = min(len(out[sid]), c.local_flow_control_window(sid),
                        c.max_outbound_frame_size)
                if n <= 0:
                    break
                c.send_data(sid, out[sid][:n])
                out[sid] = out[sid][n:]
            if not out[sid]:
                c.end_stream(sid)
                del out[sid]

    def serve(self, conn, _n):
        c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        c.initiate_connection()
        bodies, out = {}, {}
        try:
            conn.sendall(c.data_to_send())
            while True:
                data = conn.recv(16384 if self.slow else 65536)
                if not data:
                    return
                if self.slow:
                    time.sleep(0.002)
                for ev in c.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        bodies[ev.stream_id] = bytearray()
                    elif isinstance(ev, h2.events.DataReceived):
                        bodies[ev.stream_id] += ev.data
                        c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded):
                        body = bytes(bodies.pop(ev.stream_id))
                        c.send_headers(ev.stream_id, [
                            (":status", "200"), ("content-length", str(len(body))),
                            ("x-sha256", hashlib.sha256(body).hexdigest())])
                        out[ev.stream_id] = body
                self.peak = max(self.peak, len(bodies))
                self.pump(c, out)
                conn.sendall(c.data_to_send())
        except (OSError, h2.exceptions.ProtocolError):
            return
        finally:
            conn.close()


@pytest.mark.parametrize("slow", [False, True], ids=["fast", "slow"])
def test_large_bodies_to_an_h2_instance_both_ways(gateway, tmp_path, slow):
    """1 MB and 10 MB request bodies from an HTTP/1.1 client (with Expect: 100-continue and
    without) and from an HTTP/2 client reach an h2 instance whole (its SHA-256) and come back
    whole; more than the 256 KiB queued for the instance pauses the client, and the instance
    taking the body resumes it (the body used to stall past that mark)."""
    srv = H2Echo(slow)
    try:
        port = free_port()
        gateway(ini_text({"g": {"protocol": "http", "listen": f"127.0.0.1:{port}",
                                "instances": f"h2c://{srv.addr}"}},
                         proxy={"access_log": "stderr"}), listen=port)
        for size in (1000000, 10000000):
            body = os.urandom(size)
            src = tmp_path / "in"
            src.write_bytes(body)
            want = hashlib.sha256(body).hexdigest()
            for proto in (["--http1.1"], ["--http1.1", "-H", "Expect:"],
                          ["--http2-prior-knowledge"]):
                dst = tmp_path / "out"
                r = subprocess.run(["curl", "-sS", "-m", "60", *proto, "--data-binary",
                                    f"@{src}", "-D", "-", "-o", str(dst),
                                    f"http://127.0.0.1:{port}/echo"],
                                   capture_output=True, timeout=90)
                assert r.returncode == 0, (proto, size, r.stderr)
                head = r.stdout.decode().lower()
                assert f"x-sha256: {want}" in head, (proto, size, head)
                assert hashlib.sha256(dst.read_bytes()).hexdigest() == want, (proto, size)
    finally:
        srv.stop()


def eight_bodies_to_a_slow_h2_instance(gateway, srv):
    """A gateway in front of `srv` (a slow H2Echo), an H2Client whose warm-up request left one
    idle connection to the instance, and eight 1 MB POSTs opened on it: (client, {stream id:
    body}, {stream id: what is left to send})."""
    port = free_port()
    gateway(ini_text({"g": {"protocol": "http", "listen": f"127.0.0.1:{port}",
                            "instances": f"h2c://{srv.addr}"}}), listen=port)
    c = H2Client(port)
    warm = c.request("/warm")  # an idle connection to the instance, for all that follow
    c.wait(lambda: c.streams[warm]["ended"])
    bodies, left = {}, {}
    for _ in range(8):
        body = os.urandom(1000000)
        sid = c.request("/echo", method="POST", end=False)
        bodies[sid], left[sid] = body, memoryview(body)
    return c, bodies, left


def send_bodies(c, left, stalled=None):
    """Sends what is `left` of each stream's body as its window opens, until all went;
    stalled() runs whenever no window is open (the streams wait for the instance)."""
    limit = time.monotonic() + 90
    while left:
        sent = False
        for sid in list(left):
            n = min(c.c.local_flow_control_window(sid), c.c.max_outbound_frame_size,
                    len(left[sid]))
            if n > 0:
                c.c.send_data(sid, left[sid][:n].tobytes(), end_stream=n == len(left[sid]))
                left[sid] = left[sid][n:]
                sent = True
                if not left[sid]:
                    del left[sid]
        if not sent and stalled:
            stalled()
        c.flush()
        if not sent:
            assert time.monotonic() < limit, "the gateway stopped taking the bodies"
            assert not c.eof, "the gateway closed the connection"
            c.pump(0.2)


def test_concurrent_large_bodies_share_one_h2_instance_connection(gateway):
    """Eight 1 MB request bodies on one HTTP/2 client connection go at once to the slow h2
    instance over the one connection the gateway keeps to it: each client stream is paused
    past the 256 KiB queued for the instance and resumed as the instance takes its body
    (the connection's streams waiting for its queue to drain, several at a time, some
    answered and freed while others wait); every body comes back whole."""
    srv = H2Echo(slow=True)
    try:
        c, bodies, left = eight_bodies_to_a_slow_h2_instance(gateway, srv)
        send_bodies(c, left)
        c.wait(lambda: all(c.streams[sid]["ended"] for sid in bodies), timeout=90)
        for sid, body in bodies.items():
            st = c.streams[sid]
            assert st["reset"] is None and st["headers"][":status"] == "200", (sid, st["headers"])
            assert st["headers"]["x-sha256"] == hashlib.sha256(body).hexdigest(), sid
            assert bytes(st["data"]) == body, sid
        assert srv.conns == 1  # all eight on the connection the warm-up left
        assert srv.peak == 8  # whose eight bodies arrived at once
        c.close()
    finally:
        srv.stop()


def test_streams_reset_while_their_bodies_wait_for_the_instance(gateway):
    """Eight 1 MB bodies at once to the slow h2 instance over one connection, as above; the
    client resets four of them once it sent 300 kB of each and no window is open (they wait
    for the instance to take what is queued, and are released while they wait): the other
    four come back whole, and the connection serves the next request."""
    srv = H2Echo(slow=True)
    try:
        c, bodies, left = eight_bodies_to_a_slow_h2_instance(gateway, srv)
        dropped = set(list(bodies)[::2])

        def reset_some():  # no window open: each stream waits for the instance
            for sid in dropped & set(left):
                if len(left[sid]) <= 700000:
                    c.c.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
                    del left[sid]

        send_bodies(c, left, reset_some)
        kept = [sid for sid in bodies if sid not in dropped]
        c.wait(lambda: all(c.streams[sid]["ended"] for sid in kept), timeout=90)
        for sid in kept:
            st = c.streams[sid]
            assert st["headers"]["x-sha256"] == hashlib.sha256(bodies[sid]).hexdigest(), sid
            assert bytes(st["data"]) == bodies[sid], sid
        again = c.request("/after")
        c.wait(lambda: c.streams[again]["ended"])
        assert c.streams[again]["headers"][":status"] == "200"
        c.close()
    finally:
        srv.stop()
