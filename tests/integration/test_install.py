"""`cmake --install`: the programs in bin, the example configuration in etc/zkgate (kept when
it exists) and share/doc, the systemd unit (valid for systemd-analyze, naming the installed
paths) and the sysusers.d file that creates its user."""

import os
import re
import shutil
import subprocess

import pytest

from zkharness import zkgate_bin

SRC = os.environ.get("ZKGATE_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))


def build_dir():
    """The build tree of the zkgate under test (ctest passes it; else the binary's directory)."""
    return os.environ.get("ZKGATE_BUILD_DIR") or os.path.dirname(zkgate_bin())


def install(prefix, destdir=None):
    env = dict(os.environ)
    env.pop("DESTDIR", None)
    if destdir:
        env["DESTDIR"] = str(destdir)
    res = subprocess.run(["cmake", "--install", build_dir(), "--prefix", str(prefix)],
                         capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 0, f"cmake --install failed:\n{res.stdout}\n{res.stderr}"
    return res.stdout


def unit_settings(text):
    """{key: [values]} of a unit file (comments and section headers skipped)."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;[":
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


@pytest.fixture(scope="module")
def prefix(tmp_path_factory):
    p = tmp_path_factory.mktemp("prefix")
    install(p)
    return p


def test_files_land_under_the_prefix(prefix):
    files = sorted(str(f.relative_to(prefix)) for f in prefix.rglob("*") if f.is_file())
    for want in ("bin/zkgate", "bin/zkgate-register", "etc/zkgate/zkgate.ini", "share/doc/zkgate/examples/zkgate.ini",
                 "lib/systemd/system/zkgate.service", "lib/sysusers.d/zkgate.conf"):
        assert want in files, f"{want} not installed; installed: {files}"
    assert os.access(prefix / "bin/zkgate", os.X_OK)
    assert os.access(prefix / "bin/zkgate-register", os.X_OK)
    with open(os.path.join(SRC, "conf", "zkgate.ini")) as f:
        assert (prefix / "etc/zkgate/zkgate.ini").read_text() == f.read()


def test_installed_binary_runs_and_checks_the_installed_config(prefix):
    exe = str(prefix / "bin/zkgate")
    res = subprocess.run([exe, "-V"], capture_output=True, text=True, timeout=10)
    assert res.returncode == 0 and "zkgate" in res.stdout, res.stdout + res.stderr
    res = subprocess.run([exe, "-t", "-c", str(prefix / "etc/zkgate/zkgate.ini")],
                         capture_output=True, text=True, timeout=10)
    assert res.returncode == 0, f"installed example config refused:\n{res.stderr}"


def test_unit_runs_the_installed_binary_on_the_installed_config(prefix):
    unit = unit_settings((prefix / "lib/systemd/system/zkgate.service").read_text())
    exe, conf = prefix / "bin/zkgate", prefix / "etc/zkgate/zkgate.ini"
    assert unit["ExecStart"] == [f"{exe} -c {conf}"]
    assert unit["ExecStartPre"] == [f"{exe} -t -c {conf}"]
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert unit["Type"] == ["simple"] and unit["KillSignal"] == ["SIGTERM"]
    assert unit["User"] == ["zkgate"]
    # Longer than the default drain_timeout (15 s), so a drain is never cut by SIGKILL.
    stop = re.fullmatch(r"(\d+)s?", unit["TimeoutStopSec"][0])
    assert stop and int(stop.group(1)) > 15, unit["TimeoutStopSec"]
    for key in ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp",
                "PrivateDevices", "RestrictAddressFamilies", "SystemCallFilter"):
        assert key in unit, f"hardening option {key} missing"
    assert unit["ProtectSystem"] == ["strict"] and unit["NoNewPrivileges"] == ["yes"]
    # The only writable place under ProtectSystem=strict: where state_file goes.
    assert unit["StateDirectory"] == ["zkgate"]
    sysusers = (prefix / "lib/sysusers.d/zkgate.conf").read_text()
    assert re.search(r"^u zkgate ", sysusers, re.M), sysusers


def test_systemd_analyze_verify_has_nothing_to_say(prefix):
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze not found (Debian package systemd, in scripts/deps.sh test)"
    res = subprocess.run([analyze, "verify", str(prefix / "lib/systemd/system/zkgate.service")],
                         capture_output=True, text=True, timeout=60)
    # verify exits 0 on unknown keys and bad values, so any message is a failure.
    assert res.returncode == 0 and res.stdout + res.stderr == "", res.stdout + res.stderr


def test_reinstall_keeps_an_edited_config(prefix):
    conf = prefix / "etc/zkgate/zkgate.ini"
    edited = conf.read_text() + "\n; edited by the operator\n"
    conf.write_text(edited)
    out = install(prefix)
    assert conf.read_text() == edited, "cmake --install overwrote an edited configuration"
    assert "Kept" in out, out


def test_package_layout_with_destdir(tmp_path):
    # What a packager does: prefix /usr, staged under DESTDIR. GNUInstallDirs puts the
    # configuration of the prefix /usr in /etc, and the unit names the final paths.
    install("/usr", destdir=tmp_path)
    for want in ("usr/bin/zkgate", "etc/zkgate/zkgate.ini", "usr/lib/systemd/system/zkgate.service",
                 "usr/lib/sysusers.d/zkgate.conf", "usr/share/doc/zkgate/examples/zkgate.ini"):
        assert (tmp_path / want).is_file(), f"{want} not staged"
    unit = unit_settings((tmp_path / "usr/lib/systemd/system/zkgate.service").read_text())
    assert unit["ExecStart"] == ["/usr/bin/zkgate -c /etc/zkgate/zkgate.ini"]
    # ... exactly the unit of the source tree, which is written for that layout.
    with open(os.path.join(SRC, "conf", "zkgate.service")) as f:
        assert (tmp_path / "usr/lib/systemd/system/zkgate.service").read_text() == f.read()
