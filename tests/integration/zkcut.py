"""A TCP relay between zkgate and one ZooKeeper server that can cut the connection at a chosen
request: the request is never forwarded, so the client gets ZCONNECTIONLOSS for it (and for
whatever else is outstanding) and reconnects, through the relay, to the same session.

ZooKeeper's wire protocol (jute): every packet is a 4-byte big-endian length and that many
bytes. The first packet a client sends on a connection is the ConnectRequest; every later one
starts with a RequestHeader: xid (int), type (int). Pings are xid -2 type 11."""

import socket
import struct
import threading

from zkharness import free_port

OP_EXISTS = 3
OP_GETDATA = 4
OP_GETCHILDREN2 = 12


class ZkCutRelay:
    def __init__(self, target_port, host="127.0.0.1"):
        self.target = (host, target_port)
        self.port = free_port()
        self.cuts = 0  # connections cut so far
        self.requests = []  # (xid, type) of every request forwarded, in order
        self._armed = None  # op type whose next request cuts the connection
        self._lock = threading.Lock()
        self._conns = set()
        self._closed = False
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(16)
        threading.Thread(target=self._accept_loop, name="zkcut", daemon=True).start()

    @property
    def hosts(self):
        return f"127.0.0.1:{self.port}"

    def cut_at(self, op_type):
        """The next request of type `op_type` (from any connection) is dropped together with
        its connection."""
        with self._lock:
            self._armed = op_type

    def _accept_loop(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._closed:
                    client.close()
                    server.close()
                    return
                self._conns.update((client, server))
            threading.Thread(target=self._up, args=(client, server), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client), daemon=True).start()

    def _drop(self, *socks):
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
            with self._lock:
                self._conns.discard(s)

    def _down(self, server, client):
        try:
            while True:
                data = server.recv(65536)
                if not data:
                    break
                client.sendall(data)
        except OSError:
            pass
        self._drop(server, client)

    def _up(self, client, server):
        """Client to server, packet by packet, so that a request can be held back."""
        buf = b""
        first = True
        try:
            while True:
                data = client.recv(65536)
                if not data:
                    break
                buf += data
                while len(buf) >= 4:
                    (length,) = struct.unpack(">i", buf[:4])
                    if len(buf) < 4 + length:
                        break
                    packet, buf = buf[:4 + length], buf[4 + length:]
                    if not first and length >= 8:
                        xid, op = struct.unpack(">ii", packet[4:12])
                        with self._lock:
                            cut = self._armed == op
                            if cut:
                                self._armed = None
                                self.cuts += 1
                            else:
                                self.requests.append((xid, op))
                        if cut:
                            self._drop(client, server)
                            return
                    first = False
                    server.sendall(packet)
        except OSError:
            pass
        self._drop(client, server)

    def close(self):
        with self._lock:
            self._closed = True
            conns = list(self._conns)
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept loop
        except OSError:
            pass
        self.sock.close()
        self._drop(*conns)
