"""zkgate-register --etcd: the built binary ($ZKGATE_REGISTER_BIN) against real etcd processes
(Debian's etcd-server 3.4, one member or a cluster of three, etcdharness.py), real backends and
a real zkgate reading the same prefix. The key PREFIX + host:port lives under a lease kept alive
while the check passes; SIGTERM revokes it at once, SIGKILL lets it expire after the TTL; a
failing check removes it and recovery puts it back; a lost lease or a deleted key is put again;
a member killed in a cluster of three changes nothing; auth; bad options exit 2. Every wait
polls for the event with a deadline.

This module starts etcd clusters and kills their members: CTest runs it serially."""

import base64
import os
import signal
import subprocess
import time

import pytest

from etcdharness import EtcdCluster, b64
from test_etcd import etcd_ini
from test_register import HealthServer, register_bin, registrars  # noqa: F401 (a fixture)
from zkharness import free_port, wait_pool, wait_until


@pytest.fixture
def eregistrar(registrars):
    """Factory: eregistrar(endpoints, prefix, address, *more_args, env=None) -> a running
    zkgate-register --etcd (test_register's registrars)."""
    def make(endpoints, prefix, address, *args, env=None):
        return registrars(["--etcd", endpoints, "--prefix", prefix, "--address", address, *args],
                          env=env)

    return make


def keys(etcd, prefix):
    """{key: (value, lease)} under prefix, read from the cluster."""
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    r = etcd.call("/v3/kv/range", {"key": b64(prefix), "range_end": b64(end)})
    return {base64.b64decode(kv["key"]).decode(): (base64.b64decode(kv.get("value", "")).decode(),
                                                   int(kv.get("lease", "0")))
            for kv in r.get("kvs", [])}


def wait_key(etcd, key, timeout=10.0, other_lease=None):
    """(value, lease) of `key` once it exists (under a lease other than `other_lease`)."""
    def found():
        kv = keys(etcd, key).get(key)
        return kv if kv and kv[1] != other_lease else None
    kv = wait_until(found, timeout, interval=0.02)
    assert kv, f"{key} not there within {timeout} s: {keys(etcd, '/')}"
    return kv


def test_registers_gateway_routes_and_sigterm_removes_at_once(etcd, gateway, backends,
                                                               eregistrar):
    """The key is PREFIX + host:port with the url format's data, under a lease with the TTL
    asked; the gateway reading the prefix routes to it; SIGTERM revokes the lease, so the key
    goes at once (the TTL is 30 s) and the process exits 0."""
    a = backends("a")
    reg = eregistrar(etcd.endpoints, "/services/web/", a.addr, "--ttl", "30s")
    key = f"/services/web/{a.addr}"
    value, lease = wait_key(etcd, key)
    assert value == f"http://{a.addr}", value
    assert lease != 0
    ttl = etcd.call("/v3/lease/timetolive", {"ID": str(lease)})
    assert 25 <= int(ttl["grantedTTL"]) <= 30, ttl
    port = free_port()
    gateway(etcd_ini(etcd.endpoints, {"web": {"etcd_prefix": "/services/web/",
                                              "listen": f"127.0.0.1:{port}"}}), listen=port)
    assert set(wait_pool(port, ["a"])) == {"a"}
    t0 = time.monotonic()
    assert reg.stop(signal.SIGTERM) == 0
    assert wait_until(lambda: key not in keys(etcd, "/services/"), 3, interval=0.02), \
        "the key outlived SIGTERM"
    assert time.monotonic() - t0 < 5, "removed by the TTL, not by the revoke"
    assert f"lease {lease:x} revoked: {key} removed" in reg.log_text(), reg.log_text()
    assert set(wait_pool(port, [])) == {None}  # every connection closed: no instance


def test_keepalive_holds_the_key_past_the_ttl(etcd, eregistrar, backends):
    """With a 2 s TTL the key is still there, under the same lease, after three TTLs."""
    a = backends("a")
    eregistrar(etcd.endpoints, "/k/web/", a.addr, "--ttl", "2s")
    key = f"/k/web/{a.addr}"
    _, lease = wait_key(etcd, key)
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        assert keys(etcd, "/k/").get(key, (None, None))[1] == lease, "the key lapsed"
        time.sleep(0.1)


def test_sigkill_lets_the_lease_expire(etcd, eregistrar, backends):
    """SIGKILL revokes nothing: the key stays until etcd expires the lease (TTL 3 s)."""
    a = backends("a")
    reg = eregistrar(etcd.endpoints, "/x/web/", a.addr, "--ttl", "3s")
    key = f"/x/web/{a.addr}"
    wait_key(etcd, key)
    t0 = time.monotonic()
    reg.stop(signal.SIGKILL)
    assert key in keys(etcd, "/x/"), "gone at once after SIGKILL: nothing could revoke it"
    assert wait_until(lambda: key not in keys(etcd, "/x/"), 15, interval=0.1), \
        "the key outlived its lease"
    took = time.monotonic() - t0
    assert took >= 1.5, f"gone {took:.1f} s after SIGKILL: before the TTL"


def test_failing_check_removes_the_key_and_recovery_puts_it_back(etcd, eregistrar):
    """An HTTP check: `fall` 503s revoke the lease (the key goes), `rise` 200s put it back under
    a new lease, with the curator format's data."""
    hs = HealthServer()
    try:
        reg = eregistrar(etcd.endpoints, "/h/api/", hs.addr, "--format", "curator",
                         "--check", "http:/health", "--interval", "100ms", "--rise", "1",
                         "--fall", "2", "--ttl", "30s")
        key = f"/h/api/{hs.addr}"
        value, lease = wait_key(etcd, key)
        assert '"name":"api"' in value.replace(" ", ""), value
        hs.status = 503
        assert wait_until(lambda: key not in keys(etcd, "/h/"), 5, interval=0.02), \
            "still registered after 503s"
        assert reg.wait_log(f"unhealthy (http check: HTTP 503; 2 failed in a row): removing "
                            f"{key}")
        hs.status = 200
        _, lease2 = wait_key(etcd, key, other_lease=lease)
        assert lease2 != lease
    finally:
        hs.close()


def test_lost_lease_and_deleted_key_are_put_again(etcd, eregistrar, backends):
    """Someone revokes the lease: a new one is granted and the key put again. Someone deletes
    the key: it is put again (found by the read after a keep-alive)."""
    a = backends("a")
    reg = eregistrar(etcd.endpoints, "/r/web/", a.addr, "--ttl", "3s")
    key = f"/r/web/{a.addr}"
    _, lease = wait_key(etcd, key)
    etcd.call("/v3/lease/revoke", {"ID": str(lease)})
    _, lease2 = wait_key(etcd, key, timeout=5, other_lease=lease)
    assert reg.wait_log(f"lease {lease:x}"), reg.log_text()
    etcd.delete(key)
    assert wait_key(etcd, key, timeout=5)[1] == lease2
    assert reg.wait_log(f"{key} is gone (deleted by someone): putting it again")


def test_member_killed_in_a_cluster_of_three_keeps_the_key(etcd3, eregistrar, backends):
    """The member in use (the first endpoint) is killed: the registrar moves to the next and
    the key never lapses; the member back changes nothing."""
    a = backends("a")
    reg = eregistrar(etcd3.endpoints, "/f/web/", a.addr, "--ttl", "3s")
    key = f"/f/web/{a.addr}"
    _, lease = wait_key(etcd3, key)
    first = etcd3.members[0]
    first.kill()
    deadline = time.monotonic() + 8  # more than two TTLs
    while time.monotonic() < deadline:
        assert keys(etcd3, "/f/").get(key, (None, None))[1] == lease, \
            f"the key lapsed with a member down:\n{reg.log_text()}"
        time.sleep(0.1)
    assert f"on {first.url}" in reg.log_text(), reg.log_text()
    etcd3.restart(first)
    etcd3.wait_healthy()
    assert keys(etcd3, "/f/").get(key, (None, None))[1] == lease


def test_auth_password_option_and_environment(etcd, eregistrar, backends):
    """With etcd auth on: --username with --password, or with ZKGATE_ETCD_PASSWORD, registers
    (the password is blanked in the command line); a wrong password is refused, logged, and
    nothing is written."""
    a, b, c = backends("a", "b", "c")
    etcd.enable_auth("root", "s3cret")
    r1 = eregistrar(etcd.endpoints, "/a/web/", a.addr, "--username", "root", "--password",
                    "s3cret")
    eregistrar(etcd.endpoints, "/a/web/", b.addr, "--username", "root",
               env={"ZKGATE_ETCD_PASSWORD": "s3cret"})
    bad = eregistrar(etcd.endpoints, "/a/web/", c.addr, "--username", "root", "--password",
                     "wrong")
    wait_key(etcd, f"/a/web/{a.addr}")
    wait_key(etcd, f"/a/web/{b.addr}")
    with open(f"/proc/{r1.pid}/cmdline", "rb") as f:
        assert b"s3cret" not in f.read()
    assert bad.wait_log("authenticate refused", timeout=10), bad.log_text()
    assert f"/a/web/{c.addr}" not in keys(etcd, "/a/")


@pytest.mark.parametrize("args, message", [
    (["--etcd", "http://127.0.0.1:1", "--zk", "127.0.0.1:2181", "--prefix", "/p/",
      "--address", "127.0.0.1:80"], "--zk is for ZooKeeper (--zk): --etcd and --zk are exclusive"),
    (["--etcd", "127.0.0.1:2379", "--prefix", "/p/", "--address", "127.0.0.1:80"],
     "--etcd '127.0.0.1:2379': expected http://HOST:PORT"),
    (["--etcd", "http://127.0.0.1:2379", "--address", "127.0.0.1:80"], "missing --prefix"),
    (["--etcd", "http://127.0.0.1:2379", "--prefix", "/p/", "--address", "127.0.0.1:80",
      "--ttl", "1500ms"], "--ttl '1500ms': expected whole seconds from 2s to 1h"),
    (["--etcd", "http://127.0.0.1:2379", "--prefix", "/p/", "--address", "127.0.0.1:80",
      "--username", "u"], "--username needs a password"),
    (["--etcd", "http://127.0.0.1:2379", "--prefix", "/p/", "--address", "127.0.0.1:80",
      "--password", "p"], "--password needs --username"),
    (["--etcd", "http://127.0.0.1:2379", "--prefix", "/p/", "--address", "127.0.0.1:80",
      "--ca", "/etc/hostname"], "--ca, --cert and --key are for https:// endpoints only"),
    (["--etcd", "https://127.0.0.1:2379", "--prefix", "/p/", "--address", "127.0.0.1:80",
      "--cert", "/etc/hostname"], "--cert and --key go together"),
    (["--etcd", "https://127.0.0.1:2379", "--prefix", "/p/", "--address", "127.0.0.1:80",
      "--ca", "/nonexistent.pem"], "--ca '/nonexistent.pem': cannot read it"),
    (["--zk", "127.0.0.1:2181", "--path", "/p", "--address", "127.0.0.1:80", "--ttl", "5s"],
     "--ttl is for etcd: add --etcd ENDPOINTS"),
    (["--etcd", "http://127.0.0.1:2379", "--prefix", "/p/", "--address", "127.0.0.1:80",
      "--session-timeout", "5s"], "--session-timeout is for ZooKeeper"),
])
def test_bad_options_exit_2(args, message):
    r = subprocess.run([register_bin(), *args], capture_output=True, text=True, timeout=10,
                       env={**os.environ, "ZKGATE_ETCD_PASSWORD": ""})
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert message in r.stderr, r.stderr
    assert "see zkgate-register --help" in r.stderr


def test_help_lists_the_etcd_options():
    r = subprocess.run([register_bin(), "--help"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and r.stderr == ""
    for option in ("--etcd ENDPOINTS", "--prefix PREFIX", "--ttl DURATION", "--username USER",
                   "--password PASSWORD", "ZKGATE_ETCD_PASSWORD", "--ca FILE", "--cert FILE",
                   "--key FILE", "PREFIX + HOST:PORT"):
        assert option in r.stdout, f"--help does not mention {option}"


def test_tls_with_client_certificate(tmp_path, eregistrar, backends):
    """https:// endpoints: etcd's certificate checked against --ca, --cert and --key shown to an
    etcd that asks for client certificates; without them etcd refuses the handshake, which is
    logged with a hint and writes nothing."""
    from test_upstream_tls import UpstreamPki
    (tmp_path / "pki").mkdir()
    pki = UpstreamPki(tmp_path / "pki")
    server = pki.leaf_san("etcd", "localhost", "DNS:localhost,IP:127.0.0.1")
    client = pki.leaf_san("reg", "reg", "DNS:reg")
    ca = pki.path(pki.ca + ".crt")
    cluster = EtcdCluster(tmp_path, 1, tls=(server[0], server[1], ca)).start()
    try:
        a, b = backends("a", "b")
        reg = eregistrar(cluster.endpoints, "/tls/web/", a.addr, "--ca", ca, "--cert",
                         client[0], "--key", client[1])
        wait_key(cluster, f"/tls/web/{a.addr}")
        bad = eregistrar(cluster.endpoints, "/tls/web/", b.addr, "--ca", ca)
        assert bad.wait_log("does it want a client certificate: --cert and --key?",
                            timeout=5), bad.log_text()
        assert f"/tls/web/{b.addr}" not in keys(cluster, "/tls/")
        assert reg.stop() == 0
        assert f"/tls/web/{a.addr}" not in keys(cluster, "/tls/")
    finally:
        cluster.close()


def test_dead_endpoint_and_etcd_down_at_start(etcd, eregistrar, backends):
    """The first endpoint never answers (nothing listens) and etcd itself is down when the
    registrar starts: both are retried, logged, never fatal; once etcd is back the key is put
    through the live endpoint."""
    a = backends("a")
    member = etcd.members[0]
    member.stop()
    dead = f"http://127.0.0.1:{free_port()}"
    reg = eregistrar(f"{dead},{etcd.endpoints}", "/d/web/", a.addr, "--ttl", "5s")
    assert reg.wait_log(f"on {dead}", timeout=5), reg.log_text()
    assert reg.wait_log(f"on {member.url}", timeout=5), reg.log_text()
    assert reg.running
    etcd.restart(member)
    etcd.wait_healthy()
    wait_key(etcd, f"/d/web/{a.addr}", timeout=10)
