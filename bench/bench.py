#!/usr/bin/python3
"""zkgate benchmark: zkgate beside HAProxy and nginx in one run, on this machine.

Run through bench/run.sh (it installs the tools, builds zkgate in Release and
raises the open-file limit). Everything listens on loopback, on free ports,
in a temporary directory; every process started here is stopped here.

Measured, each proxy with one worker / thread, pinned to CPU 0 while wrk, the
backend and the other clients share CPU 1 (a 2-core machine):
  - HTTP keep-alive, small response: req/s, p50, p99 (wrk, several rounds,
    proxies alternating, medians);
  - HTTP with a new connection per request (wrk -H "Connection: close");
  - TCP bulk transfer through the L4 path, MB/s (bench/tcpbulk.c);
  - TLS termination (same ECDSA P-256 certificate for all three): HTTPS
    keep-alive req/s, and full handshakes per second (a new connection per
    request; wrk does not resume sessions), with the proxy's CPU per request;
  - idle RSS, and RSS with 10,000 idle keep-alive client connections;
  - instructions per proxied keep-alive request under callgrind (two runs of
    different lengths, the difference divided by the difference in requests,
    so start-up and shutdown cancel out);
  - registry scale (zkgate only): 1,000 services x 10 instances in a real
    ZooKeeper, found through [discover:all]: time from start to /ready,
    RSS then, and time from one znode creation to the new instance taking
    traffic;
  - change to route (zkgate only): 20 times, a new instance registered (an
    ephemeral znode, an etcd key) to the first answer from it through zkgate,
    median and p99.
Each run is written to --out (latest.md/.json), the run that was there is
moved to previous.md/.json and compared with in the new table, and a dated
record <date>-<suites>.md/.json is kept beside them.
"""

import argparse
import base64
import concurrent.futures
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import zkharness  # noqa: E402  (ZkServer, free_port: the test suite's own harness)

PROXY_CPU = "0"
LOAD_CPU = "1"
NGINX_STREAM = "/usr/lib/nginx/modules/ngx_stream_module.so"
DEFAULT_SUITES = "footprint,throughput,bulk,h2,grpc,tls,callgrind,registry,etcd,route"
BODY = "zkgate-bench-backend-response-0123456789abcdef0123456789abcdef\n"  # 64 bytes

WRK_LUA = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %d %d %d %d %d %d %d %d\n", summary.requests,
    summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status, latency:percentile(99.9),
    latency.max))
end
"""


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port():
    return zkharness.free_port()


def wait_port(port, proc=None, timeout=30.0, host="127.0.0.1"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on {host}:{port} after {timeout}s")


def cpu_s(pid):
    """User + system CPU seconds used so far by process pid (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


class Proc:
    """A child process pinned to a CPU, its output in a file, stopped by stop()."""

    def __init__(self, name, cmd, workdir, cpu=None, env=None):
        self.name = name
        self.log_path = os.path.join(workdir, f"{name}.log")
        if cpu is not None:
            cmd = ["taskset", "-c", cpu, *cmd]
        self.logf = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.logf,
                                     stderr=subprocess.STDOUT, cwd=workdir, env=env)

    @property
    def pid(self):
        return self.proc.pid

    def stop(self, timeout=20.0, every=None):
        """SIGTERM (again each `every` s if given), SIGKILL after `timeout`. Under valgrind a
        signal can land just before the program blocks in epoll_wait with no timer (nginx):
        it then sleeps until another one comes."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=min(every or timeout, max(0.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                if time.monotonic() >= deadline:
                    self.proc.kill()
                    self.proc.wait()
        self.logf.close()
        return self.proc.returncode

    def tail(self, n=20):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""


# ---------------------------------------------------------------------------------------------
# configurations: the same job for each proxy


def nginx_backend_head(d, name, connections):
    """A one-process nginx backend's configuration up to its first server block: pid, error
    log and temporary files in d, after `name` (the temporary files after its initial)."""
    t = name[0]
    return f"""
worker_processes 1;
master_process off;
daemon off;
pid {d}/{name}.pid;
error_log {d}/{name}.err warn;
events {{ worker_connections {connections}; }}
http {{
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 120s;
  client_body_temp_path {d}/{t}_body; proxy_temp_path {d}/{t}_proxy;
  fastcgi_temp_path {d}/{t}_fcgi; uwsgi_temp_path {d}/{t}_uwsgi; scgi_temp_path {d}/{t}_scgi;
  default_type text/plain;
"""


def nginx_backend_conf(d, port, reg_port):
    """The fast HTTP backend: nginx answering a 64-byte body from memory. It also serves
    the registry test: 127.0.1.1-10:reg_port answer BODY, 127.0.2.1:reg_port answers "new"."""
    listens = "\n".join(f"    listen 127.0.1.{i}:{reg_port};" for i in range(1, 11))
    return nginx_backend_head(d, "backend", 4096) + f"""  server {{
    listen 127.0.0.1:{port};
{listens}
    location / {{ return 200 "{BODY.strip()}\\n"; }}
  }}
  server {{
    listen 127.0.2.1:{reg_port};
    location / {{ return 200 "new\\n"; }}
  }}
}}
"""


def zkgate_conf(http_port, tcp_port, backend, source, admin_port, tls=None):
    tls_section = "" if not tls else f"""
[service:webtls]
protocol = http
listen = 127.0.0.1:{tls['port']}
instances = 127.0.0.1:{backend}
tls_cert = {tls['cert']}
tls_key = {tls['key']}
"""
    return tls_section + f"""
[proxy]
workers = 1
log_level = warn
access_log = off
idle_timeout = 120s
header_timeout = 120s

[admin]
listen = 127.0.0.1:{admin_port}

[service:web]
protocol = http
listen = 127.0.0.1:{http_port}
instances = 127.0.0.1:{backend}

[service:bulk]
protocol = tcp
listen = 127.0.0.1:{tcp_port}
instances = 127.0.0.1:{source}
"""


def haproxy_conf(http_port, tcp_port, backend, source, maxconn, nofile, tls=None):
    # X-Forwarded-For and upstream keep-alive shared across clients (http-reuse always), as
    # zkgate does them; no logs. ulimit-n: HAProxy would refuse to start if it could not raise
    # the limit to 2 x maxconn, which an unprivileged container's hard limit may forbid; the
    # idle clients need one descriptor each.
    return f"""
global
  nbthread 1
  maxconn {maxconn}
  ulimit-n {nofile}
defaults
  timeout connect 2s
  timeout client 120s
  timeout server 120s
  timeout http-request 120s
  timeout http-keep-alive 120s
frontend web
  mode http
  bind 127.0.0.1:{http_port}
  option forwardfor
  default_backend web_b
backend web_b
  mode http
  http-reuse always
  server s1 127.0.0.1:{backend}
listen bulk
  mode tcp
  bind 127.0.0.1:{tcp_port}
  server s1 127.0.0.1:{source}
""" + ("" if not tls else f"""
frontend webtls
  mode http
  bind 127.0.0.1:{tls['port']} ssl crt {tls['pem']} alpn http/1.1
  option forwardfor
  default_backend web_b
""")


def nginx_proxy_conf(d, http_port, tcp_port, backend, source, maxconn, nofile, tls=None,
                     h2_port=None):
    # nginx 1.22 speaks h2c with prior knowledge only on a listener marked http2, where it
    # no longer speaks HTTP/1.1: the h2 suite gets a port of its own.
    h2_listen = f"\n    listen 127.0.0.1:{h2_port} http2;" if h2_port else ""
    tls_server = "" if not tls else f"""
  server {{
    listen 127.0.0.1:{tls['port']} ssl;
    ssl_certificate {tls['cert']};
    ssl_certificate_key {tls['key']};
    location / {{
      proxy_pass http://web_b;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }}
  }}"""
    # One process (master_process off): the worker loop is the same, and the RSS is that of
    # one process like zkgate's and HAProxy's.
    return f"""
load_module {NGINX_STREAM};
worker_processes 1;
master_process off;
daemon off;
pid {d}/nginx.pid;
error_log {d}/nginx.err warn;
worker_rlimit_nofile {nofile};
events {{ worker_connections {maxconn}; }}
http {{
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 120s;
  client_header_timeout 120s;
  client_body_temp_path {d}/n_body; proxy_temp_path {d}/n_proxy;
  fastcgi_temp_path {d}/n_fcgi; uwsgi_temp_path {d}/n_uwsgi; scgi_temp_path {d}/n_scgi;
  upstream web_b {{
    server 127.0.0.1:{backend};
    keepalive 128;
    keepalive_requests 100000000;
  }}
  server {{
    listen 127.0.0.1:{http_port};{h2_listen}
    location / {{
      proxy_pass http://web_b;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }}
  }}{tls_server}
}}
stream {{
  server {{
    listen 127.0.0.1:{tcp_port};
    proxy_pass 127.0.0.1:{source};
  }}
}}
"""


# ---------------------------------------------------------------------------------------------
# clients


def run_wrk(port, seconds, conns, close, lua, scheme="http"):
    cmd = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "-s", lua]
    if close:
        cmd += ["-H", "Connection: close"]
    cmd.append(f"{scheme}://127.0.0.1:{port}/")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    m = re.search(r"^BENCH (\d+) (\d+) (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)$", out, re.M)
    if not m:
        raise RuntimeError(f"wrk printed no result:\n{out}")
    reqs, dur_us, p50, p99, errs, status, p999, most = (int(x) for x in m.groups())
    return {"rps": reqs / (dur_us / 1e6), "p50_ms": p50 / 1000.0, "p99_ms": p99 / 1000.0,
            "p999_ms": p999 / 1000.0, "max_ms": most / 1000.0,
            "errors": errs, "non2xx": status, "requests": reqs}


def run_h2load(port, work, requests, clients, streams, path="/", extra=()):
    """h2c with prior knowledge: `clients` connections, `streams` concurrent streams each.
    req/s from h2load's summary, p50/p99 from its per-request log."""
    log_file = f"{work}/h2load.log"
    if os.path.exists(log_file):
        os.unlink(log_file)  # h2load appends
    cmd = ["taskset", "-c", LOAD_CPU, "h2load", "-t1", f"-c{clients}", f"-m{streams}",
           f"-n{requests}", f"--log-file={log_file}", *extra,
           f"http://127.0.0.1:{port}{path}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300).stdout
    m = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", out)
    st = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, "
                   r"(\d+) failed, (\d+) errored", out)
    if not m or not st:
        raise RuntimeError(f"h2load printed no result:\n{out}")
    lat = []
    with open(log_file) as f:
        for line in f:
            cols = line.split("\t")
            if len(cols) >= 3 and cols[1] == "200":
                lat.append(int(cols[2]) / 1000.0)
    lat.sort()
    done, ok, failed, errored = (int(x) for x in st.groups())
    pct = (lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] if lat else None)
    return {"rps": float(m.group(3)), "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "errors": failed + errored, "non2xx": done - len(lat), "requests": ok}


def run_bulk(tcpbulk, port, seconds):
    out = subprocess.run(["taskset", "-c", LOAD_CPU, tcpbulk, "sink", str(port), str(seconds)],
                         capture_output=True, text=True, timeout=seconds + 30)
    if out.returncode != 0:
        raise RuntimeError(f"tcpbulk sink: {out.stderr.strip()}")
    return float(out.stdout.split()[0])


def read_response(s, buf=b""):
    """Read one HTTP/1.1 response with Content-Length from s; returns (body, rest)."""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed before a response head")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    m = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.I)
    if not m:
        raise RuntimeError(f"response without Content-Length: {head[:200]!r}")
    n = int(m.group(1))
    while len(rest) < n:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed within a response body")
        rest += chunk
    status = int(head.split(b" ", 2)[1])
    return status, rest[:n], rest[n:]


def request_bytes(path="/", host="bench"):
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()


def keepalive_requests(port, n):
    """n sequential requests on one keep-alive connection; each must be a 200."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    req, rest = request_bytes(), b""
    for _ in range(n):
        s.sendall(req)
        status, _, rest = read_response(s, rest)
        if status != 200:
            raise RuntimeError(f"status {status}")
    s.close()


def open_idle(port, n):
    """n client connections, each after one keep-alive request answered: kept open, idle."""
    socks, req = [], request_bytes()
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.sendall(req)
        status, _, _ = read_response(s)
        if status != 200:
            raise RuntimeError(f"status {status}")
        socks.append(s)
    return socks


def make_certificate(work):
    """A self-signed ECDSA P-256 certificate for 127.0.0.1 (what a modern deployment would
    choose; the three proxies get the same one). HAProxy wants certificate and key in one
    file."""
    cert, key, pem = f"{work}/tls.crt", f"{work}/tls.key", f"{work}/tls.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=bench", "-addext",
                    "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    os.chmod(key, 0o600)
    with open(pem, "w") as f:
        f.write(open(cert).read() + open(key).read())
    os.chmod(pem, 0o600)
    return {"cert": cert, "key": key, "pem": pem}


# ---------------------------------------------------------------------------------------------
# the proxy comparison


class Target:
    def __init__(self, name, label, http_port, tcp_port, start):
        self.name, self.label = name, label
        self.http_port, self.tcp_port = http_port, tcp_port
        self._start = start
        self.proc = None

    def start(self):
        if self._start:
            self.proc = self._start()
            try:
                wait_port(self.http_port, self.proc.proc)
                if self.tcp_port:
                    wait_port(self.tcp_port, self.proc.proc)
            except RuntimeError as e:
                raise RuntimeError(f"{self.name}: {e}\n{self.proc.tail()}") from None
        return self

    def stop(self):
        if self.proc:
            self.proc.stop()
            self.proc = None


def median(xs):
    return statistics.median(xs) if xs else None


def proxy_suite(args, work, zkgate_bin, tcpbulk, cleanup):
    backend_port, reg_port, source_port = free_port(), free_port(), free_port()
    res = {"reg_port": reg_port}
    with open(f"{work}/backend.conf", "w") as f:
        f.write(nginx_backend_conf(work, backend_port, reg_port))
    backend = Proc("backend", ["nginx", "-p", work, "-c", f"{work}/backend.conf"], work,
                   cpu=LOAD_CPU)
    cleanup.append(backend.stop)
    source = Proc("source", [tcpbulk, "source", str(source_port)], work, cpu=LOAD_CPU)
    cleanup.append(source.stop)
    wait_port(backend_port, backend.proc)
    wait_port(source_port, source.proc)

    # HAProxy wants 2 descriptors per connection under its maxconn and refuses to start when
    # the open-file limit (hard limit 20,000 in some containers, not raisable) cannot give
    # them: the idle-client figure is then taken for all three at the largest count HAProxy
    # accepts, and its row says so.
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    maxconn = min(args.idle_conns + args.conns + 200, (nofile - 100) // 2)
    idle_n = min(args.idle_conns, maxconn - 50)
    res["idle_n"] = idle_n
    zk_http, zk_tcp, zk_admin = free_port(), free_port(), free_port()
    ha_http, ha_tcp = free_port(), free_port()
    ng_http, ng_tcp, ng_h2 = free_port(), free_port(), free_port()
    with open(f"{work}/zkgate.ini", "w") as f:
        f.write(zkgate_conf(zk_http, zk_tcp, backend_port, source_port, zk_admin))
    with open(f"{work}/haproxy.cfg", "w") as f:
        f.write(haproxy_conf(ha_http, ha_tcp, backend_port, source_port, maxconn, nofile))
    with open(f"{work}/nginx.conf", "w") as f:
        f.write(nginx_proxy_conf(work, ng_http, ng_tcp, backend_port, source_port, maxconn,
                                 nofile, h2_port=ng_h2))
    # The TLS suite's own configurations: the others stay without TLS, so that their figures
    # (idle RSS above all) do not move with it.
    tls_ports = {"zkgate": free_port(), "haproxy": free_port(), "nginx": free_port()}
    cert = make_certificate(work) if "tls" in args.suites else None
    if cert:
        with open(f"{work}/zkgate-tls.ini", "w") as f:
            f.write(zkgate_conf(zk_http, zk_tcp, backend_port, source_port, zk_admin,
                                dict(cert, port=tls_ports["zkgate"])))
        with open(f"{work}/haproxy-tls.cfg", "w") as f:
            f.write(haproxy_conf(ha_http, ha_tcp, backend_port, source_port, maxconn, nofile,
                                 dict(cert, port=tls_ports["haproxy"])))
        with open(f"{work}/nginx-tls.conf", "w") as f:
            f.write(nginx_proxy_conf(work, ng_http, ng_tcp, backend_port, source_port,
                                     maxconn, nofile, dict(cert, port=tls_ports["nginx"])))
    # The same under valgrind, which keeps some descriptors for itself.
    with open(f"{work}/haproxy-cg.cfg", "w") as f:
        f.write(haproxy_conf(ha_http, ha_tcp, backend_port, source_port, 1000, 2100))
    with open(f"{work}/nginx-cg.conf", "w") as f:
        f.write(nginx_proxy_conf(work, ng_http, ng_tcp, backend_port, source_port, 1000, 2100))
    lua = f"{work}/report.lua"
    with open(lua, "w") as f:
        f.write(WRK_LUA)

    cmds = {
        "zkgate": [zkgate_bin, "-c", f"{work}/zkgate.ini"],
        "haproxy": ["haproxy", "-db", "-f", f"{work}/haproxy.cfg"],
        "nginx": ["nginx", "-p", work, "-c", f"{work}/nginx.conf"],
    }
    cg_cmds = dict(cmds, haproxy=["haproxy", "-db", "-f", f"{work}/haproxy-cg.cfg"],
                   nginx=["nginx", "-p", work, "-c", f"{work}/nginx-cg.conf"])
    targets = [Target("direct", "backend direct", backend_port, source_port, None)]
    for name, label, hp, tp in (("zkgate", "zkgate", zk_http, zk_tcp),
                                ("haproxy", "HAProxy", ha_http, ha_tcp),
                                ("nginx", "nginx", ng_http, ng_tcp)):
        if name not in args.proxies:
            continue
        targets.append(Target(name, label, hp, tp,
                              lambda n=name: Proc(n, cmds[n], work, cpu=PROXY_CPU)))
    tls_cmds = {
        "zkgate": [zkgate_bin, "-c", f"{work}/zkgate-tls.ini"],
        "haproxy": ["haproxy", "-db", "-f", f"{work}/haproxy-tls.cfg"],
        "nginx": ["nginx", "-p", work, "-c", f"{work}/nginx-tls.conf"],
    }
    tls_targets = [Target(t.name, t.label, tls_ports[t.name], t.tcp_port,
                          lambda n=t.name: Proc(n + "-tls", tls_cmds[n], work, cpu=PROXY_CPU))
                   for t in targets[1:]] if cert else []
    cleanup.extend(t.stop for t in tls_targets)
    cleanup.extend(t.stop for t in targets)
    res["versions"] = versions()

    # Footprint first, on fresh processes: idle RSS, then with N idle connections.
    for t in (targets[1:] if "footprint" in args.suites else []):
        t.start()
        time.sleep(0.5)
        r = res.setdefault(t.name, {})
        r["rss_idle_kb"] = rss_kb(t.proc.pid)
        if idle_n > 0:
            socks = open_idle(t.http_port, idle_n)
            time.sleep(1.0)
            r["rss_conns_kb"] = rss_kb(t.proc.pid)
            for s in socks:
                s.close()
            del socks
        log(f"{t.name}: idle RSS {r['rss_idle_kb']} kB"
            + (f", with {idle_n} idle connections {r['rss_conns_kb']} kB"
               if idle_n > 0 else ""))
        t.stop()
        time.sleep(0.5)

    # Throughput: proxies alternate within each round, in a rotating order.
    rounds = args.rounds if "throughput" in args.suites else 0
    for t in (targets if rounds else []):
        t.start()
    warm = max(1, min(2, args.duration // 2))
    for t in (targets if rounds else []):  # warm-up: caches, upstream keep-alive pools
        run_wrk(t.http_port, warm, args.conns, False, lua)
    for rnd in range(rounds):
        order = targets[rnd % len(targets):] + targets[:rnd % len(targets)]
        for t in order:
            r = res.setdefault(t.name, {})
            # The proxy's own CPU time per request: less disturbed by other work on the
            # machine than req/s (a starved proxy still spends what a request costs).
            c0 = cpu_s(t.proc.pid) if t.proc else None
            ka = run_wrk(t.http_port, args.duration, args.conns, False, lua)
            if c0 is not None and ka["requests"]:
                ka["cpu_us"] = (cpu_s(t.proc.pid) - c0) * 1e6 / ka["requests"]
            cl = run_wrk(t.http_port, args.duration, args.conns, True, lua)
            mb = run_bulk(tcpbulk, t.tcp_port, args.bulk_seconds)
            for key, v in (("ka", ka), ("close", cl)):
                r.setdefault(key, []).append(v)
                if v["errors"] or v["non2xx"]:
                    r.setdefault("notes", set()).add(
                        f"{key}: {v['errors']} socket errors, {v['non2xx']} non-2xx")
            r.setdefault("bulk", []).append(mb)
            log(f"round {rnd + 1}/{args.rounds} {t.name}: keep-alive {ka['rps']:.0f} req/s "
                f"p99 {ka['p99_ms']:.2f} ms; close {cl['rps']:.0f} req/s; bulk {mb:.0f} MB/s")
    for t in targets:
        t.stop()
    bulk_suite(args, work, zkgate_bin, tcpbulk, source_port, res)
    h2_suite(args, work, targets[1:], {"nginx": ng_h2}, res)
    grpc_suite(args, work, zkgate_bin, res)
    for t in (targets if rounds else []):
        r = res[t.name]
        for key in ("ka", "close"):
            runs = r.pop(key)
            r[key] = latency_medians(runs)
            r[key]["runs"] = [round(x["rps"]) for x in runs]
            # A round in which no request was answered has no latency (wrk says 0): None.
            for m, nd in (("p99", 2), ("p999", 2), ("max", 1)):
                r[key][f"{m}_runs"] = [round(x[f"{m}_ms"], nd) if x["requests"] else None
                                       for x in runs]
            cpu = [x["cpu_us"] for x in runs if "cpu_us" in x]
            if cpu:
                r[key]["cpu_us"] = median(cpu)
        r["bulk_runs"] = r.pop("bulk")
        r["bulk"] = median(r["bulk_runs"])

    # TLS termination (issue 5): HTTPS keep-alive, and a full handshake per request (wrk
    # neither resumes sessions nor keeps the connection with Connection: close). The backend
    # is reached in plain HTTP with upstream keep-alive, as above.
    warm = max(1, min(2, args.duration // 2))
    for t in tls_targets:
        t.start()
        run_wrk(t.http_port, warm, args.conns, False, lua, "https")
    for rnd in range(args.rounds if tls_targets else 0):
        order = tls_targets[rnd % len(tls_targets):] + tls_targets[:rnd % len(tls_targets)]
        for t in order:
            r = res.setdefault(t.name, {})
            c0 = cpu_s(t.proc.pid)
            ka = run_wrk(t.http_port, args.duration, args.conns, False, lua, "https")
            if ka["requests"]:
                ka["cpu_us"] = (cpu_s(t.proc.pid) - c0) * 1e6 / ka["requests"]
            c0 = cpu_s(t.proc.pid)
            hs = run_wrk(t.http_port, args.duration, args.conns, True, lua, "https")
            if hs["requests"]:
                hs["cpu_us"] = (cpu_s(t.proc.pid) - c0) * 1e6 / hs["requests"]
            for key, v in (("tls_ka", ka), ("tls_close", hs)):
                r.setdefault(key, []).append(v)
                if v["errors"] or v["non2xx"]:
                    r.setdefault("notes", set()).add(
                        f"{key}: {v['errors']} socket errors, {v['non2xx']} non-2xx")
            log(f"round {rnd + 1}/{args.rounds} {t.name}: HTTPS keep-alive {ka['rps']:.0f} "
                f"req/s p99 {ka['p99_ms']:.2f} ms; handshake per request {hs['rps']:.0f} req/s")
    for t in tls_targets:
        t.stop()
        r = res[t.name]
        for key in ("tls_ka", "tls_close"):
            runs = r.pop(key)
            r[key] = latency_medians(runs)
            r[key]["runs"] = [round(x["rps"]) for x in runs]
            cpu = [x["cpu_us"] for x in runs if "cpu_us" in x]
            if cpu:
                r[key]["cpu_us"] = median(cpu)

    if args.callgrind:
        for t in targets[1:]:
            try:
                res.setdefault(t.name, {})["ir_per_req"] = callgrind_per_request(
                    args, work, t, cg_cmds[t.name])
                log(f"{t.name}: {res[t.name]['ir_per_req']:.0f} instructions per request")
            except Exception as e:  # reported in the table, not fatal
                log(f"{t.name}: callgrind failed: {e}")
    return res


def latency_medians(runs):
    """req/s, p50 and p99 of wrk runs, medians; the latencies only over the runs in which
    some request was answered (wrk reports 0 for a run without any)."""
    timed = [x for x in runs if x["requests"]]
    return {"rps": median([x["rps"] for x in runs]),
            "p50_ms": median([x["p50_ms"] for x in timed]),
            "p99_ms": median([x["p99_ms"] for x in timed])}


def bulk_suite(args, work, zkgate_bin, tcpbulk, source_port, res):
    """TCP bulk, the splice comparison (issue 17): zkgate with tcp_splice = auto (splice(2)
    through a pipe) and off (copy through user space), HAProxy's default `mode tcp`, HAProxy
    with `option splice-auto` (the issue's row: HAProxy then splices only when it judges it
    worth it) and with `option splice-request` + `splice-response` (always), each alone on the proxy CPU, alternating within each round, and
    the source read directly for reference. MB/s, and the proxy's own CPU time (user + system)
    per MB moved, which other work on the machine disturbs far less; medians into
    res["bulk_cmp"][name], every round's figures into ...["runs"] and ["cpu_runs"]."""
    if "bulk" not in args.suites:
        return
    names = ["direct"] + [n for n in ("zkgate", "zkgate_copy", "haproxy", "haproxy_splice",
                                      "haproxy_splice_always")
                          if n.split("_")[0] in args.proxies]
    splice_opts = {"haproxy": "", "haproxy_splice": "option splice-auto",
                   "haproxy_splice_always": "option splice-request\n  option splice-response"}
    ports = {n: free_port() for n in names}
    ports["direct"] = source_port
    cmds = {}
    for n in names[1:]:
        if n.startswith("zkgate"):
            with open(f"{work}/{n}-bulk.ini", "w") as f:
                f.write(f"""[proxy]
workers = 1
log_level = warn
idle_timeout = 120s
tcp_splice = {"off" if n == "zkgate_copy" else "auto"}

[service:bulk]
protocol = tcp
listen = 127.0.0.1:{ports[n]}
instances = 127.0.0.1:{source_port}
""")
            cmds[n] = [zkgate_bin, "-c", f"{work}/{n}-bulk.ini"]
        else:
            with open(f"{work}/{n}-bulk.cfg", "w") as f:
                f.write(f"""
global
  nbthread 1
defaults
  timeout connect 2s
  timeout client 120s
  timeout server 120s
listen bulk
  mode tcp
  {splice_opts[n]}
  bind 127.0.0.1:{ports[n]}
  server s1 127.0.0.1:{source_port}
""")
            cmds[n] = ["haproxy", "-db", "-f", f"{work}/{n}-bulk.cfg"]

    def sink(port, seconds):
        out = subprocess.run(["taskset", "-c", LOAD_CPU, tcpbulk, "sink", str(port),
                              str(seconds)], capture_output=True, text=True,
                             timeout=seconds + 30)
        if out.returncode != 0:
            raise RuntimeError(f"tcpbulk sink: {out.stderr.strip()}")
        mbps, nbytes = out.stdout.split()[:2]
        return float(mbps), int(nbytes)

    runs = {n: [] for n in names}
    cpu = {n: [] for n in names}
    for rnd in range(args.rounds):
        for n in names[rnd % len(names):] + names[:rnd % len(names)]:
            p = Proc(n + "-bulk", cmds[n], work, cpu=PROXY_CPU) if n in cmds else None
            try:
                if p:
                    wait_port(ports[n], p.proc)
                sink(ports[n], 0.5)  # warm-up: pipes, TCP windows
                c0 = cpu_s(p.pid) if p else None
                mbps, nbytes = sink(ports[n], args.bulk_seconds)
                runs[n].append(mbps)
                if p and nbytes:
                    cpu[n].append((cpu_s(p.pid) - c0) * 1e6 / (nbytes / 1e6))
            finally:
                if p:
                    p.stop()
            log(f"round {rnd + 1}/{args.rounds} bulk {n}: {mbps:.0f} MB/s"
                + (f", {cpu[n][-1]:.0f} µs CPU per MB" if cpu[n] else ""))
    res["bulk_cmp"] = {n: {"mbps": median(runs[n]), "runs": [round(x) for x in runs[n]],
                           "cpu_us_per_mb": median(cpu[n]),
                           "cpu_runs": [round(x) for x in cpu[n]]} for n in names}


def bulk_table(L, px):
    """The splice comparison of bulk_suite, with its targets (issue 17)."""
    b = px.get("bulk_cmp")
    if not b:
        return
    g = {n: b[n]["mbps"] for n in b}
    c = {n: b[n].get("cpu_us_per_mb") for n in b}
    labels = {"direct": "source read directly (no proxy)",
              "zkgate": "zkgate (`tcp_splice = auto`: splice)",
              "zkgate_copy": "zkgate (`tcp_splice = off`: copy)",
              "haproxy": "HAProxy `mode tcp`", "haproxy_splice": "HAProxy `option splice-auto`",
              "haproxy_splice_always": "HAProxy `option splice-request`, `splice-response`"}
    L.append("")
    L.append("TCP bulk through the L4 path (one connection, the source's endless stream), each "
             "proxy alone on CPU 0, alternating within each round; medians, every round's "
             "figure in brackets:")
    L.append("")
    L.append("| | MB/s | rounds | zkgate / this | proxy CPU per MB, µs | rounds |")
    L.append("|---|---:|---|---:|---:|---|")
    for n in b:
        L.append(f"| {labels[n]} | {fmt(g[n])} | {b[n]['runs']} | "
                 f"{ratio(g.get('zkgate'), g[n]) if n != 'direct' else '—'} | "
                 f"{fmt(c[n]) if c[n] is not None else '—'} | {b[n].get('cpu_runs') or ''} |")
    z, h, hs = g.get("zkgate"), g.get("haproxy"), g.get("haproxy_splice")
    if z is not None and h is not None:
        L.append("")
        L.append(f"Targets (issue 17), MB/s in the same run: zkgate ≥ 1.5× HAProxy `mode tcp`: "
                 f"{ratio(z, h)}, {verdict(_ge(z, 1.5 * h))}"
                 + (f"; zkgate ≥ HAProxy splice-auto: {ratio(z, hs)}, {verdict(_ge(z, hs))}"
                    if hs is not None else "") + ".")


def h2_suite(args, work, targets, h2_ports, res):
    """HTTP/2 keep-alive (issue 14): h2c with prior knowledge from h2load, 4 connections of
    10 concurrent streams, to the same HTTP/1.1 backend. zkgate and HAProxy tell h2c from
    HTTP/1.1 on the plain listener by the client preface; nginx needs a listener of its own."""
    if "h2" not in args.suites:
        return
    for t in targets:
        t.start()
        port = h2_ports.get(t.name, t.http_port)
        wait_port(port, t.proc.proc)
        try:  # warm-up, and does it speak h2c at all?
            if run_h2load(port, work, 2000, 4, 10)["requests"] == 0:
                raise RuntimeError("no stream answered: h2c not spoken")
        except RuntimeError as e:
            res.setdefault(t.name, {}).setdefault("notes", set()).add(
                f"h2: {str(e).splitlines()[0]}")
    for rnd in range(args.rounds):
        order = targets[rnd % len(targets):] + targets[:rnd % len(targets)]
        for t in order:
            r = res.setdefault(t.name, {})
            if any(n.startswith("h2:") for n in r.get("notes", ())):
                continue
            c0 = cpu_s(t.proc.pid)
            v = run_h2load(h2_ports.get(t.name, t.http_port), work, args.h2_requests, 4, 10)
            if v["requests"]:
                v["cpu_us"] = (cpu_s(t.proc.pid) - c0) * 1e6 / v["requests"]
            r.setdefault("h2", []).append(v)
            if v["errors"] or v["non2xx"]:
                r.setdefault("notes", set()).add(
                    f"h2: {v['errors']} failed streams, {v['non2xx']} non-200")
            log(f"round {rnd + 1}/{args.rounds} {t.name}: h2c keep-alive {v['rps']:.0f} req/s "
                f"p99 {v['p99_ms']:.2f} ms")
    for t in targets:
        t.stop()
        r = res.get(t.name, {})
        if "h2" in r:
            runs = r.pop("h2")
            r["h2"] = {m: median([x[m] for x in runs if x.get(m) is not None])
                       for m in ("rps", "p50_ms", "p99_ms", "cpu_us")}
            r["h2"]["runs"] = [round(x["rps"]) for x in runs]


def grpc_check(port):
    """One call through a proxy with a real gRPC client: the answer and status are right."""
    import grpc
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        call = ch.unary_unary("/bench.Echo/Unary")
        return call(b"x" * 16, timeout=5) == b"zkgate-bench-ok!"


def grpc_suite(args, work, zkgate_bin, res):
    """gRPC unary calls per second (issue 14): h2load POSTing one gRPC-framed 16-byte message
    (content-type application/grpc, te: trailers), 4 connections of 10 streams, through each
    proxy to one Python grpcio server speaking h2 (zkgate: a grpc:// instance; HAProxy:
    `proto h2` on both sides; nginx: grpc_pass). The Python server bounds every figure alike;
    what differs is each proxy's CPU per call."""
    if "grpc" not in args.suites:
        return
    gport = free_port()
    server = Proc("grpcecho", ["/usr/bin/python3", os.path.join(HERE, "grpcecho.py"),
                               str(gport)], work, cpu=LOAD_CPU)
    body = f"{work}/grpc-body.bin"
    with open(body, "wb") as f:
        f.write(b"\0" + (16).to_bytes(4, "big") + b"x" * 16)
    ports = {n: free_port() for n in ("zkgate", "haproxy", "nginx")}
    with open(f"{work}/zkgate-grpc.ini", "w") as f:
        f.write(f"""
[proxy]
workers = 1
log_level = warn
access_log = off

[service:grpc]
protocol = http
listen = 127.0.0.1:{ports['zkgate']}
instances = grpc://127.0.0.1:{gport}
""")
    with open(f"{work}/haproxy-grpc.cfg", "w") as f:
        f.write(f"""
global
  nbthread 1
defaults
  mode http
  timeout connect 2s
  timeout client 120s
  timeout server 120s
frontend grpc
  bind 127.0.0.1:{ports['haproxy']} proto h2
  default_backend grpc_b
backend grpc_b
  http-reuse always
  server s1 127.0.0.1:{gport} proto h2
""")
    with open(f"{work}/nginx-grpc.conf", "w") as f:
        f.write(f"""
worker_processes 1;
master_process off;
daemon off;
pid {work}/nginx-grpc.pid;
error_log {work}/nginx-grpc.err warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  keepalive_requests 100000000;  # nginx closes a client connection after 1000 by default
  client_body_temp_path {work}/g_body; proxy_temp_path {work}/g_proxy;
  fastcgi_temp_path {work}/g_fcgi; uwsgi_temp_path {work}/g_uwsgi; scgi_temp_path {work}/g_scgi;
  upstream grpc_b {{
    server 127.0.0.1:{gport};
    keepalive 32;
  }}
  server {{
    listen 127.0.0.1:{ports['nginx']} http2;
    location / {{ grpc_pass grpc://grpc_b; }}
  }}
}}
""")
    cmds = {"zkgate": [zkgate_bin, "-c", f"{work}/zkgate-grpc.ini"],
            "haproxy": ["haproxy", "-db", "-f", f"{work}/haproxy-grpc.cfg"],
            "nginx": ["nginx", "-p", work, "-c", f"{work}/nginx-grpc.conf"]}
    targets = [Target(n, n, ports[n], None,
                      lambda n=n: Proc(n + "-grpc", cmds[n], work, cpu=PROXY_CPU))
               for n in ("zkgate", "haproxy", "nginx") if n in args.proxies]
    try:
        wait_port(gport, server.proc)
        for t in targets:
            t.start()
            if not grpc_check(t.http_port):
                raise RuntimeError(f"{t.name}: a gRPC call through it was not answered")
        url = "/bench.Echo/Unary"
        for rnd in range(args.rounds):
            order = targets[rnd % len(targets):] + targets[:rnd % len(targets)]
            for t in order:
                c0 = cpu_s(t.proc.pid)
                v = run_h2load(t.http_port, work, args.h2_requests // 5, 4, 10, path=url,
                               extra=["-d", body, "-H", "content-type: application/grpc",
                                      "-H", "te: trailers"])
                if v["requests"]:
                    v["cpu_us"] = (cpu_s(t.proc.pid) - c0) * 1e6 / v["requests"]
                r = res.setdefault(t.name, {})
                r.setdefault("grpc", []).append(v)
                if v["errors"] or v["non2xx"]:
                    r.setdefault("notes", set()).add(
                        f"grpc: {v['errors']} failed streams, {v['non2xx']} non-200")
                log(f"round {rnd + 1}/{args.rounds} {t.name}: gRPC unary "
                    f"{v['rps']:.0f} calls/s p99 {v['p99_ms']:.2f} ms")
        for t in targets:
            r = res.get(t.name, {})
            if "grpc" in r:
                runs = r.pop("grpc")
                r["grpc"] = {m: median([x[m] for x in runs if x.get(m) is not None])
                             for m in ("rps", "p50_ms", "p99_ms", "cpu_us")}
                r["grpc"]["runs"] = [round(x["rps"]) for x in runs]
    finally:
        for t in targets:
            t.stop()
        server.stop()


def callgrind_per_request(args, work, t, cmd):
    """Ir(n2) - Ir(n1) over n2 - n1 keep-alive requests: start-up and shutdown cancel out."""
    counts = []
    for n in (args.cg_requests // 5, args.cg_requests):
        out = f"{work}/callgrind.{t.name}.{n}"
        p = Proc(f"callgrind-{t.name}-{n}",
                 ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *cmd], work,
                 cpu=PROXY_CPU)
        try:
            wait_port(t.http_port, p.proc, timeout=60)
            keepalive_requests(t.http_port, n)
        finally:
            p.stop(timeout=60, every=3)
        with open(out) as f:
            text = f.read()
        m = re.search(r"^(?:summary|totals):\s*(\d+)", text, re.M)
        if not m:
            raise RuntimeError(f"no totals in {out}")
        counts.append((n, int(m.group(1))))
    (n1, i1), (n2, i2) = counts
    return (i2 - i1) / (n2 - n1)


def versions():
    v = {}
    try:
        v["haproxy"] = subprocess.run(["haproxy", "-v"], capture_output=True,
                                      text=True).stdout.split()[2]
    except Exception:
        v["haproxy"] = "?"
    try:
        v["nginx"] = subprocess.run(["nginx", "-v"], capture_output=True,
                                    text=True).stderr.strip().split("/")[-1]
    except Exception:
        v["nginx"] = "?"
    return v


# ---------------------------------------------------------------------------------------------
# registry scale


def registry_suite(args, work, zkgate_bin, reg_port):
    from kazoo.client import KazooClient

    zkdir = os.path.join(work, "zk")
    os.makedirs(zkdir, exist_ok=True)
    zk = zkharness.ZkServer(zkdir, tick_ms=200)
    zk.start()
    res = {"services": args.services, "instances": args.services * args.per_service}
    try:
        kz = KazooClient(hosts=zk.hosts, timeout=10)
        kz.start(timeout=15)
        t0 = time.monotonic()
        root = "/bench/services"
        kz.ensure_path(root)
        names = [f"svc{i:04d}" for i in range(args.services)]
        pending = [kz.create_async(f"{root}/{n}", b"") for n in names]
        for p in pending:
            p.get(timeout=60)
        pending = []
        for n in names:
            for j in range(args.per_service):
                pending.append(kz.create_async(f"{root}/{n}/i{j:02d}",
                                               f"127.0.1.{j % 10 + 1}:{reg_port}".encode()))
        for p in pending:
            p.get(timeout=120)
        log(f"registry: {len(names)} services, {len(pending)} instances created in "
            f"{time.monotonic() - t0:.1f} s")

        http_port, admin_port = free_port(), free_port()
        ini = f"{work}/zkgate-registry.ini"
        with open(ini, "w") as f:
            f.write(f"""
[zookeeper]
hosts = {zk.hosts}
session_timeout = 10s

[proxy]
log_level = warn
access_log = off

[admin]
listen = 127.0.0.1:{admin_port}

[discover:all]
zk_root = {root}
listen = 127.0.0.1:{http_port}
protocol = http
""")
        measure_registry(args, work, zkgate_bin, ini, http_port, admin_port, names, res,
                         lambda svc: kz.create(f"{root}/{svc}/new",
                                               f"127.0.2.1:{reg_port}".encode()))
        kz.stop()
        kz.close()
    finally:
        zk.stop()
    return res


def measure_registry(args, work, zkgate_bin, ini, http_port, admin_port, names, res, add):
    """Start zkgate on `ini`, time it to /ready, check /services, then time `add(svc)` (a new
    instance answering "new") to the first request that reaches it, args.changes times."""
    start = time.monotonic()
    gw = Proc("zkgate-registry", [zkgate_bin, "-c", ini], work, cpu=PROXY_CPU)
    try:
        ready_at = None
        while time.monotonic() - start < 60:
            if gw.proc.poll() is not None:
                raise RuntimeError(f"zkgate exited:\n{gw.tail()}")
            try:
                if admin_get(admin_port, "/ready")[0] == 200:
                    ready_at = time.monotonic()
                    break
            except OSError:
                pass
            time.sleep(0.002)
        if ready_at is None:
            raise RuntimeError("zkgate not ready after 60 s")
        res["sync_s"] = ready_at - start
        res["rss_kb"] = rss_kb(gw.pid)
        # What /ready claimed, checked: every service with every instance.
        services = json.loads(admin_get(admin_port, "/services")[1])
        res["seen_instances"] = count_instances(services)
        log(f"registry: ready after {res['sync_s']:.3f} s, RSS {res['rss_kb']} kB, "
            f"{res['seen_instances']} instances listed by /services")

        # One change at a time: a new instance (answering "new") for one service; the time
        # until a request through zkgate reaches it.
        lat = []
        for k in range(args.changes):
            svc = names[(k * 97 + 13) % len(names)]
            s = socket.create_connection(("127.0.0.1", http_port), timeout=5)
            req, rest = request_bytes(f"/{svc}/"), b""
            s.sendall(req)
            status, body, rest = read_response(s, rest)
            if status != 200:
                raise RuntimeError(f"{svc}: status {status} before the change")
            t_change = time.monotonic()
            add(svc)
            while True:
                s.sendall(req)
                status, body, rest = read_response(s, rest)
                if body == b"new\n":
                    lat.append((time.monotonic() - t_change) * 1000)
                    break
                if time.monotonic() - t_change > 10:
                    raise RuntimeError(f"{svc}: new instance not used within 10 s")
            s.close()
            time.sleep(0.1)
        res["change_ms"] = lat
        log("registry: change to traffic, ms: " + " ".join(f"{x:.1f}" for x in lat))
    finally:
        gw.stop()


def etcd_put(port, key, value):
    """One put through etcd's v3 JSON gateway (keys and values base64)."""
    b64 = (lambda x: base64.b64encode(x.encode()).decode())
    body = json.dumps({"key": b64(key), "value": b64(value)}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v3/kv/put", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        r.read()


def etcd_registry_suite(args, work, zkgate_bin, reg_port):
    """The registry rows again with the instances as etcd keys (issue 15): one service per
    prefix, each named in the configuration (etcd has no discovery root yet)."""
    client, peer = free_port(), free_port()
    data = os.path.join(work, "etcd")
    etcd = Proc("etcd", ["etcd", "--name", "bench", "--data-dir", data,
                         "--listen-client-urls", f"http://127.0.0.1:{client}",
                         "--advertise-client-urls", f"http://127.0.0.1:{client}",
                         "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                         "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                         "--initial-cluster", f"bench=http://127.0.0.1:{peer}",
                         "--log-level", "error"], work, cpu=LOAD_CPU)
    res = {"services": args.services, "instances": args.services * args.per_service}
    try:
        wait_port(client, etcd.proc)
        t0 = time.monotonic()
        names = [f"svc{i:04d}" for i in range(args.services)]
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            list(ex.map(lambda kv: etcd_put(client, *kv),
                        [(f"/bench/{n}/i{j:02d}", f"127.0.1.{j % 10 + 1}:{reg_port}")
                         for n in names for j in range(args.per_service)]))
        log(f"registry (etcd): {len(names)} prefixes, {res['instances']} keys put in "
            f"{time.monotonic() - t0:.1f} s")
        http_port, admin_port = free_port(), free_port()
        ini = f"{work}/zkgate-etcd.ini"
        with open(ini, "w") as f:
            f.write(f"""
[etcd]
endpoints = http://127.0.0.1:{client}

[proxy]
log_level = warn
access_log = off

[admin]
listen = 127.0.0.1:{admin_port}
""")
            for n in names:
                f.write(f"\n[service:{n}]\netcd_prefix = /bench/{n}/\nprotocol = http\n"
                        f"listen = 127.0.0.1:{http_port}\npath_prefix = /{n}/\n")
        measure_registry(args, work, zkgate_bin, ini, http_port, admin_port, names, res,
                         lambda svc: etcd_put(client, f"/bench/{svc}/new",
                                              f"127.0.2.1:{reg_port}"))
    finally:
        etcd.stop()
    return res


def identity_backend_conf(d, ports):
    """nginx answering on each port with that port number: the body says which instance a
    request went to."""
    listens = "\n".join(f"    listen 127.0.0.1:{p};" for p in ports)
    return nginx_backend_head(d, "ident", 1024) + f"""  server {{
{listens}
    location / {{ return 200 "$server_port\\n"; }}
  }}
}}
"""


def pctl(xs, q):
    """Nearest-rank percentile: of 20 samples, p50 is the 10th, p99 the 20th (the slowest)."""
    xs = sorted(xs)
    return xs[max(0, min(len(xs) - 1, -(-len(xs) * q // 100) - 1))] if xs else None


def mono():
    """CLOCK_MONOTONIC in seconds: one clock for the poller's process and this one."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def route_poller(port, conn, gap):
    """The client side of change to route, in a process of its own on the load CPU, so that
    the registry client in the main process (kazoo's threads, Python's lock) neither slows
    the polls nor is slowed by them: requests through the gateway one after the other on one
    keep-alive connection. Commands from `conn`: ("until", id, seconds): poll until `id`
    answers, reply ("ok", t1, polls); ("settle", id, seconds): poll until four answers in a
    row come from `id` (round robin over two instances alternates, so the other one is out
    of the pool), reply ("ok", t, polls); None: stop. ("error", text) on a timeout."""
    os.sched_setaffinity(0, {int(LOAD_CPU)})
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    req, rest = request_bytes("/"), b""
    while True:
        cmd = conn.recv()
        if cmd is None:
            break
        what, want, limit = cmd
        polls, in_a_row, t_start, last = 0, 0, mono(), None
        while True:
            if gap:
                time.sleep(gap)
            s.sendall(req)
            status, body, rest = read_response(s, rest)
            polls, last = polls + 1, (status, body.strip().decode(errors="replace"))
            t = mono()
            if last == (200, want):
                in_a_row += 1
                if what == "until" or in_a_row == 4:
                    conn.send(("ok", t, polls))
                    break
            else:
                in_a_row = 0
            if t - t_start > limit:
                conn.send(("error", f"{what} {want}: last answer {last[0]} {last[1]!r} "
                           f"after {limit} s"))
                break
    s.close()


def route_samples(args, port, base_id, add, remove):
    """args.route_samples times: add(k) registers instance k (answering its id) and returns
    when the registry has acknowledged it; t0 is taken just before, while the poller
    process (route_poller) is already sending requests; t1 is the poller's time of the first
    answer from instance k. Then remove(k), wait until the gateway routes only to the base
    instance again, and stay quiet for args.route_quiet s so that the next change is again
    the first after a quiet period. Returns per sample: t1 - t0, the registry's
    acknowledgement, and the number of polls and their mean round trip (the resolution)."""
    import multiprocessing

    here, there = multiprocessing.Pipe()
    poller = multiprocessing.get_context("fork").Process(target=route_poller,
                                                          args=(port, there, args.route_gap),
                                                          daemon=True)
    poller.start()

    def ask(cmd):
        here.send(cmd)
        reply = here.recv()
        if reply[0] != "ok":
            raise RuntimeError(f"change to route: {reply[1]}")
        return reply[1], reply[2]

    samples = []
    try:
        ask(("settle", base_id, 30))  # the first pool: the base instance answering
        for k in range(args.route_samples):
            want = args.route_ids[k]
            time.sleep(args.route_quiet)
            here.send(("until", want, 10))
            t0 = mono()
            add(k)
            t_ack = mono()
            reply = here.recv()
            if reply[0] != "ok":
                raise RuntimeError(f"change to route: instance {want} not routed to: "
                                   f"{reply[1]}")
            t1, polls = reply[1], reply[2]
            samples.append({"ms": (t1 - t0) * 1000, "ack_ms": (t_ack - t0) * 1000,
                            "polls": polls, "poll_ms": (t1 - t0) * 1000 / polls})
            remove(k)
            ask(("settle", base_id, 10))
    finally:
        here.send(None)
        poller.join(5)
        if poller.is_alive():
            poller.kill()
    return samples


def route_suite(args, work, zkgate_bin):
    """Change to route (issue 17, point 4), from the client's side: a service with one
    instance in a real ZooKeeper (and a real etcd, where installed); a new instance is
    registered (t0) while requests go through zkgate one after the other; t1 = the first
    answer from the new instance. Each instance answers with its own identity (nginx
    returning its port), so that no answer is mistaken for another's."""
    ports = [free_port() for _ in range(args.route_samples + 1)]
    args.route_ids = [str(p) for p in ports[1:]]
    with open(f"{work}/ident.conf", "w") as f:
        f.write(identity_backend_conf(work, ports))
    ident = Proc("ident", ["nginx", "-p", work, "-c", f"{work}/ident.conf"], work,
                 cpu=LOAD_CPU)
    res = {}
    try:
        for p in ports:
            wait_port(p, ident.proc)
        res["zookeeper"] = route_zookeeper(args, work, zkgate_bin, ports)
        if shutil.which("etcd"):
            res["etcd"] = route_etcd(args, work, zkgate_bin, ports)
    finally:
        ident.stop()
    return res


def route_zookeeper(args, work, zkgate_bin, ports):
    """The registration: an ephemeral host:port znode created with kazoo."""
    from kazoo.client import KazooClient

    zkdir = os.path.join(work, "zk-route")
    os.makedirs(zkdir, exist_ok=True)
    zk = zkharness.ZkServer(zkdir, tick_ms=200)
    kz = None
    try:
        zk.start()
        kz = KazooClient(hosts=zk.hosts, timeout=10)
        kz.start(timeout=15)
        path = "/bench/route"
        kz.ensure_path(path)
        kz.create(f"{path}/base", f"127.0.0.1:{ports[0]}".encode())

        def add(k):
            kz.create(f"{path}/i{k:02d}", f"127.0.0.1:{ports[k + 1]}".encode(), ephemeral=True)

        return route_gateway(args, work, zkgate_bin, "ZooKeeper",
                             f"[zookeeper]\nhosts = {zk.hosts}\nsession_timeout = 10s\n",
                             f"zk_path = {path}", str(ports[0]), add,
                             lambda k: kz.delete(f"{path}/i{k:02d}"))
    finally:
        if kz:
            kz.stop()
            kz.close()
        zk.stop()


def route_etcd(args, work, zkgate_bin, ports):
    """The registration: a host:port key put through etcd's JSON gateway (from a thread:
    the requests through zkgate go on meanwhile)."""
    client, peer = free_port(), free_port()
    etcd = Proc("etcd-route", ["etcd", "--name", "route", "--data-dir", f"{work}/etcd-route",
                               "--listen-client-urls", f"http://127.0.0.1:{client}",
                               "--advertise-client-urls", f"http://127.0.0.1:{client}",
                               "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                               "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                               "--initial-cluster", f"route=http://127.0.0.1:{peer}",
                               "--log-level", "error"], work, cpu=LOAD_CPU)
    prefix = "/bench/route/"
    b64 = (lambda x: base64.b64encode(x.encode()).decode())
    try:
        wait_port(client, etcd.proc)
        etcd_put(client, f"{prefix}base", f"127.0.0.1:{ports[0]}")
        def add(k):
            etcd_put(client, f"{prefix}i{k:02d}", f"127.0.0.1:{ports[k + 1]}")

        def remove(k):
            body = json.dumps({"key": b64(f"{prefix}i{k:02d}")}).encode()
            req = urllib.request.Request(f"http://127.0.0.1:{client}/v3/kv/deleterange",
                                         data=body,
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as r:
                r.read()

        return route_gateway(args, work, zkgate_bin, "etcd",
                             f"[etcd]\nendpoints = http://127.0.0.1:{client}\n",
                             f"etcd_prefix = {prefix}", str(ports[0]), add, remove)
    finally:
        etcd.stop()


def route_gateway(args, work, zkgate_bin, what, registry_section, source_key, base_id, add,
                  remove):
    """zkgate with one round-robin service on the registry; the samples through it."""
    http_port = free_port()
    name = what.lower()
    ini = f"{work}/zkgate-route-{name}.ini"
    with open(ini, "w") as f:
        f.write(f"""{registry_section}
[proxy]
log_level = warn
access_log = off

[service:route]
{source_key}
protocol = http
listen = 127.0.0.1:{http_port}
balance = round_robin
""")
    gw = Proc(f"zkgate-route-{name}", [zkgate_bin, "-c", ini], work, cpu=PROXY_CPU)
    try:
        wait_port(http_port, gw.proc)
        samples = route_samples(args, http_port, base_id, add, remove)
    finally:
        gw.stop()
    res = {"samples": samples, "balance": "round_robin", "quiet_s": args.route_quiet}
    summarise_route(res, what)
    return res


def summarise_route(res, what):
    ms = [x["ms"] for x in res["samples"]]
    acks = [x["ack_ms"] for x in res["samples"] if x["ack_ms"] is not None]
    res.update(median_ms=statistics.median(ms), p99_ms=pctl(ms, 99), max_ms=max(ms),
               ack_median_ms=statistics.median(acks) if acks else None,
               after_ack_median_ms=statistics.median(x["ms"] - x["ack_ms"]
                                                     for x in res["samples"]
                                                     if x["ack_ms"] is not None)
               if acks else None,
               after_ack_p99_ms=pctl([x["ms"] - x["ack_ms"] for x in res["samples"]
                                      if x["ack_ms"] is not None], 99) if acks else None,
               poll_ms=statistics.median(x["poll_ms"] for x in res["samples"]),
               polls_median=statistics.median(x["polls"] for x in res["samples"]))
    log(f"change to route ({what}): median {res['median_ms']:.2f} ms, p99 "
        f"{res['p99_ms']:.2f} ms over {len(ms)} samples (registry acknowledged the write "
        f"after {res['ack_median_ms'] or 0:.2f} ms; one poll {res['poll_ms']:.3f} ms): "
        + " ".join(f"{x:.1f}" for x in ms))


def admin_get(port, path):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n".encode())
        status, body, _ = read_response(s)
        return status, body
    finally:
        s.close()


def count_instances(doc):
    """Instances in the /services JSON, whatever its exact nesting."""
    services = doc.get("services", doc) if isinstance(doc, dict) else doc
    if isinstance(services, dict):
        services = list(services.values())
    total = 0
    for svc in services:
        inst = svc.get("instances", []) if isinstance(svc, dict) else []
        total += len(inst)
    return total


# ---------------------------------------------------------------------------------------------
# the table


def fmt(v, unit=""):
    if v is None:
        return "n/a"
    if isinstance(v, float):
        if abs(v) >= 100:
            s = f"{v:,.0f}"
        elif abs(v) >= 10:
            s = f"{v:.1f}"
        else:
            s = f"{v:.2f}"
    else:
        s = f"{v:,}"
    return s + unit


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "n/a"
    return f"{a / b:.2f}×"


def verdict(ok):
    return "met" if ok else "**missed**"


def registry_table(L, reg, where, rows, key):
    lat = reg.get("change_ms") or []
    L.append("")
    L.append(f"Registry scale (zkgate alone): {reg['instances']:,} instances across "
             f"{reg['services']:,} services {where}.")
    L.append("")
    L.append("| figure | zkgate | target (issue 7) | |")
    L.append("|---|---:|---|---|")
    L.append(f"| start to `/ready` (first full synchronisation), s | {reg['sync_s']:.3f} "
             f"| < 2 s | {verdict(reg['sync_s'] < 2)} |")
    L.append(f"| instances listed by `/services` at that moment | {reg['seen_instances']:,} "
             f"| {reg['instances']:,} | {verdict(reg['seen_instances'] == reg['instances'])} |")
    L.append(f"| RSS after synchronisation, MB | {reg['rss_kb'] / 1024:.1f} | < 32 MB "
             f"| {verdict(reg['rss_kb'] < 32 * 1024)} |")
    rows.append((f"{key}: start to /ready, s", [None, reg["sync_s"], None, None]))
    rows.append((f"{key}: RSS after synchronisation, MB",
                 [None, reg["rss_kb"] / 1024, None, None]))
    if lat:
        med, worst = statistics.median(lat), max(lat)
        L.append(f"| one instance added → first request to it, ms (median of {len(lat)}; "
                 f"max) | {med:.1f} ({worst:.1f}) | < 20 ms | {verdict(med < 20)} |")
        rows.append((f"{key}: one instance added → first request to it, median, ms",
                     [None, med, None, None]))


def route_table(L, route, rows, key, where):
    """The change-to-route rows (issue 17, point 4)."""
    n = len(route["samples"])
    L.append("")
    L.append(f"Change to route ({key}; zkgate alone, issue 17): {where}; one service with one "
             f"instance, `balance = round_robin`, `coalesce_window` at its default (10 ms); "
             f"{n} times: the new instance's registration sent (t0) and acknowledged by "
             "the registry, while a process of its own on CPU 1 sends requests through "
             "zkgate one after the other on one keep-alive connection until one is answered "
             "by the new instance (t1), then its removal and a quiet "
             f"{route.get('quiet_s', 0.2):g} s.")
    L.append("")
    L.append("| figure | zkgate | target (issue 17) | |")
    L.append("|---|---:|---|---|")
    L.append(f"| registration sent → first request answered by the new instance, median of "
             f"{n}, ms | {route['median_ms']:.2f} | ≤ 5 ms "
             f"| {verdict(route['median_ms'] <= 5)} |")
    L.append(f"| the same, p99 (nearest rank: the slowest of {n}), ms | {route['p99_ms']:.2f} "
             f"| ≤ 10 ms | {verdict(route['p99_ms'] <= 10)} |")
    if route.get("ack_median_ms") is not None:
        L.append(f"| the registry's write alone (sent → acknowledged), median, ms "
                 f"| {route['ack_median_ms']:.2f} | | |")
        a50, a99 = route["after_ack_median_ms"], route.get("after_ack_p99_ms")
        L.append(f"| the znode or key created (the registry's acknowledgement) → first "
                 f"request answered by the new instance, median, ms | {a50:.2f} | ≤ 5 ms "
                 f"| {verdict(a50 <= 5)} |")
        if a99 is not None:
            L.append(f"| the same, p99 (the slowest of {n}), ms | {a99:.2f} | ≤ 10 ms "
                     f"| {verdict(a99 <= 10)} |")
    L.append("")
    L.append(f"Each sample, ms: {[round(x['ms'], 2) for x in route['samples']]}. Resolution: "
             f"one poll (a request and its answer through zkgate) took {route['poll_ms']:.3f} "
             f"ms (median), {route['polls_median']:g} polls per sample (median); with round "
             "robin over two instances a figure is late by at most two polls.")
    rows.append((f"{key}: change to route, median, ms", [None, route["median_ms"], None, None]))
    rows.append((f"{key}: change to route, p99, ms", [None, route["p99_ms"], None, None]))


def run_label(doc):
    pm = doc.get("meta", {})
    return pm.get("date", "?") + (f" {pm['time']}" if pm.get("time") else "")


def previous_section(L, rows, earlier):
    """The previous run beside this one: zkgate's figures and its same-run ratios. A figure
    the previous run did not measure (it ran other suites) is taken from the most recent
    earlier record that did, and marked with that run's date."""
    L.append("")
    if not earlier:
        L.append("Previous run: none recorded beside this one.")
        return
    prev = earlier[0]
    pm = prev.get("meta", {})
    mi = pm.get("machine_info")
    L.append(f"Against the previous run ({run_label(prev)} on "
             f"{machine_short(mi) if mi else pm.get('machine', '?')}; command "
             f"`{pm.get('command', '?')}`; load average at its start {pm.get('load', '?')}); "
             "a figure it did not measure comes from the latest earlier record in the same "
             "folder that did, dated in brackets. Each run's ratios are within that run; "
             "across runs only the ratios and the callgrind counts are comparable, "
             "wall-clock figures move with the machine.")
    L.append("")
    L.append("| figure | zkgate | zkgate, previous run | zkgate / HAProxy | the same, previous "
             "| zkgate / nginx | the same, previous |")
    L.append("|---|---:|---:|---:|---:|---:|---:|")
    cache = {}

    def before(label):
        for i, doc in enumerate(earlier):
            if i not in cache:
                cache[i] = dict(prev_rows(doc))
            if label in cache[i]:
                return cache[i][label], ("" if i == 0 else f" ({run_label(doc)})")
        return [None] * 4, ""

    for label, v in rows:
        p, when = before(label)
        alone = all(x is None for x in (v[2], v[3], p[2], p[3]))  # zkgate-only figures
        L.append(f"| {label} | {fmt(v[1])} | {fmt(p[1])}{when} | "
                 + ("— | — | — | — |" if alone else
                    f"{ratio(v[1], v[2])} | {ratio(p[1], p[2])}{when} | {ratio(v[1], v[3])} "
                    f"| {ratio(p[1], p[3])}{when} |"))


def render(args, px, reg, meta, reg_etcd=None, route=None, earlier=()):
    """The Markdown of one run, and its figures as (label, [direct, zkgate, HAProxy,
    nginx]) for the comparison with other runs. earlier: the earlier runs' JSON, newest
    first (the previous run first); None: no comparison section."""
    L, rows = [], []
    px = px or {}
    vers = px.get("versions", {})
    when = meta["date"] + (f" {meta['time']}" if meta.get("time") else "")
    L.append(f"Run {when} on {meta['machine']}; command `{meta['command']}`; "
             f"HAProxy {vers.get('haproxy', '?')}, nginx {vers.get('nginx', '?')}; "
             f"{args.rounds} round{'s' if args.rounds != 1 else ''} of {args.duration} s per figure (medians), wrk -t1 "
             f"-c{args.conns}; proxies pinned to CPU {PROXY_CPU}, wrk, backend and clients "
             f"to CPU {LOAD_CPU}; load average before the run {meta['load']} (other work on "
             "the machine disturbs wall-clock figures; callgrind counts do not move).")
    if meta.get("machine_info"):
        L.append("")
        L.append("Machine: " + machine_line(meta["machine_info"]) + ".")
    L.append("")
    L.append("| figure | backend direct | zkgate | HAProxy | nginx | zkgate / HAProxy "
             "| zkgate / nginx | target (issue 7) | |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---|---|")
    table_at = len(L)
    d, z, h, n = (px.get(k, {}) for k in ("direct", "zkgate", "haproxy", "nginx"))

    def g(r, *path):
        for p in path:
            if not isinstance(r, dict) or p not in r:
                return None
            r = r[p]
        return r

    def row(label, path, unit, target="", ok=None, direct=True, scale=1.0):
        vals = []
        for r in (d if direct else {}, z, h, n):
            v = g(r, *path)
            vals.append(v * scale if v is not None else None)
        if all(v is None for v in vals):
            return vals  # a suite not run this time
        rows.append((label + (", ms" if unit == " ms" else ""), vals))
        if vals[1] is None:
            ok = None  # not measured in this run: no verdict
        L.append(f"| {label} | {fmt(vals[0], unit) if direct else '—'} | {fmt(vals[1], unit)} "
                 f"| {fmt(vals[2], unit)} | {fmt(vals[3], unit)} | {ratio(vals[1], vals[2])} "
                 f"| {ratio(vals[1], vals[3])} | {target} | "
                 f"{'' if ok is None else verdict(ok)} |")
        return vals

    ka = row("HTTP keep-alive, req/s", ("ka", "rps"), "", "≥ 1.0× HAProxy (aim 1.2×)",
             ok=_ge(g(z, "ka", "rps"), g(h, "ka", "rps")))
    row("HTTP keep-alive, p50", ("ka", "p50_ms"), " ms")
    row("HTTP keep-alive, p99", ("ka", "p99_ms"), " ms", "≤ HAProxy's",
        ok=_ge(g(h, "ka", "p99_ms"), g(z, "ka", "p99_ms")))
    if g(z, "ka", "cpu_us") is not None:
        row("HTTP keep-alive, proxy CPU (user + system) per request, µs", ("ka", "cpu_us"),
            "", direct=False)
    row("new connection per request, req/s", ("close", "rps"), "")
    row("new connection per request, p50", ("close", "p50_ms"), " ms")
    row("new connection per request, p99", ("close", "p99_ms"), " ms")
    row("TCP bulk through the L4 path, MB/s", ("bulk",), "", "≥ 0.9× HAProxy",
        ok=_ge(g(z, "bulk"), 0.9 * g(h, "bulk") if g(h, "bulk") else None))
    if any(g(r, "h2") is not None for r in (z, h, n)):
        row("HTTP/2 keep-alive (h2c, h2load -c4 -m10), req/s", ("h2", "rps"), "",
            "reported (issue 14)", direct=False)
        row("HTTP/2 keep-alive, p99", ("h2", "p99_ms"), " ms", direct=False)
        row("HTTP/2 keep-alive, proxy CPU per request, µs", ("h2", "cpu_us"), "",
            direct=False)
    if any(g(r, "grpc") is not None for r in (z, h, n)):
        row("gRPC unary calls/s (h2load -c4 -m10, one Python grpcio server)",
            ("grpc", "rps"), "", "reported (issue 14)", direct=False)
        row("gRPC unary, p99", ("grpc", "p99_ms"), " ms", direct=False)
        row("gRPC unary, proxy CPU per call, µs", ("grpc", "cpu_us"), "", direct=False)
    if g(z, "tls_ka") is not None:
        row("HTTPS keep-alive (TLS terminated), req/s", ("tls_ka", "rps"), "",
            "reported (issue 5)", direct=False)
        row("HTTPS keep-alive, p99", ("tls_ka", "p99_ms"), " ms", direct=False)
        row("HTTPS keep-alive, proxy CPU per request, µs", ("tls_ka", "cpu_us"), "",
            direct=False)
        row("TLS handshakes/s (full handshake, new connection per request)",
            ("tls_close", "rps"), "", "reported (issue 5)", direct=False)
        row("TLS handshake + request, proxy CPU per request, µs", ("tls_close", "cpu_us"), "",
            direct=False)
    row("idle RSS, MB", ("rss_idle_kb",), "", "< 4 MB", direct=False, scale=1 / 1024,
        ok=g(z, "rss_idle_kb") is not None and g(z, "rss_idle_kb") < 4 * 1024)
    idle_n = px.get("idle_n", 0)
    if idle_n > 0:
        for r in (z, h, n):
            if "rss_conns_kb" in r:
                r["rss_added_kb"] = r["rss_conns_kb"] - r["rss_idle_kb"]
        why = (f" (not {args.idle_conns:,}: the open-file limit)"
               if idle_n < args.idle_conns else "")
        row(f"RSS with {idle_n:,} idle keep-alive clients{why}, MB", ("rss_conns_kb",), "",
            direct=False, scale=1 / 1024)
        limit = 40 * idle_n / 10000
        row(f"RSS added by {idle_n:,} idle clients, MB", ("rss_added_kb",), "",
            f"< {limit:g} MB" + (" (40 MB per 10,000)" if idle_n != 10000 else ""),
            direct=False, scale=1 / 1024,
            ok=g(z, "rss_added_kb") is not None and g(z, "rss_added_kb") < limit * 1024)
    if args.callgrind:
        row("instructions per keep-alive request (callgrind)", ("ir_per_req",), "",
            direct=False)
    if len(L) == table_at:  # no proxy figure in this run: no empty table
        del L[table_at - 3:]
    bulk_table(L, px)
    if reg:
        registry_table(L, reg, f"in a real ZooKeeper 3.8, found through `[discover:all]` "
                       "(default `coalesce_window = 10ms`)", rows, "ZooKeeper registry")
    if reg_etcd:
        registry_table(L, reg_etcd, "as keys of a real etcd 3.4 (one node), one "
                       "`[service:NAME]` with `etcd_prefix` per service", rows, "etcd registry")
    if (route or {}).get("zookeeper", {}).get("samples"):
        route_table(L, route["zookeeper"], rows, "ZooKeeper", "an ephemeral `host:port` "
                    "znode created with kazoo in a real ZooKeeper 3.8, watched through "
                    "`[service:] zk_path`")
    if (route or {}).get("etcd", {}).get("samples"):
        route_table(L, route["etcd"], rows, "etcd", "a `host:port` key put through the JSON "
                    "gateway of a real etcd 3.4 (one node), watched through "
                    "`[service:] etcd_prefix`")
    notes = []
    for k in ("zkgate", "haproxy", "nginx", "direct"):
        for note in sorted(px.get(k, {}).get("notes", ())):
            notes.append(f"{k} {note}")
    if notes:
        L.append("")
        L.append("Errors seen by wrk and h2load: " + "; ".join(notes) + ".")
    runs = ", ".join(f"{k} {px[k]['ka']['runs']}" for k in ("direct", "zkgate", "haproxy",
                                                             "nginx") if "ka" in px.get(k, {}))
    if runs:
        L.append("")
        L.append(f"Keep-alive req/s of each round: {runs}.")
        p99 = ", ".join(f"{k} {px[k]['ka']['p99_runs']}" for k in ("direct", "zkgate",
                                                                  "haproxy", "nginx")
                        if "p99_runs" in px.get(k, {}).get("ka", {}))
        if p99:
            L.append(f"Keep-alive p99 (ms) of each round: {p99}.")
        for what, key in (("p99.9", "p999_runs"), ("slowest request", "max_runs")):
            more = ", ".join(f"{k} {px[k]['ka'][key]}" for k in ("zkgate", "haproxy", "nginx")
                             if key in px.get(k, {}).get("ka", {}))
            if more:
                L.append(f"Keep-alive {what} (ms) of each round: {more}.")
        tail_verdict(L, px)
    bulk = ", ".join(f"{k} {[round(x) for x in px[k]['bulk_runs']]}"
                     for k in ("direct", "zkgate", "haproxy", "nginx")
                     if "bulk_runs" in px.get(k, {}))
    if bulk:
        L.append(f"TCP bulk MB/s of each round: {bulk}.")
    if earlier is not None:
        previous_section(L, rows, earlier)
    return "\n".join(L) + "\n", rows


def tail_verdict(L, px):
    """Issue 17, point 2: keep-alive p99 as the median of the rounds' p99s, against
    HAProxy's taken the same way in the same run."""
    z = px.get("zkgate", {}).get("ka", {}).get("p99_runs")
    h = px.get("haproxy", {}).get("ka", {}).get("p99_runs")
    zm, hm = (px.get(k, {}).get("ka", {}).get("p99_ms") for k in ("zkgate", "haproxy"))
    if not z or not h or zm is None or hm is None:
        return
    n = min(len(z), len(h))
    # A round without an answered request (None) loses against any figure.
    won = sum(a is not None and (b is None or a <= b) for a, b in zip(z, h))
    empty = sum(x is None for x in z + h)
    few = "" if n >= 5 else f" (only {n} round{'s' if n != 1 else ''}: the target asks for 5)"
    L.append("")
    L.append(f"Tail latency: keep-alive p99, median of the p99s of {n} round"
             f"{'s' if n != 1 else ''}: zkgate {zm:.2f} ms, "
             f"HAProxy {hm:.2f} ms"
             + (f", nginx {px['nginx']['ka']['p99_ms']:.2f} ms"
                if px.get("nginx", {}).get("ka", {}).get("p99_ms") is not None else "")
             + f"; zkgate had the lower p99 in {won} of {n} rounds"
             + (f" ({empty} round{'s' if empty != 1 else ''} without any answered request, "
                "left out of the medians)" if empty else "") + ".")
    L.append(f"keep-alive p99 <= HAProxy's (median of {n} round{'s' if n != 1 else ''}): "
             f"{'met' if zm <= hm else 'missed'}{few}.")


def prev_rows(prev):
    """The previous run's figures, rendered by this version of the table."""
    pm = prev.get("meta", {})
    a = pm.get("args", {})
    ns = argparse.Namespace(rounds=a.get("rounds", 5), duration=a.get("duration", 3),
                            conns=a.get("conns", 64), idle_conns=a.get("idle_conns", 10000),
                            callgrind=any("ir_per_req" in v for v in
                                          (prev.get("proxies") or {}).values()
                                          if isinstance(v, dict)))
    meta = dict(date=pm.get("date", "?"), machine=pm.get("machine", "?"),
                command=pm.get("command", "?"), load=pm.get("load", "?"))
    try:
        return render(ns, prev.get("proxies"), prev.get("registry"), meta,
                      prev.get("registry_etcd"), prev.get("route"), earlier=None)[1]
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        log(f"the previous run's figures could not be read: {e!r}")
        return []


def _ge(a, b):
    return None if a is None or b is None else a >= b


def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _first_line(cmd, stream="stdout"):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        text = (out.stdout if stream == "stdout" else out.stderr).strip()
        return text.splitlines()[0] if text else "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def deb_version(package):
    out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package],
                         capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "?"


def machine_info(zkgate_bin):
    """What the figures were taken on: CPU, cores, kernel, load at the start, the CPU
    frequency governor where the kernel shows one (not in most VMs), and every program's
    version. Kept in the .json and in the .md, so that a run can be compared with another
    knowing what changed besides the code."""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        lscpu = ""

    def lscpu_field(name):
        m = re.search(rf"^{name}:\s*(.+)$", lscpu, re.M)
        return m.group(1).strip() if m else None

    osrel = _read("/etc/os-release") or ""
    m = re.search(r'^PRETTY_NAME="?([^"\n]+)', osrel, re.M)
    governor = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    git = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"],
                         capture_output=True, text=True)
    return {
        "cpu_model": lscpu_field("Model name") or "?",
        "cpus": os.cpu_count(),
        "hypervisor": lscpu_field("Hypervisor vendor"),
        "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "os": m.group(1) if m else "?",
        "loadavg": " ".join((_read("/proc/loadavg") or "? ? ?").split()[:3]),
        "governor": governor or "not readable (no cpufreq in this kernel or VM)",
        "versions": {
            "zkgate": _first_line([zkgate_bin, "-V"]).replace("zkgate ", ""),
            "zkgate_commit": git.stdout.strip() if git.returncode == 0 else "?",
            "haproxy": versions()["haproxy"],
            "nginx": versions()["nginx"],
            "wrk": _first_line(["wrk", "-v"]).split(" [")[0].replace("wrk ", ""),
            "h2load": _first_line(["h2load", "--version"]).replace("h2load ", ""),
            "zookeeper": deb_version("libzookeeper-java"),
            "etcd": deb_version("etcd-server"),
            "python": platform.python_version(),
        },
    }


def machine_line(mi):
    v = mi.get("versions", {})
    hyp = f" ({mi['hypervisor']})" if mi.get("hypervisor") else ""
    return (f"{mi.get('cpus', '?')} vCPU {mi.get('cpu_model', '?')}{hyp}, "
            f"{mi.get('mem_gib', '?')} GiB, Linux {mi.get('kernel', '?')}, {mi.get('os', '?')}; "
            f"load average at the start {mi.get('loadavg', '?')} (1, 5, 15 min); "
            f"CPU governor {mi.get('governor', '?')}; zkgate {v.get('zkgate', '?')} "
            f"(commit {v.get('zkgate_commit', '?')}), HAProxy {v.get('haproxy', '?')}, "
            f"nginx {v.get('nginx', '?')}, wrk {v.get('wrk', '?')}, "
            f"h2load {v.get('h2load', '?')}, ZooKeeper {v.get('zookeeper', '?')}, "
            f"etcd {v.get('etcd', '?')}, Python {v.get('python', '?')}")


def machine_short(mi):
    hyp = f" ({mi['hypervisor']})" if mi.get("hypervisor") else ""
    return (f"{mi.get('cpus', '?')} vCPU {mi.get('cpu_model', '?')}{hyp}, "
            f"{mi.get('mem_gib', '?')} GiB, Linux {mi.get('kernel', '?')}, {mi.get('os', '?')}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--zkgate", required=True, help="the zkgate binary (Release build)")
    ap.add_argument("--tcpbulk", required=True, help="the built bench/tcpbulk")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    ap.add_argument("--bulk-seconds", type=float, default=2.0)
    ap.add_argument("--conns", type=int, default=64, help="wrk connections")
    ap.add_argument("--idle-conns", type=int, default=10000)
    ap.add_argument("--cg-requests", type=int, default=5000)
    ap.add_argument("--no-callgrind", dest="callgrind", action="store_false")
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--per-service", type=int, default=10)
    ap.add_argument("--changes", type=int, default=5)
    ap.add_argument("--no-registry", dest="registry", action="store_false")
    ap.add_argument("--h2-requests", type=int, default=50000,
                    help="requests per h2load run")
    ap.add_argument("--route-samples", type=int, default=20,
                    help="change to route: registrations timed")
    ap.add_argument("--route-gap", type=float, default=0.0,
                    help="change to route: seconds between one answer and the next poll")
    ap.add_argument("--route-quiet", type=float, default=0.2,
                    help="change to route: seconds without registry changes before each one")
    ap.add_argument("--no-record", dest="record", action="store_false",
                    help="write only --out (and its previous run), no dated record")
    ap.add_argument("--suites", default=DEFAULT_SUITES,
                    help="comma-separated subset of footprint (idle RSS, idle clients), "
                    "throughput (wrk, TCP bulk), bulk (TCP bulk: zkgate splice and copy, "
                    "HAProxy mode tcp and splice-auto), h2 (h2load over h2c), grpc (gRPC unary through h2), "
                    "tls (HTTPS keep-alive, handshakes), "
                    "callgrind, registry (ZooKeeper), etcd (the registry rows for etcd keys), "
                    "route (one znode created to the first request routed to it)")
    ap.add_argument("--proxies", default="zkgate,haproxy,nginx",
                    help="comma-separated subset of zkgate,haproxy,nginx")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "latest.md"))
    ap.add_argument("--command", default="bench/run.sh")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    args.suites = set(args.suites.split(","))
    args.proxies = set(args.proxies.split(","))
    args.callgrind = args.callgrind and "callgrind" in args.suites
    args.etcd = args.registry and "etcd" in args.suites  # --no-registry: neither
    args.registry = args.registry and "registry" in args.suites
    args.zkgate, args.tcpbulk = os.path.abspath(args.zkgate), os.path.abspath(args.tcpbulk)

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft < args.idle_conns + 500:
        sys.exit(f"bench: open-file limit {soft} is too low for {args.idle_conns} idle "
                 "connections (raise ulimit -n, or pass a smaller --idle-conns)")

    work = tempfile.mkdtemp(prefix="zkgate-bench-")
    mi = machine_info(args.zkgate)
    now = datetime.datetime.now(datetime.timezone.utc)
    meta = {"date": now.date().isoformat(), "time": now.strftime("%H:%M:%S UTC"),
            "machine": machine_short(mi), "machine_info": mi, "command": args.command,
            "load": mi["loadavg"].split()[0], "suites": sorted(args.suites),
            "args": {k: getattr(args, k) for k in ("rounds", "duration", "bulk_seconds",
                                                   "conns", "idle_conns", "route_samples")}}
    px, reg, reg_etcd, route, cleanup = None, None, None, None, []
    try:
        px = proxy_suite(args, work, args.zkgate, args.tcpbulk, cleanup)
        if args.registry:
            reg = registry_suite(args, work, args.zkgate, px["reg_port"])
        if args.etcd:
            reg_etcd = etcd_registry_suite(args, work, args.zkgate, px["reg_port"])
        if "route" in args.suites and args.route_samples > 0:
            route = route_suite(args, work, args.zkgate)
    finally:
        for stop in reversed(cleanup):
            stop()
        if args.keep:
            log(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    px.pop("reg_port", None)
    write_results(args, meta, {"meta": meta, "proxies": px, "registry": reg,
                               "registry_etcd": reg_etcd, "route": route})


def results_paths(out):
    """out (X.md), its JSON, and where the run before it is kept: latest.md becomes
    previous.md, any other X.md becomes X.previous.md."""
    base, _ = os.path.splitext(out)
    d, stem = os.path.split(base)
    prev = os.path.join(d, "previous" if stem == "latest" else f"{stem}.previous")
    return base, prev


def load_json(path):
    try:
        with open(path) as f:
            doc = json.load(f)
        return doc if isinstance(doc, dict) and "meta" in doc else None
    except (OSError, ValueError):
        return None


def earlier_records(base):
    """The dated records beside --out, newest first (by the date and time they record)."""
    d, stem = os.path.split(base)
    docs = []
    for name in os.listdir(d or "."):
        if (not name.endswith(".json") or name.startswith(("latest.", "previous.", "quick."))
                or ".previous." in name or name == stem + ".json"):
            continue
        doc = load_json(os.path.join(d, name))
        if doc:
            docs.append(doc)
    docs.sort(key=lambda x: (x["meta"].get("date", ""), x["meta"].get("time", "")),
              reverse=True)
    return docs


def write_results(args, meta, doc):
    """The run as Markdown and JSON at --out, the run that was there moved beside it
    (previous.md/.json), and, unless --no-record, a dated record that later runs leave
    alone: <date>-<suites>.md/.json next to --out."""
    base, prev_base = results_paths(args.out)
    prev = load_json(base + ".json")
    table, _ = render(args, doc["proxies"], doc["registry"], meta, doc["registry_etcd"],
                      doc["route"], ([prev] if prev else []) + earlier_records(base))
    print(table)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    for ext in (".md", ".json"):
        if os.path.exists(base + ext):
            os.replace(base + ext, prev_base + ext)

    def dump(path):
        with open(path, "w") as f:
            json.dump(doc, f, indent=1,
                      default=lambda o: sorted(o) if isinstance(o, set) else str(o))

    with open(base + ".md", "w") as f:
        f.write(table)
    dump(base + ".json")
    written = [base + ".md"]
    if args.record:
        suites = ("all" if set(meta["suites"]) == set(DEFAULT_SUITES.split(","))
                  else "+".join(meta["suites"]))
        rec = os.path.join(os.path.dirname(os.path.abspath(args.out)),
                           f"{meta['date']}-{suites}")
        if os.path.exists(rec + ".md"):  # a second run of the same suites that day
            rec += "-" + meta["time"].split()[0].replace(":", "")
        with open(rec + ".md", "w") as f:
            f.write(table)
        dump(rec + ".json")
        written.append(rec + ".md")
    log("written " + ", ".join(written) + (f"; the run before: {prev_base}.md" if prev else ""))

if __name__ == "__main__":
    main()
