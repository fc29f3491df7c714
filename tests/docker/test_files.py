"""docker/: the Dockerfile passes dockerfilelint and dockerfile-utils (npm, through npx), and
compose.yml is YAML with the services the README promises, wired as it says."""

import os
import re
import subprocess

import pytest
import yaml

SRC = os.environ.get("ZKGATE_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
DOCKER = os.path.join(SRC, "docker")

# Pinned, so that a new release of a linter cannot turn CI red on its own.
LINTERS = {
    "dockerfilelint": ["npx", "--yes", "dockerfilelint@1.8.0"],
    "dockerfile-utils": ["npx", "--yes", "dockerfile-utils@0.16.3", "lint"],
}


@pytest.mark.parametrize("linter", sorted(LINTERS))
def test_dockerfile_lint(linter):
    res = subprocess.run([*LINTERS[linter], os.path.join(DOCKER, "Dockerfile")],
                         capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, f"{linter}:\n{res.stdout}\n{res.stderr}"


def instructions():
    """(INSTRUCTION, arguments) of docker/Dockerfile, continuation lines joined."""
    text = open(os.path.join(DOCKER, "Dockerfile")).read()
    text = re.sub(r"\\\n", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_shape():
    ins = instructions()
    froms = [a for i, a in ins if i == "FROM"]
    assert froms == ["debian:bookworm-slim AS build", "debian:bookworm-slim"], froms
    runtime = ins[[i for i, _ in ins].index("FROM", 1):]
    last = {i: a for i, a in runtime}
    assert last["USER"] not in ("root", "0"), last["USER"]
    assert last["ENTRYPOINT"] == '["zkgate"]'
    assert last["CMD"] == '["-c", "/etc/zkgate/zkgate.ini"]'
    assert "zkgate-healthcheck" in last["HEALTHCHECK"]
    assert set(last["EXPOSE"].split()) == {"8080", "9901"}
    # The runtime stage installs libraries, never a compiler or -dev package.
    run = " ".join(a for i, a in runtime if i == "RUN")
    assert not re.search(r"-dev\b|build-essential|cmake|curl", run), run


def test_shipped_config_matches_what_the_image_promises():
    text = open(os.path.join(DOCKER, "zkgate.ini")).read()
    # The admin API stays on the container's loopback unless the operator says otherwise.
    # Defaults that the environment may override (${VAR:-default}); the admin address is the
    # variable the HEALTHCHECK asks, so that both move together.
    assert re.search(r"^\[admin\]\s*\nlisten = \$\{ZKGATE_ADMIN:-127\.0\.0\.1:9901\}$", text,
                     re.M)
    assert re.search(r"^listen = 0\.0\.0\.0:\$\{ZKGATE_HTTP_PORT:-8080\}$", text, re.M)
    assert re.search(r"^hosts = \$\{ZKGATE_ZK_HOSTS:-zookeeper:2181\}$", text, re.M)


def test_shipped_config_checks_with_and_without_environment():
    """zkgate -t accepts the shipped file as is and with every variable set."""
    binary = os.environ.get("ZKGATE_BIN")
    if not binary:
        build = os.environ.get("ZKGATE_BUILD_DIR", os.path.join(DOCKER, "..", "build"))
        binary = os.path.join(build, "zkgate")
    conf = os.path.join(DOCKER, "zkgate.ini")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZKGATE_")}
    r = subprocess.run([binary, "-t", "-c", conf], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    env.update(ZKGATE_ZK_HOSTS="zk1:2181,zk2:2181/gw", ZKGATE_HTTP_PORT="18080",
               ZKGATE_ADMIN="0.0.0.0:19901", ZKGATE_ADMIN_AUTH="bearer:t0ken")
    r = subprocess.run([binary, "-t", "-c", conf], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    env["ZKGATE_HTTP_PORT"] = "19901"  # now the admin address: the check must see it
    r = subprocess.run([binary, "-t", "-c", conf], env=env, capture_output=True, text=True)
    assert r.returncode == 1 and "already used" in r.stderr, r.stderr
    env["ZKGATE_HTTP_PORT"] = "18080"
    env["ZKGATE_ADMIN_AUTH"] = "t0ken"  # no scheme: refused, and not echoed
    r = subprocess.run([binary, "-t", "-c", conf], env=env, capture_output=True, text=True)
    assert r.returncode == 1 and "auth: expected bearer:TOKEN" in r.stderr, r.stderr
    assert "t0ken" not in r.stderr


def test_compose_services():
    with open(os.path.join(DOCKER, "compose.yml")) as f:
        doc = yaml.safe_load(f)
    services = doc["services"]
    assert set(services) == {"zookeeper", "zkgate", "web-1", "web-1-register", "web-2",
                             "web-2-register"}
    assert services["zookeeper"]["image"].startswith("zookeeper:")
    gw = services["zkgate"]
    assert gw["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
    assert os.path.isfile(os.path.join(DOCKER, gw["build"]["context"],
                                       gw["build"]["dockerfile"]))
    assert "8080:8080" in gw["ports"]
    # Publishing the admin port would reach nothing: it listens on the container's loopback.
    assert not any("9901" in p for p in gw["ports"]), gw["ports"]
    assert "./zkgate.ini:/etc/zkgate/zkgate.ini:ro" in gw["volumes"]
    assert "zookeeper" in gw["depends_on"]
    for n in (1, 2):
        web, reg = services[f"web-{n}"], services[f"web-{n}-register"]
        port = re.search(r"-p (\d+)", " ".join(web["command"])).group(1)
        assert reg["image"] == gw["image"] and reg["entrypoint"] == ["zkgate-register"]
        args = reg["command"]
        opts = dict(zip(args[::2], args[1::2]))
        assert opts["--zk"] == "zookeeper:2181"
        assert opts["--path"] == "/myRegistry/endpoints/web"  # what docker/zkgate.ini routes
        assert opts["--address"] == f"web-{n}:{port}"
