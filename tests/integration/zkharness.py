"""Harness for zkgate integration tests.

Everything here runs on loopback with free ports and bounded waits:
- ZkServer: a real ZooKeeper 3.8 server (Debian's libzookeeper-java) as a child process;
- ZkEnsemble: three (or more) of them forming one ensemble on loopback;
- Backend: a named TCP echo server ("<name>\\n", echo, "bye\\n" on EOF);
- Gateway: the zkgate binary under test ($ZKGATE_BIN), with its INI file and stderr log;
- reach()/sample()/wait_until()/register(): the client side and the registering side.
"""

import glob
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import zipfile
from collections import Counter

JAVA_DIR = "/usr/share/java"
ZK_MAIN = "org.apache.zookeeper.server.ZooKeeperServerMain"
ZK_QUORUM_MAIN = "org.apache.zookeeper.server.quorum.QuorumPeerMain"

# zookeeper.jar carries a manifest Class-Path naming its runtime dependencies (jute, slf4j-api,
# netty, metrics-core, snappy, commons-cli, ...), so it alone starts the server. slf4j-simple is
# added so the server's log says something; nop keeps it quiet if simple is missing.
_CP_CANDIDATES = [
    ["zookeeper.jar", "slf4j-simple.jar"],
    ["zookeeper.jar", "slf4j-nop.jar"],
    ["zookeeper.jar"],
]
_FALLBACK_GLOBS = [
    "zookeeper-[0-9]*.jar", "zookeeper-jute-[0-9]*.jar", "slf4j-api.jar", "slf4j-simple.jar",
    "netty-buffer.jar", "netty-codec.jar", "netty-common.jar", "netty-handler.jar",
    "netty-resolver.jar", "netty-transport.jar", "netty-transport-native-epoll.jar",
    "netty-transport-native-unix-common.jar", "metrics-core.jar", "snappy-java.jar",
    "commons-cli.jar", "commons-io.jar", "jline.jar",
]

_used_ports = set()


def _die_with_parent():
    """Command prefix so a child is killed if the test process dies without reaping it (e.g.
    killed by CTest's timeout): no orphaned ZooKeeper servers or gateways holding ports."""
    setpriv = shutil.which("setpriv")  # util-linux, essential in Debian
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []
_ports_lock = threading.Lock()


# ---------------------------------------------------------------------------------------------
# small helpers


def _ephemeral_range():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
            return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def free_port():
    """A loopback port that nothing listens on, distinct from every port handed out before.

    Picked below the kernel's ephemeral range, so outgoing connections made during the tests can
    never take it as their local port between this call and the bind that uses it.
    """
    lo, _ = _ephemeral_range()
    top = min(lo, 65536) - 1
    for _ in range(1000):
        port = random.randint(10000, max(10001, top))
        with _ports_lock:
            if port in _used_ports:
                continue
        ok = True
        for fam, addr in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            s = socket.socket(fam, socket.SOCK_STREAM)
            try:
                s.bind((addr, port))
            except OSError as e:
                if fam == socket.AF_INET or e.errno not in (97, 99):  # no IPv6 here: fine
                    ok = False
            finally:
                s.close()
            if not ok:
                break
        if ok:
            with _ports_lock:
                _used_ports.add(port)
            return port
    raise RuntimeError("no free port found")


def wait_until(predicate, timeout, interval=0.02):
    """Poll predicate every `interval` s until it returns a true value (returned) or timeout
    (returns the last false value)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def reach(port, timeout=2.0, host="127.0.0.1"):
    """Connect to the gateway and read one line: the backend name, or None when the gateway
    closes the connection without data. Raises ConnectionRefusedError when nothing listens and
    TimeoutError when neither data nor a close arrives within `timeout`."""
    deadline = time.monotonic() + timeout
    s = socket.create_connection((host, port), timeout=timeout)
    try:
        buf = b""
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"port {port}: no line and no close within {timeout}s "
                                   f"(got {buf!r})")
            s.settimeout(left)
            try:
                chunk = s.recv(4096)
            except socket.timeout:
                raise TimeoutError(f"port {port}: no line and no close within {timeout}s "
                                   f"(got {buf!r})") from None
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return buf.decode(errors="replace") if buf else None
            buf += chunk
        return buf.split(b"\n", 1)[0].decode(errors="replace")
    finally:
        s.close()


def sample(port, n, timeout=2.0):
    """Counter of reach() results over n sequential connections (None = closed without data)."""
    return Counter(reach(port, timeout) for _ in range(n))


def wait_pool(port, names, timeout=5.0, per_name=8):
    """Wait until a sample of connections reaches exactly the backends `names` (each of them,
    and nothing else). Returns the last sample (a Counter) either way."""
    want = set(names)
    n = max(per_name * max(len(want), 1), 8)
    last = Counter()

    def ok():
        nonlocal last
        last = sample(port, n)
        return set(last) == want

    wait_until(ok, timeout, interval=0.05)
    return last


def register(kz, path, data=b"", name=None):
    """Create an instance znode under `path` (parents made as needed) for the kazoo client's
    session: ephemeral, sequential "inst-NNNNNNNNNN" when name is None. Returns its full path."""
    if name is None:
        return kz.create(path.rstrip("/") + "/inst-", data, ephemeral=True, sequence=True,
                         makepath=True)
    return kz.create(path.rstrip("/") + "/" + name, data, ephemeral=True, makepath=True)


# ---------------------------------------------------------------------------------------------
# ZooKeeper server


def _manifest_classpath(jar):
    try:
        with zipfile.ZipFile(jar) as z:
            text = z.read("META-INF/MANIFEST.MF").decode()
    except (OSError, KeyError, zipfile.BadZipFile):
        return []
    # Manifest lines are folded at 72 bytes: a continuation line starts with one space.
    text = text.replace("\r\n", "\n").replace("\n ", "")
    for line in text.split("\n"):
        if line.startswith("Class-Path:"):
            return line.split(":", 1)[1].split()
    return []


_classpath_cache = None


def zk_classpath():
    """The classpath that starts ZooKeeperServerMain from Debian's jars ($ZK_CLASSPATH wins)."""
    global _classpath_cache
    if os.environ.get("ZK_CLASSPATH"):
        return os.environ["ZK_CLASSPATH"]
    if _classpath_cache:
        return _classpath_cache
    for cand in _CP_CANDIDATES:
        jars = [os.path.join(JAVA_DIR, j) for j in cand]
        if not all(os.path.exists(j) for j in jars):
            continue
        deps = _manifest_classpath(jars[0])
        needed = [d for d in deps if "jetty" not in d and "jline" not in d
                  and "jackson" not in d and "findbugs" not in d]  # admin server / CLI only
        if deps and all(os.path.exists(d) for d in needed):
            _classpath_cache = ":".join(jars)
            return _classpath_cache
    jars = []
    for pat in _FALLBACK_GLOBS:
        jars += sorted(glob.glob(os.path.join(JAVA_DIR, pat)))[:1]
    _classpath_cache = ":".join(jars)
    return _classpath_cache


def four_letter(port, cmd, timeout=2.0, host="127.0.0.1"):
    """Send a ZooKeeper four-letter word and return the whole answer ("" if none)."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(cmd.encode())
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            out += chunk
    return out.decode(errors="replace")


class ZkServer:
    """jvm_args: extra JVM options (system properties such as
    -Dzookeeper.DigestAuthenticationProvider.enabled=false). An ensemble member (ZkEnsemble)
    also has extra zoo.cfg lines, a myid file and QuorumPeerMain as its main class."""

    def __init__(self, tmpdir, tick_ms=200, jvm_args=()):
        self.dir = str(tmpdir)
        self.data_dir = os.path.join(self.dir, "data")
        self.cfg = os.path.join(self.dir, "zoo.cfg")
        self.log_path = os.path.join(self.dir, "zookeeper.log")
        self.tick_ms = tick_ms
        self.jvm_args = list(jvm_args)
        self.extra_cfg = ""
        self.main = ZK_MAIN
        self.port = free_port()
        self.proc = None
        os.makedirs(self.data_dir, exist_ok=True)

    @property
    def hosts(self):
        return f"127.0.0.1:{self.port}"

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def _write_cfg(self):
        with open(self.cfg, "w") as f:
            f.write(f"tickTime={self.tick_ms}\n"
                    f"dataDir={self.data_dir}\n"
                    f"clientPort={self.port}\n"
                    "clientPortAddress=127.0.0.1\n"
                    "maxClientCnxns=0\n"
                    "admin.enableServer=false\n"
                    "4lw.commands.whitelist=*\n"
                    "forceSync=no\n"
                    "preAllocSize=1024\n"
                    + self.extra_cfg)

    def start(self, timeout=30.0):
        self.spawn()
        return self.wait_serving(timeout)

    def spawn(self):
        """Start the process without waiting for it to serve (ensemble members wait for each
        other: they are all spawned first)."""
        assert not self.running, "ZooKeeper already running"
        self._write_cfg()
        cmd = [*_die_with_parent(), "java", "-Xmx128m", "-XX:+UseSerialGC",
               "-XX:TieredStopAtLevel=1", "-Djava.net.preferIPv4Stack=true", *self.jvm_args,
               "-cp", zk_classpath(), self.main, self.cfg]
        with open(self.log_path, "ab") as log:
            log.write(f"==== start {time.strftime('%H:%M:%S')} port {self.port}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=self.dir)

    def wait_serving(self, timeout=30.0):
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                rc = self.proc.returncode
                self.proc = None
                raise RuntimeError(f"ZooKeeper exited with {rc} at start:\n{self.log_tail()}")
            try:
                # Before it serves, srvr answers "not currently serving requests".
                if "Mode:" in four_letter(self.port, "srvr", timeout=1.0):
                    return self
            except OSError:
                pass
            if time.monotonic() >= deadline:
                self.stop()
                raise RuntimeError(f"ZooKeeper not serving after {timeout}s:\n{self.log_tail()}")
            time.sleep(0.05)

    def stop(self):
        """SIGTERM and reap; SIGKILL after 10 s. Returns the exit status (None if not running)."""
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def kill(self):
        """SIGKILL and reap: the server dies without a word to its clients or peers."""
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        proc.kill()
        proc.wait()
        return proc.returncode

    def mode(self):
        """"standalone", "leader", "follower", or None when it does not serve."""
        try:
            m = re.search(r"^Mode: (\w+)", self.four_letter("srvr"), re.M)
        except OSError:
            return None
        return m.group(1) if m else None

    def session_ids(self):
        """Session ids (ints) of the client connections open on this server, from `cons`."""
        try:
            text = self.four_letter("cons")
        except OSError:
            return set()
        return {int(x, 16) for x in re.findall(r"\bsid=0x([0-9a-fA-F]+)", text)}

    def restart(self, wipe=False):
        """Stop and start again on the same port; wipe=True empties the data dir in between
        (a server that has forgotten every session and znode)."""
        self.stop()
        if wipe:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            os.makedirs(self.data_dir)
        # The port may linger in TIME_WAIT from client connections; ZooKeeper binds with
        # SO_REUSEADDR, but retry a few times in case the bind still races.
        for attempt in range(5):
            try:
                return self.start()
            except RuntimeError:
                if attempt == 4:
                    raise
                time.sleep(0.5)

    def four_letter(self, cmd):
        return four_letter(self.port, cmd)

    def sessions(self):
        """Session ids (ints) the server currently holds, from the `dump` four-letter word.

        `dump` lists every live session under "Session Sets": a session stays there until it
        is closed (closeSession) or expires, unlike `cons`, which only lists open sockets."""
        return parse_dump_sessions(self.four_letter("dump"))

    def log_tail(self, lines=40):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""


class ZkEnsemble:
    """`n` ZooKeeper servers on loopback forming one ensemble (QuorumPeerMain): each with its
    own client port, quorum port and election port (server.N=127.0.0.1:QUORUM:ELECTION), data
    directory and myid. `hosts` is the connect string naming all of them.

    tickTime 200 ms: a quorum forms in a few seconds, a follower notices a dead leader within
    syncLimit ticks, and sessions may last up to 20 ticks (4 s), long enough to ride out the
    election that follows the loss of the leader."""

    def __init__(self, tmpdir, n=3, tick_ms=200):
        peers = "".join(f"server.{i + 1}=127.0.0.1:{free_port()}:{free_port()}\n"
                        for i in range(n))
        self.servers = []
        for i in range(n):
            server = ZkServer(os.path.join(str(tmpdir), f"zk{i + 1}"), tick_ms=tick_ms)
            server.main = ZK_QUORUM_MAIN
            server.extra_cfg = "initLimit=20\nsyncLimit=5\n" + peers
            with open(os.path.join(server.data_dir, "myid"), "w") as f:
                f.write(f"{i + 1}\n")
            self.servers.append(server)

    @property
    def hosts(self):
        return ",".join(s.hosts for s in self.servers)

    @property
    def live_hosts(self):
        return ",".join(s.hosts for s in self.servers if s.running)

    def start(self, timeout=30.0):
        """Spawn every member, then wait until each serves (a quorum has formed)."""
        for server in self.servers:
            server.spawn()
        deadline = time.monotonic() + timeout
        try:
            for server in self.servers:
                server.wait_serving(max(1.0, deadline - time.monotonic()))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        for server in self.servers:
            server.stop()

    def server_of_session(self, session_id):
        """The running member whose `cons` lists a connection of that session, or None."""
        for server in self.servers:
            if server.running and session_id in server.session_ids():
                return server
        return None

    def log_tail(self, lines=15):
        return "".join(f"--- {s.hosts}\n{s.log_tail(lines)}" for s in self.servers)


def parse_dump_sessions(text):
    ids = set()
    in_sets = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("Session Sets"):
            in_sets = True
            continue
        if stripped.startswith("ephemeral nodes dump") or stripped.startswith("Connections"):
            in_sets = False
        if in_sets and stripped.startswith("0x"):
            try:
                ids.add(int(stripped, 16))
            except ValueError:
                pass
    return ids


# ---------------------------------------------------------------------------------------------
# Backend


class Backend:
    """TCP server on 127.0.0.1 (or ::1): on accept sends b"<name>\\n", echoes what it reads,
    sends b"bye\\n" and closes on EOF. `accepted` counts accepted connections."""

    def __init__(self, name, ipv6=False, port=None):
        self.name = name
        self.ipv6 = ipv6
        self.host = "::1" if ipv6 else "127.0.0.1"
        self.port = port or free_port()
        self.accepted = 0
        self._lock = threading.Lock()
        self._conns = set()
        self._closed = False
        self.sock = socket.socket(socket.AF_INET6 if ipv6 else socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((self.host, self.port))
        self.sock.listen(128)
        self._thread = threading.Thread(target=self._accept_loop, name=f"backend-{name}",
                                        daemon=True)
        self._thread.start()

    @property
    def addr(self):
        """host:port as written in an INI file or a znode ([::1]:P for IPv6)."""
        return f"[::1]:{self.port}" if self.ipv6 else f"127.0.0.1:{self.port}"

    def _accept_loop(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                if self._closed:
                    conn.close()
                    return
                self.accepted += 1
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            conn.sendall(self.name.encode() + b"\n")
            while True:
                data = conn.recv(65536)
                if not data:
                    conn.sendall(b"bye\n")
                    break
                conn.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._conns.discard(conn)
            try:
                conn.close()
            except OSError:
                pass

    def close(self):
        with self._lock:
            self._closed = True
            conns = list(self._conns)
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(timeout=2)


# ---------------------------------------------------------------------------------------------
# Gateway (zkgate under test)


def executable_from(var, what):
    """The executable file the environment variable `var` names (`what`: what it should be)."""
    path = os.environ.get(var)
    if not path:
        raise RuntimeError(f"{var} is not set: point it at {what}")
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"{var}={path} is not an executable file")
    return path


def zkgate_bin():
    return executable_from("ZKGATE_BIN", "the zkgate binary")


# The whole integration suite runs with one worker and again with two (ctest labels
# "integration" and "workers2"): ZKGATE_TEST_WORKERS picks.
TEST_WORKERS = int(os.environ.get("ZKGATE_TEST_WORKERS", "1"))


def ini_text(services, zookeeper=None, proxy=None, discover=None, admin=None):
    """Render an INI file. services: {name: {key: value}}; zookeeper/proxy: {key: value};
    discover: {name: {key: value}} for [discover:NAME] sections. List values are joined with
    ", "."""
    out = []

    def section(header, kv):
        out.append(f"[{header}]")
        for k, v in kv.items():
            if isinstance(v, (list, tuple)):
                v = ", ".join(str(x) for x in v)
            out.append(f"{k} = {v}")
        out.append("")

    if zookeeper is not None:
        section("zookeeper", zookeeper)
    section("proxy", {"connect_timeout": "2s", "idle_timeout": "60s", "log_level": "info",
                      "workers": TEST_WORKERS, **(proxy or {})})
    if admin is not None:
        section("admin", admin)
    for name, kv in services.items():
        section(f"service:{name}", {"protocol": "tcp", **kv})
    for name, kv in (discover or {}).items():
        section(f"discover:{name}", {"protocol": "http", **kv})
    return "\n".join(out)


class LoggedProcess:
    """A process under test, its stdout and stderr in the file log_path."""

    def __init__(self, argv, log_path, cwd=None, env=None):
        """env: variables added to this process's environment for it."""
        self.log_path = log_path
        self.returncode = None
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen([*_die_with_parent(), *argv], stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT, cwd=cwd,
                                     env={**os.environ, **env} if env else None)
        self.pid = self.proc.pid

    @property
    def running(self):
        return self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        """Send `sig` (SIGCONT first, in case it is stopped), wait, SIGKILL after `timeout` s.
        Returns the exit code (negative: killed by that signal)."""
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGCONT)
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.returncode = self.proc.returncode
        self._log.close()
        return self.returncode

    def pause(self):
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)

    def log_text(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def wait_log(self, text, timeout=5.0):
        return wait_until(lambda: text in self.log_text(), timeout)


def stop_leftovers(procs, what):
    """A fixture's teardown: SIGTERM to each LoggedProcess of `procs` the test left running.
    Returns what went wrong: one that died during the test or exited non-zero on SIGTERM,
    `what` naming them in the messages."""
    problems = []
    for p in procs:
        if p.returncode is not None:  # the test stopped it and checked the result
            continue
        died = p.proc.poll()
        rc = p.stop(signal.SIGTERM)
        if died is not None:
            problems.append(f"{what} pid {p.pid} died during the test with status {rc}")
        elif rc != 0:
            problems.append(f"{what} pid {p.pid} exited with status {rc} on SIGTERM")
    return problems


class Gateway(LoggedProcess):
    def __init__(self, tmpdir, ini, name="gw", args=None):
        self.dir = str(tmpdir)
        self.ini_path = os.path.join(self.dir, f"{name}.ini")
        with open(self.ini_path, "w") as f:
            f.write(ini)
        super().__init__([zkgate_bin(), *(args or []), "-c", self.ini_path],
                         os.path.join(self.dir, f"{name}.log"), cwd=self.dir)

    def wait_listening(self, port, timeout=10.0, host="127.0.0.1"):
        """Connect until the listener accepts (the connection is then closed at once)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"zkgate exited with {self.proc.returncode} before "
                                     f"listening on {port}:\n{self.log_text()}")
            try:
                socket.create_connection((host, port), timeout=1.0).close()
                return self
            except OSError:
                pass
            if time.monotonic() >= deadline:
                raise AssertionError(f"zkgate not listening on {host}:{port} after {timeout}s:"
                                     f"\n{self.log_text()}")
            time.sleep(0.02)


class ConnServer:
    """A TCP server on 127.0.0.1 (a free port: `port`, `addr`) that runs self.serve(conn, n) in
    a thread per accepted connection, n its index from 0; `conns` counts them. stop() closes
    the listener. Subclasses define serve() and call super().__init__() last."""

    def __init__(self, backlog=64):
        self.conns = 0
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=backlog)
        self.port = self.sock.getsockname()[1]
        self.addr = f"127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            n = self.conns
            self.conns += 1
            threading.Thread(target=self.serve, args=(conn, n), daemon=True).start()

    def stop(self):
        self.sock.close()


class Blackhole:
    """A listening socket (backlog 0) whose accept queue is filled and never accepted: Linux
    then drops further SYNs, so a connect to it neither completes nor fails (until the
    connecting side's own timeout)."""

    def __init__(self):
        self.port = free_port()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(0)
        self.fillers = []
        for _ in range(8):
            c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            c.settimeout(0.2)
            try:
                c.connect(("127.0.0.1", self.port))
                self.fillers.append(c)
            except socket.timeout:
                c.close()
                break
        else:
            raise RuntimeError("could not fill the accept queue of the blackhole listener")

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    def connect_hangs(self, timeout=0.3):
        """True when a plain connect() to it times out (what the test relies on)."""
        c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        c.settimeout(timeout)
        try:
            c.connect(("127.0.0.1", self.port))
            return False
        except socket.timeout:
            return True
        finally:
            c.close()

    def close(self):
        for c in self.fillers:
            c.close()
        self.sock.close()
