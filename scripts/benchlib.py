"""Shared pieces of the benchmark scripts: result files per docs/performance/results/SCHEMA.md
(`distsync-bench/1`), the machine and version metadata they carry, and process helpers."""

import datetime
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS_DIR = os.path.join(ROOT, "docs", "performance", "results", "runs")
SCHEMA = "distsync-bench/1"


def git_commit():
    """The commit measured, `-dirty` when tracked files outside docs/performance differ from it.
    docs/performance is left out because a report run rewrites it (charts, the flame graph,
    README.md) while later steps still measure the same code."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                ".", ":(exclude)docs/performance"],
                               cwd=ROOT, capture_output=True, text=True).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine():
    cpu_model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    memory_kib = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "cpu_model": cpu_model,
    }


def load_average():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def tool_version(argv, pattern):
    try:
        out = subprocess.run(argv, capture_output=True, text=True).stdout
    except OSError:
        return None
    match = re.search(pattern, out)
    return match.group(1) if match else None


def versions(distsync_bin, etcd=False):
    found = {"distsync": tool_version([distsync_bin, "--version"], r"distsync (\S+)")}
    if etcd:
        found["etcd"] = tool_version(["etcd", "--version"], r"etcd Version: (\S+)")
    return found


def meta(command, distsync_bin, durability, etcd=False):
    return {
        "git_commit": git_commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": command,
        "machine": machine(),
        "versions": versions(distsync_bin, etcd),
        "durability": durability,
    }


def write_result(result):
    """Writes one run's result as `<service>-<scenario>-<system>-<UTC timestamp>.json`, with the
    node and client counts in the name too so runs of one script run never collide."""
    assert result["schema"] == SCHEMA
    os.makedirs(RUNS_DIR, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    tags = [result["service"], result["scenario"], result["system"]]
    if "nodes" in result:
        tags.append(f"n{result['nodes']}")
    if "clients" in result:
        tags.append(f"c{result['clients']}")
    path = os.path.join(RUNS_DIR, "-".join(tags) + f"-{stamp}.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    return path


def script_command():
    return " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])


def http(method, url, body=None, timeout=2.0):
    """One JSON request; returns (status or None when unreachable, decoded body or None)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            text = resp.read()
            return resp.status, (json.loads(text) if text else None)
    except urllib.error.HTTPError as err:
        return err.code, None
    except (urllib.error.URLError, OSError, TimeoutError, ValueError):
        return None, None


def wait_until(predicate, limit, what):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise RuntimeError(f"{what} not within {limit} s")


def percentiles(samples):
    ordered = sorted(samples)

    def pct(q):
        return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]

    return {"p50": round(pct(0.5), 1), "p90": round(pct(0.9), 1), "p99": round(pct(0.99), 1),
            "max": round(ordered[-1], 1)}
