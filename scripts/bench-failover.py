#!/usr/bin/env python3
"""Failover benchmark: how long the lock service grants nothing after losing its leader.

Two scenarios on a 3-node cluster on loopback (release binary, fsync on, default timeouts),
each over --trials trials, each written as one JSON result per
docs/performance/results/SCHEMA.md:

- `kill`: SIGKILL the leader; measure from the kill to the next successful grant by a client
  that keeps trying a try-lock on the surviving nodes. The killed node is restarted from its
  data directory before the next trial.
- `partition`: every peer link runs through a TCP proxy in this script; cut all links to and
  from the leader. Measure (a) from the cut to the next grant on the majority side, while
  checking that the cut-off node grants nothing, and (b) after the partition heals, from the heal
  to the next grant served through the formerly cut-off node (it must learn the new leader and
  forward), plus the time until it is ready again.

    usage: scripts/bench-failover.py [--trials 20] [--scenarios kill,partition]
                                     [--bin target/release/distsync] [--base-port 16500]
"""

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

NODES = (1, 2, 3)
DURABILITY = "fsync of the WAL before every acknowledgement and vote"
# How long the partition is held after the majority granted again, so that the cut-off node has
# certainly stepped down and the majority's leader has committed in its new term.
PARTITION_HOLD_S = 1.0


class Link:
    """A directed peer link `from → to` through a proxy that can be cut: a cut link drops its
    established connections and closes new ones at once, as a partition would."""

    def __init__(self, port, target_port):
        self.target_port = target_port
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.cut = False
        self.lock = threading.Lock()
        self.open = set()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                inbound, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                if self.cut:
                    inbound.close()
                    continue
            try:
                outbound = socket.create_connection(("127.0.0.1", self.target_port), timeout=1)
                outbound.settimeout(None)
            except OSError:
                inbound.close()
                continue
            for sock in (inbound, outbound):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                if self.cut:
                    inbound.close()
                    outbound.close()
                    continue
                self.open.update((inbound, outbound))
            threading.Thread(target=self._pump, args=(inbound, outbound), daemon=True).start()
            threading.Thread(target=self._pump, args=(outbound, inbound), daemon=True).start()

    def _pump(self, source, sink):
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        with self.lock:
            self.open.discard(source)
            self.open.discard(sink)

    def set_cut(self, cut):
        with self.lock:
            self.cut = cut
            doomed = list(self.open) if cut else []
            if cut:
                self.open.clear()
        for sock in doomed:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


class Cluster:
    def __init__(self, bin_path, base_port, proxied):
        self.bin = bin_path
        self.work = tempfile.mkdtemp(prefix="distsync-bench-failover-")
        self.http = {i: base_port + i for i in NODES}
        self.raft = {i: base_port + 10 + i for i in NODES}
        self.links = {}
        if proxied:
            self.links = {(a, b): Link(base_port + 20 + 3 * a + b, self.raft[b])
                          for a in NODES for b in NODES if a != b}
        self.procs = {}

    def spec_for(self, node):
        def raft(peer):
            if peer == node or not self.links:
                return self.raft[peer]
            return self.links[(node, peer)].port
        return ",".join(f"{i}=127.0.0.1:{self.http[i]}/127.0.0.1:{raft(i)}" for i in NODES)

    def start(self, node):
        self.procs[node] = subprocess.Popen(
            [self.bin, "--log", "warn", "serve", "lock", "--id", str(node),
             "--cluster", self.spec_for(node), "--data-dir", os.path.join(self.work, f"n{node}")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def url(self, node):
        return f"http://127.0.0.1:{self.http[node]}"

    def ready(self, node):
        return benchlib.http("GET", f"{self.url(node)}/readyz", timeout=0.5)[0] == 200

    def wait_ready(self, nodes=NODES, limit=20):
        for node in nodes:
            benchlib.wait_until(lambda: self.ready(node), limit, f"node {node} ready")

    def view(self, node):
        return benchlib.http("GET", f"{self.url(node)}/v1/cluster", timeout=1.0)[1] or {}

    def agreed_leader(self, limit=20):
        """The leader every node names, once they all name the same one."""
        found = []

        def agreed():
            leaders = {self.view(i).get("leader_id") for i in NODES}
            if len(leaders) == 1 and None not in leaders:
                found.append(leaders.pop())
                return True
            return False

        benchlib.wait_until(agreed, limit, "all nodes agree on a leader")
        return found[0]

    def partition(self, node, cut):
        for (a, b), link in self.links.items():
            if node in (a, b):
                link.set_cut(cut)

    def stop(self):
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        for link in self.links.values():
            link.set_cut(True)
            link.listener.close()
        shutil.rmtree(self.work, ignore_errors=True)


def create_session(cluster, node):
    status, body = benchlib.http("POST", f"{cluster.url(node)}/v1/sessions", {"ttl_ms": 10000})
    if status != 201:
        raise RuntimeError(f"creating a session on node {node}: HTTP {status}")
    return body["session_id"]


def try_lock(cluster, node, session, name, timeout=1.0):
    """One try-lock (wait_ms 0); released again when granted. Returns whether it was granted."""
    code, grant = benchlib.http("POST", f"{cluster.url(node)}/v1/locks/{name}/acquire",
                                {"session_id": session, "mode": "exclusive", "wait_ms": 0},
                                timeout=timeout)
    if code == 200:
        benchlib.http("POST", f"{cluster.url(node)}/v1/locks/{name}/release",
                      {"session_id": session, "fencing_token": grant["fencing_token"]})
        return True
    return False


def grant_through(cluster, nodes, session, name, since, limit=30):
    """Milliseconds from `since` until a try-lock through one of `nodes` is granted."""
    attempt = 0
    while time.monotonic() - since < limit:
        node = nodes[attempt % len(nodes)]
        attempt += 1
        if try_lock(cluster, node, session, name):
            return (time.monotonic() - since) * 1000.0
    raise RuntimeError(f"no grant through nodes {nodes} within {limit} s")


def kill_trials(args):
    cluster = Cluster(args.bin, args.base_port, proxied=False)
    samples = []
    try:
        for node in NODES:
            cluster.start(node)
        cluster.wait_ready()
        for trial in range(args.trials):
            leader = cluster.agreed_leader()
            survivors = [i for i in NODES if i != leader]
            session = create_session(cluster, survivors[0])
            cluster.procs[leader].send_signal(signal.SIGKILL)
            cluster.procs[leader].wait()
            killed = time.monotonic()
            samples.append(grant_through(cluster, survivors, session, f"kill-{trial}", killed))
            print(f"kill trial {trial + 1}: leader {leader} killed, next grant after "
                  f"{samples[-1]:.0f} ms", file=sys.stderr, flush=True)
            cluster.start(leader)
            cluster.wait_ready()
    finally:
        cluster.stop()
    return result("failover", samples, {
        "fault": "SIGKILL of the leader; restarted from its data dir between trials",
        "measured": "kill -> next successful try-lock grant through a surviving node",
    }, {"samples_ms": [round(s, 1) for s in samples]})


def partition_trials(args):
    cluster = Cluster(args.bin, args.base_port + 50, proxied=True)
    cut_samples, heal_samples, heal_ready = [], [], []
    minority_grants = 0
    try:
        for node in NODES:
            cluster.start(node)
        cluster.wait_ready()
        for trial in range(args.trials):
            leader = cluster.agreed_leader()
            majority = [i for i in NODES if i != leader]
            session = create_session(cluster, majority[0])
            cluster.partition(leader, True)
            cut = time.monotonic()
            cut_samples.append(grant_through(cluster, majority, session, f"cut-{trial}", cut))
            # The cut-off node must grant nothing: it cannot reach a majority.
            if try_lock(cluster, leader, session, f"minority-{trial}", timeout=1.5):
                minority_grants += 1
            remaining = PARTITION_HOLD_S - (time.monotonic() - cut)
            if remaining > 0:
                time.sleep(remaining)
            cluster.partition(leader, False)
            healed = time.monotonic()
            heal_samples.append(grant_through(cluster, [leader], session, f"heal-{trial}",
                                              healed))
            benchlib.wait_until(lambda: cluster.ready(leader), 20, f"node {leader} ready")
            heal_ready.append((time.monotonic() - healed) * 1000.0)
            print(f"partition trial {trial + 1}: leader {leader} cut off; majority granted after "
                  f"{cut_samples[-1]:.0f} ms; after the heal it granted through node {leader} "
                  f"after {heal_samples[-1]:.0f} ms", file=sys.stderr, flush=True)
    finally:
        cluster.stop()
    if minority_grants:
        raise RuntimeError(f"the cut-off node granted {minority_grants} locks")
    return result("failover-partition", heal_samples, {
        "fault": "every peer link to and from the leader cut by a TCP proxy, then healed after "
                 f"{PARTITION_HOLD_S} s of partition",
        "measured": "heal -> next successful try-lock grant through the formerly cut-off node "
                    "(latency_ms); cut -> next grant on the majority side (extra)",
    }, {
        "samples_ms": [round(s, 1) for s in heal_samples],
        "cut_to_majority_grant_ms": benchlib.percentiles(cut_samples),
        "cut_to_majority_grant_samples_ms": [round(s, 1) for s in cut_samples],
        "heal_to_ready_ms": benchlib.percentiles(heal_ready),
        "heal_to_ready_samples_ms": [round(s, 1) for s in heal_ready],
        "grants_by_cut_off_node": minority_grants,
    })


def result(scenario, samples, params, extra):
    return {
        "schema": benchlib.SCHEMA,
        "service": "lock",
        "scenario": scenario,
        "system": "distsync",
        "nodes": 3,
        "params": dict(params, trials=len(samples), election_timeout_ms="server default",
                       probe="try-lock (wait_ms 0) with a 1 s request timeout, retried at once"),
        "ops": len(samples),
        "latency_ms": benchlib.percentiles(samples),
        "errors": 0,
        "extra": dict(extra, min_ms=round(min(samples), 1)),
        "meta": benchlib.meta(benchlib.script_command(), ARGS.bin, DURABILITY),
    }


ARGS = None


def main():
    global ARGS
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--scenarios", default="kill,partition")
    parser.add_argument("--bin", default=os.path.join(benchlib.ROOT, "target/release/distsync"))
    parser.add_argument("--base-port", type=int, default=16500)
    ARGS = args = parser.parse_args()
    runners = {"kill": kill_trials, "partition": partition_trials}
    for scenario in args.scenarios.split(","):
        outcome = runners[scenario](args)
        path = benchlib.write_result(outcome)
        latency = outcome["latency_ms"]
        print(f"{outcome['scenario']}: {outcome['ops']} trials, p50 {latency['p50']} ms, "
              f"p90 {latency['p90']} ms, p99 {latency['p99']} ms, max {latency['max']} ms -> "
              f"{os.path.relpath(path, benchlib.ROOT)}")
        if "cut_to_majority_grant_ms" in outcome["extra"]:
            print(f"  cut -> majority grant: {outcome['extra']['cut_to_majority_grant_ms']}; "
                  f"heal -> ready: {outcome['extra']['heal_to_ready_ms']}")


if __name__ == "__main__":
    main()
