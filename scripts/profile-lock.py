#!/usr/bin/env python3
"""Flamegraph of the lock leader where its throughput stops scaling (issue 7, "Scalability").

Starts a 3-node cluster on loopback (release binary, fsync on, default timeouts), drives it with
`distsync bench lock` (uncontended, 64 clients by default), samples the leader's stacks with
`perf record` for part of the run and folds them with inferno into an SVG flamegraph.

    scripts/profile-lock.py [--clients 64] [--seconds 8] [--out docs/performance/profiles/lock-leader-flamegraph.svg]

Needs `perf` (apt-get install linux-perf) and inferno (cargo install inferno).
"""
import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile

import benchlib

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("bench_lock", os.path.join(HERE, "bench-lock-vs-etcd.py"))
bench_lock = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_lock)


def print_summary(folded):
    """Where the samples are: leaf functions (self time) and distsync's own frames (inclusive)."""
    leaf, ours, total = {}, {}, 0
    for line in folded.splitlines():
        stack, _, count = line.rpartition(" ")
        count = int(count)
        total += count
        frames = stack.split(";")
        leaf[frames[-1]] = leaf.get(frames[-1], 0) + count
        for frame in {f for f in frames if "distsync" in f}:
            ours[frame] = ours.get(frame, 0) + count
    total = total or 1
    for heading, table in (("self time", leaf), ("distsync frames, inclusive", ours)):
        print(f"{heading}:", file=sys.stderr)
        for frame, count in sorted(table.items(), key=lambda item: -item[1])[:15]:
            print(f"  {100 * count / total:5.1f}%  {frame[:150]}", file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=int, default=8, help="length of the load run")
    parser.add_argument("--bin", default=os.path.join(benchlib.ROOT, "target/release/distsync"))
    parser.add_argument("--out", default=os.path.join(benchlib.ROOT, "docs/performance/profiles/lock-leader-flamegraph.svg"))
    parser.add_argument("--base-port", type=int, default=16700)
    parser.add_argument("--folded", help="also write the folded stacks here (for grep)")
    args = parser.parse_args()
    for tool in ("perf", "inferno-collapse-perf", "inferno-flamegraph"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is not installed (perf: apt-get install linux-perf; "
                     "inferno-*: cargo install inferno)")
    work = tempfile.mkdtemp(prefix="distsync-profile-lock-")
    cluster = bench_lock.start_distsync(args.bin, 3, args.base_port, work)
    try:
        leader = bench_lock.distsync_leader(cluster)
        pid = cluster.procs[leader - 1].pid
        load = subprocess.Popen(
            [args.bin, "--log", "warn", "bench", "lock", "--targets", ",".join(cluster.targets),
             "--clients", str(args.clients), "--duration", f"{args.seconds}s", "--json"],
            stdout=subprocess.PIPE, text=True)
        # Sample the middle of the run: after the bench's 1 s warm-up, before its end.
        sample_s = max(1, args.seconds - 3)
        data = os.path.join(work, "perf.data")
        print(f"profiling leader node {leader} (pid {pid}) for {sample_s} s under "
              f"{args.clients} clients", file=sys.stderr, flush=True)
        subprocess.run(["perf", "record", "-F", "499", "-g", "--call-graph", "dwarf,16384",
                        "-p", str(pid), "-o", data, "--", "sleep", str(sample_s)],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stdout, _ = load.communicate()
        raw = json.loads(stdout)
        script = subprocess.run(["perf", "script", "-i", data], check=True,
                                capture_output=True, text=True).stdout
        folded = subprocess.run(["inferno-collapse-perf"], input=script, check=True,
                                capture_output=True, text=True).stdout
        if args.folded:
            with open(args.folded, "w") as out:
                out.write(folded)
        title = (f"distsync lock leader, 3 nodes, {args.clients} clients uncontended, "
                 f"{raw['pairs_per_s']:.0f} pairs/s (git {benchlib.git_commit()})")
        svg = subprocess.run(["inferno-flamegraph", "--title", title, "--width", "1400",
                              "--minwidth", "1.5"],
                             input=folded, check=True, capture_output=True, text=True).stdout
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as out:
            out.write(svg)
        print(f"{raw['pairs_per_s']:.0f} pairs/s during the profile -> "
              f"{os.path.relpath(args.out, benchlib.ROOT)}", file=sys.stderr)
        print_summary(folded)
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
