"""A DNS server whose answers a test controls, and a command prefix that runs a program with it
as its only name server: in a mount namespace of its own (unshare -m) where a test resolv.conf
is bind-mounted over /etc/resolv.conf, so nothing of the machine's resolver configuration
changes. The server listens on port 53 (the only one resolv.conf can name) of a random loopback
address, so that parallel runs keep apart. Used by test_zk_session.py (ZooKeeper host names)
and test_register.py (the health check's host name)."""

import random
import shutil
import socket
import struct
import threading

import pytest

# The one name the server knows: an A record 127.0.0.1.
NAME = "zk.zkgate-test.example"


class DnsServer:
    """Answers A queries for NAME with 127.0.0.1 (AAAA: no data), other names NXDOMAIN.
    mode: "ok", "slow" (every answer `delay` s late), "drop" (no answer at all)."""

    def __init__(self):
        self.mode = "ok"
        self.delay = 0.0
        self.queries = 0
        # Port 53 is the only one resolv.conf can name: a random loopback address keeps
        # parallel runs apart.
        for _ in range(20):
            self.ip = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                self.sock.bind((self.ip, 53))
                break
            except OSError:
                self.sock.close()
        else:
            raise RuntimeError("no loopback address with a free port 53")
        self.sock.settimeout(0.2)
        self.closed = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _answer(self, query):
        qid, _flags, qd = struct.unpack(">HHH", query[:6])
        pos, labels = 12, []
        while query[pos]:
            n = query[pos]
            labels.append(query[pos + 1:pos + 1 + n].decode("ascii", "replace"))
            pos += 1 + n
        qtype = struct.unpack(">H", query[pos + 1:pos + 3])[0]
        question = query[12:pos + 5]
        name = ".".join(labels).lower()
        if name != NAME:
            return struct.pack(">HHHHHH", qid, 0x8183, 1, 0, 0, 0) + question  # NXDOMAIN
        if qtype != 1:
            return struct.pack(">HHHHHH", qid, 0x8180, 1, 0, 0, 0) + question  # no data
        answer = struct.pack(">HHHIH", 0xC00C, 1, 1, 0, 4) + socket.inet_aton("127.0.0.1")
        return struct.pack(">HHHHHH", qid, 0x8180, 1, 1, 0, 0) + question + answer

    def _loop(self):
        while not self.closed:
            try:
                data, peer = self.sock.recvfrom(2048)
            except OSError:
                continue
            self.queries += 1
            mode = self.mode
            if mode == "drop":
                continue
            try:
                reply = self._answer(data)
            except (IndexError, struct.error):
                continue
            if mode == "slow":
                threading.Timer(self.delay, self._send, (reply, peer)).start()
            else:
                self._send(reply, peer)

    def _send(self, reply, peer):
        try:
            self.sock.sendto(reply, peer)
        except OSError:
            pass

    def close(self):
        self.closed = True
        self.thread.join(2)
        self.sock.close()


@pytest.fixture
def dns():
    if not shutil.which("unshare"):
        pytest.fail("unshare (util-linux) is needed to give zkgate a resolv.conf of its own")
    server = DnsServer()
    yield server
    server.close()


def namespaced(tmp_path, dns, timeout_s=5):
    """A command prefix that runs a program with `dns` as its only name server."""
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(f"nameserver {dns.ip}\noptions timeout:{timeout_s} attempts:1\n")
    return ["unshare", "-m", "sh", "-c", f'mount --bind {resolv} /etc/resolv.conf && exec "$@"',
            "sh"]
