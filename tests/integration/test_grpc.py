"""HTTP/2 to instances and gRPC (issue 14, second increment): a real gRPC server
(python3-grpcio, generic handlers: no protoc) registered in ZooKeeper as grpc://host:port,
reached through zkgate by a real gRPC client (h2 client -> h2 instance) and by curl over
HTTP/1.1 (h1 client -> h2 instance); unary and the three streaming kinds, trailers
(grpc-status, grpc-message) intact, the upstream_protocol key."""

import os
import signal
import struct
import subprocess
import threading
import time
from concurrent import futures

import grpc
import pytest

from zkharness import free_port, ini_text, wait_until

SVC = "/zg.Test/"


def ident(b):
    return b


def _unary(req, ctx):
    md = dict(ctx.invocation_metadata())
    return b"echo:" + req + b":" + md.get("x-tag", "").encode()


def _fail(req, ctx):
    ctx.abort(grpc.StatusCode.NOT_FOUND, "no such thing: " + req.decode())


def _server_stream(req, ctx):
    n = int(req.decode())
    for i in range(n):
        yield b"item-%d-" % i + b"x" * 1000


def _client_stream(it, ctx):
    parts = [m for m in it]
    return b"%d:" % len(parts) + b"|".join(parts)


PRODUCED = {"n": 0}


def _flood(req, ctx):
    n = int(req.decode())
    for i in range(n):
        PRODUCED["n"] = i + 1
        yield b"f" * 1024


SLOW_STARTED = {"n": 0}


def _slow(req, ctx):
    SLOW_STARTED["n"] += 1
    time.sleep(float(req.decode()))
    return b"late"


def _remaining(req, ctx):
    t = ctx.time_remaining()
    return b"none" if t is None else b"%.3f" % t


def _bidi(it, ctx):
    for m in it:
        yield b"re:" + m


class GrpcServer:
    def __init__(self):
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        handlers = {
            "Unary": grpc.unary_unary_rpc_method_handler(_unary, ident, ident),
            "Fail": grpc.unary_unary_rpc_method_handler(_fail, ident, ident),
            "ServerStream": grpc.unary_stream_rpc_method_handler(_server_stream, ident, ident),
            "ClientStream": grpc.stream_unary_rpc_method_handler(_client_stream, ident, ident),
            "Bidi": grpc.stream_stream_rpc_method_handler(_bidi, ident, ident),
            "Slow": grpc.unary_unary_rpc_method_handler(_slow, ident, ident),
            "Flood": grpc.unary_stream_rpc_method_handler(_flood, ident, ident),
            "Remaining": grpc.unary_unary_rpc_method_handler(_remaining, ident, ident),
        }
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("zg.Test", handlers),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self.addr = f"127.0.0.1:{self.port}"

    def stop(self):
        self.server.stop(0)


@pytest.fixture
def grpc_server():
    servers = []

    def make():
        s = GrpcServer()
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stop()


def grpc_gateway(gateway, zk, kz, zpath, srv, **svc):
    kz.ensure_path(zpath)
    kz.create(f"{zpath}/i0", f"grpc://{srv.addr}".encode())
    port = free_port()
    gw = gateway(ini_text({"g": {"protocol": "http", "listen": f"127.0.0.1:{port}",
                                 "zk_path": zpath, **svc}},
                          zookeeper={"hosts": zk.hosts, "session_timeout": "4s"},
                          proxy={"access_log": "stderr"}), listen=port)
    return port, gw


def call(channel, method, kind="uu"):
    path = SVC + method
    f = {"uu": channel.unary_unary, "us": channel.unary_stream,
         "su": channel.stream_unary, "ss": channel.stream_stream}[kind]
    return f(path, request_serializer=ident, response_deserializer=ident)


def ready(port):
    """The instance is in the gateway's pool: a unary call goes through."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        def ok():
            try:
                return call(ch, "Unary")(b"r", timeout=5) == b"echo:r:"
            except grpc.RpcError:
                return False
        return wait_until(ok, 15, 0.1)


def test_grpc_unary_and_streaming_through_zkgate(gateway, zk, kz, zpath, grpc_server):
    srv = grpc_server()
    port, gw = grpc_gateway(gateway, zk, kz, zpath, srv)
    assert ready(port)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        # unary, with metadata passed on
        assert call(ch, "Unary")(b"hello", metadata=(("x-tag", "t1"),),
                                 timeout=10) == b"echo:hello:t1"
        # server streaming: 200 messages of 1 KB
        got = list(call(ch, "ServerStream", "us")(b"200", timeout=20))
        assert len(got) == 200 and got[199].startswith(b"item-199-")
        # client streaming
        assert call(ch, "ClientStream", "su")(iter([b"a", b"b", b"c"]),
                                              timeout=10) == b"3:a|b|c"
        # bidi, a message at a time
        out = list(call(ch, "Bidi", "ss")(iter([b"1", b"2", b"3"]), timeout=10))
        assert out == [b"re:1", b"re:2", b"re:3"]
        # a large unary body both ways (flow control over several windows)
        big = b"z" * (3 << 20)
        assert call(ch, "Unary")(big, timeout=20) == b"echo:" + big + b":"
    assert gw.wait_log('"POST /zg.Test/Unary HTTP/2.0" 200')


def test_grpc_status_and_message_reach_the_client(gateway, zk, kz, zpath, grpc_server):
    srv = grpc_server()
    port, _ = grpc_gateway(gateway, zk, kz, zpath, srv)
    assert ready(port)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        with pytest.raises(grpc.RpcError) as e:
            call(ch, "Fail")(b"key-7", timeout=10)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert e.value.details() == "no such thing: key-7"


def grpc_frame(msg):
    return b"\0" + struct.pack(">I", len(msg)) + msg


def test_http1_client_to_grpc_instance(gateway, zk, kz, zpath, grpc_server):
    """curl over HTTP/1.1 reaches the h2 instance: the response comes chunked (no
    content-length), with the instance's trailers in the last chunk."""
    srv = grpc_server()
    port, _ = grpc_gateway(gateway, zk, kz, zpath, srv)
    assert ready(port)
    body = grpc_frame(b"hi")
    args = ["curl", "-sS", "--http1.1", "-D", "-", "--raw", "--data-binary", "@-",
            "-H", "Content-Type: application/grpc", f"http://127.0.0.1:{port}{SVC}Unary"]
    r = subprocess.run(args + ["-H", "TE: trailers"], input=body, capture_output=True,
                       timeout=20)
    assert r.returncode == 0, r.stderr
    head, _, rest = r.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"transfer-encoding: chunked" in head.lower()
    assert grpc_frame(b"echo:hi:") in rest
    assert b"grpc-status: 0" in rest.lower()  # in the last chunk's trailers
    # without TE: trailers too: zkgate asks the instance for trailers itself (te: trailers
    # on the h2 hop) and, as for HTTP/1.1 instances (test_http.py
    # test_response_trailers_reach_the_client), passes them on in the last chunk
    r = subprocess.run(args, input=body, capture_output=True, timeout=20)
    assert r.returncode == 0, r.stderr
    head, _, rest = r.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and grpc_frame(b"echo:hi:") in rest
    assert rest.lower().endswith(b"\r\n0\r\ngrpc-status: 0\r\n\r\n"), rest
    # a failing call's status comes in the head (gRPC trailers-only), with no body
    r = subprocess.run(args[:-1] + [f"http://127.0.0.1:{port}{SVC}Fail"], input=body,
                       capture_output=True, timeout=20)
    head = r.stdout.partition(b"\r\n\r\n")[0].lower()
    assert b"grpc-status: 5" in head and b"grpc-message: no such thing: hi" in head, head
    assert b"content-length: 0" in head, head


def test_upstream_protocol_http1_overrules_the_registration(gateway, zk, kz, zpath,
                                                            grpc_server):
    """upstream_protocol = http1: HTTP/1.1 to a grpc:// instance, which refuses it (502),
    while h2 keeps working for a service left on auto."""
    srv = grpc_server()
    port, gw = grpc_gateway(gateway, zk, kz, zpath, srv, upstream_protocol="http1")
    r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                        f"http://127.0.0.1:{port}/x"], capture_output=True, timeout=20)
    assert r.stdout != b"200", r.stdout


def test_upstream_protocol_h2_for_static_instances(gateway, grpc_server):
    """upstream_protocol = h2 with a plain host:port instance: h2c with prior knowledge."""
    srv = grpc_server()
    port = free_port()
    gateway(ini_text({"g": {"protocol": "http", "listen": f"127.0.0.1:{port}",
                            "instances": srv.addr, "upstream_protocol": "h2"}}),
            listen=port)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        assert call(ch, "Unary")(b"s", timeout=10) == b"echo:s:"
        # the connection is reused for the next calls
        for i in range(20):
            assert call(ch, "Unary")(b"%d" % i, timeout=10) == b"echo:%d:" % i


def test_concurrent_calls_each_answered(gateway, zk, kz, zpath, grpc_server):
    srv = grpc_server()
    port, _ = grpc_gateway(gateway, zk, kz, zpath, srv)
    assert ready(port)
    errors = []

    def worker(k):
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
                for i in range(10):
                    m = b"%d-%d" % (k, i)
                    if call(ch, "Unary")(m, timeout=10) != b"echo:" + m + b":":
                        errors.append(m)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not errors, errors


def grpc_error(port, method=b"Unary", timeout=10, req=b"x"):
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        with pytest.raises(grpc.RpcError) as e:
            call(ch, method.decode())(req, timeout=timeout)
    return e.value.code(), e.value.details()


def test_gateway_errors_are_grpc_statuses(gateway, zk, kz, zpath, grpc_server):
    """zkgate's own errors for a gRPC request: HTTP 200, trailers-only, grpc-status
    UNAVAILABLE (no instance, instance unreachable), UNIMPLEMENTED (no route),
    DEADLINE_EXCEEDED (response_timeout), with grpc-message saying why."""
    srv = grpc_server()
    kz.ensure_path(zpath)
    dead = free_port()
    port = free_port()
    gw = gateway(ini_text({
        "empty": {"protocol": "http", "listen": f"127.0.0.1:{port}", "zk_path": zpath,
                  "path_prefix": "/zg.Empty/"},
        "down": {"protocol": "http", "listen": f"127.0.0.1:{port}",
                 "instances": f"grpc://127.0.0.1:{dead}", "path_prefix": "/zg.Down/"},
        "slow": {"protocol": "http", "listen": f"127.0.0.1:{port}",
                 "instances": f"grpc://{srv.addr}", "path_prefix": "/zg.Test/",
                 "response_timeout": "1s"},
    }, zookeeper={"hosts": zk.hosts, "session_timeout": "4s"},
        proxy={"access_log": "stderr"}), listen=port)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        def err(path, req=b"x", timeout=10):
            with pytest.raises(grpc.RpcError) as e:
                ch.unary_unary(path, request_serializer=ident,
                               response_deserializer=ident)(req, timeout=timeout)
            return e.value.code(), e.value.details()
        code, msg = err("/zg.Empty/M")
        assert code == grpc.StatusCode.UNAVAILABLE and "no live instance" in msg, msg
        code, msg = err("/zg.Down/M")
        assert code == grpc.StatusCode.UNAVAILABLE and "could be reached" in msg, msg
        code, msg = err("/nowhere/M")
        assert code == grpc.StatusCode.UNIMPLEMENTED, (code, msg)
        t0 = time.monotonic()
        code, msg = err(SVC + "Slow", b"4", timeout=20)
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED and "in time" in msg, msg
        assert time.monotonic() - t0 < 3.5
    assert gw.wait_log('"POST /zg.Test/Slow HTTP/2.0" 504')
    # an HTTP/1.1 gRPC client gets the same status in the head
    r = subprocess.run(["curl", "-sS", "--http1.1", "-D", "-", "-o", "/dev/null",
                        "--data-binary", "x", "-H", "Content-Type: application/grpc+proto",
                        f"http://127.0.0.1:{port}/zg.Empty/M"], capture_output=True,
                       timeout=20)
    head = r.stdout.lower()
    assert head.startswith(b"http/1.1 200") and b"grpc-status: 14" in head, head
    # a plain HTTP request still gets the HTML/text error
    r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                        f"http://127.0.0.1:{port}/zg.Empty/M"], capture_output=True,
                       timeout=20)
    assert r.stdout == b"503"


def test_grpc_timeout_is_honoured_and_passed_on(gateway, zk, kz, zpath, grpc_server,
                                                http_backends):
    """grpc-timeout goes on to the instance (its deadline is the client's) and bounds the
    wait for the response head below response_timeout: a 1 s call to a handler that takes
    4 s ends at about 1 s in the gateway too (504 in its log), not at 30 s."""
    srv = grpc_server()
    port, gw = grpc_gateway(gateway, zk, kz, zpath, srv)
    assert ready(port)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        # without grpc-timeout passed on the handler would have no deadline ("none");
        # the header's encoding may round the 7 s up a little
        left = call(ch, "Remaining")(b"", timeout=7)
        assert left != b"none" and 5 < float(left) < 7.5, left
    # curl sends grpc-timeout without keeping a deadline itself, to an HTTP/1.1 instance
    # that knows nothing of it and answers after 4 s: the gateway's deadline ends it
    b = http_backends("slow")
    p2 = free_port()
    gw2 = gateway(ini_text({"h": {"protocol": "http", "listen": f"127.0.0.1:{p2}",
                                  "instances": b.addr}},
                           proxy={"access_log": "stderr"}), listen=p2)
    t0 = time.monotonic()
    r = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-D", "-", "-o", "/dev/null",
                        "--data-binary", "@-", "-H", "content-type: application/grpc",
                        "-H", "te: trailers", "-H", "grpc-timeout: 1200m",
                        f"http://127.0.0.1:{p2}/slow/4000"], input=grpc_frame(b"4"),
                       capture_output=True, timeout=20)
    took = time.monotonic() - t0
    head = r.stdout.lower()
    assert b"grpc-status: 4" in head, head
    assert 1.1 < took < 3.5, took
    assert gw2.wait_log('"POST /slow/4000 HTTP/2.0" 504')
    # the grpc instance keeps the same deadline and answers DEADLINE_EXCEEDED itself
    t0 = time.monotonic()
    r = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-D", "-", "-o", "/dev/null",
                        "--data-binary", "@-", "-H", "content-type: application/grpc",
                        "-H", "te: trailers", "-H", "grpc-timeout: 1200m",
                        f"http://127.0.0.1:{port}{SVC}Slow"], input=grpc_frame(b"4"),
                       capture_output=True, timeout=20)
    took = time.monotonic() - t0
    assert b"grpc-status: 4" in r.stdout.lower(), r.stdout
    assert took < 3.5, took


def test_slow_reader_of_a_server_stream_pauses_the_instance(gateway, zk, kz, zpath,
                                                           grpc_server):
    """A gRPC client that reads nothing of a 50 MB server stream: the window to the instance
    stays closed, so the instance stops producing and the gateway's memory stays bounded;
    once the client reads, every message arrives."""
    import h2.settings
    from h2client import H2Client, held_peak, read_opening_window, rss_kb, sanitized

    srv = grpc_server()
    port, gw = grpc_gateway(gateway, zk, kz, zpath, srv)
    assert ready(port)
    count = 50 * 1000
    base = rss_kb(gw.pid)
    PRODUCED["n"] = 0
    c = H2Client(port, settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0}, window=0)
    sid = c.request(SVC + "Flood", method="POST",
                    headers=(("content-type", "application/grpc"), ("te", "trailers")),
                    end=False)
    c.send_body(sid, grpc_frame(str(count).encode()))
    c.wait(lambda: c.streams[sid]["headers"] is not None)
    peak = held_peak(c, gw.pid, 2, base)
    held = PRODUCED["n"]
    assert len(c.streams[sid]["data"]) == 0
    assert held < count // 10, f"the instance produced {held} of {count} messages"
    bound = 60000 if sanitized() else 12000
    assert peak - base < bound, f"RSS grew by {peak - base} kB for a client reading nothing"
    got, peak = read_opening_window(c, sid, gw.pid, 60, peak)
    assert got == count * (1024 + 5)
    assert c.streams[sid]["trailers"]["grpc-status"] == "0"
    assert peak - base < bound, f"RSS grew by {peak - base} kB while streaming 50 MB"
    c.close()


@pytest.fixture(scope="module")
def gpki(tmp_path_factory):
    from test_upstream_tls import UpstreamPki
    p = UpstreamPki(tmp_path_factory.mktemp("gpki"))
    p.local = p.leaf_san("local", "localhost", "DNS:localhost,IP:127.0.0.1")
    return p


def tls_grpc_server(cert):
    s = GrpcServer.__new__(GrpcServer)
    s.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handlers = {"Unary": grpc.unary_unary_rpc_method_handler(_unary, ident, ident)}
    s.server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("zg.Test", handlers),))
    with open(cert[0], "rb") as c, open(cert[1], "rb") as k:
        creds = grpc.ssl_server_credentials([(k.read(), c.read())])
    s.port = s.server.add_secure_port("127.0.0.1:0", creds)
    s.server.start()
    s.addr = f"127.0.0.1:{s.port}"
    return s


def test_h2_over_tls_to_the_instance(gateway, gpki):
    """grpcs:// (ALPN h2 only), and upstream_tls = on with a plain host:port under auto
    (ALPN h2 and http/1.1 offered: the gRPC server picks h2), both verified against the
    instance's CA."""
    srv = tls_grpc_server(gpki.local)
    try:
        port = free_port()
        ca = gpki.path(gpki.ca + ".crt")
        gateway(ini_text({
            "a": {"protocol": "http", "listen": f"127.0.0.1:{port}", "path_prefix": "/a/",
                  "strip_prefix": "yes", "instances": f"grpcs://{srv.addr}",
                  "upstream_ca": ca},
            "b": {"protocol": "http", "listen": f"127.0.0.1:{port}", "path_prefix": "/b/",
                  "strip_prefix": "yes", "instances": srv.addr, "upstream_tls": "on",
                  "upstream_ca": ca},
        }), listen=port)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            for pre in ("/a", "/b"):
                f = ch.unary_unary(pre + SVC + "Unary", request_serializer=ident,
                                   response_deserializer=ident)
                assert f(b"t" + pre.encode(), timeout=10) == b"echo:t" + pre.encode() + b":"
    finally:
        srv.stop()


def test_instance_gone_mid_stream_fails_the_call_not_the_gateway(gateway, zk, kz, zpath,
                                                                 grpc_server):
    """The instance stops in the middle of a server stream: the call fails (the stream is
    reset), and the gateway goes on serving calls to another instance."""
    a, b = grpc_server(), grpc_server()
    kz.ensure_path(zpath)
    kz.create(f"{zpath}/a", f"grpc://{a.addr}".encode())
    port = free_port()
    gw = gateway(ini_text({"g": {"protocol": "http", "listen": f"127.0.0.1:{port}",
                                 "zk_path": zpath}},
                          zookeeper={"hosts": zk.hosts, "session_timeout": "4s"},
                          proxy={"access_log": "stderr"}), listen=port)
    assert ready(port)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        it = call(ch, "Flood", "us")(b"1000000", timeout=30)
        assert len(next(it)) == 1024
        a.server.stop(0)
        with pytest.raises(grpc.RpcError) as e:
            for _ in it:
                pass
        assert e.value.code() != grpc.StatusCode.OK
    kz.create(f"{zpath}/b", f"grpc://{b.addr}".encode())
    kz.delete(f"{zpath}/a")
    assert ready(port)
    assert gw.proc.poll() is None


def conns_to(port):
    """Established TCP connections to 127.0.0.1:port (from /proc/net/tcp)."""
    n = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            rem, st = parts[2], parts[3]
            if st == "01" and rem == "0100007F:%04X" % port:
                n += 1
    return n


def test_instance_connection_reused_then_dropped_when_the_instance_goes(gateway, grpc_server):
    """Calls one after another share one instance connection (kept in the idle pool between
    them); when the instance closes it, the gateway drops it, and the next call to the
    instance back on the same port goes on a new connection and succeeds."""
    srv = grpc_server()
    iport = srv.port
    port = free_port()
    gateway(ini_text({"g": {"protocol": "http", "listen": f"127.0.0.1:{port}",
                            "instances": f"grpc://{srv.addr}"}}), listen=port)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        for i in range(10):
            assert call(ch, "Unary")(b"%d" % i, timeout=10) == b"echo:%d:" % i
    assert conns_to(iport) == 1
    srv.server.stop(0).wait()
    assert wait_until(lambda: conns_to(iport) == 0, 10)
    again = GrpcServer.__new__(GrpcServer)
    again.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    again.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "zg.Test", {"Unary": grpc.unary_unary_rpc_method_handler(_unary, ident, ident)}),))
    assert again.server.add_insecure_port(f"127.0.0.1:{iport}") == iport
    again.server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            assert call(ch, "Unary")(b"back", timeout=10) == b"echo:back:"
    finally:
        again.server.stop(0)


def slow_server(max_streams=None):
    s = GrpcServer.__new__(GrpcServer)
    opts = [("grpc.max_concurrent_streams", max_streams)] if max_streams else []
    s.server = grpc.server(futures.ThreadPoolExecutor(max_workers=32), options=opts)
    s.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "zg.Test", {"Slow": grpc.unary_unary_rpc_method_handler(_slow, ident, ident)}),))
    s.port = s.server.add_insecure_port("127.0.0.1:0")
    s.server.start()
    s.addr = f"127.0.0.1:{s.port}"
    return s


def parallel_slow_calls(port, n, seconds, peak_conns, iport):
    """n calls from n client connections at once, each taking `seconds` at the instance;
    the most connections to the instance seen while they run goes into peak_conns[0]."""
    errors, done = [], []

    def one(k):
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
                r = ch.unary_unary(SVC + "Slow", request_serializer=ident,
                                   response_deserializer=ident)(b"%.1f" % seconds, timeout=30)
                (done if r == b"late" else errors).append(r)
        except Exception as e:  # noqa: BLE001 - reported by the caller
            errors.append(repr(e))

    ts = [threading.Thread(target=one, args=(k,)) for k in range(n)]
    for t in ts:
        t.start()
    while any(t.is_alive() for t in ts):
        peak_conns[0] = max(peak_conns[0], conns_to(iport))
        time.sleep(0.05)  # sampling while the calls run, not waiting for an event
    return errors, done


def test_streams_share_an_instance_connection(gateway, grpc_server):
    """Exchanges from many client connections go as streams on one instance connection (one
    per worker), at once: 12 calls of 1 s end in about 1 s."""
    srv = slow_server()
    try:
        port = free_port()
        gateway(ini_text({"g": {"protocol": "http", "listen": f"127.0.0.1:{port}",
                                "instances": f"grpc://{srv.addr}"}}), listen=port)
        # a first call leaves the connection in the pool (a burst before any connection
        # exists makes one each while the first connects)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            assert ch.unary_unary(SVC + "Slow", request_serializer=ident,
                                  response_deserializer=ident)(b"0", timeout=10) == b"late"
        peak = [0]
        t0 = time.monotonic()
        errors, done = parallel_slow_calls(port, 12, 1.0, peak, srv.port)
        assert not errors and len(done) == 12, errors
        assert time.monotonic() - t0 < 6
        # one worker: the primed connection carries all 12; with more, a worker that got
        # no primed connection may open a few in its own burst, still fewer than calls
        workers = int(os.environ.get("ZKGATE_TEST_WORKERS", "1"))
        assert peak[0] == 1 if workers == 1 else 1 <= peak[0] < 12, peak
    finally:
        srv.stop()


def test_instance_max_concurrent_streams_respected(gateway, grpc_server):
    """An instance that takes 3 streams at a time (SETTINGS_MAX_CONCURRENT_STREAMS): 9
    concurrent calls are spread over more connections instead of being refused."""
    srv = slow_server(max_streams=3)
    try:
        port = free_port()
        gateway(ini_text({"g": {"protocol": "http", "listen": f"127.0.0.1:{port}",
                                "instances": f"grpc://{srv.addr}"}}), listen=port)
        # a first call so that the instance's SETTINGS are known on the pooled connection
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            assert ch.unary_unary(SVC + "Slow", request_serializer=ident,
                                  response_deserializer=ident)(b"0", timeout=10) == b"late"
        peak = [0]
        errors, done = parallel_slow_calls(port, 9, 1.5, peak, srv.port)
        assert not errors and len(done) == 9, errors
        assert peak[0] >= 3, peak
    finally:
        srv.stop()


def test_drain_lets_streams_on_a_shared_instance_connection_finish(gateway, grpc_server):
    """SIGTERM while calls are streams on a pooled instance connection: the drain does not
    close it under them; they finish, then the gateway exits 0."""
    srv = slow_server()
    try:
        port = free_port()
        gw = gateway(ini_text({"g": {"protocol": "http", "listen": f"127.0.0.1:{port}",
                                     "instances": f"grpc://{srv.addr}"}}), listen=port)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            assert ch.unary_unary(SVC + "Slow", request_serializer=ident,
                                  response_deserializer=ident)(b"0", timeout=10) == b"late"
        SLOW_STARTED["n"] = 0
        results = []

        def one():
            try:
                with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
                    results.append(ch.unary_unary(
                        SVC + "Slow", request_serializer=ident,
                        response_deserializer=ident)(b"1.5", timeout=20))
            except grpc.RpcError as e:
                results.append(e.code())

        ts = [threading.Thread(target=one) for _ in range(3)]
        for t in ts:
            t.start()
        assert wait_until(lambda: SLOW_STARTED["n"] == 3, 10)
        os.kill(gw.pid, signal.SIGTERM)
        for t in ts:
            t.join(30)
        assert results == [b"late"] * 3, results
        assert gw.proc.wait(timeout=20) == 0
        gw.returncode = 0
    finally:
        srv.stop()
