"""ZooKeeper access: digest authentication against paths an ACL protects (right, wrong and no
credentials; credentials the server refuses), a chroot in the connect string, every host of the
connect string tried, and an ensemble of three whose member serving zkgate is killed.

This module starts and kills ZooKeeper servers of its own: CTest runs it serially."""

import os
import re
import subprocess
import time

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError
from kazoo.security import READ_ACL_UNSAFE, make_digest_acl

from zkharness import (ZkEnsemble, ZkServer, free_port, ini_text, reach, register, sample,
                       wait_pool, wait_until, zkgate_bin)

USER = "gateway"
PASSWORD = "S3cret-pw_41"
WRONG = "Wr0ng-pw_17"


def ini(hosts, zpath, port, auth=None, **zk_keys):
    zookeeper = {"hosts": hosts, "session_timeout": "2s", **zk_keys}
    if auth:
        zookeeper["auth"] = auth
    return ini_text({"svc": {"zk_path": zpath, "listen": f"127.0.0.1:{port}"}},
                    zookeeper=zookeeper, proxy={"log_level": "debug"})


def serving_only(port, names, duration, what):
    """Connect again and again for `duration` s: every connection must reach one of `names`."""
    names = set(names)
    t_end = time.monotonic() + duration
    n = 0
    while time.monotonic() < t_end:
        got = reach(port)
        n += 1
        assert got in names, f"{what}: connection {n} got {got!r}, expected one of {names}"
    return n


def no_secret(gw):
    text = gw.log_text()
    for secret in (PASSWORD, WRONG):
        assert secret not in text, f"a password is in zkgate's log:\n{text}"


def count_lines(gw, text):
    return sum(1 for line in gw.log_text().splitlines() if text in line)


def client(hosts, auth=None):
    kz = KazooClient(hosts=hosts, timeout=10.0,
                     auth_data=[("digest", auth)] if auth else None)
    kz.start(timeout=15)
    return kz


@pytest.fixture
def owner(zk):
    """A kazoo session authenticated as USER:PASSWORD, the owner of the protected paths."""
    kz = client(zk.hosts, f"{USER}:{PASSWORD}")
    yield kz
    kz.stop()
    kz.close()


def protect(kz, zpath):
    """Create zpath readable (and writable) only by USER:PASSWORD; returns that ACL."""
    acl = [make_digest_acl(USER, PASSWORD, all=True)]
    kz.ensure_path(zpath.rsplit("/", 1)[0])
    kz.create(zpath, b"", acl=acl)
    return acl


def register_protected(kz, zpath, backend, acl):
    return kz.create(zpath + "/inst-", f"tcp://{backend.addr}".encode(), acl=acl,
                     ephemeral=True, sequence=True)


# ---------------------------------------------------------------------------------------------
# digest authentication


def test_digest_auth_reads_protected_path(zk, kz, owner, zpath, backends, gateway):
    a, b = backends("a", "b")
    acl = protect(owner, zpath)
    path_a = register_protected(owner, zpath, a, acl)
    with pytest.raises(NoAuthError):
        kz.get_children(zpath)  # the test's premise: anonymous sessions cannot list it
    port = free_port()
    gw = gateway(ini(zk.hosts, zpath, port, auth=f"digest:{USER}:{PASSWORD}"), listen=port)
    assert set(wait_pool(port, ["a"])) == {"a"}, "protected instance not served with the right auth"
    register_protected(owner, zpath, b, acl)
    assert set(wait_pool(port, ["a", "b"])) == {"a", "b"}, "protected new instance not seen"
    owner.delete(path_a)
    seen = wait_pool(port, ["b"])
    assert set(seen) == {"b"}, f"removal of a protected instance not seen: {dict(seen)}"
    assert "denies" not in gw.log_text()
    no_secret(gw)


def test_new_session_after_expiry_authenticates(zk, owner, zpath, backends, gateway):
    a, b, c = backends("a", "b", "c")
    acl = protect(owner, zpath)
    path_a = register_protected(owner, zpath, a, acl)
    register_protected(owner, zpath, b, acl)
    port = free_port()
    before = zk.sessions()
    gw = gateway(ini(zk.hosts, zpath, port, auth=f"digest:{USER}:{PASSWORD}",
                     session_timeout="1s"), listen=port)
    assert set(wait_pool(port, ["a", "b"])) == {"a", "b"}
    ours = zk.sessions() - before
    assert ours, "zkgate holds no ZooKeeper session"
    gw.pause()
    try:
        assert wait_until(lambda: not (ours & zk.sessions()), 5, interval=0.1), \
            "test setup: zkgate's session did not expire while it was stopped"
    finally:
        gw.resume()
    register_protected(owner, zpath, c, acl)
    owner.delete(path_a)
    seen = wait_pool(port, ["b", "c"], timeout=10)
    assert set(seen) == {"b", "c"}, (f"after a session expiry, changes on the protected path "
                                     f"were not seen within 10 s: {dict(seen)}")
    assert count_lines(gw, "info registry: opened ZooKeeper session") == 2, gw.log_text()
    assert "denies" not in gw.log_text()
    no_secret(gw)


@pytest.mark.parametrize("value", [f"digest:{USER}:", f"{PASSWORD}:{USER}",
                                   f"sasl:{USER}:{PASSWORD}", f"digest::{PASSWORD}"])
def test_check_refuses_bad_auth_without_quoting_it(tmp_path, value):
    path = tmp_path / "auth.ini"
    path.write_text(ini("127.0.0.1:2181", "/svc", free_port(), auth=value))
    line = path.read_text().splitlines().index(f"auth = {value}") + 1
    out = subprocess.run([zkgate_bin(), "-t", "-c", str(path)], stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 1
    assert out.stderr.startswith(f"{path}:{line}: auth: "), out.stderr
    assert PASSWORD not in out.stdout + out.stderr


@pytest.mark.parametrize("credentials", ["wrong_password", "none"])
def test_denied_path_is_logged_once_and_retried(zk, owner, zpath, backends, gateway,
                                                credentials):
    a = backends("a")
    acl = protect(owner, zpath)
    path_a = register_protected(owner, zpath, a, acl)
    port = free_port()
    auth = f"digest:{USER}:{WRONG}" if credentials == "wrong_password" else None
    gw = gateway(ini(zk.hosts, zpath, port, auth=auth), listen=port)
    assert gw.wait_log("denies listing it", 5), "no error for a path the ACL denies"
    # Retried every second for 2.5 s: still one line, nothing served, no crash.
    serving_only(port, [None], 2.5, "path denied by its ACL")
    assert count_lines(gw, "denies listing it") == 1, gw.log_text()
    assert count_lines(gw, zpath) >= 1
    expected = f"digest user '{USER}'" if auth else "set [zookeeper] auth"
    assert expected in gw.log_text()
    assert gw.running

    # Granted READ (to the identity the wrong password hashes to, or to anyone): served, with
    # no restart, which proves the retries.
    grant = (make_digest_acl(USER, WRONG, read=True) if auth else READ_ACL_UNSAFE[0])
    owner.set_acls(zpath, acl + [grant])
    owner.set_acls(path_a, acl + [grant])
    seen = wait_pool(port, ["a"], timeout=5)
    assert set(seen) == {"a"}, f"READ granted, instance not served within 5 s: {dict(seen)}"
    assert gw.wait_log("lets us list it now", 1)
    no_secret(gw)


def test_credentials_refused_by_server(tmp_path, zpath, backends, gateway):
    """A server without the digest scheme refuses the credentials themselves: logged once,
    retried once per session timeout, and the last known pools (here from the state file)
    keep serving."""
    server = ZkServer(tmp_path / "nodigest",
                      jvm_args=["-Dzookeeper.DigestAuthenticationProvider.enabled=false"])
    server.start()
    kz = client(server.hosts)
    try:
        a = backends("a")
        register(kz, zpath, f"tcp://{a.addr}".encode())
        state = str(tmp_path / "state.json")
        port = free_port()
        gw1 = gateway(ini(server.hosts, zpath, port, state_file=state), listen=port, name="noauth")
        assert set(wait_pool(port, ["a"])) == {"a"}
        assert wait_until(lambda: os.path.exists(state), 3)
        assert gw1.stop() == 0

        gw = gateway(ini(server.hosts, zpath, port, auth=f"digest:{USER}:{PASSWORD}",
                         session_timeout="1s", state_file=state), listen=port, name="refused")
        refused = f"error registry: ZooKeeper refused the credentials of digest user '{USER}'"
        assert gw.wait_log(refused, 5), "no error for refused credentials"
        serving_only(port, ["a"], 3.5, "credentials refused, state file pool")
        assert count_lines(gw, refused) == 1, gw.log_text()
        assert count_lines(gw, "refused the authentication again") >= 2, \
            f"not retried within 3.5 s (session_timeout = 1s):\n{gw.log_text()}"
        # The first session is announced before its credentials are refused; the retries are
        # not.
        assert count_lines(gw, "info registry: opened ZooKeeper session") == 1, gw.log_text()
        assert gw.running
        no_secret(gw)
    finally:
        kz.stop()
        kz.close()
        server.stop()


# ---------------------------------------------------------------------------------------------
# connect string: chroot, every host tried


def test_chroot(zk, kz, backends, gateway, request):
    chroot = "/chroot-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    zpath = "/svc/web"
    a, b, decoy = backends("a", "b", "decoy")
    register(kz, zpath, f"tcp://{decoy.addr}".encode())  # the same path outside the chroot
    port = free_port()
    gw = gateway(ini(zk.hosts + chroot, zpath, port), listen=port)
    assert gw.wait_log("does not exist (yet)", 5), "the path under a missing chroot not waited for"
    assert gw.wait_log(f"chroot {chroot}", 1), "the chroot is not in the session's log line"
    assert sample(port, 10) == {None: 10}, "served something while the chroot does not exist"

    path_a = register(kz, chroot + zpath, f"tcp://{a.addr}".encode())
    seen = wait_pool(port, ["a"])
    assert set(seen) == {"a"}, f"instance under the chroot not served alone: {dict(seen)}"
    # A change in place: the data watch's path is relative to the chroot too.
    kz.set(path_a, f"tcp://{b.addr}".encode())
    seen = wait_pool(port, ["b"])
    assert set(seen) == {"b"}, f"data change under the chroot not applied: {dict(seen)}"
    kz.delete(path_a)
    assert wait_until(lambda: sample(port, 5) == {None: 5}, 5), "removal under the chroot not seen"
    assert "decoy" not in sample(port, 10)


def test_every_host_is_tried(zk, kz, zpath, backends, gateway):
    a, b = backends("a", "b")
    register(kz, zpath, f"tcp://{a.addr}".encode())
    dead = [free_port(), free_port()]  # nothing listens there: connections are refused
    hosts = f"127.0.0.1:{dead[0]},127.0.0.1:{dead[1]},{zk.hosts}"
    port = free_port()
    gw = gateway(ini(hosts, zpath, port), listen=port)
    assert set(wait_pool(port, ["a"])) == {"a"}, "no service with dead hosts first in the list"
    assert gw.wait_log(f"on {zk.hosts}", 1), "the session line does not name the live host"
    register(kz, zpath, f"tcp://{b.addr}".encode())
    assert set(wait_pool(port, ["a", "b"])) == {"a", "b"}


# ---------------------------------------------------------------------------------------------
# ensemble


def session_of(gw):
    ids = re.findall(r"ZooKeeper session 0x([0-9a-f]+)", gw.log_text())
    return int(ids[-1], 16) if ids else None


def test_ensemble_member_killed(tmp_path, zpath, backends, gateway):
    """The path is protected too: the member zkgate moves to must be given the credentials
    again (ZooKeeper keeps them per connection, not per session)."""
    ensemble = ZkEnsemble(tmp_path / "ensemble")
    ensemble.start()
    kz = None
    try:
        assert sorted(s.mode() for s in ensemble.servers) == ["follower", "follower", "leader"]
        a, b, c = backends("a", "b", "c")
        kz = client(ensemble.hosts, f"{USER}:{PASSWORD}")
        acl = protect(kz, zpath)
        # Persistent instances: the registering session must not matter to the test.
        path_a = kz.create(zpath + "/a", f"tcp://{a.addr}".encode(), acl=acl)
        kz.create(zpath + "/b", f"tcp://{b.addr}".encode(), acl=acl)
        kz.stop()
        kz.close()
        kz = None
        port = free_port()
        gw = gateway(ini(ensemble.hosts, zpath, port, auth=f"digest:{USER}:{PASSWORD}",
                         session_timeout="4s"), listen=port)
        assert set(wait_pool(port, ["a", "b"])) == {"a", "b"}
        sid = session_of(gw)
        assert sid, "no session in zkgate's log"
        member = wait_until(lambda: ensemble.server_of_session(sid), 5)
        assert member, f"no member lists zkgate's session 0x{sid:x}"

        member.kill()
        serving_only(port, ["a", "b"], 2.0, f"member {member.hosts} killed")
        kz = client(ensemble.live_hosts, f"{USER}:{PASSWORD}")
        kz.create(zpath + "/c", f"tcp://{c.addr}".encode(), acl=acl)
        kz.delete(path_a)
        seen = wait_pool(port, ["b", "c"], timeout=10)
        assert set(seen) == {"b", "c"}, (f"after the member zkgate used was killed, adding c and "
                                         f"deleting a were not seen within 10 s: {dict(seen)}")
        now = ensemble.server_of_session(session_of(gw))
        assert now is not None and now is not member
        assert "denies" not in gw.log_text()
        no_secret(gw)
        assert gw.stop() == 0  # while the ensemble can still take the session's close
    finally:
        if kz is not None:
            kz.stop()
            kz.close()
        ensemble.stop()
