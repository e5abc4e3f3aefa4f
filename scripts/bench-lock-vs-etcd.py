#!/usr/bin/env python3
"""Lock benchmark, distsync against etcd, in one run on one machine.

Starts distsync (3 nodes, then 1 node) and etcd (3 nodes, then 1 node) on loopback, both with
fsync on (distsync without --unsafe-no-fsync; etcd fsyncs by default), and runs
`distsync bench lock` against each with the same clients: uncontended (one name per client),
contended (one hot name: pairs/s is the handoff rate) and, for distsync only, shared-heavy (every
client takes a shared lock on one name; etcd has no shared locks, so it is skipped there, not
faked). Writes one JSON file per run (docs/performance/results/SCHEMA.md) into
docs/performance/results/runs/, then prints a markdown comparison table and the issue 3 targets.

    usage: scripts/bench-lock-vs-etcd.py [--seconds 5] [--clients 1,16,64,256]
                                          [--bin target/release/distsync] [--base-port 16000]
"""

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import json

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

DURABILITY = {
    "distsync": "fsync of the WAL before every acknowledgement and vote (leader fsync overlaps "
                "its AppendEntries)",
    "etcd": "etcd defaults: WAL fsync on every commit",
}
WORKLOADS = {
    "uncontended": [],
    "contended": ["--contended"],
    "shared-heavy": ["--contended", "--mode", "shared"],
}


class Cluster:
    """Processes of one cluster; stopped (SIGKILL) and their data removed on exit."""

    def __init__(self, system, nodes, work):
        self.system, self.nodes, self.work = system, nodes, work
        self.procs, self.targets, self.logs = [], [], []

    def stop(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        for log in self.logs:
            log.close()
        self.procs = []


def start_distsync(bin_path, nodes, base, work):
    cluster = Cluster("distsync", nodes, work)
    http = {i: base + i for i in range(1, nodes + 1)}
    raft = {i: base + 100 + i for i in range(1, nodes + 1)}
    spec = ",".join(f"{i}=127.0.0.1:{http[i]}/127.0.0.1:{raft[i]}" for i in http)
    for i in http:
        log = open(os.path.join(work, f"distsync-n{nodes}-{i}.log"), "w")
        cluster.logs.append(log)
        cluster.procs.append(subprocess.Popen(
            [bin_path, "--log", "warn", "serve", "lock", "--id", str(i), "--cluster", spec,
             "--data-dir", os.path.join(work, f"distsync-n{nodes}-{i}")],
            stdout=log, stderr=log))
        cluster.targets.append(f"127.0.0.1:{http[i]}")
    for target in cluster.targets:
        benchlib.wait_until(lambda: benchlib.http("GET", f"http://{target}/readyz",
                                                  timeout=0.5)[0] == 200,
                            30, f"distsync {target} ready")
    return cluster


def start_etcd(nodes, base, work):
    cluster = Cluster("etcd", nodes, work)
    client = {i: base + i for i in range(1, nodes + 1)}
    peer = {i: base + 100 + i for i in range(1, nodes + 1)}
    initial = ",".join(f"e{i}=http://127.0.0.1:{peer[i]}" for i in client)
    for i in client:
        log = open(os.path.join(work, f"etcd-n{nodes}-{i}.log"), "w")
        cluster.logs.append(log)
        cluster.procs.append(subprocess.Popen(
            ["etcd", "--name", f"e{i}", "--data-dir", os.path.join(work, f"etcd-n{nodes}-{i}"),
             "--listen-client-urls", f"http://127.0.0.1:{client[i]}",
             "--advertise-client-urls", f"http://127.0.0.1:{client[i]}",
             "--listen-peer-urls", f"http://127.0.0.1:{peer[i]}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer[i]}",
             "--initial-cluster", initial, "--initial-cluster-state", "new",
             "--initial-cluster-token", f"bench-{nodes}"],
            stdout=log, stderr=log))
        cluster.targets.append(f"127.0.0.1:{client[i]}")

    def healthy(target):
        status, body = benchlib.http("GET", f"http://{target}/health", timeout=0.5)
        return status == 200 and body and body.get("health") == "true"

    for target in cluster.targets:
        benchlib.wait_until(lambda: healthy(target), 30, f"etcd {target} healthy")
    return cluster


def distsync_leader(cluster):
    _, status = benchlib.http("GET", f"http://{cluster.targets[0]}/v1/cluster")
    return status and status.get("leader_id")


def bench(bin_path, cluster, workload, clients, seconds):
    """One `distsync bench lock` run; returns its argv and its JSON answer."""
    argv = [bin_path, "--log", "warn", "bench", "lock", "--system", cluster.system,
            "--targets", ",".join(cluster.targets), "--clients", str(clients),
            "--duration", f"{seconds}s", "--json"] + WORKLOADS[workload]
    out = subprocess.run(argv, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} failed: {out.stderr.strip()[:500]}")
    return argv, json.loads(out.stdout)


def run_bench(bin_path, cluster, workload, clients, seconds, command, progress):
    print(f"[{progress}] {cluster.system} {cluster.nodes} node(s), {workload}, "
          f"{clients} client(s)", file=sys.stderr, flush=True)
    load_before = benchlib.load_average()
    argv, raw = bench(bin_path, cluster, workload, clients, seconds)
    params = {
        "mode": raw["mode"],
        "contended": raw["contended"],
        "warmup_s": 1,
        "targets": len(cluster.targets),
    }
    extra = {
        "bench_command": shlex.join([os.path.relpath(argv[0], benchlib.ROOT)] + argv[1:]),
        "acquire_latency_ms": raw["acquire_ms"],
        "load_average_before": load_before,
        "load_average_after": benchlib.load_average(),
    }
    if cluster.system == "distsync":
        extra["leader_id"] = distsync_leader(cluster)
    result = {
        "schema": benchlib.SCHEMA,
        "service": "lock",
        "scenario": workload,
        "system": cluster.system,
        "nodes": cluster.nodes,
        "clients": clients,
        "params": params,
        "duration_s": round(raw["duration_s"], 3),
        "ops": raw["pairs"],
        "throughput_per_s": round(raw["pairs_per_s"], 1),
        "latency_ms": raw["pair_ms"],
        "errors": raw["errors"],
        "extra": extra,
        "meta": benchlib.meta(command, bin_path, DURABILITY[cluster.system], etcd=True),
    }
    path = benchlib.write_result(result)
    print(f"    {result['throughput_per_s']:.0f} pairs/s, pair p50 {raw['pair_ms']['p50']:.2f} ms "
          f"p99 {raw['pair_ms']['p99']:.2f} ms, acquire p50 {raw['acquire_ms']['p50']:.2f} ms, "
          f"errors {raw['errors']} -> {os.path.relpath(path, benchlib.ROOT)}",
          file=sys.stderr, flush=True)
    return result


def table(results):
    by_key = {(r["system"], r["nodes"], r["scenario"], r["clients"]): r for r in results}
    keys = sorted({(r["nodes"], r["scenario"], r["clients"]) for r in results},
                  key=lambda k: (-k[0], list(WORKLOADS).index(k[1]), k[2]))
    lines = [
        "| nodes | workload | clients | distsync pairs/s | distsync p50 / p99 (ms) "
        "| etcd pairs/s | etcd p50 / p99 (ms) | distsync ÷ etcd |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for nodes, scenario, clients in keys:
        d = by_key.get(("distsync", nodes, scenario, clients))
        e = by_key.get(("etcd", nodes, scenario, clients))

        def cells(r):
            if r is None:
                return ["n/a (no shared locks)" if scenario == "shared-heavy" else "—", "—"]
            lat = r["latency_ms"]
            return [f"{r['throughput_per_s']:,.0f}", f"{lat['p50']:.2f} / {lat['p99']:.2f}"]

        ratio = (f"{d['throughput_per_s'] / e['throughput_per_s']:.1f}×"
                 if d and e and e["throughput_per_s"] > 0 else "—")
        lines.append(f"| {nodes} | {scenario} | {clients} | " + " | ".join(cells(d)) + " | "
                     + " | ".join(cells(e)) + f" | {ratio} |")
    return "\n".join(lines)


def targets(results):
    by_key = {(r["system"], r["nodes"], r["scenario"], r["clients"]): r for r in results}
    lines = []

    def check(label, ok, detail):
        lines.append(f"- {label}: {'MET' if ok else 'MISSED'} ({detail})")

    d = by_key.get(("distsync", 3, "uncontended", 64))
    e = by_key.get(("etcd", 3, "uncontended", 64))
    if d and e:
        ratio = d["throughput_per_s"] / e["throughput_per_s"]
        check("3 nodes, 64 clients: pairs/s ≥ 3× etcd's with a lower p99",
              ratio >= 3 and d["latency_ms"]["p99"] < e["latency_ms"]["p99"],
              f"{d['throughput_per_s']:,.0f} vs {e['throughput_per_s']:,.0f} pairs/s = "
              f"{ratio:.2f}×; p99 {d['latency_ms']['p99']:.2f} vs {e['latency_ms']['p99']:.2f} ms")
    d = by_key.get(("distsync", 3, "contended", 64))
    e = by_key.get(("etcd", 3, "contended", 64))
    if d and e:
        ratio = d["throughput_per_s"] / e["throughput_per_s"]
        check("3 nodes, one hot name, 64 clients: handoffs/s ≥ 3× etcd's", ratio >= 3,
              f"{d['throughput_per_s']:,.0f} vs {e['throughput_per_s']:,.0f} handoffs/s = "
              f"{ratio:.2f}×")
    d = by_key.get(("distsync", 3, "uncontended", 1))
    if d:
        p50 = d["extra"]["acquire_latency_ms"]["p50"]
        check("3 nodes, 1 client: acquire p50 < 0.6 ms", p50 < 0.6, f"{p50:.3f} ms")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=5, help="measured seconds per run")
    parser.add_argument("--clients", default="1,16,64,256")
    parser.add_argument("--nodes", default="3,1")
    parser.add_argument("--systems", default="distsync,etcd")
    parser.add_argument("--workloads", default="uncontended,contended,shared-heavy")
    parser.add_argument("--bin", default=os.path.join(benchlib.ROOT, "target/release/distsync"))
    parser.add_argument("--base-port", type=int, default=16000)
    args = parser.parse_args()
    if not shutil.which("etcd") and "etcd" in args.systems:
        sys.exit("etcd is not installed (apt-get install etcd-server)")
    clients = [int(c) for c in args.clients.split(",")]
    nodes_list = [int(n) for n in args.nodes.split(",")]
    systems = args.systems.split(",")
    workloads = args.workloads.split(",")
    command = benchlib.script_command()
    seconds = str(args.seconds)
    # One cluster runs at a time: idle clusters are not free (heartbeats, ticks, etcd's
    # housekeeping on the same two cores), and one-client latency is mostly wake-up latency, so
    # a run next to idle clusters measures them too. Each system and size is measured alone,
    # after an unrecorded warm-up run (elections, start-up fsyncs, cold caches).
    plan = []
    for nodes in nodes_list:
        for system in systems:
            runs = [(workload, count) for workload in workloads for count in clients
                    if not (system == "etcd" and workload == "shared-heavy")]
            plan.append((system, nodes, runs))
    if "etcd" in systems and "shared-heavy" in workloads:
        print("etcd has no shared locks: shared-heavy runs against distsync only",
              file=sys.stderr)
    total = sum(len(runs) for _, _, runs in plan)
    results = []
    work = tempfile.mkdtemp(prefix="distsync-bench-lock-")
    started = time.monotonic()
    cluster = None
    try:
        for system, nodes, runs in plan:
            base = args.base_port + (0 if system == "distsync" else 200) + nodes * 10
            cluster = (start_distsync(args.bin, nodes, base, work) if system == "distsync"
                       else start_etcd(nodes, base, work))
            print(f"warm-up: {system} {nodes} node(s), 2 s, unrecorded", file=sys.stderr,
                  flush=True)
            bench(args.bin, cluster, "uncontended", 4, "2")
            for workload, count in runs:
                results.append(run_bench(args.bin, cluster, workload, count, seconds, command,
                                         f"{len(results) + 1}/{total}"))
            cluster.stop()
            cluster = None
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{len(results)} runs in {time.monotonic() - started:.0f} s; "
          f"command: {command}\n")
    print(table(results))
    print("\nTargets (issue 3):")
    print(targets(results))


if __name__ == "__main__":
    main()
