"""zkgate command line: -t (configuration check with FILE:LINE errors), -V, -h, and signals."""

import re
import signal
import socket
import subprocess
import time

import pytest

from zkharness import free_port, reach, wait_until, zkgate_bin

MARK = "  <<ERR"  # test-side marker: the line an error must point at (removed before writing)


def run_zkgate(*args, cwd=None, timeout=10):
    return subprocess.run([zkgate_bin(), *args], cwd=cwd, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


def write_config(directory, text, name="gw.ini"):
    """Write `text` without the <<ERR markers; return the 1-based numbers of marked lines."""
    lines = text.strip("\n").split("\n")
    marked = [i + 1 for i, line in enumerate(lines) if line.endswith(MARK)]
    clean = [line[: -len(MARK)] if line.endswith(MARK) else line for line in lines]
    (directory / name).write_text("\n".join(clean) + "\n")
    return marked


def error_lines(stderr, file_arg):
    """(line, message) for each stderr line of the form FILE:LINE: message, FILE exactly as
    given on the command line."""
    pattern = re.compile(r"^" + re.escape(file_arg) + r":(\d+): (.*)$", re.M)
    return [(int(m.group(1)), m.group(2)) for m in pattern.finditer(stderr)]


def check(tmp_path, text, file_arg="gw.ini"):
    """zkgate -t -c FILE run from tmp_path; returns (result, marked lines, error lines)."""
    marked = write_config(tmp_path, text)
    res = run_zkgate("-t", "-c", file_arg, cwd=tmp_path)
    return res, marked, error_lines(res.stderr, file_arg)


def valid_config():
    return f"""
; a complete, valid configuration
[zookeeper]
hosts = 127.0.0.1:{free_port()}
session_timeout = 10s          ; durations take units

[proxy]
connect_timeout = 250ms
idle_timeout = 1m
log_level = debug
workers = 1

[service:alpha.one_2-x]
zk_path = /myRegistry/endpoints/alpha
protocol = tcp
listen = 127.0.0.1:{free_port()}
balance = round_robin

[service:beta]
protocol = tcp
listen = 127.0.0.1:{free_port()}
balance = random
instances = 127.0.0.1:{free_port()}, 127.0.0.1:{free_port()}
"""


def zk_section():
    return f"[zookeeper]\nhosts = 127.0.0.1:{free_port()}\nsession_timeout = 10s\n"


def service(name, body):
    return f"[service:{name}]\nprotocol = tcp\n{body}\n"


# ---------------------------------------------------------------------------------------------
# -t


def test_check_accepts_valid_config(tmp_path):
    res, _, errors = check(tmp_path, valid_config())
    assert res.returncode == 0, f"-t rejected a valid config (exit {res.returncode}):\n{res.stderr}"
    assert errors == [], f"-t printed errors for a valid config:\n{res.stderr}"


def test_check_accepts_static_only_config_without_zookeeper_section(tmp_path):
    text = "[proxy]\nconnect_timeout = 2s\n\n" + service(
        "static", f"listen = 127.0.0.1:{free_port()}\ninstances = 127.0.0.1:{free_port()}")
    res, _, errors = check(tmp_path, text)
    assert res.returncode == 0, (f"[zookeeper] hosts must only be required when a service has "
                                 f"zk_path (exit {res.returncode}):\n{res.stderr}")
    assert errors == []


def _bad(key_line, section="proxy"):
    """A config with one bad line `key_line` (marked) in `section`."""
    listen = f"listen = 127.0.0.1:{free_port()}"
    inst = f"instances = 127.0.0.1:{free_port()}"
    if section == "proxy":
        return (zk_section() + f"\n[proxy]\nconnect_timeout = 2s\n{key_line}{MARK}\n\n"
                + service("a", f"zk_path = /a\n{listen}"))
    if section == "zookeeper":
        return (f"[zookeeper]\nhosts = 127.0.0.1:{free_port()}\n{key_line}{MARK}\n\n"
                + service("a", f"zk_path = /a\n{listen}"))
    return service("a", f"{inst}\n{listen}\n{key_line}{MARK}")


SINGLE_ERROR_CASES = {
    "unknown_key_proxy": lambda: _bad("colour = blue"),
    "unknown_key_zookeeper": lambda: _bad("chroot_path = /x", "zookeeper"),
    "unknown_key_service": lambda: _bad("weight = 5", "service"),
    "bad_duration": lambda: _bad("connect_timeout = 5 parsecs"),
    "bad_idle_timeout": lambda: _bad("idle_timeout = forever"),
    "bad_session_timeout": lambda: _bad("session_timeout = soon", "zookeeper"),
    "bad_log_level": lambda: _bad("log_level = loud"),
    "bad_protocol": lambda: service("a", f"instances = 127.0.0.1:{free_port()}\n"
                                         f"listen = 127.0.0.1:{free_port()}").replace(
                                             "protocol = tcp", "protocol = udp" + MARK),
    "bad_listen_port": lambda: service("a", f"instances = 127.0.0.1:{free_port()}\n"
                                            f"listen = 127.0.0.1:99999{MARK}"),
    "bad_balance": lambda: _bad("balance = weird", "service"),
    "bad_instance_port": lambda: service("a", f"listen = 127.0.0.1:{free_port()}\n"
                                              f"instances = 127.0.0.1:70000{MARK}"),
    "duplicate_listen": lambda: (lambda p: (
        service("a", f"instances = 127.0.0.1:{free_port()}\nlisten = 127.0.0.1:{p}") + "\n"
        + service("b", f"instances = 127.0.0.1:{free_port()}\nlisten = 127.0.0.1:{p}{MARK}")
    ))(free_port()),
    "missing_listen": lambda: (f"[service:a]{MARK}\nprotocol = tcp\n"
                               f"instances = 127.0.0.1:{free_port()}\n"),
    "missing_zk_path_and_instances": lambda: (f"[service:a]{MARK}\nprotocol = tcp\n"
                                              f"listen = 127.0.0.1:{free_port()}\n"),
}


@pytest.mark.parametrize("case", sorted(SINGLE_ERROR_CASES))
def test_check_reports_one_error_with_file_and_line(tmp_path, case):
    res, marked, errors = check(tmp_path, SINGLE_ERROR_CASES[case]())
    text = (tmp_path / "gw.ini").read_text()
    assert res.returncode == 1, (f"{case}: expected exit 1, got {res.returncode}\n"
                                 f"config:\n{text}\nstderr:\n{res.stderr}")
    assert [line for line, _ in errors] == marked, (
        f"{case}: expected exactly one 'gw.ini:{marked[0]}: message' line, got {errors}\n"
        f"config:\n{text}\nstderr:\n{res.stderr}")
    assert all(msg.strip() for _, msg in errors), f"{case}: empty error message: {res.stderr}"


def test_check_reports_every_error(tmp_path):
    text = (zk_section() + f"\n[proxy]\ncolour = blue{MARK}\n\n"
            + service("a", f"zk_path = /a\nlisten = 127.0.0.1:{free_port()}\n"
                           f"balance = weird{MARK}"))
    res, marked, errors = check(tmp_path, text)
    assert res.returncode == 1, res.stderr
    assert [line for line, _ in errors] == marked, (
        f"expected one error line for each of lines {marked}, got {errors}:\n{res.stderr}")


def test_check_uses_file_name_as_given(tmp_path):
    """FILE in FILE:LINE is the path exactly as written on the command line."""
    (tmp_path / "sub").mkdir()
    marked = write_config(tmp_path / "sub", _bad("colour = blue"))
    for file_arg, cwd in ((str(tmp_path / "sub" / "gw.ini"), "/"),
                          ("sub/gw.ini", tmp_path),
                          ("./sub/../sub/gw.ini", tmp_path)):
        res = run_zkgate("-t", "-c", file_arg, cwd=cwd)
        errors = error_lines(res.stderr, file_arg)
        assert res.returncode == 1, res.stderr
        assert [line for line, _ in errors] == marked, (
            f"-c {file_arg}: expected '{file_arg}:{marked[0]}: ...', stderr:\n{res.stderr}")


def _section_error_case(tmp_path, header, key):
    """A config whose section `header` (with one `key` line) is invalid as a whole: the error
    may point at the header or at its key. Returns (result, header line, errors)."""
    text = (zk_section() + f"\n[proxy]\nconnect_timeout = 2s\n\n{header}\n{key}\n\n"
            + service("a", f"zk_path = /a\nlisten = 127.0.0.1:{free_port()}"))
    write_config(tmp_path, text)
    line = text.strip("\n").split("\n").index(header) + 1
    res = run_zkgate("-t", "-c", "gw.ini", cwd=tmp_path)
    return res, line, error_lines(res.stderr, "gw.ini")


def test_check_rejects_unknown_section(tmp_path):
    res, line, errors = _section_error_case(tmp_path, "[frobnicate]", "size = 3")
    assert res.returncode == 1, f"unknown section accepted:\n{res.stderr}"
    assert errors and all(n in (line, line + 1) for n, _ in errors), (
        f"expected errors at line {line} ([frobnicate]) or {line + 1}, got {errors}")


def test_check_rejects_bad_service_name(tmp_path):
    res, line, errors = _section_error_case(tmp_path, "[service:bad/name]",
                                            f"listen = 127.0.0.1:{free_port()}")
    assert res.returncode == 1, f"service name 'bad/name' accepted:\n{res.stderr}"
    assert errors and all(n in (line, line + 1) for n, _ in errors), (
        f"expected errors at line {line} ([service:bad/name]) or {line + 1}, got {errors}")


def test_check_requires_zookeeper_hosts_when_a_service_has_zk_path(tmp_path):
    text = "[proxy]\nconnect_timeout = 2s\n\n" + service(
        "a", f"zk_path = /a\nlisten = 127.0.0.1:{free_port()}")
    res, _, errors = check(tmp_path, text)
    assert res.returncode == 1, f"zk_path without [zookeeper] hosts accepted:\n{res.stderr}"
    assert errors, f"no 'gw.ini:LINE: message' line:\n{res.stderr}"


# ---------------------------------------------------------------------------------------------
# -V


def test_version_lists_libraries():
    res = run_zkgate("-V")
    out = res.stdout + res.stderr
    assert res.returncode == 0, f"-V exited {res.returncode}:\n{out}"
    for name in ("zkgate", "libuv", "zookeeper", "llhttp", "openssl"):
        assert re.search(re.escape(name) + r"[^0-9\n]{0,40}\d+\.(\d+|x)", out, re.I), (
            f"-V output has no '{name} <version>':\n{out}")


# ---------------------------------------------------------------------------------------------
# -h / --help, and what is not an option


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_lists_every_option_on_stdout(flag):
    res = run_zkgate(flag)
    assert res.returncode == 0, f"{flag} exited {res.returncode}:\n{res.stderr}"
    assert res.stderr == "", f"{flag} wrote to stderr:\n{res.stderr}"
    options = {m for m in re.findall(r"^\s+(-\w)\b", res.stdout, re.M)}
    assert options == {"-c", "-t", "-V", "-h"}, f"options listed: {options}\n{res.stdout}"
    assert "--version" in res.stdout and "--help" in res.stdout, res.stdout


def test_long_version_is_short_version():
    assert run_zkgate("--version").stdout == run_zkgate("-V").stdout


@pytest.mark.parametrize("args", [["--bogus"], ["-x"], [], ["-c"], ["-c", "a.ini", "extra"]],
                         ids=["long", "short", "none", "no-file", "extra-arg"])
def test_bad_usage_exits_2_with_usage_on_stderr(args):
    res = run_zkgate(*args)
    assert res.returncode == 2, f"{args} exited {res.returncode}"
    assert res.stdout == "" and "usage: zkgate" in res.stderr, res.stderr


# ---------------------------------------------------------------------------------------------
# signals


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_cleanly_and_closes_zookeeper_session(zk, gateway, backends, sig):
    backend = backends("a")
    zk_port, static_port = free_port(), free_port()
    ini = f"""
[zookeeper]
hosts = {zk.hosts}
session_timeout = 4s

[proxy]
connect_timeout = 2s
idle_timeout = 60s
log_level = info
drain_timeout = 1s

[service:registry]
zk_path = /myRegistry/endpoints/signal_test
protocol = tcp
listen = 127.0.0.1:{zk_port}

[service:static]
protocol = tcp
listen = 127.0.0.1:{static_port}
instances = {backend.addr}
"""
    before = zk.sessions()
    gw = gateway(ini, listen=[zk_port, static_port])
    ours = wait_until(lambda: zk.sessions() - before, 5)
    assert ours, f"zkgate opened no ZooKeeper session within 5 s (dump:\n{zk.four_letter('dump')})"

    # A proxied client connection is open while the signal arrives: it may finish for
    # drain_timeout (1 s), then it is closed and zkgate exits.
    client = socket.create_connection(("127.0.0.1", static_port), timeout=2)
    assert client.recv(64) == b"a\n"

    t0 = time.monotonic()
    rc = gw.stop(sig, timeout=10)
    elapsed = time.monotonic() - t0
    client.close()
    assert rc == 0, f"exit status {rc} after {sig.name}"
    assert 0.9 <= elapsed < 5, f"took {elapsed:.1f} s to exit after {sig.name}"
    for port in (zk_port, static_port):
        with pytest.raises(ConnectionRefusedError):
            reach(port)
    # `dump` keeps a session until closeSession or expiry (4 s here): gone within 1 s means
    # zkgate closed its session instead of just dropping the socket.
    left = wait_until(lambda: not (ours & zk.sessions()), 1.0)
    assert left, (f"ZooKeeper still holds zkgate's session {[hex(s) for s in ours]} 1 s after "
                  f"exit: it was not closed")
