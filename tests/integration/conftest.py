"""Fixtures for zkgate integration tests: a ZooKeeper server per module, kazoo clients,
backends and gateways per test, a time limit per test, the gateway's log on failure."""

import re
import signal

import pytest
from kazoo.client import KazooClient

from etcdharness import EtcdCluster
from zkharness import Backend, Gateway, ZkServer, stop_leftovers

TEST_TIME_LIMIT_S = 45  # the test body is kept under ~40 s; this also bounds its teardown


# ---------------------------------------------------------------------------------------------
# per-test time limit (pytest-timeout is not in Debian's python3-pytest)


class TimeLimitExceeded(Exception):
    pass


@pytest.fixture(autouse=True)
def _time_limit(request):
    def on_alarm(signum, frame):
        raise TimeLimitExceeded(f"{request.node.nodeid} ran longer than {TEST_TIME_LIMIT_S} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, TEST_TIME_LIMIT_S)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ---------------------------------------------------------------------------------------------
# failure reports: attach the logs of every gateway of the test, and ZooKeeper's tail


def _head_and_tail(text, each=12000):
    """A long log's start and end: what happened first (start-up, the first sync) is often what
    explains the failure, and a test's teardown can fill the end."""
    if not text:
        return "(empty)"
    if len(text) <= 2 * each:
        return text
    return (text[:each] + f"\n[... {len(text) - 2 * each} characters left out ...]\n"
            + text[-each:])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed:
        return
    for gw in getattr(item, "_zkgate_gateways", []):
        rep.sections.append((f"zkgate log ({gw.log_path}, pid {gw.pid})",
                             _head_and_tail(gw.log_text())))
    for reg in getattr(item, "_zkgate_registrars", []):
        rep.sections.append((f"zkgate-register log ({reg.log_path}, pid {reg.pid})",
                             _head_and_tail(reg.log_text())))
    zk = getattr(item, "_zk_server", None)
    if zk is not None:
        rep.sections.append((f"ZooKeeper log tail ({zk.log_path})", zk.log_tail(30)))


# ---------------------------------------------------------------------------------------------
# ZooKeeper


def _ensure_zk(zk):
    """Tests may stop or wipe the module's server: bring it back so later tests and clean
    shutdowns (kazoo close, zkgate's closeSession) have a server to talk to."""
    if not zk.running:
        zk.start()


@pytest.fixture(scope="module")
def zk(tmp_path_factory):
    server = ZkServer(tmp_path_factory.mktemp("zk"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _zk_guard(request):
    if "zk" in request.fixturenames:
        request.node._zk_server = request.getfixturevalue("zk")
    yield
    zk = getattr(request.node, "_zk_server", None)
    if zk is not None:
        _ensure_zk(zk)


@pytest.fixture
def kazoo(zk):
    """Factory: kazoo() -> a new connected KazooClient (each its own session).
    All are stopped and closed at teardown (a test may close one itself before)."""
    clients = []

    def make(timeout=10.0):
        _ensure_zk(zk)
        client = KazooClient(hosts=zk.hosts, timeout=timeout)
        client.start(timeout=15)
        clients.append(client)
        return client

    yield make
    _ensure_zk(zk)
    for client in clients:
        try:
            client.stop()
            client.close()
        except Exception:  # already stopped by the test, or its session was refused
            pass


@pytest.fixture
def kz(kazoo):
    return kazoo()


@pytest.fixture
def zpath(request):
    """A zk_path of this test's own: /myRegistry/endpoints/<test name>."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name).strip("_")
    return f"/myRegistry/endpoints/{name}"


# ---------------------------------------------------------------------------------------------
# backends and gateways


def _closing_factory(cls):
    """A fixture's body: yields make(*names, **kw) -> cls(name, **kw) for one name, a list for
    more; closes them all at teardown."""
    made = []

    def make(*names, **kw):
        new = [cls(n, **kw) for n in names]
        made.extend(new)
        return new[0] if len(new) == 1 else new

    yield make
    for b in made:
        b.close()


@pytest.fixture
def backends():
    """Factory: backends("a") -> Backend; backends("a", "b") -> [Backend, Backend].
    ipv6=True binds ::1. All are closed at teardown."""
    yield from _closing_factory(Backend)


@pytest.fixture
def http_backends():
    """Factory: http_backends("a") -> HttpBackend; ("a", "b") -> [HttpBackend, ...]. All are
    closed at teardown."""
    from httpbackend import HttpBackend
    yield from _closing_factory(HttpBackend)


@pytest.fixture
def gateway(request, tmp_path, zk):
    """Factory: gateway(ini_text, listen=PORT or [PORTS]) -> Gateway, started, and listening on
    every port given. At teardown every gateway still running gets SIGTERM and must exit 0;
    one that died during the test is an error too."""
    gateways = []
    request.node._zkgate_gateways = gateways

    def make(ini, listen=(), name=None):
        gw = Gateway(tmp_path, ini, name=name or f"gw{len(gateways)}")
        gateways.append(gw)
        for port in ([listen] if isinstance(listen, int) else listen):
            gw.wait_listening(port)
        return gw

    yield make
    _ensure_zk(zk)
    problems = stop_leftovers(gateways, "zkgate")
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def etcd(tmp_path):
    """A one-member etcd cluster (etcdharness.py)."""
    c = EtcdCluster(tmp_path, 1).start()
    yield c
    c.close()


@pytest.fixture
def etcd3(tmp_path):
    """An etcd cluster of three members."""
    c = EtcdCluster(tmp_path, 3).start()
    yield c
    c.close()
