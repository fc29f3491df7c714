"""Real etcd servers for the integration tests: Debian's etcd-server (etcd 3.4, /usr/bin/etcd)
started on free loopback ports, one member or a cluster of three, and a small client over etcd's
v3 JSON gateway (the same API zkgate reads) plus etcdctl where the test wants the real tool
(compaction, auth setup)."""

import base64
import json
import os
import shutil
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request

from zkharness import _die_with_parent, free_port, wait_until

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"


def b64(s):
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


class EtcdMember:
    def __init__(self, tmpdir, name, client_port=None, peer_port=None, tls=None):
        self.tls = tls  # (cert, key, ca): https with client certificates from that CA
        self.name = name
        self.dir = os.path.join(str(tmpdir), f"etcd-{name}")
        self.client_port = client_port or free_port()
        self.peer_port = peer_port or free_port()
        self.proc = None
        self.log_path = os.path.join(str(tmpdir), f"etcd-{name}.log")

    @property
    def url(self):
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.client_port}"

    def ssl_context(self):
        if not self.tls:
            return None
        ctx = ssl.create_default_context(cafile=self.tls[2])
        ctx.load_cert_chain(self.tls[0], self.tls[1])
        return ctx

    @property
    def peer_url(self):
        return f"http://127.0.0.1:{self.peer_port}"

    def spawn(self, initial_cluster, state="new"):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [*_die_with_parent(), ETCD, "--name", self.name, "--data-dir", self.dir,
             "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
             "--listen-peer-urls", self.peer_url,
             "--initial-advertise-peer-urls", self.peer_url,
             "--initial-cluster", initial_cluster, "--initial-cluster-state", state,
             "--initial-cluster-token", "zkgate-test",
             "--heartbeat-interval", "50", "--election-timeout", "500",
             "--logger", "zap", "--log-level", "warn",
             *(["--cert-file", self.tls[0], "--key-file", self.tls[1], "--client-cert-auth",
                "--trusted-ca-file", self.tls[2]] if self.tls else [])],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        if self.running:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self):
        if self.running:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def healthy(self):
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=1,
                                        context=self.ssl_context()) as r:
                return json.load(r).get("health") == "true"
        except (OSError, ValueError):
            return False


class EtcdCluster:
    """n members (1 or 3). `endpoints` is the [etcd] endpoints value for all of them."""

    def __init__(self, tmpdir, n=1, tls=None):
        self.members = [EtcdMember(tmpdir, f"m{i}", tls=tls) for i in range(n)]
        self.token = None  # set by enable_auth for the client calls below

    @property
    def initial_cluster(self):
        return ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    @property
    def endpoints(self):
        return ",".join(m.url for m in self.members)

    def start(self, timeout=30.0):
        for m in self.members:
            m.spawn(self.initial_cluster)
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout=30.0):
        live = [m for m in self.members if m.running]
        if not wait_until(lambda: all(m.healthy() for m in live), timeout, interval=0.1):
            logs = "\n".join(open(m.log_path, errors="replace").read()[-3000:] for m in live)
            raise AssertionError(f"etcd not healthy after {timeout}s:\n{logs}")

    def restart(self, member):
        member.spawn(self.initial_cluster, state="existing")

    def close(self):
        for m in self.members:
            m.kill()

    def live(self):
        return [m for m in self.members if m.running]

    # --- JSON gateway client (retries on another member while one is down)

    def call(self, path, body, timeout=5.0):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            for m in self.live():
                req = urllib.request.Request(m.url + path, data=json.dumps(body).encode(),
                                             headers={"Content-Type": "application/json"})
                if self.token:
                    req.add_header("Authorization", self.token)
                try:
                    with urllib.request.urlopen(req, timeout=2,
                                                context=m.ssl_context()) as r:
                        return json.load(r)
                except urllib.error.HTTPError as e:
                    last = f"{e.code}: {e.read()[:300]!r}"
                    if e.code < 500:
                        raise AssertionError(f"etcd {path}: {last}") from None
                except OSError as e:
                    last = str(e)
            time.sleep(0.05)
        raise AssertionError(f"etcd {path}: no member answered: {last}")

    def put(self, key, value, lease=None):
        body = {"key": b64(key), "value": b64(value)}
        if lease:
            body["lease"] = str(lease)
        return int(self.call("/v3/kv/put", body)["header"]["revision"])

    def delete(self, key):
        return int(self.call("/v3/kv/deleterange", {"key": b64(key)})["header"]["revision"])

    def revision(self):
        return int(self.call("/v3/kv/range", {"key": b64("\0")})["header"]["revision"])

    def lease_grant(self, ttl_s):
        return int(self.call("/v3/lease/grant", {"TTL": str(ttl_s)})["ID"])

    def ctl(self, *args, user=None, check=True):
        """etcdctl against the live members."""
        cmd = [ETCDCTL, "--endpoints", ",".join(m.url for m in self.live()), "--dial-timeout",
               "2s", "--command-timeout", "5s"]
        if user:
            cmd += ["--user", user]
        r = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=20,
                           env={**os.environ, "ETCDCTL_API": "3"})
        if check and r.returncode != 0:
            raise AssertionError(f"etcdctl {' '.join(args)}: {r.stdout}{r.stderr}")
        return r

    def compact(self, revision):
        self.ctl("compaction", "--physical", str(revision))

    def leader(self):
        """The member that is leader now (asked of each live member), or None."""
        for m in self.live():
            try:
                req = urllib.request.Request(m.url + "/v3/maintenance/status", data=b"{}")
                with urllib.request.urlopen(req, timeout=1) as r:
                    st = json.load(r)
                if st.get("leader") == st["header"]["member_id"]:
                    return m
            except (OSError, ValueError, KeyError):
                pass
        return None

    def enable_auth(self, user, password):
        """A root user (etcd wants one before auth is on) that is `user`, then auth on."""
        self.ctl("user", "add", f"{user}:{password}")
        self.ctl("user", "grant-role", user, "root")
        self.ctl("auth", "enable")
        r = self.call("/v3/auth/authenticate", {"name": user, "password": password})
        self.token = r["token"]


class Relay:
    """A TCP relay to one etcd member that can be cut: cut() closes every relayed connection
    and closes new ones at once until mend()."""

    def __init__(self, target_port):
        import socket
        import threading
        self._socket = socket
        self.target = ("127.0.0.1", target_port)
        self.port = free_port()
        self.blocked = False
        self.frozen = False  # connections stay open, nothing passes
        self._lock = threading.Lock()
        self._conns = set()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(64)
        threading.Thread(target=self._accept_loop, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def _accept_loop(self):
        import threading
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            if self.blocked:
                c.close()
                continue
            try:
                s = self._socket.create_connection(self.target, timeout=2)
                s.settimeout(None)
            except OSError:
                c.close()
                continue
            with self._lock:
                self._conns.update((c, s))
            threading.Thread(target=self._pipe, args=(c, s), daemon=True).start()
            threading.Thread(target=self._pipe, args=(s, c), daemon=True).start()

    def _pipe(self, a, b):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                if not self.frozen:
                    b.sendall(d)
        except OSError:
            pass
        for x in (a, b):
            try:
                x.shutdown(self._socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        self.blocked = True
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for x in conns:
            try:
                x.shutdown(self._socket.SHUT_RDWR)
                x.close()
            except OSError:
                pass

    def freeze(self):
        """A member gone silent (a partition): connections open and stay open, and nothing
        passes either way."""
        self.frozen = True

    def mend(self):
        self.blocked = False
        self.frozen = False

    def close(self):
        self.cut()
        self.sock.close()
