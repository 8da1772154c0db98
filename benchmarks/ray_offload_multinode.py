"""Does offloading pay on a multi-node Ray? Throughput and bytes between nodes, on and off.

The cluster: Ray's own `ray.cluster_utils.Cluster` on this one machine: a head node (the
driver, the sinks, 2 CPUs) and `--nodes` zero-CPU worker nodes labelled `node0`,
`node1`, ..., each its own raylet and object store. All raylets share one machine (2
cores, shared with other work), so "between nodes" means between processes of different
raylets over the loopback interface, not over a network.

The workload: a loop of `--roles` roles x `--turns` turns of `peerflow.testing:SizeMix`
agents (no delay by default: the runtime is the bottleneck), whose texts follow the
paper's Fig. 8 mix (31.9% under 32 B, 12% above 512 B, 5.7% of 1-8 KiB), drawn per (task,
step) so both runs say the same texts. Each message carries its whole history. Role i
runs on node `i % nodes`, so with roles a multiple of nodes every hop crosses nodes, and so
do the first hop (driver -> first role) and the last (last role -> sink on the head).
The same rows run with `runtime.offload_threshold: null` (every text inline in the actor
calls) and `512` (longer texts put into one object per outgoing batch by the sender's
node keeper, fetched by each receiving node); `max_in_flight` at its default.

Bytes between nodes are measured, not modelled: every `--sample` seconds (and once more
the moment the last record is written) `ss -tinp` lists every established TCP socket
with its owning process and the kernel's `bytes_sent` counter. Each process of the
cluster is assigned to a node (raylet, GCS and other per-node daemons from the Cluster's
own process table; workers and actors by their parent raylet; the driver to the head).
A connection counts when its two ends are on different nodes; its bytes are those its
sockets sent since the run started. This includes actor calls and their replies
(worker <-> worker), object transfers (raylet <-> raylet: Ray's object manager) and
control traffic (to and from the GCS, raylet <-> worker RPCs across nodes, ownership
lookups). It excludes traffic within one node, unix-domain sockets and shared memory, and
the bytes a connection sent after the last sample before it closed (connections are
long-lived gRPC channels; the last sample is taken when the last record is written).

    python benchmarks/ray_offload_multinode.py --rows 3000 --repeat 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray.cluster_utils import Cluster

from peerflow.config import load_config
from peerflow.pipeline import Pipeline
from peerflow.run import run_async
from peerflow.testing import SIZE_MIX

STORE_BYTES = 200 * 1024 * 1024  # object store per node: several share this machine's RAM
SOCKET = re.compile(r"^\S+\s+\S+\s+(\S+)\s+(\S+)\s+users:\(\(\"([^\"]*)\",pid=(\d+)")
SENT = re.compile(r"\bbytes_sent:(\d+)")


# -- which process is on which node --------------------------------------------------------


class NodeMap:
    """Maps a pid to (node label, process kind) for the processes of this cluster only."""

    def __init__(self, cluster: Cluster, labels: dict[str, str]):
        self.known: dict[int, tuple[str, str]] = {os.getpid(): ("head", "driver")}
        self.raylets: dict[int, str] = {}
        for node in [cluster.head_node, *cluster.worker_nodes]:
            label = labels[node.node_id]
            for kind, infos in node.all_processes.items():
                for info in infos:
                    self.known[info.process.pid] = (label, kind)
                    if kind == "raylet":
                        self.raylets[info.process.pid] = label
        # A worker's name changes with what it runs ("ray::IDLE", then
        # "ray::RoleActor.deliver" cut at 15 characters), so only its node is kept.
        self.workers: dict[int, str] = {}
        self.others: set[int] = set()

    def __call__(self, pid: int, name: str) -> tuple[str, str] | None:
        if pid in self.known:
            return self.known[pid]
        if pid in self.others:
            return None
        kind = name.removeprefix("ray::").split(".")[0]  # "IDLE", "RoleActor", ...
        if pid in self.workers:
            return self.workers[pid], kind
        p = pid
        for _ in range(10):  # a worker's parent is its raylet (or a zygote below it)
            p = _ppid(p)
            if p in self.raylets:
                self.workers[pid] = self.raylets[p]
                return self.raylets[p], kind
            if p <= 1:
                break
        self.others.add(pid)  # another user's Ray, or anything else on the machine
        return None


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


# -- bytes between nodes -------------------------------------------------------------------


@dataclass
class Sockets:
    """Per TCP socket (local, peer): its process and the bytes it sent, over samples."""

    nodes: NodeMap
    base: dict[tuple[str, str], int] = field(default_factory=dict)
    sent: dict[tuple[str, str], int] = field(default_factory=dict)
    owner: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    samples: int = 0

    def sample(self, baseline: bool = False) -> None:
        out = subprocess.run(
            ["ss", "-tinpH", "state", "established"], capture_output=True, text=True, check=True
        ).stdout
        key: tuple[str, str] | None = None
        for line in out.splitlines():
            m = SOCKET.match(line)
            if m:
                local, peer, name, pid = m.groups()
                where = self.nodes(int(pid), name)
                key = (local, peer) if where else None
                if key is not None and where is not None:
                    self.owner[key] = where
                continue
            s = SENT.search(line)
            if key is not None and s:
                n = int(s.group(1))
                if baseline:
                    self.base[key] = n
                self.sent[key] = max(self.sent.get(key, 0), n)
                key = None
        self.samples += 1

    def between_nodes(self) -> tuple[int, Counter[str]]:
        """Bytes sent since the baseline on connections whose ends are on different nodes,
        in total and by the kinds of the two processes."""
        total = 0
        kinds: Counter[str] = Counter()
        for key, n in self.sent.items():
            other = self.owner.get((key[1], key[0]))
            if other is None:  # the peer is not of this cluster (or never seen)
                continue
            me = self.owner[key]
            if me[0] == other[0]:
                continue
            delta = n - self.base.get(key, 0)
            total += delta
            kinds[_pair(me[1], other[1])] += delta
        return total, kinds


def _pair(a: str, b: str) -> str:
    def kind(k: str) -> str:
        if k == "raylet":
            return "raylet"
        if k in ("gcs_server", "driver"):
            return k
        if k in ("RoleActor", "SinkActor", "Keeper"):
            return "actor"
        return "other"

    x, y = sorted((kind(a), kind(b)))
    return f"{x}<->{y}"


class Sampler(threading.Thread):
    """Samples the sockets every `period` s, and once more when `out` has `rows` lines."""

    def __init__(self, sockets: Sockets, out: Path, rows: int, period: float):
        super().__init__(daemon=True)
        self.sockets, self.out, self.rows, self.period = sockets, out, rows, period
        self.stop = threading.Event()
        self.done_at: float | None = None

    def run(self) -> None:
        last = time.monotonic()
        while not self.stop.is_set():
            if complete_lines(self.out) >= self.rows:
                self.sockets.sample()
                self.done_at = time.perf_counter()
                return
            if time.monotonic() - last >= self.period:
                self.sockets.sample()
                last = time.monotonic()
            time.sleep(0.02)


# -- the workload --------------------------------------------------------------------------


def write_config(tmp: Path, args: argparse.Namespace, threshold: int | None) -> Path:
    rows = tmp / "rows.jsonl"
    if not rows.exists():
        with open(rows, "w") as f:
            for i in range(args.rows):
                f.write(json.dumps({"id": f"r{i}", "n": i}) + "\n")
    roles = [f"r{i}" for i in range(args.roles)]
    config = {
        "name": "ray-offload-multinode",
        "dataset": {"path": str(rows), "id_field": "id"},
        "task": {"message": "task {{ n }}"},
        "roles": {
            role: {
                "agent": "peerflow.testing:SizeMix",
                "delay": args.delay,
                "num_instances": args.instances,
                "resources": {f"node{i % args.nodes}": 0.01},
            }
            for i, role in enumerate(roles)
        },
        "workflow": {"kind": "loop", "roles": roles, "max_turns": args.turns},
        "runtime": {"kind": "ray", "progress": False, "offload_threshold": threshold},
        "output": {"path": str(tmp / "out.jsonl")},
    }
    path = tmp / f"run-{threshold}.json"  # JSON is YAML
    path.write_text(json.dumps(config))
    return path


def complete_lines(out: Path) -> int:
    return out.read_bytes().count(b"\n") if out.exists() else 0


def read(out: Path) -> list[dict[str, Any]]:
    with open(out) as f:
        return [json.loads(line) for line in f if line.strip()]


def essence(record: dict[str, Any]) -> Any:
    return record["status"], [(s["role"], s.get("content")) for s in record["history"]]


async def one_run(
    nodes: NodeMap, config_path: Path, out: Path, rows: int, period: float
) -> dict[str, Any]:
    config = load_config(config_path, [f"output.path={out}"])
    sockets = Sockets(nodes)
    sockets.sample(baseline=True)
    sampler = Sampler(sockets, out, rows, period)
    t0 = time.perf_counter()
    sampler.start()
    try:
        summary = await run_async(config, pipeline=Pipeline(config), progress=False)
    finally:
        sampler.stop.set()
        sampler.join()
    wall = time.perf_counter() - t0
    records = read(out)
    between, kinds = sockets.between_nodes()
    return {
        "summary": summary,
        "records": records,
        "wall": wall,
        "rows": rows,
        "between": between,
        "kinds": kinds,
        "samples": sockets.samples,
        "last_sample_at": (sampler.done_at or time.perf_counter()) - t0,
    }


def measures(run: dict[str, Any]) -> dict[str, Any]:
    records = run["records"]
    steps = sum(len(r["history"]) - 1 for r in records)  # the task's own step is no step
    span = max(r["finished"] for r in records) - min(r["created"] for r in records)
    ray_info = run["summary"].get("ray", {})
    ids = [r["id"] for r in records]
    return {
        "records": len(records),
        "once": len(ids) == len(set(ids)) == run["rows"],
        "steps": steps,
        "wall": run["wall"],
        "span": span,
        "rows_s_wall": len(records) / run["wall"],
        "rows_s": len(records) / span,
        "steps_s": steps / span,
        "between": run["between"],
        "between_s": run["between"] / span,
        "between_step": run["between"] / steps,
        "kinds": run["kinds"],
        "hop_bytes": ray_info.get("hop_bytes", 0),
        "hop_other": ray_info.get("hop_bytes_to_other_nodes", 0),
        "offloaded": ray_info.get("offloaded_bytes", 0),
        "offloaded_fields": ray_info.get("offloaded_fields", 0),
        "refs": ray_info.get("hop_refs", 0),
        "lost_payloads": ray_info.get("lost_payloads", 0),
        "redelivered": ray_info.get("redelivered", 0),
    }


def print_table(results: list[tuple[str, dict[str, Any]]]) -> None:
    mb = 1e6
    head = (
        f"{'run':<10}{'wall s':>8}{'span s':>8}{'rows/s':>8}{'(wall)':>8}{'steps/s':>9}"
        f"{'between MB':>12}{'MB/s':>7}{'B/step':>8}  {'inline other-node MB':>21}"
        f"{'offloaded MB':>13}{'refs':>8}"
    )
    print(head)
    for label, m in results:
        print(
            f"{label:<10}{m['wall']:>8.1f}{m['span']:>8.1f}{m['rows_s']:>8.1f}"
            f"{m['rows_s_wall']:>8.1f}{m['steps_s']:>9.0f}{m['between'] / mb:>12.1f}"
            f"{m['between_s'] / mb:>7.2f}{m['between_step']:>8.0f}  {m['hop_other'] / mb:>21.1f}"
            f"{m['offloaded'] / mb:>13.1f}{m['refs']:>8}"
        )
    for label, m in results:
        parts = ", ".join(f"{k} {v / mb:.1f}" for k, v in m["kinds"].most_common())
        print(f"  {label}: between-node MB by process pair: {parts}")
        print(
            f"  {label}: records {m['records']} (exactly one per row: {m['once']}), steps "
            f"{m['steps']}, offloaded fields {m['offloaded_fields']}, lost payloads "
            f"{m['lost_payloads']}, re-delivered hops {m['redelivered']}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--nodes", type=int, default=3, help="worker nodes (one role each)")
    parser.add_argument("--roles", type=int, default=3, help="roles in the loop")
    parser.add_argument("--turns", type=int, default=5, help="loop turns (steps = roles x turns)")
    parser.add_argument("--instances", type=int, default=1, help="actors per role")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds per agent step")
    parser.add_argument("--threshold", type=int, default=512, help="offload_threshold when on")
    parser.add_argument("--repeat", type=int, default=1, help="off/on pairs (order alternates)")
    parser.add_argument("--sample", type=float, default=0.5, help="seconds between ss samples")
    args = parser.parse_args()

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 2, "object_store_memory": STORE_BYTES}
    )
    labels = {cluster.head_node.node_id: "head"}
    for i in range(args.nodes):
        node = cluster.add_node(
            num_cpus=0, resources={f"node{i}": 1}, object_store_memory=STORE_BYTES
        )
        labels[node.node_id] = f"node{i}"
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, include_dashboard=False, logging_level="WARNING")
    nodes = NodeMap(cluster, labels)
    mix = ", ".join(f"{share:.1%} {lo}-{hi} B" for share, lo, hi in SIZE_MIX)
    print(
        f"Machine: {os.cpu_count()} cores, shared; one machine, so 'between nodes' = between "
        f"raylets over loopback.\nCluster: head (driver, sinks, 2 CPUs) + {args.nodes} worker "
        f"nodes (0 CPUs, labels node0..node{args.nodes - 1}), {STORE_BYTES >> 20} MB object "
        f"store each.\nWorkload: {args.rows} rows, loop of {args.roles} SizeMix roles x "
        f"{args.turns} turns (role i on node i % {args.nodes}), {args.instances} actor(s) per "
        f"role, delay {args.delay * 1000:g} ms/step, max_in_flight default.\nText sizes "
        f"(uniform in each bar, last bar log-uniform): {mix}.\nOffload off = "
        f"offload_threshold null; on = {args.threshold}. Rates use the span from the first "
        "admission to the last record; (wall) includes actor start-up.\n"
    )
    ratios: list[dict[str, float]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            paths = {
                "off": write_config(Path(tmp), args, None),
                "on": write_config(Path(tmp), args, args.threshold),
            }
            for n in range(args.repeat):
                order = ["off", "on"] if n % 2 == 0 else ["on", "off"]
                runs: dict[str, dict[str, Any]] = {}
                for label in order:
                    out = Path(tmp) / f"{label}{n}.jsonl"
                    runs[label] = asyncio.run(
                        one_run(nodes, paths[label], out, args.rows, args.sample)
                    )
                m = {label: measures(runs[label]) for label in ("off", "on")}
                print(f"pair {n + 1} (ran {' then '.join(order)}):")
                print_table([(f"off{n + 1}", m["off"]), (f"on{n + 1}", m["on"])])
                want = {r["id"]: essence(r) for r in runs["off"]["records"]}
                differ = sum(1 for r in runs["on"]["records"] if want.get(r["id"]) != essence(r))
                r = {
                    "steps_s": m["on"]["steps_s"] / m["off"]["steps_s"],
                    "rows_s_wall": m["on"]["rows_s_wall"] / m["off"]["rows_s_wall"],
                    "between": m["on"]["between"] / m["off"]["between"],
                    "between_s": m["on"]["between_s"] / m["off"]["between_s"],
                }
                ratios.append(r)
                print(
                    f"  ratio on/off: steps/s {r['steps_s']:.2f}, rows/s incl. start-up "
                    f"{r['rows_s_wall']:.2f}, bytes between nodes {r['between']:.2f} (per "
                    f"second {r['between_s']:.2f}); rows whose texts differ on vs off: {differ}\n"
                )
    finally:
        ray.shutdown()
        cluster.shutdown()
    if len(ratios) > 1:
        for name in ("steps_s", "between", "between_s"):
            v = sorted(x[name] for x in ratios)
            print(
                f"on/off {name} over {len(v)} pairs: median {v[len(v) // 2]:.2f} "
                f"({v[0]:.2f} to {v[-1]:.2f})"
            )


if __name__ == "__main__":
    main()
