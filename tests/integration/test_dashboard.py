"""The dashboard (GET / and /ui/ on the admin listener) in a real browser: Debian's headless
Chromium, driven through the DevTools protocol (python3-websocket), loads the page against a
running zkgate and a real ZooKeeper; an instance registered shows on the page within a second,
and is gone within a second of its removal. Screenshots (a laptop and a phone width) are kept
in the build directory as test artefacts."""

import base64
import glob
import http.client
import json
import os
import shutil
import subprocess
import time
import urllib.request

import websocket

from zkharness import free_port, ini_text, register, wait_until


def chromium():
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    raise RuntimeError("no chromium: scripts/deps.sh test installs it")


class Browser:
    """One headless Chromium and one page, spoken to over the DevTools protocol."""

    def __init__(self, tmp_path, url, width=1280, height=900):
        self.profile = str(tmp_path / "chromium-profile")
        self.proc = subprocess.Popen(
            [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu",
             "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
             "--disable-extensions", "--disable-background-networking",
             "--remote-debugging-port=0", "--remote-allow-origins=*",
             f"--user-data-dir={self.profile}", f"--window-size={width},{height}", url],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        assert wait_until(lambda: os.path.exists(port_file) and
                          open(port_file).read().count("\n") >= 1, 30), "chromium did not start"
        port = int(open(port_file).read().split("\n")[0])

        def page():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                pages = [p for p in json.load(r) if p.get("type") == "page"]
            return pages[0] if pages else None

        target = wait_until(page, 30)
        assert target, "no page in chromium"
        self.ws = websocket.create_connection(target["webSocketDebuggerUrl"], timeout=30)
        self.next_id = 0

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                assert "error" not in msg, msg
                return msg["result"]

    def eval(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True)
        assert "exceptionDetails" not in r, r
        return r["result"].get("value")

    def screenshot(self, path):
        data = self.call("Page.captureScreenshot", format="png")["data"]
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def close(self):
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def artefact(name):
    build = os.environ.get("ZKGATE_BUILD_DIR", ".")
    return os.path.join(build, "test-artefacts", name)


def shows(b, service, address):
    return b.eval(f"!!document.querySelector('[data-service=\"{service}\"] "
                  f"[data-instance=\"{address}\"]')")


def test_dashboard_shows_instances_live(zk, kz, zpath, http_backends, gateway, tmp_path):
    a, b2 = http_backends("a", "b")
    port, admin = free_port(), free_port()
    kz.ensure_path(zpath)
    register(kz, zpath, f"http://{a.addr}".encode())
    gateway(ini_text({"web": {"protocol": "http", "listen": f"127.0.0.1:{port}",
                              "zk_path": zpath, "host": "web.example"},
                      "static": {"protocol": "http", "listen": f"127.0.0.1:{port}",
                                 "instances": a.addr, "path_prefix": "/static/"}},
                     zookeeper={"hosts": zk.hosts, "session_timeout": "4s"},
                     admin={"listen": f"127.0.0.1:{admin}"}), listen=[port, admin])
    # The page is one self-contained document: no outside fetches allowed.
    c = http.client.HTTPConnection("127.0.0.1", admin, timeout=5)
    c.request("GET", "/ui/")
    r = c.getresponse()
    page = r.read()
    assert r.status == 200 and r.getheader("Content-Type").startswith("text/html")
    assert "default-src 'none'" in r.getheader("Content-Security-Policy")
    assert b"<script src" not in page and b"<link" not in page and b"http://" not in page

    br = Browser(tmp_path, f"http://127.0.0.1:{admin}/")
    try:
        assert wait_until(lambda: shows(br, "web", a.addr), 15), br.eval("document.body.innerText")
        assert wait_until(lambda: br.eval("document.getElementById('feed-state').textContent")
                          == "live", 5)
        assert br.eval("document.querySelector('[data-registry=zookeeper]').textContent") \
            == "zookeeper: connected"
        # Some traffic, so that rates show.
        for i in range(20):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/x", headers={"Host": "web.example"})
            c.getresponse().read()
            c.close()

        pb = register(kz, zpath, f"http://{b2.addr}".encode())
        t0 = time.monotonic()
        assert wait_until(lambda: shows(br, "web", b2.addr), 1.0, interval=0.01), \
            "the new instance is not on the page within a second"
        shown_after = time.monotonic() - t0
        assert br.eval("[...document.querySelectorAll('#feed li[data-event=instance_added]')]"
                       f".some(li => li.textContent.includes('{b2.addr}'))")
        assert wait_until(lambda: br.eval(
            f"document.querySelector('[data-instance=\"{a.addr}\"] td[data-label=\"req/s\"]')"
            ".textContent") != "–", 3)
        br.screenshot(artefact("dashboard.png"))

        kz.delete(pb)
        t0 = time.monotonic()
        assert wait_until(lambda: not shows(br, "web", b2.addr), 1.0, interval=0.01), \
            "the removed instance is still on the page after a second"
        gone_after = time.monotonic() - t0
        assert shows(br, "web", a.addr) and shows(br, "static", a.addr)
        print(f"shown after {shown_after * 1000:.0f} ms, gone after {gone_after * 1000:.0f} ms")

        # A phone: nothing wider than the screen.
        br.call("Emulation.setDeviceMetricsOverride", width=390, height=844,
                deviceScaleFactor=2, mobile=True)
        assert wait_until(lambda: br.eval("document.documentElement.scrollWidth") <= 390, 3), \
            br.eval("document.documentElement.scrollWidth")
        br.screenshot(artefact("dashboard-phone.png"))
    finally:
        br.close()


def test_dashboard_with_bearer_token(zk, http_backends, gateway, tmp_path):
    a = http_backends("a")
    port, admin = free_port(), free_port()
    gateway(ini_text({"s": {"protocol": "http", "listen": f"127.0.0.1:{port}",
                            "instances": a.addr}},
                     admin={"listen": f"127.0.0.1:{admin}", "auth": "bearer:tok-123"}),
            listen=[port, admin])
    br = Browser(tmp_path, f"http://127.0.0.1:{admin}/?access_token=tok-123")
    try:
        assert wait_until(lambda: shows(br, "s", a.addr), 15)
        assert wait_until(lambda: br.eval("document.getElementById('feed-state').textContent")
                          == "live", 5)
    finally:
        br.close()
