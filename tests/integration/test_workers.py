"""[proxy] workers = N: N event loops on N threads, each listening with SO_REUSEPORT, fed pools,
discovered services and reloads by the control loop; the admin listener sums their metrics.
These tests always run two workers (the rest of the suite runs with one and again with two)."""

import http.client
import os
import re
import signal
import socket
import threading
import time

from zkharness import free_port, ini_text, register, wait_until

WORKERS = 2


def get(port, path="/", host="svc", timeout=5):
    """One request on a connection of its own (each may land on either worker)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path, headers={"Host": host})
        r = c.getresponse()
        return r.status, r.getheader("X-Backend"), r.read()
    finally:
        c.close()


def metrics(admin):
    st, _, body = get(admin, "/metrics")
    assert st == 200
    out = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


def ini(zk, services, admin, discover=None, **proxy):
    return ini_text(services, zookeeper={"hosts": zk.hosts, "session_timeout": "4s"},
                    proxy={"workers": WORKERS, **proxy}, discover=discover,
                    admin={"listen": f"127.0.0.1:{admin}"})


def threads_of(pid):
    return len(os.listdir(f"/proc/{pid}/task"))


def test_connections_spread_over_workers_and_metrics_add_up(zk, http_backends, gateway):
    web = http_backends("web")
    port, admin = free_port(), free_port()
    gw = gateway(ini(zk, {"web": {"protocol": "http", "listen": f"127.0.0.1:{port}",
                                  "instances": web.addr}}, admin), listen=[port, admin])
    assert "2 workers, each listening on every address" in gw.log_text()
    assert threads_of(gw.pid) >= WORKERS
    base = metrics(admin)
    n = 120
    for i in range(n):
        st, name, _ = get(port, f"/r{i}")
        assert (st, name) == (200, "web")
    m = metrics(admin)
    per = [m[f'zkgate_worker_connections_accepted_total{{worker="{w}"}}']
           - base.get(f'zkgate_worker_connections_accepted_total{{worker="{w}"}}', 0)
           for w in range(WORKERS)]
    # The kernel spreads new connections over the workers' sockets (a hash of the
    # addresses): 120 connections all on one of two sockets would be a 2^-119 chance.
    assert all(p > 0 for p in per), f"connections per worker: {per}"
    assert sum(per) == n
    # The service's counters are the sum of both workers' shards.
    assert m['zkgate_requests_total{service="web",class="2xx"}'] == n + base.get(
        'zkgate_requests_total{service="web",class="2xx"}', 0)
    assert m['zkgate_request_duration_seconds_count{service="web"}'] == \
        m['zkgate_requests_total{service="web",class="2xx"}']
    assert m['zkgate_listener_connections_accepted_total{listener="127.0.0.1:%d"}' % port] \
        >= n
    assert web.requests == n + int(base.get(
        'zkgate_requests_total{service="web",class="2xx"}', 0))


def test_pool_changes_and_discovered_routes_reach_every_worker(zk, kz, zpath, http_backends,
                                                               gateway):
    a, b, c = http_backends("a", "b", "c")
    root = zpath + "-root"
    kz.ensure_path(zpath)
    kz.ensure_path(root)
    first = register(kz, zpath, f"http://{a.addr}".encode())
    port, dport, admin = free_port(), free_port(), free_port()
    gw = gateway(ini(zk, {"web": {"protocol": "http", "listen": f"127.0.0.1:{port}",
                                  "zk_path": zpath}}, admin,
                     discover={"all": {"zk_root": root, "listen": f"127.0.0.1:{dport}"}}),
                 listen=[port, dport, admin])
    assert wait_until(lambda: get(port)[1] == "a", 5)
    # Replace a by b: after the change, every new connection (either worker) reaches b.
    register(kz, zpath, f"http://{b.addr}".encode())
    kz.delete(first)
    assert wait_until(lambda: all(get(port)[1] == "b" for _ in range(10)), 5)
    assert all(get(port)[1] == "b" for _ in range(40)), "a worker kept the old pool"
    # A service appearing under the discover root becomes a route in every worker.
    kz.ensure_path(f"{root}/shop")
    register(kz, f"{root}/shop", f"http://{c.addr}".encode())
    assert wait_until(lambda: get(dport, "/shop/x")[1] == "c", 5)
    assert all(get(dport, "/shop/x")[:2] == (200, "c") for _ in range(40))
    # And vanishing: gone from every worker.
    for child in kz.get_children(f"{root}/shop"):
        kz.delete(f"{root}/shop/{child}")
    kz.delete(f"{root}/shop")
    assert wait_until(lambda: get(dport, "/shop/x")[0] == 404, 5)
    assert all(get(dport, "/shop/x")[0] == 404 for _ in range(40)), "a worker kept the route"
    assert gw.running


def test_reload_reaches_every_worker(zk, http_backends, gateway):
    a, b = http_backends("a", "b")
    port, admin = free_port(), free_port()
    svc = {"web": {"protocol": "http", "listen": f"127.0.0.1:{port}", "instances": a.addr}}
    gw = gateway(ini(zk, svc, admin), listen=[port, admin])
    assert all(get(port, "/x")[1] == "a" for _ in range(20))
    with open(gw.ini_path, "w") as f:
        f.write(ini(zk, {**svc, "api": {"protocol": "http", "listen": f"127.0.0.1:{port}",
                                        "path_prefix": "/api/", "instances": b.addr}}, admin))
    gw.proc.send_signal(signal.SIGHUP)
    assert gw.wait_log("reloaded: 1 service(s) added")
    assert wait_until(lambda: get(port, "/api/x")[1] == "b", 5)
    assert all(get(port, "/api/x")[1] == "b" for _ in range(40)), "a worker missed the reload"
    assert all(get(port, "/x")[1] == "a" for _ in range(20))
    assert metrics(admin)['zkgate_config_reloads_total{result="ok"}'] == 1
    # Workers log what they do at debug level: the reload is told once.
    assert gw.log_text().count("reloaded: 1 service(s) added") == 1


def test_round_robin_and_passive_health_are_shared(zk, http_backends, gateway):
    a, b = http_backends("a", "b")
    dead = free_port()  # nothing listens: refused
    port, admin = free_port(), free_port()
    gateway(ini(zk, {"web": {"protocol": "http", "listen": f"127.0.0.1:{port}",
                             "balance": "round_robin",
                             "instances": f"{a.addr}, {b.addr}, 127.0.0.1:{dead}"}},
                admin, fail_timeout="60s"), listen=[port, admin])
    names = [get(port, f"/{i}")[1] for i in range(30)]
    assert all(n in ("a", "b") for n in names), names
    # One cursor for both workers: a and b take turns however connections are spread
    # (the dead instance, once failed, is skipped by both).
    tail = names[3:]
    assert all(x != y for x, y in zip(tail, tail[1:])), names
    m = metrics(admin)
    # One ejection in all: the mark is shared, so the other worker never tries it.
    assert m['zkgate_health_ejections_total{service="web"}'] == 1
    assert m['zkgate_retries_total{service="web"}'] == 1
    assert m['zkgate_upstream_connect_failures_total{service="web"}'] == 1


def test_drain_lets_requests_on_every_worker_finish(zk, http_backends, gateway):
    web = http_backends("web")
    port, admin = free_port(), free_port()
    gw = gateway(ini(zk, {"web": {"protocol": "http", "listen": f"127.0.0.1:{port}",
                                  "instances": web.addr}}, admin, drain_timeout="10s"),
                 listen=[port, admin])
    n = 16
    results = [None] * n

    def slow(i):
        try:
            results[i] = get(port, "/slow/1500", timeout=10)[:2]
        except OSError as e:
            results[i] = repr(e)

    threads = [threading.Thread(target=slow, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    assert wait_until(lambda: web.requests >= n, 5), "slow requests did not all arrive"
    m = metrics(admin)
    per = [m[f'zkgate_worker_connections_accepted_total{{worker="{w}"}}'] for w in range(WORKERS)]
    t0 = time.monotonic()
    gw.proc.send_signal(signal.SIGTERM)
    assert gw.wait_log("draining")
    assert re.search(rf"{n} open one\(s\) may finish", gw.log_text()), gw.log_text()[-800:]
    # New connections are refused by every worker at once.
    assert wait_until(lambda: _refused(port), 2)
    for t in threads:
        t.join(15)
    assert results == [(200, "web")] * n, (results, per)
    assert gw.proc.wait(10) == 0
    gw.returncode = 0
    assert time.monotonic() - t0 < 9


def _refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return False
    except OSError:
        return True


def test_admin_reads_stay_correct_under_load(zk, http_backends, gateway):
    """Metrics and /services are read while both workers carry traffic: the other workers
    pause for the read, and their numbers never go backwards."""
    web = http_backends("web")
    port, admin = free_port(), free_port()
    gateway(ini(zk, {"web": {"protocol": "http", "listen": f"127.0.0.1:{port}",
                             "instances": web.addr}}, admin), listen=[port, admin])
    stop = threading.Event()
    errors = []

    def load():
        while not stop.is_set():
            try:
                if get(port, "/l")[0] != 200:
                    errors.append("status")
            except OSError as e:
                errors.append(repr(e))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        last = 0
        for _ in range(30):
            v = metrics(admin)['zkgate_requests_total{service="web",class="2xx"}']
            assert v >= last
            last = v
            st, _, body = get(admin, "/services")
            assert st == 200 and b'"web"' in body
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert not errors, errors[:5]
    assert last > 0


def test_workers_setting_checked(tmp_path):
    import subprocess
    from zkharness import zkgate_bin
    for bad, why in (("0", "expected 1 to 64"), ("65", "expected 1 to 64"),
                     ("two", "expected a number")):
        p = tmp_path / f"w{bad}.ini"
        p.write_text(f"[proxy]\nworkers = {bad}\n[service:a]\nlisten = 127.0.0.1:1\n"
                     "instances = 127.0.0.1:2\n")
        r = subprocess.run([zkgate_bin(), "-t", "-c", str(p)], capture_output=True,
                           text=True, timeout=10)
        assert r.returncode != 0 and why in r.stderr and ":2:" in r.stderr, (bad, r.stderr)
    p = tmp_path / "auto.ini"
    p.write_text("[proxy]\nworkers = auto\n[service:a]\nlisten = 127.0.0.1:1\n"
                 "instances = 127.0.0.1:2\n")
    r = subprocess.run([zkgate_bin(), "-t", "-c", str(p)], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 0, r.stderr


def test_second_signal_stops_every_worker_at_once(zk, http_backends, gateway):
    web = http_backends("web")
    port, admin = free_port(), free_port()
    gw = gateway(ini(zk, {"web": {"protocol": "http", "listen": f"127.0.0.1:{port}",
                                  "instances": web.addr}}, admin, drain_timeout="30s"),
                 listen=[port, admin])
    n = 12
    done = []

    def slow():
        try:
            get(port, "/slow/8000", timeout=20)
            done.append("answered")
        except (OSError, http.client.HTTPException):
            done.append("cut")

    threads = [threading.Thread(target=slow) for _ in range(n)]
    for t in threads:
        t.start()
    assert wait_until(lambda: web.requests >= n, 5)
    gw.proc.send_signal(signal.SIGTERM)
    assert gw.wait_log("draining")
    time.sleep(0.3)
    assert gw.running, "exited while requests were in flight"
    t0 = time.monotonic()
    gw.proc.send_signal(signal.SIGTERM)
    assert gw.proc.wait(5) == 0
    gw.returncode = 0
    assert time.monotonic() - t0 < 3, "the second signal did not stop the workers at once"
    for t in threads:
        t.join(10)
    assert done == ["cut"] * n, done


def test_second_gateway_on_the_same_address_is_refused(zk, http_backends, gateway, tmp_path):
    """SO_REUSEPORT lets the workers share an address; a second zkgate (same user, workers
    too) must still get "address in use", not a silent half of the traffic."""
    import subprocess
    from zkharness import zkgate_bin
    web = http_backends("web")
    port, admin = free_port(), free_port()
    svc = {"web": {"protocol": "http", "listen": f"127.0.0.1:{port}", "instances": web.addr}}
    gateway(ini(zk, svc, admin), listen=[port, admin])
    second = tmp_path / "second.ini"
    second.write_text(ini(zk, svc, free_port()))
    r = subprocess.run([zkgate_bin(), "-c", str(second)], capture_output=True, text=True,
                       timeout=20)
    assert r.returncode == 1, r.stderr
    assert "address already in use" in r.stderr.lower(), r.stderr
    # And the first one serves on.
    assert get(port)[:2] == (200, "web")
