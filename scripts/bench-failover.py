#!/usr/bin/env python3
"""Failover benchmark: time from SIGKILL of the lock leader to the next successful grant.

Starts a 3-node lock cluster on loopback (release binary, fsync on), then for each trial: finds
the leader, SIGKILLs it, and measures how long a client that keeps trying acquire+release on the
surviving nodes waits for its next grant. The killed node is restarted from its data directory
before the next trial. Prints one JSON object with every sample and the percentiles.

    usage: scripts/bench-failover.py [--trials 20] [--bin target/release/distsync]
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(method, url, body=None, timeout=2.0):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            text = resp.read()
            return resp.status, (json.loads(text) if text else None)
    except urllib.error.HTTPError as err:
        return err.code, None
    except (urllib.error.URLError, OSError, TimeoutError):
        return None, None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--bin", default="target/release/distsync")
    args = parser.parse_args()

    work = tempfile.mkdtemp()
    http = {i: free_port() for i in (1, 2, 3)}
    raft = {i: free_port() for i in (1, 2, 3)}
    spec = ",".join(f"{i}=127.0.0.1:{http[i]}/127.0.0.1:{raft[i]}" for i in (1, 2, 3))
    procs = {}

    def start(i):
        procs[i] = subprocess.Popen(
            [args.bin, "--log", "warn", "serve", "lock", "--id", str(i), "--cluster", spec,
             "--data-dir", os.path.join(work, f"n{i}")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def ready(i, limit=20.0):
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            status, _ = request("GET", f"http://127.0.0.1:{http[i]}/readyz", timeout=0.5)
            if status == 200:
                return True
            time.sleep(0.02)
        return False

    samples = []
    try:
        for i in (1, 2, 3):
            start(i)
        for i in (1, 2, 3):
            assert ready(i), f"node {i} not ready"
        for trial in range(args.trials):
            _, status = request("GET", f"http://127.0.0.1:{http[1]}/v1/cluster")
            leader = status and status.get("leader_id")
            if leader is None:
                _, status = request("GET", f"http://127.0.0.1:{http[2]}/v1/cluster")
                leader = status["leader_id"]
            survivors = [i for i in (1, 2, 3) if i != leader]
            base = f"http://127.0.0.1:{http[survivors[0]]}"
            other = f"http://127.0.0.1:{http[survivors[1]]}"
            code, session = request("POST", f"{base}/v1/sessions", {"ttl_ms": 10000})
            assert code == 201, code
            sid = session["session_id"]
            name = f"failover-{trial}"
            procs[leader].send_signal(signal.SIGKILL)
            procs[leader].wait()
            killed = time.monotonic()
            granted = None
            targets = [base, other]
            attempt = 0
            while time.monotonic() - killed < 30:
                target = targets[attempt % 2]
                attempt += 1
                code, grant = request("POST", f"{target}/v1/locks/{name}/acquire",
                                      {"session_id": sid, "mode": "exclusive", "wait_ms": 0},
                                      timeout=1.0)
                if code == 200:
                    granted = time.monotonic()
                    request("POST", f"{target}/v1/locks/{name}/release",
                            {"session_id": sid, "fencing_token": grant["fencing_token"]})
                    break
            assert granted is not None, "no grant within 30 s of the kill"
            samples.append((granted - killed) * 1000.0)
            print(f"trial {trial + 1}: leader {leader} killed, next grant after "
                  f"{samples[-1]:.0f} ms", file=sys.stderr)
            start(leader)
            assert ready(leader), f"node {leader} did not come back"
            for i in (1, 2, 3):
                assert ready(i)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        shutil.rmtree(work, ignore_errors=True)

    ordered = sorted(samples)

    def pct(q):
        return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]

    print(json.dumps({
        "benchmark": "lock-failover",
        "trials": len(samples),
        "election_timeout_ms": 300,
        "samples_ms": [round(s, 1) for s in samples],
        "p50_ms": round(pct(0.5), 1),
        "p90_ms": round(pct(0.9), 1),
        "p99_ms": round(pct(0.99), 1),
        "max_ms": round(ordered[-1], 1),
    }))


if __name__ == "__main__":
    main()
