"""TCP proxying: balancing, retries on connect failure, closing when no instance is usable,
bytes both ways with half-close, idle and connect timeouts, a large transfer."""

import hashlib
import os
import socket
import threading
import time

from zkharness import (Blackhole, free_port, ini_text, reach, register, sample, wait_pool,
                       wait_until)


def zk_service_ini(zk, zpath, port, **proxy):
    return ini_text({"svc": {"zk_path": zpath, "listen": f"127.0.0.1:{port}",
                             "balance": "random"}},
                    zookeeper={"hosts": zk.hosts, "session_timeout": "4s"}, proxy=proxy)


def static_service_ini(port, instances, **proxy):
    return ini_text({"svc": {"listen": f"127.0.0.1:{port}", "instances": instances}},
                    proxy=proxy)


def recv_until_eof(sock, timeout):
    """Everything the peer sends until it closes; raises TimeoutError if it does not close."""
    deadline = time.monotonic() + timeout
    out = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no close within {timeout}s (got {len(out)} bytes)")
        sock.settimeout(left)
        try:
            chunk = sock.recv(1 << 16)
        except socket.timeout:
            raise TimeoutError(f"no close within {timeout}s (got {len(out)} bytes)") from None
        if not chunk:
            return bytes(out)
        out += chunk


def recv_exactly(sock, n, timeout=2.0):
    sock.settimeout(timeout)
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise AssertionError(f"connection closed after {out!r}, expected {n} bytes")
        out += chunk
    return out


def test_connections_spread_over_all_instances(zk, kz, zpath, backends, gateway):
    bs = backends("a", "b", "c")
    for b in bs:
        register(kz, zpath, f"tcp://{b.addr}".encode())
    port = free_port()
    gateway(zk_service_ini(zk, zpath, port), listen=port)
    wait_pool(port, ["a", "b", "c"])  # the registry has delivered all three
    seen = sample(port, 60)
    assert set(seen) == {"a", "b", "c"}, f"60 connections over 3 instances reached {dict(seen)}"


def test_connect_failure_retries_another_instance(zk, kz, zpath, backends, gateway):
    live = backends("live")
    register(kz, zpath, f"tcp://127.0.0.1:{free_port()}".encode())  # nothing listens there
    register(kz, zpath, f"tcp://{live.addr}".encode())
    port = free_port()
    gateway(zk_service_ini(zk, zpath, port), listen=port)
    wait_pool(port, ["live"])  # the registry has delivered the pool
    seen = sample(port, 20)
    assert seen == {"live": 20}, f"with one dead and one live instance: {dict(seen)}"


def test_all_instances_dead_closes_client_at_once(zk, kz, zpath, backends, gateway):
    for _ in range(3):
        register(kz, zpath, f"tcp://127.0.0.1:{free_port()}".encode())
    # A live instance first, so that the pool is known to be loaded before it goes away.
    live = backends("live")
    live_path = register(kz, zpath, f"tcp://{live.addr}".encode())
    port = free_port()
    gateway(zk_service_ini(zk, zpath, port), listen=port)
    assert set(wait_pool(port, ["live"])) == {"live"}
    kz.delete(live_path)
    assert wait_pool(port, [None]) == {None: 8}, "live instance still reached after deletion"
    for i in range(5):
        t0 = time.monotonic()
        got = reach(port, timeout=1.0)
        assert got is None, f"connection {i} got {got!r} although every instance is dead"
        assert time.monotonic() - t0 < 1.0


def test_no_instance_closes_client_at_once(zk, kz, zpath, gateway):
    kz.ensure_path(zpath)  # exists, no children
    port = free_port()
    gw = gateway(zk_service_ini(zk, zpath, port), listen=port)
    for i in range(8):
        t0 = time.monotonic()
        got = reach(port, timeout=1.0)
        assert got is None, f"connection {i} got {got!r} from an empty pool"
        assert time.monotonic() - t0 < 0.5, "client not closed at once"
    # Counted and logged, but rate-limited: 8 refusals (plus the listener probe) in well
    # under 10 s give at most 5 lines.
    lines = [l for l in gw.log_text().splitlines() if "no live instance" in l]
    assert 1 <= len(lines) <= 5, f"expected 1..5 rate-limited log lines, got {len(lines)}"
    assert "such connections so far" in lines[-1]


def test_bytes_flow_both_ways(backends, gateway):
    b = backends("a")
    port = free_port()
    gateway(static_service_ini(port, b.addr), listen=port)
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        assert recv_exactly(s, 2) == b"a\n"
        for i in range(5):
            msg = f"ping {i}\n".encode()
            s.sendall(msg)
            assert recv_exactly(s, len(msg)) == msg, f"round trip {i} not echoed"


def test_half_close_is_propagated(backends, gateway):
    b = backends("a")
    port = free_port()
    gateway(static_service_ini(port, b.addr), listen=port)
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(b"hello")
        s.shutdown(socket.SHUT_WR)
        got = recv_until_eof(s, 5)
    assert got == b"a\nhellobye\n", (f"after the client's shutdown(SHUT_WR) expected "
                                     f"b'a\\nhellobye\\n', got {got!r}")


def test_idle_connection_is_closed(backends, gateway):
    b = backends("a")
    port = free_port()
    gateway(static_service_ini(port, b.addr, idle_timeout="1s"), listen=port)
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        assert recv_exactly(s, 2) == b"a\n"
        t0 = time.monotonic()
        try:
            recv_until_eof(s, 3.0)
        except TimeoutError:
            raise AssertionError("idle connection still open 3 s after its last byte "
                                 "(idle_timeout = 1s)") from None
        except ConnectionResetError:
            pass
        elapsed = time.monotonic() - t0
    assert elapsed >= 0.5, f"idle connection closed after only {elapsed:.2f} s (idle_timeout = 1s)"


def test_active_connection_is_not_closed_by_idle_timeout(backends, gateway):
    b = backends("a")
    port = free_port()
    gateway(static_service_ini(port, b.addr, idle_timeout="1s"), listen=port)
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        assert recv_exactly(s, 2) == b"a\n"
        t_end = time.monotonic() + 2.5
        i = 0
        while time.monotonic() < t_end:
            time.sleep(0.3)
            msg = f"tick {i}\n".encode()
            s.sendall(msg)
            assert recv_exactly(s, len(msg)) == msg, f"tick {i} lost on an active connection"
            i += 1
        s.sendall(b"last\n")
        assert recv_exactly(s, 5) == b"last\n", "active connection closed by idle_timeout"


def test_connect_timeout_moves_on_to_another_instance(backends, gateway):
    hole = Blackhole()
    try:
        assert hole.connect_hangs(0.3), "test setup: a connect to the blackhole did not hang"
        live = backends("live")
        port = free_port()
        gateway(static_service_ini(port, [hole.addr, live.addr], connect_timeout="300ms"),
                listen=port)
        durations = []
        for i in range(10):
            t0 = time.monotonic()
            got = reach(port, timeout=1.5)  # the default 2s connect timeout would miss this
            durations.append(time.monotonic() - t0)
            assert got == "live", f"connection {i} got {got!r} (blackhole + live instance)"
        assert max(durations) >= 0.25, (
            f"no connection waited for the blackhole ({[round(d, 2) for d in durations]}): "
            f"the test did not exercise connect_timeout")
    finally:
        hole.close()


def test_large_transfer_is_intact(backends, gateway):
    b = backends("a")
    port = free_port()
    gateway(static_service_ini(port, b.addr), listen=port)
    payload = os.urandom(8 << 20)
    errors = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:

        def send():
            try:
                s.sendall(payload)
                s.shutdown(socket.SHUT_WR)
            except OSError as e:
                errors.append(e)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        got = recv_until_eof(s, 30)
        sender.join(5)
    assert not errors, f"sending failed: {errors}"
    want = b"a\n" + payload + b"bye\n"
    assert len(got) == len(want), f"received {len(got)} bytes, expected {len(want)}"
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(want).hexdigest(), \
        "8 MiB echoed through zkgate came back corrupted"


def test_every_failed_instance_is_skipped_in_a_large_outage(backends, gateway):
    # 20 instances of 21 refuse (a zone down): each is marked failed once tried, and passive
    # health must skip all of them for fail_timeout, not only the first 16 marks it found
    # (the rest kept being tried first by later connections: a connect failure, or with a
    # blackholed zone a whole connect_timeout, for every connection that picked one).
    import urllib.request
    live = backends("live")
    dead = [f"127.0.0.1:{free_port()}" for _ in range(20)]
    port, admin = free_port(), free_port()
    gateway(ini_text({"svc": {"listen": f"127.0.0.1:{port}",
                              "instances": ", ".join(dead + [live.addr]),
                              "balance": "round_robin"}},
                     proxy={"fail_timeout": "60s"}, admin={"listen": f"127.0.0.1:{admin}"}),
            listen=[port, admin])

    def failures():
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith('zkgate_upstream_connect_failures_total{service="svc"}'):
                    return int(line.rsplit(" ", 1)[1])
        return None

    # Until every dead instance has been tried once, connections find them (3 tries each).
    assert wait_until(lambda: reach(port) == "live" and failures() >= len(dead), 20,
                      interval=0), f"only {failures()} dead instances tried"
    before = failures()
    seen = sample(port, 40)
    assert seen == {"live": 40}, dict(seen)
    assert failures() == before, (
        f"{failures() - before} more connect failures in 40 connections after all "
        f"{len(dead)} dead instances were marked failed")
