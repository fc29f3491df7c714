"""TCP relay with splice(2) (neither side TLS, [proxy] tcp_splice = auto): large transfers both
ways with checksums, half-close each way, a slow reader (backpressure, bounded memory), resets
mid-transfer, many connections at once, a pipe that cannot be made (EMFILE: copied instead,
never failed), the cap on busy pipes (max_pipes: copied past it, and max_connections = auto
leaving room for the pipes under a low open-file limit), drain; and the counters that tell the splice path was taken (and that
tcp_splice = off keeps it at zero). Plain TLS-terminating services are checked in test_tls.py."""

import fcntl
import hashlib
import json
import os
import re
import resource
import select
import selectors
import signal
import socket
import struct
import termios
import threading
import time
import urllib.request

import pytest

from zkharness import TEST_WORKERS, Backend, free_port, ini_text, wait_until

MiB = 1 << 20


# ---------------------------------------------------------------------------------------------
# an instance that runs a function per connection


class Server:
    """TCP server on 127.0.0.1 running handler(conn, state) in a thread per connection; `state`
    is a dict the handler fills in for the test (state["done"] is set when it returns;
    state["go"] is an event for the test to set), the list of states is `conns`, exceptions go
    to `errors`."""

    def __init__(self, handler):
        self.handler = handler
        self.conns = []
        self.errors = []
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", free_port()))
        self.sock.listen(256)
        self.addr = "127.0.0.1:%d" % self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            state = {"done": threading.Event(), "go": threading.Event()}
            self.conns.append(state)
            threading.Thread(target=self._run, args=(conn, state), daemon=True).start()

    def _run(self, conn, state):
        try:
            self.handler(conn, state)
        except Exception as e:  # reported by the test that expects none
            self.errors.append(repr(e))
        finally:
            state["done"].set()
            try:
                conn.close()
            except OSError:
                pass

    def real(self, timeout=10):
        """The first connection that sent a byte (the gateway's listener probe sends none)."""
        assert wait_until(lambda: any(c.get("first") for c in self.conns), timeout), \
            "no connection with data reached the instance"
        return next(c for c in self.conns if c.get("first"))

    def close(self):
        self.sock.close()


@pytest.fixture
def servers():
    made = []

    def make(handler):
        s = Server(handler)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def recv_all(sock, timeout=30, into=None):
    """(bytes received until EOF, sha256 hex); raises TimeoutError if the peer never closes."""
    h = hashlib.sha256()
    n = 0
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no EOF within {timeout}s after {n} bytes")
        sock.settimeout(left)
        chunk = sock.recv(1 << 18)
        if not chunk:
            return n, h.hexdigest()
        h.update(chunk)
        n += len(chunk)
        if into is not None:
            into["received"] = n


def first_byte(conn, state):
    """Waits for the client's first byte (the listener probe sends none: nothing happens)."""
    b = conn.recv(1)
    state["first"] = b
    return b


def both_ways(down, key):
    """A backend handler: after the client's first byte, sends `down` and half-closes while it
    takes the rest of the client's bytes, (count, sha256 hex) into state[key]."""
    def handler(conn, st):
        if not first_byte(conn, st):
            return
        sender = threading.Thread(target=lambda: (conn.sendall(down),
                                                  conn.shutdown(socket.SHUT_WR)))
        sender.start()
        st[key] = recv_all(conn)
        sender.join(30)
    return handler


# ---------------------------------------------------------------------------------------------
# the gateway, its metrics and access log


def start(gateway, tmp_path, instances, admin=True, **proxy):
    port, admin_port = free_port(), free_port()
    log = tmp_path / "access.log"
    ini = ini_text({"svc": {"listen": f"127.0.0.1:{port}", "instances": instances}},
                   proxy={"access_log": str(log), "access_log_format": "json", **proxy},
                   admin={"listen": f"127.0.0.1:{admin_port}"})
    gw = gateway(ini, listen=[port, admin_port])
    gw.port, gw.admin, gw.access = port, admin_port, log
    # The fixture's readiness probe of `port` is a session of its own (it may take pipes):
    # over before the test's own begin.
    wait_entry(gw, lambda e: e["bytes_in"] == 0)
    return gw


def metrics(gw):
    with urllib.request.urlopen(f"http://127.0.0.1:{gw.admin}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


SPLICED = 'zkgate_tcp_spliced_bytes_total{service="svc"}'
SESSIONS = "zkgate_tcp_spliced_sessions_total"
BUSY = 'zkgate_tcp_splice_pipes{state="busy"}'
KEPT = 'zkgate_tcp_splice_pipes{state="kept"}'
FAILURES = "zkgate_tcp_splice_pipe_failures_total"
CAPPED = "zkgate_tcp_splice_pipes_capped_total"
PIPES_MAX = "zkgate_tcp_splice_pipes_max"


def entries(gw):
    try:
        with open(gw.access) as f:
            return [json.loads(l) for l in f if l.strip()]
    except FileNotFoundError:
        return []


def wait_entry(gw, pred, timeout=10):
    """The first access log entry for which pred(entry) holds (waited for)."""
    found = wait_until(lambda: [e for e in entries(gw) if pred(e)], timeout)
    assert found, f"no such access log entry; have {entries(gw)}"
    return found[0]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def connected_sockets(pid):
    """How many of pid's descriptors are TCP sockets other than listening ones."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            m = re.match(r"socket:\[(\d+)\]", os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
        if m:
            inodes.add(m.group(1))
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                n += cols[9] in inodes and cols[3] != "0A"  # 0A: LISTEN
    return n


def connect(gw, timeout=10):
    return socket.create_connection(("127.0.0.1", gw.port), timeout=timeout)


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["auto", "off"])
def test_both_ways_at_once_with_checksums_and_counters(mode, servers, gateway, tmp_path):
    """24 MiB up and 24 MiB down at the same time, each side half-closing after its last byte:
    both arrive intact, the access log and byte counters are exact, and the splice counters
    count them all with tcp_splice = auto and nothing with off."""
    up = os.urandom(24 * MiB)
    down = os.urandom(24 * MiB)

    srv = servers(both_ways(down, "up_rest"))
    gw = start(gateway, tmp_path, srv.addr, tcp_splice=mode)
    errors = []
    with connect(gw) as c:
        def send():
            try:
                c.sendall(up)
                c.shutdown(socket.SHUT_WR)
            except OSError as e:
                errors.append(e)
        t = threading.Thread(target=send)
        t.start()
        n, digest = recv_all(c)
        t.join(30)
    assert not errors, errors
    assert (n, digest) == (len(down), hashlib.sha256(down).hexdigest()), \
        f"instance -> client: {n} bytes, expected {len(down)} (or corrupted)"
    st = srv.real()
    assert st["done"].wait(10)
    assert not srv.errors, srv.errors
    assert st["first"] == up[:1]
    assert st["up_rest"] == (len(up) - 1, hashlib.sha256(up[1:]).hexdigest()), \
        "client -> instance: bytes lost or corrupted"
    e = wait_entry(gw, lambda e: e["bytes_in"] > 0)
    assert (e["bytes_in"], e["bytes_out"], e["reason"], e["term"]) == \
        (len(up), len(down), "closed", "--"), e
    m = metrics(gw)
    assert m['zkgate_received_bytes_total{service="svc"}'] == len(up)
    assert m['zkgate_sent_bytes_total{service="svc"}'] == len(down)
    if mode == "auto":
        assert m[SPLICED] == len(up) + len(down), "not every byte went through a pipe"
        assert m[SESSIONS] >= 1
        assert m[BUSY] == 0 and 1 <= m[KEPT] <= 2 * TEST_WORKERS, m
    else:
        assert (m[SPLICED], m[SESSIONS], m[BUSY], m[KEPT]) == (0, 0, 0, 0), m


def test_instance_half_closes_first_and_the_client_goes_on(servers, gateway, tmp_path):
    """The instance sends 8 MiB and shuts its write half; the client sees EOF after all of it,
    then sends 8 MiB of its own, which the instance receives whole (the other direction keeps
    flowing), and only then does the session end."""
    down = os.urandom(8 * MiB)
    up = os.urandom(8 * MiB)

    def handler(conn, st):
        if not first_byte(conn, st):
            return
        conn.sendall(down)
        conn.shutdown(socket.SHUT_WR)
        st["rest"] = recv_all(conn)

    srv = servers(handler)
    gw = start(gateway, tmp_path, srv.addr)
    with connect(gw) as c:
        c.sendall(up[:1])
        assert recv_all(c) == (len(down), hashlib.sha256(down).hexdigest())
        c.sendall(up[1:])  # after EOF from the instance: still relayed
        c.shutdown(socket.SHUT_WR)
        st = srv.real()
        assert st["done"].wait(20)
        assert st["rest"] == (len(up) - 1, hashlib.sha256(up[1:]).hexdigest())
        c.settimeout(5)
        assert c.recv(10) == b"", "the session did not end after both halves were shut"
    e = wait_entry(gw, lambda e: e["bytes_in"] > 0)
    assert (e["bytes_in"], e["bytes_out"], e["reason"]) == (len(up), len(down), "closed"), e
    assert metrics(gw)[SPLICED] == len(up) + len(down)


def test_client_half_closes_first_and_the_instance_goes_on(servers, gateway, tmp_path):
    """The client sends 8 MiB and shuts its write half; the instance reads to EOF, then answers
    with 8 MiB and a digest of what it got, which reach the client whole."""
    up = os.urandom(8 * MiB)
    down = os.urandom(8 * MiB)

    def handler(conn, st):
        if not first_byte(conn, st):
            return
        n, digest = recv_all(conn)
        conn.sendall(down + struct.pack("!Q", n + 1) + digest.encode())

    srv = servers(handler)
    gw = start(gateway, tmp_path, srv.addr)
    with connect(gw) as c:
        c.sendall(up)
        c.shutdown(socket.SHUT_WR)
        chunks = []
        c.settimeout(20)
        while True:
            b = c.recv(1 << 18)
            if not b:
                break
            chunks.append(b)
    got = b"".join(chunks)
    assert len(got) == len(down) + 8 + 64, len(got)
    assert got[:len(down)] == down, "instance -> client after the client's half-close: corrupted"
    n = struct.unpack("!Q", got[len(down):len(down) + 8])[0]
    assert n == len(up)
    assert got[-64:].decode() == hashlib.sha256(up[1:]).hexdigest(), "client -> instance corrupted"


@pytest.mark.parametrize("mode", ["auto", "off"])
def test_slow_reader_holds_the_instance_back(mode, servers, gateway, tmp_path):
    """A client that reads nothing: the instance can only push what the socket buffers and one
    pipe hold, then its sends block; zkgate's memory does not grow; once the client reads,
    every byte arrives in order."""
    def handler(conn, st):
        if not first_byte(conn, st):
            return
        conn.setblocking(False)
        block = bytes(range(256)) * 256  # 64 KiB, its offset is checkable
        sent = 0
        while True:  # until the socket has not been writable for 1 s
            _, w, _ = select.select([], [conn], [], 1.0)
            if not w:
                break
            try:
                sent += conn.send(block[sent % len(block):])
            except BlockingIOError:
                pass
            if sent > 512 * MiB:
                break
        st["stalled_at"] = sent
        st["stalled"] = True
        st["go"].wait(30)
        conn.setblocking(True)
        tail = 4 * MiB
        conn.sendall((block * (tail // len(block) + 2))[sent % len(block):][:tail])
        st["total"] = sent + tail

    srv = servers(handler)
    gw = start(gateway, tmp_path, srv.addr, tcp_splice=mode)
    rss0 = rss_kib(gw.pid)
    with connect(gw) as c:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        c.sendall(b"x")
        st = srv.real()
        assert wait_until(lambda: st.get("stalled"), 30), "the instance never stalled"
        stalled_at = st["stalled_at"]
        m = metrics(gw)
        rss1 = rss_kib(gw.pid)
        st["go"].set()
        n, digest = recv_all(c, timeout=30)
    # What can be in flight: the instance's send buffer, zkgate's receive and send buffers
    # (autotuned up to the sysctl maxima), the client's receive buffer (1 MiB asked, doubled
    # by the kernel) and one pipe of at most 1 MiB.
    wmem = int(open("/proc/sys/net/ipv4/tcp_wmem").read().split()[2])
    rmem = int(open("/proc/sys/net/ipv4/tcp_rmem").read().split()[2])
    bound = 2 * wmem + rmem + 2 * MiB + MiB
    assert stalled_at <= bound, \
        f"the instance pushed {stalled_at >> 20} MiB into a stalled path (bound {bound >> 20} MiB)"
    assert rss1 - rss0 < 4096, f"zkgate grew by {rss1 - rss0} KiB while holding the stall"
    assert m[BUSY] <= 1, m
    total = st["total"]
    block = bytes(range(256)) * 256
    want = hashlib.sha256((block * (total // len(block) + 2))[:total]).hexdigest()
    assert (n, digest) == (total, want), f"after the stall: {n} of {total} bytes, or corrupted"


def test_instance_reset_mid_transfer_ends_the_session(servers, gateway, tmp_path):
    """The instance resets (SO_LINGER 0) after 4 MiB of a 64 MiB answer: the client's
    connection is closed at once, the access log says "instance reset", the pipe is not kept
    (it may hold bytes) and the gateway serves the next session."""
    def handler(conn, st):
        if not first_byte(conn, st):
            return
        conn.sendall(os.urandom(4 * MiB))
        if st["first"] == b"r":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return  # closed by Server: a reset
        conn.sendall(b"ok")

    srv = servers(handler)
    gw = start(gateway, tmp_path, srv.addr)
    with connect(gw) as c:
        c.sendall(b"r")
        got = 0
        c.settimeout(10)
        try:
            while True:
                b = c.recv(1 << 18)
                if not b:
                    break
                got += len(b)
        except ConnectionResetError:
            pass
    assert got <= 4 * MiB
    e = wait_entry(gw, lambda e: e["bytes_in"] == 1)
    assert e["reason"] == "instance reset" and e["term"][0] == "S", e
    with connect(gw) as c:
        c.sendall(b"n")
        assert recv_all(c)[0] == 4 * MiB + 2
    wait_entry(gw, lambda e: e["reason"] == "closed" and e["bytes_in"] == 1)
    assert metrics(gw)[BUSY] == 0


def test_client_reset_mid_transfer_closes_the_instance(servers, gateway, tmp_path):
    """The client resets during a 256 MiB download: zkgate ends the session on the client's
    side and closes the instance's connection (whose sends then fail)."""
    def handler(conn, st):
        if not first_byte(conn, st):
            return
        chunk = os.urandom(MiB)
        try:
            for _ in range(256):
                conn.sendall(chunk)
            st["result"] = "sent all"
        except OSError as e:
            st["result"] = type(e).__name__

    srv = servers(handler)
    gw = start(gateway, tmp_path, srv.addr)
    c = connect(gw)
    c.sendall(b"g")
    got = 0
    while got < 2 * MiB:
        got += len(c.recv(1 << 18))
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
    st = srv.real()
    assert st["done"].wait(10), "the instance's connection stayed open after the client reset"
    assert st["result"] in ("BrokenPipeError", "ConnectionResetError"), st["result"]
    e = wait_entry(gw, lambda e: e["bytes_in"] == 1)
    assert e["reason"] in ("client reset", "client write error") and e["term"][0] == "C", e


def fill_then_reset(sock, block):
    """Sends `block` over and over on `sock` until the path stays full (not writable for 0.5 s),
    then resets it (SO_LINGER 0). Returns (bytes sent, bytes the peer's kernel acknowledged
    before the reset): the gateway had received at least the latter."""
    sock.setblocking(False)
    sent = 0
    while True:
        try:
            sent += sock.send(block[sent % len(block):])
        except BlockingIOError:
            if not select.select([], [sock], [], 0.5)[1]:
                break
    outq = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ,
                                          struct.pack("i", 0)))[0]
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    return sent, sent - outq


def stream_digest(block, n):
    """sha256 of the first n bytes of `block` repeated."""
    h = hashlib.sha256()
    for _ in range(n // len(block)):
        h.update(block)
    h.update(block[:n % len(block)])
    return h.hexdigest()


def recv_until_end(sock, timeout=30, pause=0):
    """(bytes received until EOF or a reset, sha256 hex); `pause` seconds after each read make
    a slow reader."""
    h = hashlib.sha256()
    deadline = time.monotonic() + timeout
    n = 0
    while time.monotonic() < deadline:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            chunk = sock.recv(16384 if pause else 1 << 18)
        except ConnectionResetError:
            break
        if not chunk:
            break
        h.update(chunk)
        n += len(chunk)
        if pause:
            time.sleep(pause)
    else:
        raise TimeoutError(f"no end within {timeout}s after {n} bytes")
    return n, h.hexdigest()


def send_until_error(sock, block):
    """Sends `block` over and over until the connection fails (a thread's target)."""
    try:
        while True:
            sock.sendall(block)
    except OSError:
        pass


@pytest.mark.parametrize("idle", ["60s", "0s"])
@pytest.mark.parametrize("mode", ["auto", "off"])
def test_an_answer_sent_before_an_instance_reset_all_arrives(mode, idle, servers, gateway,
                                                             tmp_path):
    """The client uploads without end and reads nothing yet; the instance reads nothing of it
    (as a server refusing a large upload does), answers until the path to the client is full
    (the gateway's pipe and socket buffers full), then resets. Every byte of the answer the
    gateway's kernel had acknowledged before the reset still reaches the client, in order,
    before the end, though the client then reads slowly (16 KiB a millisecond: its connection
    is kept open for it, also with idle_timeout = 0, i.e. none); the access log says
    "instance reset" with the bytes the client got."""
    block = os.urandom(MiB)

    def handler(conn, st):
        if not first_byte(conn, st):
            return
        st["sent"], st["acked"] = fill_then_reset(conn, block)

    srv = servers(handler)
    gw = start(gateway, tmp_path, srv.addr, tcp_splice=mode, idle_timeout=idle)
    c = socket.socket()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    c.connect(("127.0.0.1", gw.port))
    with c:
        threading.Thread(target=send_until_error, args=(c, block), daemon=True).start()
        st = srv.real()
        assert st["done"].wait(60), "the instance never found the path full"
        assert not srv.errors, srv.errors
        got, digest = recv_until_end(c, pause=0.001)
    assert st["acked"] <= got <= st["sent"], \
        f"the client got {got} bytes; the gateway had {st['acked']} before the reset"
    assert digest == stream_digest(block, got), "bytes corrupted or out of order"
    e = wait_entry(gw, lambda e: e["bytes_in"] > 0)
    assert (e["reason"], e["term"][0], e["bytes_out"]) == ("instance reset", "S", got), e
    if mode == "auto":
        assert metrics(gw)[SPLICED] >= st["acked"]
    assert wait_until(lambda: metrics(gw)[BUSY] == 0, 10)


@pytest.mark.parametrize("mode", ["auto", "off"])
def test_bytes_sent_before_a_client_reset_all_arrive(mode, servers, gateway, tmp_path):
    """The same the other way: the instance sends without end, the client reads nothing, fills
    the path to the instance (which reads nothing yet), then resets; the instance, reading
    afterwards, gets every byte the gateway had, then the end; the access log says
    "client reset"."""
    block = os.urandom(MiB)

    def handler(conn, st):
        if not first_byte(conn, st):
            return
        threading.Thread(target=send_until_error, args=(conn, block), daemon=True).start()
        assert st["go"].wait(60)
        st["got"] = recv_until_end(conn)

    srv = servers(handler)
    gw = start(gateway, tmp_path, srv.addr, tcp_splice=mode)
    c = connect(gw)
    sent, acked = fill_then_reset(c, block)
    st = srv.real()
    st["go"].set()
    assert st["done"].wait(60), "the instance's connection never ended"
    assert not srv.errors, srv.errors
    n, digest = st["got"]
    assert acked <= 1 + n <= sent, \
        f"the instance got {1 + n} bytes; the gateway had {acked} before the reset"
    assert st["first"] == block[:1]
    assert digest == hashlib.sha256(
        (block * (2 + (1 + n) // len(block)))[1:1 + n]).hexdigest(), \
        "bytes corrupted or out of order"
    e = wait_entry(gw, lambda e: e["bytes_in"] > 0)
    assert (e["reason"], e["term"][0], e["bytes_in"]) == ("client reset", "C", 1 + n), e
    assert wait_until(lambda: metrics(gw)[BUSY] == 0, 10)


@pytest.mark.parametrize("mode", ["auto", "off"])
def test_a_client_that_stops_reading_is_closed_once_the_flush_bound_is_over(
        mode, servers, gateway, tmp_path):
    """After an instance reset, the client's connection is kept (its bytes still on their way)
    only until the client has everything or idle_timeout (5 s here; at most 5 s) is over: a
    client that stops reading does not hold it open. The session is logged at the reset."""
    def handler(conn, st):
        if not first_byte(conn, st):
            return
        conn.sendall(os.urandom(16 * MiB))
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    srv = servers(handler)
    gw = start(gateway, tmp_path, srv.addr, tcp_splice=mode, idle_timeout="5s")
    c = socket.socket()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    c.connect(("127.0.0.1", gw.port))
    with c:
        c.sendall(b"r")
        c.settimeout(10)
        ended = []
        while not ended:  # slowly, so that the gateway's socket buffer to the client fills
            assert c.recv(16384), "the gateway closed before the session was logged"
            time.sleep(0.002)
            ended = [e for e in entries(gw) if e["bytes_in"] == 1]
        assert ended[0]["reason"] == "instance reset", ended[0]
        # the client reads no more: the gateway holds the connection while bytes wait...
        assert connected_sockets(gw.pid) == 1, "nothing was left to flush to the client"
        # ...and not past the bound
        assert wait_until(lambda: connected_sockets(gw.pid) == 0, 15), \
            "the gateway kept the connection of a client that stopped reading"


def test_many_connections_at_once(backends, gateway, tmp_path):
    """100 sessions at once, each echoing 1 MiB through the echo instance: every one intact;
    afterwards no pipe is busy and at most the pool's 16 per worker are kept."""
    b = backends("a")
    gw = start(gateway, tmp_path, b.addr)
    results, errors = [], []

    def one(i):
        payload = os.urandom(MiB)
        try:
            with connect(gw, timeout=30) as c:
                t = threading.Thread(target=lambda: (c.sendall(payload),
                                                     c.shutdown(socket.SHUT_WR)))
                t.start()
                n, digest = recv_all(c, timeout=40)
                t.join(10)
            want = b"a\n" + payload + b"bye\n"
            results.append((n, digest) == (len(want), hashlib.sha256(want).hexdigest()))
        except OSError as e:
            errors.append(f"{i}: {e!r}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(40)
    assert not errors, errors[:5]
    assert results.count(True) == 100, f"{results.count(False)} of 100 sessions corrupted"
    assert wait_until(lambda: metrics(gw)['zkgate_connections_active{service="svc"}'] == 0, 10)
    m = metrics(gw)
    assert m[BUSY] == 0, m
    assert m[KEPT] <= 16 * TEST_WORKERS
    assert m[SESSIONS] >= 100
    assert m[SPLICED] >= 100 * 2 * MiB


def test_no_pipe_copies_instead_and_says_so_once(servers, gateway, tmp_path):
    """With the open-file limit leaving no room for a new pipe (EMFILE) while the one kept pipe
    (if any) is held by the other direction, the session copies through user space instead:
    both ways intact, counted in the failures, logged once; once descriptors are free again,
    pipes are used again."""
    down = os.urandom(8 * MiB)
    up = os.urandom(8 * MiB)

    srv = servers(both_ways(down, "up"))
    gw = start(gateway, tmp_path, srv.addr)
    soft, hard = resource.prlimit(gw.pid, resource.RLIMIT_NOFILE)
    # no connection open any more (the listener probes, the admin's): only fixed descriptors
    assert wait_until(lambda: connected_sockets(gw.pid) == 0, 10), "connections stay open"
    fds = sorted(int(fd) for fd in os.listdir(f"/proc/{gw.pid}/fd"))
    # the limit caps descriptor numbers: leave three free numbers below it, for the accepted
    # client, the connection to the instance and one more (the admin's), never two for a pipe
    limit = next(n for n in range(fds[-1] + 4) if n - sum(fd < n for fd in fds) == 3)
    resource.prlimit(gw.pid, resource.RLIMIT_NOFILE, (limit, hard))
    try:
        with connect(gw) as c:
            c.sendall(up[:1])
            # the client reads nothing yet: instance -> client holds a pipe (the kept one),
            # or already failed to make one
            assert wait_until(lambda: (lambda m: m[BUSY] >= 1 or m[FAILURES] >= 1)(metrics(gw)),
                              10)
            c.sendall(up[1:])  # client -> instance now needs a pipe of its own
            c.shutdown(socket.SHUT_WR)
            got = recv_all(c)
    finally:
        resource.prlimit(gw.pid, resource.RLIMIT_NOFILE, (soft, hard))
    assert got == (len(down), hashlib.sha256(down).hexdigest()), "instance -> client corrupted"
    st = srv.real()
    assert st["done"].wait(10) and not srv.errors, srv.errors
    assert st["up"] == (len(up) - 1, hashlib.sha256(up[1:]).hexdigest()), \
        "client -> instance corrupted"
    m = metrics(gw)
    assert m[FAILURES] >= 1, m
    assert m[SPLICED] < len(up) + len(down), "every byte spliced although pipes failed"
    assert gw.log_text().count("cannot make a pipe for splice") == 1, gw.log_text()
    before = m[SPLICED]
    with connect(gw) as c:
        c.sendall(up)
        c.shutdown(socket.SHUT_WR)
        assert recv_all(c) == (len(down), hashlib.sha256(down).hexdigest())
    assert wait_until(lambda: sum(e["bytes_in"] == len(up) for e in entries(gw)) == 2, 10)
    assert metrics(gw)[SPLICED] - before == len(up) + len(down), \
        "pipes not used again once they could be made"
    assert gw.log_text().count("cannot make a pipe for splice") == 1


def test_drain_lets_a_spliced_transfer_finish(servers, gateway, tmp_path):
    """SIGTERM while a session is open: no new connections, the session's transfer goes on to
    its end (within drain_timeout), then zkgate exits 0."""
    payload = os.urandom(16 * MiB)

    def handler(conn, st):
        if not first_byte(conn, st):
            return
        st["go"].wait(20)
        conn.sendall(payload)

    srv = servers(handler)
    gw = start(gateway, tmp_path, srv.addr, drain_timeout="20s")
    with connect(gw) as c:
        c.sendall(b"d")
        st = srv.real()
        gw.proc.send_signal(signal.SIGTERM)
        assert gw.wait_log("draining", 5)
        st["go"].set()
        assert recv_all(c) == (len(payload), hashlib.sha256(payload).hexdigest())
    assert gw.proc.wait(10) == 0
    gw.returncode = 0


# ---------------------------------------------------------------------------------------------
# the cap on busy pipes (max_pipes)


class Stalled:
    """`n` sessions through the gateway to an instance of our own, driven from one thread with
    non-blocking sockets (small socket buffers and segments on our side): each client sends `size` bytes
    and each instance connection, after the client's first byte, `size` bytes back. First
    nobody reads (past that first byte), so every direction of every session stalls with
    bytes held in the gateway: in a pipe while the cap allows, in user space past it. Then
    everyone reads and sends the rest, half-closing after the last byte; run() checks that
    every byte arrived both ways. A thread samples the busy pipes all along (`busy_max`)."""

    BUF = 16384

    def __init__(self, gw, n, size):
        self.gw, self.n, self.size = gw, n, size
        self.payload = memoryview(os.urandom(size))
        self.digest = hashlib.sha256(self.payload).hexdigest()
        self.sel = selectors.DefaultSelector()
        self.lsock = socket.socket()
        self.small(self.lsock)  # inherited by the accepted sockets
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(1024)
        self.lsock.setblocking(False)
        self.addr = "127.0.0.1:%d" % self.lsock.getsockname()[1]
        self.sides = []  # [socket, role, sent, received, sha256, eof]
        self.instance_sides = 0
        self.busy_max = 0
        self.sampling = False
        # Until stall(), the fixture's probe sessions (no byte, then EOF) are closed by a
        # thread: their sessions end, and start() sees them logged.
        self.probing = True
        self.prober = threading.Thread(target=self._close_probes, daemon=True)
        self.prober.start()

    def _close_probes(self):
        while self.probing:
            if not select.select([self.lsock], [], [], 0.05)[0]:
                continue
            try:
                conn, _ = self.lsock.accept()
            except BlockingIOError:
                continue
            with conn:
                conn.settimeout(10)
                assert conn.recv(1) == b"", "a real session before stall()"

    @staticmethod
    def small(sock):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, Stalled.BUF)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, Stalled.BUF)
        # Segments of an Ethernet's size instead of loopback's 64 KiB, both ways (the MSS we
        # announce bounds what the gateway sends us): the gateway's send buffer, sized from
        # the segment size, then holds some 100 KiB rather than megabytes, and a pipe (a
        # slot per segment) some 90 KiB, so that a stall costs little memory.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1400)

    def _sample(self):
        while self.sampling:
            self.busy_max = max(self.busy_max, metrics(self.gw)[BUSY])
            time.sleep(0.005)  # pacing only

    def _accept(self):
        while True:
            try:
                conn, _ = self.lsock.accept()
            except BlockingIOError:
                return
            conn.setblocking(False)
            self.sides.append([conn, "instance", 0, 0, hashlib.sha256(), False])
            self.instance_sides += 1

    def _pump(self, side, reading):
        """Moves what side can move now; reads only when `reading` (an instance side reads
        the client's first byte always: it sends nothing before)."""
        sock, role, sent, got, h, eof = side
        if role == "instance" and got == 0 and not eof:
            try:
                b = sock.recv(1)
            except BlockingIOError:
                return
            if not b:  # a probe session of the fixture: no byte, nothing to send
                side[5] = True
                side[2] = self.size
                return
            h.update(b)
            side[3] = got = 1
        if reading and not eof:
            while True:
                try:
                    b = sock.recv(1 << 18)
                except BlockingIOError:
                    break
                if not b:
                    side[5] = True
                    break
                h.update(b)
                side[3] += len(b)
        while side[2] < self.size:
            try:
                k = sock.send(self.payload[side[2]:side[2] + (1 << 18)])
            except BlockingIOError:
                break
            side[2] += k
            if side[2] == self.size:
                sock.shutdown(socket.SHUT_WR)

    def _loop(self, reading, until, timeout, what):
        deadline = time.monotonic() + timeout
        while not until():
            assert time.monotonic() < deadline, f"{what} within {timeout}s: " + self.state()
            self._accept()
            for side in self.sides:
                self._pump(side, reading)
            select.select([self.lsock] + [s[0] for s in self.sides if not s[5]],
                          [s[0] for s in self.sides if s[2] < self.size], [], 0.05)

    def state(self):
        real = [s for s in self.sides if not (s[1] == "instance" and s[3] == 0)]
        reasons = {}
        for e in entries(self.gw):
            reasons[e["reason"]] = reasons.get(e["reason"], 0) + 1
        return (f"{len(real)} real sides of {len(self.sides)}, "
                f"{sum(s[5] for s in real)} at EOF; sessions ended: {reasons}; "
                f"metrics {metrics(self.gw)}")

    def stall(self, until, timeout=30):
        """Opens the sessions; returns once until() holds with nobody reading."""
        self.probing = False
        self.prober.join(15)
        self.sampling = True
        self.sampler = threading.Thread(target=self._sample, daemon=True)
        self.sampler.start()
        for _ in range(self.n):
            c = socket.socket()
            self.small(c)
            c.settimeout(10)
            c.connect(("127.0.0.1", self.gw.port))
            c.setblocking(False)
            self.sides.append([c, "client", 0, 0, hashlib.sha256(), False])
            self._pump(self.sides[-1], False)
            self._accept()
        self._loop(False, lambda: self.real_instances() == self.n and until(), timeout,
                   "sessions did not stall as expected")
        # still stalled: the sampler's figure includes this state
        self.busy_max = max(self.busy_max, metrics(self.gw)[BUSY])

    def real_instances(self):
        return sum(s[1] == "instance" and s[3] > 0 for s in self.sides)

    def finish(self, timeout=60):
        """Everyone reads: every byte arrives, both ways."""
        real = lambda: [s for s in self.sides if not (s[1] == "instance" and s[3] == 0)]
        self._loop(True, lambda: all(s[5] for s in real()), timeout,
                   "not every side got to its EOF")
        self.sampling = False
        self.sampler.join(10)
        got = [(s[1], s[3], s[4].hexdigest()) for s in real()]
        assert len(got) == 2 * self.n
        bad = [g for g in got if g[1:] != (self.size, self.digest)]
        assert not bad, f"{len(bad)} of {2 * self.n} sides got the wrong bytes: {bad[:4]}"

    def close(self):
        self.sampling = self.probing = False
        for s in self.sides:
            s[0].close()
        self.lsock.close()


@pytest.fixture
def stalled():
    made = []

    def make(*args):
        made.append(Stalled(*args))
        return made[-1]

    yield make
    for s in made:
        s.close()


def test_busy_pipes_stay_under_max_pipes_and_the_rest_is_copied(stalled, gateway, tmp_path):
    """max_connections = 8 makes max_pipes (auto) 2 for the whole process, whatever the
    workers: six sessions moving 4 MiB each way at once, first all stalled (nobody reads),
    then all flowing. The busy pipes reach 2 and never pass it (sampled all along), the
    directions past the cap copy through user space (counted, not logged, no pipe failure),
    and every byte arrives."""
    size = 4 * MiB
    st = stalled(None, 6, size)
    gw = start(gateway, tmp_path, st.addr, max_connections=8)
    st.gw = gw
    assert "client connections capped at 8, 4 of them in their head (auto), 2 busy splice " \
        "pipes (auto)" in gw.log_text()
    assert metrics(gw)[PIPES_MAX] == 2
    st.stall(lambda: (lambda m: m[BUSY] == 2 and m[CAPPED] > 0)(metrics(gw)))
    st.finish()
    assert st.busy_max == 2, st.busy_max
    assert wait_until(lambda: metrics(gw)['zkgate_connections_active{service="svc"}'] == 0, 10)
    m = metrics(gw)
    assert m[BUSY] == 0 and m[FAILURES] == 0, m
    assert m[SESSIONS] >= 6, m
    assert 0 < m[SPLICED] < 12 * size, m  # some through the pipes, some copied
    assert m['zkgate_received_bytes_total{service="svc"}'] == 6 * size
    assert "cannot make a pipe" not in gw.log_text()


def test_max_pipes_0_relays_without_pipes(servers, gateway, tmp_path):
    """max_pipes = 0: no pipe at all, the sessions are relayed by libuv's streams (not
    counted as spliced), intact."""
    down, up = os.urandom(2 * MiB), os.urandom(2 * MiB)
    srv = servers(both_ways(down, "up"))
    gw = start(gateway, tmp_path, srv.addr, max_pipes=0)
    assert "0 busy splice pipes (open-file limit" in gw.log_text()
    with connect(gw) as c:
        threading.Thread(target=lambda: (c.sendall(up), c.shutdown(socket.SHUT_WR))).start()
        assert recv_all(c) == (len(down), hashlib.sha256(down).hexdigest())
    st = srv.real()
    assert st["done"].wait(10) and not srv.errors, srv.errors
    assert st["up"] == (len(up) - 1, hashlib.sha256(up[1:]).hexdigest())
    m = metrics(gw)
    assert (m[SESSIONS], m[SPLICED], m[BUSY], m[PIPES_MAX], m[CAPPED]) == (0, 0, 0, 0, 0), m


def test_auto_caps_leave_room_for_the_pipes_under_a_low_open_file_limit(stalled, gateway,
                                                                         tmp_path):
    """A low open-file limit (prlimit, then a reload sizes the caps again) with
    max_connections and max_pipes auto: as many sessions as max_connections allows, all
    stalled with both directions busy, take every pipe allowed and the rest copy, and yet no
    accept, no connect to the instance and no pipe fails for want of a descriptor: every
    session is served, every byte arrives. (Counting 2 descriptors a connection and pipes
    without a cap, as before, ran out of descriptors here: sessions closed at accept.)"""
    st = stalled(None, 0, 1 * MiB)
    gw = start(gateway, tmp_path, st.addr)
    st.gw = gw
    # Low enough to matter, high enough not to hit the floor (a quarter of the limit) with
    # this configuration's reserve for one or two workers.
    limit = 300 + 100 * TEST_WORKERS
    resource.prlimit(gw.pid, resource.RLIMIT_NOFILE, (limit, limit))
    before = gw.log_text().count("client connections capped at")
    gw.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: gw.log_text().count("client connections capped at") > before, 10)
    line = gw.log_text().split("client connections capped at")[-1].splitlines()[0]
    m = re.match(r" (\d+) \(auto\), \d+ of them in their head \(auto\), (\d+) busy splice "
                 r"pipes \(auto\) \(open-file limit (\d+)\)", line)
    assert m, line
    n, pipes = int(m.group(1)), int(m.group(2))
    assert int(m.group(3)) == limit and pipes == n // 4, line
    assert "leaves little room" not in gw.log_text()
    assert metrics(gw)[PIPES_MAX] == pipes
    st.n = n
    st.stall(lambda: (lambda m: m[BUSY] == pipes and m[CAPPED] > 0)(metrics(gw)), timeout=60)
    m = metrics(gw)
    assert m["zkgate_connections_open"] == n, m
    assert m['zkgate_connections_refused_total{limit="max_connections"}'] == 0, m
    st.finish(timeout=120)
    assert st.busy_max == pipes, (st.busy_max, pipes)
    m = metrics(gw)
    assert m[FAILURES] == 0, m
    text = gw.log_text()
    assert "accept failed" not in text and "too many open files" not in text, text[-3000:]


def test_caps_past_the_open_file_limit_are_warned_about(servers, gateway, tmp_path):
    """max_connections set past what the open-file limit holds (with its pipes) is warned about
    at start; so is a max_pipes that leaves auto max_connections at its floor (a quarter of the
    limit). Both gateways serve all the same."""
    srv = servers(both_ways(b"x" * 1000, "up"))
    gw = start(gateway, tmp_path, srv.addr, max_connections=99999999)
    assert "client connections capped at 99999999, 4096 of them in their head (auto), " \
        "24999999 busy splice pipes (auto)" in gw.log_text()
    assert "max_connections 99999999 and max_pipes 24999999 may need" in gw.log_text()
    gw2_dir = tmp_path / "second"
    gw2_dir.mkdir()
    gw2 = start(gateway, gw2_dir, srv.addr, max_pipes=99999999)
    assert re.search(r"the open-file limit \(\d+\) leaves little room beside what 1 services "
                     r"and \d+ workers hold and max_pipes", gw2.log_text()), gw2.log_text()
    assert "99999999 busy splice pipes (open-file limit" in gw2.log_text()
    for g in (gw, gw2):
        with connect(g) as c:
            c.sendall(b"u")
            c.shutdown(socket.SHUT_WR)
            assert recv_all(c)[0] == 1000
