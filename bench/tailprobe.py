#!/usr/bin/python3
"""Where a keep-alive request waits: one wrk run against a running proxy, with the
scheduler's own accounts of the proxy, the backend and wrk read around it.

    bench/tailprobe.py --port 8080 --proxy-pid PID --backend-pid PID [--seconds 3]

Prints req/s and wrk's p50/p90/p99/p99.9, then per request: each process's CPU time and
its wait on a run queue (/proc/PID/schedstat: time runnable but not running), and the
proxy's voluntary and involuntary context switches (/proc/PID/status). A proxy whose wait
per request rivals its CPU per request is being held off its CPU by something else; a
backend or wrk that waits is queued behind the other on their shared CPU. wrk runs on
--load-cpu (1, as bench/bench.py pins it). Not a benchmark: a diagnosis beside one."""
import argparse
import os
import re
import subprocess
import tempfile
import time

LUA = """
done = function(summary, latency, requests)
  io.write(string.format("RES %d %d %d %d %d %d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9)))
end
"""


def thread_stats(pid):
    """{tid: (CPU ns, run-queue wait ns)} of every thread of pid."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                a, b, _ = f.read().split()
        except (OSError, ValueError):
            continue
        out[tid] = (int(a), int(b))
    return out


def schedstat(pid):
    """(CPU ns, run-queue wait ns) of pid, all threads."""
    t = thread_stats(pid).values()
    return sum(x[0] for x in t), sum(x[1] for x in t)


def switches(pid):
    with open(f"/proc/{pid}/status") as f:
        text = f.read()
    vol = int(re.search(r"^voluntary_ctxt_switches:\s*(\d+)", text, re.M).group(1))
    inv = int(re.search(r"^nonvoluntary_ctxt_switches:\s*(\d+)", text, re.M).group(1))
    return vol, inv


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--proxy-pid", type=int, required=True)
    ap.add_argument("--backend-pid", type=int, required=True)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--load-cpu", default="1")
    args = ap.parse_args()
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(LUA)
        lua = f.name
    try:
        px0, be0, sw0 = schedstat(args.proxy_pid), schedstat(args.backend_pid), \
            switches(args.proxy_pid)
        wrk = subprocess.Popen(["taskset", "-c", args.load_cpu, "wrk", "-t1",
                                f"-c{args.conns}", f"-d{args.seconds}s", "-s", lua,
                                f"http://127.0.0.1:{args.port}/"],
                               stdout=subprocess.PIPE, text=True)
        # wrk's load thread is gone once wrk exits: its accounts are the last
        # ones read while it ran (every 10 ms; wrk itself costs little).
        last = {}
        while wrk.poll() is None:
            last.update(thread_stats(wrk.pid))
            time.sleep(0.01)
        px1, be1, sw1 = schedstat(args.proxy_pid), schedstat(args.backend_pid), \
            switches(args.proxy_pid)
        out = wrk.communicate()[0]
        wk0 = (0, 0)
        wk1 = (sum(x[0] for x in last.values()), sum(x[1] for x in last.values()))
    finally:
        os.unlink(lua)
    m = re.search(r"^RES (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)", out, re.M)
    if not m:
        raise SystemExit(f"no result from wrk:\n{out}")
    n, dur_us, p50, p90, p99, p999 = (int(x) for x in m.groups())
    per = lambda a, b, k: (b[k] - a[k]) / n / 1000.0  # µs per request
    print(f"{n / (dur_us / 1e6):.0f} req/s; latency p50 {p50 / 1000:.2f} ms, p90 "
          f"{p90 / 1000:.2f}, p99 {p99 / 1000:.2f}, p99.9 {p999 / 1000:.2f}")
    print("per request, µs:      CPU    run-queue wait")
    for name, a, b in (("proxy", px0, px1), ("backend", be0, be1), ("wrk", wk0, wk1)):
        print(f"  {name:<18} {per(a, b, 0):6.1f}  {per(a, b, 1):8.1f}")
    print(f"proxy context switches per 1,000 requests: voluntary "
          f"{(sw1[0] - sw0[0]) * 1000 / n:.1f}, involuntary {(sw1[1] - sw0[1]) * 1000 / n:.1f}")


if __name__ == "__main__":
    main()
