"""The container image of docker/Dockerfile, built with podman by scripts/image.sh (base image
debootstrapped locally, build cache kept between runs) and run with the host network against a
ZooKeeper server and HTTP backends started here: its shipped configuration is valid, a request
is forwarded to the instances registered in ZooKeeper, /healthz and the HEALTHCHECK answer,
zkgate runs as a non-root user, and `podman stop` (SIGTERM) ends it with status 0 after it
closed its ZooKeeper session."""

import os
import subprocess
import sys
import time
import urllib.request

import pytest

SRC = os.environ.get("ZKGATE_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))

from kazoo.client import KazooClient  # noqa: E402

from httpbackend import HttpBackend  # noqa: E402
from zkharness import ZkServer, free_port, register, wait_until  # noqa: E402

TAG = "localhost/zkgate:test"
IMAGE_SH = os.path.join(SRC, "scripts", "image.sh")


def podman(*args, timeout=120, check=True):
    """podman with the settings of scripts/image.sh (its storage, runc, cgroupfs, ...)."""
    res = subprocess.run(["bash", IMAGE_SH, "podman", *args], capture_output=True, text=True,
                         timeout=timeout, stdin=subprocess.DEVNULL)
    if check and res.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {res.returncode}:\n"
                             f"{res.stdout}\n{res.stderr}")
    return res


def http_get(url, timeout=3.0):
    """(status, headers, body) of a GET; HTTP errors are answers too."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


@pytest.fixture(scope="module")
def image():
    started = time.monotonic()
    res = subprocess.run(["bash", IMAGE_SH, "build", TAG], capture_output=True, text=True,
                         timeout=1500, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, f"image build failed:\n{res.stdout[-5000:]}\n{res.stderr[-20000:]}"
    # Shown with -s / on failure: how long the build took (from scratch or from cache).
    print(f"image {TAG} built in {time.monotonic() - started:.0f} s")
    return TAG


@pytest.fixture(scope="module")
def zk(tmp_path_factory):
    server = ZkServer(tmp_path_factory.mktemp("zk"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def kz(zk):
    client = KazooClient(hosts=zk.hosts, timeout=10.0)
    client.start(timeout=15)
    yield client
    client.stop()
    client.close()


def test_image_config_and_metadata(image):
    # The shipped /etc/zkgate/zkgate.ini passes the check, through the image's ENTRYPOINT.
    res = podman("run", "--rm", "--health-interval", "disable", image,
                 "-t", "-c", "/etc/zkgate/zkgate.ini")
    assert "configuration ok" in res.stderr, res.stderr
    fmt = ("{{.Config.User}}|{{json .Config.Entrypoint}}|{{json .Config.Cmd}}|"
           "{{json .Config.Healthcheck.Test}}|{{.Config.StopSignal}}")
    user, entrypoint, cmd, health, stop = podman("image", "inspect", "--format", fmt,
                                                 image).stdout.strip().split("|")
    assert user == "zkgate"
    assert entrypoint == '["zkgate"]' and cmd == '["-c","/etc/zkgate/zkgate.ini"]'
    assert health == '["CMD","zkgate-healthcheck"]' and stop == "SIGTERM"
    # Only the programs, and exactly the libraries they need: nothing left unresolved.
    res = podman("run", "--rm", "--health-interval", "disable", "--entrypoint", "bash", image,
                 "-c", "ldd /usr/local/bin/zkgate*; ls /usr/local/bin")
    assert "not found" not in res.stdout, res.stdout
    assert "zkgate" in res.stdout.split() and "zkgate-healthcheck" in res.stdout.split()


def test_container_forwards_answers_health_runs_unprivileged_and_stops_cleanly(
        image, zk, kz, tmp_path):
    http_port, admin_port = free_port(), free_port()
    zk_path = "/myRegistry/endpoints/web"
    conf = tmp_path / "zkgate.ini"
    conf.write_text(f"""
[zookeeper]
hosts = {zk.hosts}
session_timeout = 4s

[proxy]
log_level = info
drain_timeout = 2s

[admin]
listen = 127.0.0.1:{admin_port}

[service:web]
zk_path = {zk_path}
protocol = http
listen = 127.0.0.1:{http_port}
""")
    conf.chmod(0o644)  # read by the container's zkgate user
    backends = [HttpBackend("one"), HttpBackend("two")]
    name = f"zkgate-test-{os.getpid()}"
    sidecar = f"zkgate-register-test-{os.getpid()}"
    sessions_before = zk.sessions()
    podman("run", "-d", "--name", name, "--network", "host", "--health-interval", "disable",
           "-e", f"ZKGATE_ADMIN=127.0.0.1:{admin_port}",
           "-v", f"{conf}:/etc/zkgate/zkgate.ini:ro", image)
    try:
        def healthz():
            try:
                return http_get(f"http://127.0.0.1:{admin_port}/healthz")
            except OSError:
                return None
        answer = wait_until(healthz, 20, interval=0.1)
        assert answer, "no /healthz answer:\n" + podman("logs", name, check=False).stderr
        assert answer[0] == 200 and answer[2] == b"ok\n", answer

        # The HEALTHCHECK of the image, as the engine runs it; and failing when nothing answers.
        res = podman("healthcheck", "run", name, check=False)
        assert res.returncode == 0 and "unhealthy" not in res.stdout, res.stdout + res.stderr
        res = podman("exec", "-e", "ZKGATE_ADMIN=127.0.0.1:1", name, "zkgate-healthcheck",
                     check=False)
        assert res.returncode == 1, f"{res.returncode}: {res.stdout}{res.stderr}"

        # Not root: the process itself, seen from the host.
        pid = int(podman("inspect", "--format", "{{.State.Pid}}", name).stdout)
        with open(f"/proc/{pid}/status") as f:
            uids = next(line for line in f if line.startswith("Uid:")).split()[1:]
        assert uids and all(u != "0" for u in uids), f"zkgate runs with uids {uids}"
        assert podman("exec", name, "id", "-un").stdout.strip() == "zkgate"

        # Registered in ZooKeeper, reached through the container, both of them: one written
        # here, the other by a sidecar of the same image running zkgate-register with an HTTP
        # check, as docker/compose.yml does.
        register(kz, zk_path, f"http://{backends[0].addr}".encode())
        podman("run", "-d", "--name", sidecar, "--network", "host", "--health-interval",
               "disable", "--entrypoint", "zkgate-register", image, "--zk", zk.hosts,
               "--path", zk_path, "--address", backends[1].addr, "--check", "http:/",
               "--interval", "200ms")
        seen = set()

        def both():
            status, headers, _ = http_get(f"http://127.0.0.1:{http_port}/x")
            if status == 200:
                seen.add(headers["X-Backend"])
            return seen == {"one", "two"}
        assert wait_until(both, 15, interval=0.02), f"reached only {seen}"
        children = kz.get_children(zk_path)
        assert len(children) == 2, children

        # The sidecar stopped: its znode goes at once, and so does the instance.
        podman("stop", "-t", "10", sidecar, timeout=60)
        assert wait_until(lambda: len(kz.get_children(zk_path)) == 1, 5, interval=0.05), \
            kz.get_children(zk_path)
        def only_one():
            answers = [http_get(f"http://127.0.0.1:{http_port}/x") for _ in range(10)]
            return all(a[0] == 200 and a[1]["X-Backend"] == "one" for a in answers)
        assert wait_until(only_one, 5, interval=0.05), "the removed instance still gets requests"
        zkgate_sessions = zk.sessions() - sessions_before - {kz.client_id[0]}
        assert len(zkgate_sessions) == 1, zkgate_sessions

        # SIGTERM: a clean exit, promptly, with its ZooKeeper session closed (not left to expire).
        started = time.monotonic()
        podman("stop", "-t", "20", name, timeout=60)
        took = time.monotonic() - started
        state = podman("inspect", "--format", "{{.State.ExitCode}} {{.State.OOMKilled}}",
                       name).stdout.split()
        res = podman("logs", name)
        logs = res.stdout + res.stderr
        assert state == ["0", "false"], f"exit state {state}:\n{logs}"
        assert took < 10, f"podman stop took {took:.1f} s:\n{logs}"
        assert "stopped" in logs, logs
        assert not (zk.sessions() & zkgate_sessions), "zkgate's ZooKeeper session still open"
    finally:
        podman("rm", "-f", name, check=False)
        podman("rm", "-f", sidecar, check=False)
        for b in backends:
            b.close()


def test_shipped_config_from_environment(image, zk, kz):
    """The image's own configuration, unchanged, pointed at this ZooKeeper and these ports by
    ZKGATE_ZK_HOSTS, ZKGATE_HTTP_PORT and ZKGATE_ADMIN (${VAR:-default} in the file), with the
    admin API's credentials from ZKGATE_ADMIN_AUTH: requests are forwarded, /healthz answers
    without credentials, /services and the dashboard only with them."""
    http_port, admin_port = free_port(), free_port()
    zk_path = "/myRegistry/endpoints/web"  # what docker/zkgate.ini routes
    backend = HttpBackend("env")
    name = f"zkgate-env-test-{os.getpid()}"
    podman("run", "-d", "--name", name, "--network", "host", "--health-interval", "disable",
           "-e", f"ZKGATE_ZK_HOSTS={zk.hosts}", "-e", f"ZKGATE_HTTP_PORT={http_port}",
           "-e", f"ZKGATE_ADMIN=127.0.0.1:{admin_port}", "-e", "ZKGATE_ADMIN_AUTH=bearer:s3cr3t",
           image)
    try:
        def healthz():
            try:
                return http_get(f"http://127.0.0.1:{admin_port}/healthz")
            except OSError:
                return None
        answer = wait_until(healthz, 20, interval=0.1)
        assert answer and answer[0] == 200, podman("logs", name, check=False).stderr
        res = podman("healthcheck", "run", name, check=False)
        assert res.returncode == 0, res.stdout + res.stderr
        path = register(kz, zk_path, f"http://{backend.addr}".encode())

        def reached():
            try:
                status, headers, _ = http_get(f"http://127.0.0.1:{http_port}/x")
            except OSError:
                return False
            return status == 200 and headers["X-Backend"] == "env"
        assert wait_until(reached, 15, interval=0.05), podman("logs", name, check=False).stderr
        assert http_get(f"http://127.0.0.1:{admin_port}/services")[0] == 401
        req = urllib.request.Request(f"http://127.0.0.1:{admin_port}/services",
                                     headers={"Authorization": "Bearer s3cr3t"})
        with urllib.request.urlopen(req, timeout=3) as r:
            assert r.status == 200 and http_port and str(http_port) in r.read().decode()
        status, headers, body = http_get(
            f"http://127.0.0.1:{admin_port}/?access_token=s3cr3t")
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        kz.delete(path)
        podman("stop", "-t", "20", name, timeout=60)
        res = podman("logs", name)
        assert "s3cr3t" not in res.stdout + res.stderr
    finally:
        podman("rm", "-f", name, check=False)
        backend.close()
