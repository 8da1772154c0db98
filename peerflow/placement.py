"""Where actors may run on a Ray cluster, checked before anything starts.

Roles, sinks and service replicas ask for resources the same way (`cpu`, `gpu`, `memory`,
custom node labels). A request that no node could ever satisfy would leave an actor
pending forever, so a run is refused up front with the config field named.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from peerflow.config import ConfigError, RunConfig


class PlacementError(ConfigError):
    """The cluster cannot host the actors a config asks for; raised before any work starts."""


def normalise_resources(*requests: dict[str, float]) -> dict[str, float]:
    """One request from several (a role's and its partition's), with Ray's resource names."""
    out: dict[str, float] = {}
    for resources in requests:
        for name, amount in resources.items():
            key = {"cpu": "CPU", "gpu": "GPU"}.get(name.lower(), name)
            if amount:
                out[key] = out.get(key, 0.0) + float(amount)
    return out


def actor_options(*requests: dict[str, float]) -> dict[str, Any]:
    """Ray actor options for resource requests together (none = 0 CPUs: placed anywhere)."""
    rest = normalise_resources(*requests)
    opts: dict[str, Any] = {"num_cpus": rest.pop("CPU", 0.0)}
    for name, option in (("GPU", "num_gpus"), ("memory", "memory")):
        if rest.get(name):
            opts[option] = rest.pop(name)
    if rest:
        opts["resources"] = rest
    return opts


def _fmt(resources: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in sorted(resources.items()))


def check_placement(
    config: RunConfig, nodes: list[dict[str, Any]], cluster: dict[str, float]
) -> None:
    """Fail, naming the field and the resource, when actors could never be placed.

    Each actor must fit on some single node, and all of them together in the cluster.
    `nodes` and `cluster` are what `ray.nodes()` and `ray.cluster_resources()` return.
    (What is free now is not checked: actors of a run that just ended free theirs a moment
    later; actors that wait too long fail the run after `runtime.start_timeout`.)
    """
    rt = config.runtime
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive", n.get("alive", True))]
    asks: list[tuple[tuple[str, ...], str, dict[str, float], int]] = []  # field, who, need, n
    for team in rt.partition_resources or [{}] * rt.partitions:
        for role, rc in config.roles.items():
            need = normalise_resources(rc.resources, team)
            asks.append((("roles", role, "resources"), role, need, rc.num_instances))
        if rt.sink_resources or team:
            need = normalise_resources(rt.sink_resources, team)
            asks.append((("runtime", "sink_resources"), "sink", need, rt.sinks))
    if rt.kind == "ray":
        for name, svc in config.services.items():
            if svc.kind != "openai":
                need = normalise_resources(svc.resources)
                asks.append((("services", name, "resources"), name, need, svc.replicas))
    errors: list[tuple[tuple[str, ...], str]] = []
    total: Counter[str] = Counter()
    users: dict[str, list[str]] = defaultdict(list)
    for where, who, need, n in asks:
        fits = any(all(node.get(k, 0.0) >= v for k, v in need.items()) for node in alive)
        if not fits and where not in [e[0] for e in errors]:
            short = [k for k, v in need.items() if not any(nd.get(k, 0.0) >= v for nd in alive)]
            offered = "; ".join(
                _fmt({k: v for k, v in nd.items() if ":" not in k and "memory" not in k})
                for nd in alive
            )
            errors.append(
                (
                    where,
                    f"each of its actors needs {_fmt(need)}, but no node of the Ray cluster "
                    f"has enough {', '.join(sorted(short)) or 'of them together'} "
                    f"(nodes offer: {offered or 'no nodes'})",
                )
            )
        for k, v in need.items():
            total[k] += v * n
            users[k].append(f"{who} {v:g} x {n}")
    for k, v in total.items():
        if v > cluster.get(k, 0.0) + 1e-9:
            errors.append(
                (
                    ("roles",),
                    f"the actors need {k}={v:g} in total ({', '.join(users[k])}), but the Ray "
                    f"cluster has only {cluster.get(k, 0.0):g}",
                )
            )
    if errors:
        raise PlacementError(config.error(errors))


async def reports_then_kill(handles: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Each run-scoped helper actor's `report()` (or the error getting it), then the actor
    killed: the end of a block that started one actor per service or role."""
    import asyncio
    import contextlib

    import ray

    reports: dict[str, Any] = {}
    for name, handle in handles.items():
        try:
            reports[name] = await asyncio.wait_for(handle.report.remote(), timeout)
        except Exception as exc:
            reports[name] = {"error": f"{type(exc).__name__}: {exc}"}
        with contextlib.suppress(Exception):
            ray.kill(handle)
    return reports
