#!/usr/bin/env python3
"""Lock-service memory: RSS of every node of a 3-node cluster when idle and with N held locks.

Starts a 3-node cluster on loopback (release binary, fsync on), reads VmRSS (and the peak,
VmHWM) of every node from /proc/PID/status once all are ready and again 1 s later (idle), then
creates sessions and acquires N distinct exclusive locks (default 100 000) through all nodes, and
reads every node's RSS again while the locks are held. Writes one JSON result per
docs/performance/results/SCHEMA.md and prints it. Targets (issue 3): idle node < 30 MiB,
100 000 held locks < 200 MiB.

    usage: scripts/bench-lock-memory.py [--locks 100000] [--sessions 100] [--threads 16]
                                         [--bin target/release/distsync] [--base-port 16400]
"""

import argparse
import http.client
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

MIB = 1024


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


def snapshot(procs):
    return {str(i): {"rss_mib": round(status_kib(p.pid, "VmRSS") / MIB, 1),
                     "peak_rss_mib": round(status_kib(p.pid, "VmHWM") / MIB, 1)}
            for i, p in procs.items()}


def acquire_worker(address, jobs, failures, done):
    host, port = address.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    while True:
        try:
            session, name = jobs.get_nowait()
        except queue.Empty:
            break
        body = json.dumps({"session_id": session, "mode": "exclusive", "wait_ms": 0})
        for attempt in range(5):
            try:
                conn.request("POST", f"/v1/locks/{name}/acquire", body,
                             {"content-type": "application/json"})
                resp = conn.getresponse()
                payload = resp.read()
                if resp.status == 200:
                    break
                failure = f"{resp.status} {payload[:200]!r}"
            except (OSError, http.client.HTTPException) as err:
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=30)
                failure = repr(err)
        else:
            failures.append(f"{name}: {failure}")
        done[0] += 1
    conn.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--locks", type=int, default=100_000)
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--bin", default=os.path.join(benchlib.ROOT, "target/release/distsync"))
    parser.add_argument("--base-port", type=int, default=16400)
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="distsync-bench-lock-memory-")
    http_ports = {i: args.base_port + i for i in (1, 2, 3)}
    raft_ports = {i: args.base_port + 100 + i for i in (1, 2, 3)}
    spec = ",".join(f"{i}=127.0.0.1:{http_ports[i]}/127.0.0.1:{raft_ports[i]}" for i in (1, 2, 3))
    procs = {}
    try:
        for i in (1, 2, 3):
            procs[i] = subprocess.Popen(
                [args.bin, "--log", "warn", "serve", "lock", "--id", str(i), "--cluster", spec,
                 "--data-dir", os.path.join(work, f"n{i}")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        addresses = [f"127.0.0.1:{http_ports[i]}" for i in (1, 2, 3)]
        for address in addresses:
            benchlib.wait_until(lambda: benchlib.http("GET", f"http://{address}/readyz",
                                                      timeout=0.5)[0] == 200,
                                30, f"{address} ready")
        ready = snapshot(procs)
        # "Idle" is the steady state after start-up work (election, first commit) has settled.
        time.sleep(1.0)
        idle = snapshot(procs)
        print(f"idle RSS: {idle}", file=sys.stderr, flush=True)

        sessions = []
        for s in range(args.sessions):
            status, body = benchlib.http("POST", f"http://{addresses[s % 3]}/v1/sessions",
                                         {"ttl_ms": 600_000}, timeout=10)
            if status != 201:
                raise RuntimeError(f"creating session {s}: HTTP {status}")
            sessions.append(body["session_id"])
        per_thread = [queue.Queue() for _ in range(args.threads)]
        for n in range(args.locks):
            per_thread[n % args.threads].put((sessions[n % args.sessions], f"memory-{n:07d}"))
        failures, done = [], [0]
        started = time.monotonic()
        threads = [threading.Thread(target=acquire_worker,
                                    args=(addresses[t % 3], per_thread[t], failures, done))
                   for t in range(args.threads)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            time.sleep(2)
            print(f"  {done[0]}/{args.locks} acquired", file=sys.stderr, flush=True)
        for t in threads:
            t.join()
        fill_s = time.monotonic() - started
        if failures:
            raise RuntimeError(f"{len(failures)} acquires failed, e.g. {failures[:3]}")
        # Every node applies the same log; wait until each has applied what the leader committed.
        _, leader_view = benchlib.http("GET", f"http://{addresses[0]}/v1/cluster")
        commit = leader_view["commit_index"]
        for address in addresses:
            benchlib.wait_until(
                lambda: (benchlib.http("GET", f"http://{address}/v1/cluster")[1] or {})
                .get("applied_index", 0) >= commit, 60, f"{address} applied {commit}")
        held = snapshot(procs)
        _, state = benchlib.http("GET", f"http://{addresses[0]}/v1/locks/memory-0000000")
        if not state or len(state.get("holders", [])) != 1:
            raise RuntimeError(f"memory-0000000 is not held: {state}")
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)

    idle_max = max(v["rss_mib"] for v in idle.values())
    held_max = max(v["rss_mib"] for v in held.values())
    result = {
        "schema": benchlib.SCHEMA,
        "service": "lock",
        "scenario": "memory",
        "system": "distsync",
        "nodes": 3,
        "params": {"locks": args.locks, "sessions": args.sessions, "threads": args.threads,
                   "mode": "exclusive", "session_ttl_ms": 600_000},
        "duration_s": round(fill_s, 1),
        "ops": args.locks,
        "throughput_per_s": round(args.locks / fill_s, 1),
        "errors": len(failures),
        "extra": {
            "rss_at_ready": ready,
            "rss_idle": idle,
            "rss_with_locks_held": held,
            "idle_rss_mib_max": idle_max,
            "held_rss_mib_max": held_max,
            "target_idle_rss_mib": 30,
            "target_held_rss_mib": 200,
            "idle_target_met": idle_max < 30,
            "held_target_met": held_max < 200,
        },
        "meta": benchlib.meta(benchlib.script_command(), args.bin,
                              "fsync of the WAL before every acknowledgement and vote"),
    }
    path = benchlib.write_result(result)
    print(json.dumps(result, indent=2))
    print(f"idle max {idle_max} MiB (target < 30), {args.locks} held max {held_max} MiB "
          f"(target < 200) -> {os.path.relpath(path, benchlib.ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
