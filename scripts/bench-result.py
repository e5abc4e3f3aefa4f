#!/usr/bin/env python3
"""Write benchmark results as `distsync-bench/1` files (docs/performance/results/SCHEMA.md).

One place that knows the schema's provenance block (git commit, date, machine, versions) and
file naming; the benchmark scripts hand it their measurements.

    bench-result.py write --command CMD [--durability D]           < partial.json
    bench-result.py queue --command CMD --durability D --params '{"shards":1,...}' \
        [--no-latency] [--no-consume]                              < `distsync bench queue --json`
    bench-result.py redis-benchmark --command CMD --durability D --scenario S --shards N \
        --clients C --params '{...}' csv-file...                   (redis-benchmark --csv outputs)
    bench-result.py criterion --command CMD --dir target/criterion/raft_core_commit

Files go to $BENCH_RESULTS_DIR (default docs/performance/results/runs). Each writes the paths
it created on stdout.
"""

import argparse
import csv
import datetime
import json
import os
import platform
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = os.environ.get("BENCH_RESULTS_DIR", os.path.join(ROOT, "docs/performance/results/runs"))


def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def machine():
    info = {"cpus": os.cpu_count() or 1, "kernel": platform.release()}
    try:
        with open("/proc/meminfo") as f:
            kib = int(re.search(r"MemTotal:\s+(\d+)", f.read()).group(1))
            info["memory_gib"] = round(kib / 1024 / 1024, 1)
        with open("/proc/cpuinfo") as f:
            model = re.search(r"model name\s*:\s*(.+)", f.read())
            if model:
                info["cpu_model"] = model.group(1).strip()
    except (OSError, AttributeError):
        pass
    return info


def versions():
    found = {}
    cargo = open(os.path.join(ROOT, "Cargo.toml")).read()
    version = re.search(r'\[workspace\.package\][^\[]*?version\s*=\s*"([^"]+)"', cargo, re.S)
    if version:
        found["distsync"] = version.group(1)
    redis = sh("redis-server", "--version")
    if redis:
        found["redis"] = re.search(r"v=(\S+)", redis).group(1)
    etcd = sh("etcd", "--version")
    if etcd:
        found["etcd"] = re.search(r"etcd Version:\s*(\S+)", etcd).group(1)
    return found


def meta(command, durability):
    out = {
        "git_commit": benchlib.git_commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": command,
        "machine": machine(),
        "versions": versions(),
    }
    if durability:
        out["durability"] = durability
    return out


def write(result, command, durability):
    """Completes `result` with the schema id and provenance and writes it to its own file."""
    doc = {"schema": "distsync-bench/1"}
    doc.update(result)
    doc["meta"] = meta(command, durability)
    for key in ("service", "scenario", "system"):
        if not doc.get(key):
            sys.exit(f"bench-result.py: result has no `{key}`: {json.dumps(result)}")
    os.makedirs(RUNS, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    name = f"{doc['service']}-{doc['scenario']}-{doc['system']}-{stamp}.json"
    path = os.path.join(RUNS, name)
    with open(path, "x") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    print(os.path.relpath(path, ROOT))


def cmd_write(args):
    write(json.load(sys.stdin), args.command, args.durability)


def cmd_queue(args):
    """One `distsync bench queue --json` run: publish, consume+ack and end-to-end latency."""
    bench = json.loads(sys.stdin.read().strip().splitlines()[-1])
    params = json.loads(args.params)
    params.update({"body_bytes": bench["body_bytes"]})
    base = {"service": "queue", "system": "distsync", "nodes": bench["nodes"], "errors": 0}
    publish = bench["publish"]
    write(dict(base, scenario=f"publish-batch-{bench['batch']}", clients=bench["producers"],
               params=dict(params, batch=bench["batch"]), duration_s=round(publish["seconds"], 3),
               ops=publish["messages"],
               throughput_per_s=round(publish["messages"] / publish["seconds"], 1)),
          args.command, args.durability)
    consume = bench["consume"]
    if not args.no_consume and consume["messages"]:
        write(dict(base, scenario="consume-ack", clients=bench["consumers"],
                   params=dict(params, receive_max=bench["receive_max"]),
                   duration_s=round(consume["seconds"], 3), ops=consume["messages"],
                   throughput_per_s=round(consume["messages"] / consume["seconds"], 1)),
              args.command, args.durability)
    latency = bench.get("latency_ms")
    if latency and not args.no_latency:
        write(dict(base, scenario="end-to-end-latency", clients=1, params=params,
                   ops=latency["samples"],
                   latency_ms={k: round(latency[k], 3) for k in ("p50", "p90", "p99", "max")}),
              args.command, args.durability)


def cmd_redis_benchmark(args):
    """redis-benchmark --csv outputs, one per shard run at the same time: their sum is the ceiling."""
    total, p50, p99, maxes = 0.0, [], [], []
    for path in args.csv:
        with open(path) as f:
            rows = [r for r in csv.DictReader(f) if r.get("rps")]
        if not rows:
            sys.exit(f"bench-result.py: no redis-benchmark result in {path}")
        row = rows[-1]
        total += float(row["rps"])
        p50.append(float(row["p50_latency_ms"]))
        p99.append(float(row["p99_latency_ms"]))
        maxes.append(float(row["max_latency_ms"]))
    params = dict(json.loads(args.params), shards=args.shards)
    write({"service": "queue", "scenario": args.scenario, "system": "redis",
           "nodes": args.shards, "clients": args.clients, "params": params,
           "ops": args.requests * len(args.csv), "throughput_per_s": round(total, 1),
           # Per shard the same load: the worst shard's percentiles stand for the run.
           "latency_ms": {"p50": max(p50), "p99": max(p99), "max": max(maxes)}},
          args.command, args.durability)


def cmd_criterion(args):
    """Criterion's estimates for each benchmark under --dir, as entries committed per second."""
    found = 0
    for bench in sorted(os.listdir(args.dir)):
        for case in sorted(os.listdir(os.path.join(args.dir, bench))):
            new = os.path.join(args.dir, bench, case, "new")
            if not os.path.exists(os.path.join(new, "estimates.json")):
                continue
            estimates = json.load(open(os.path.join(new, "estimates.json")))
            info = json.load(open(os.path.join(new, "benchmark.json")))
            elements = info["throughput"]["Elements"]
            # Criterion's headline time: the slope of the linear fit when it has one.
            est = estimates.get("slope") or estimates["mean"]
            ns, ci = est["point_estimate"], est["confidence_interval"]
            entry_bytes = int(re.match(r"(\d+)B", case).group(1))
            write({"service": "raft", "scenario": "commit-throughput", "system": "distsync",
                   "nodes": int(re.match(r"(\d+)_nodes", bench).group(1)),
                   "params": {"entry_bytes": entry_bytes, "batch": elements},
                   "throughput_per_s": round(elements / (ns * 1e-9), 1),
                   "extra": {"batch_time_us": round(ns / 1e3, 2),
                             "throughput_low": round(elements / (ci["upper_bound"] * 1e-9), 1),
                             "throughput_high": round(elements / (ci["lower_bound"] * 1e-9), 1)}},
                  args.command, "none: in-memory core, no disk")
            found += 1
    if not found:
        sys.exit(f"bench-result.py: no criterion estimates under {args.dir}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    for name in ("write", "queue", "redis-benchmark", "criterion"):
        p = sub.add_parser(name)
        p.add_argument("--command", required=True, help="the command line that measured")
        p.add_argument("--durability")
        if name == "queue":
            p.add_argument("--params", default="{}")
            p.add_argument("--no-latency", action="store_true")
            p.add_argument("--no-consume", action="store_true")
        if name == "redis-benchmark":
            p.add_argument("--scenario", required=True)
            p.add_argument("--shards", type=int, required=True)
            p.add_argument("--clients", type=int, required=True)
            p.add_argument("--requests", type=int, required=True)
            p.add_argument("--params", default="{}")
            p.add_argument("csv", nargs="+")
        if name == "criterion":
            p.add_argument("--dir", required=True)
    args = parser.parse_args()
    {"write": cmd_write, "queue": cmd_queue, "redis-benchmark": cmd_redis_benchmark,
     "criterion": cmd_criterion}[args.what](args)


if __name__ == "__main__":
    main()
